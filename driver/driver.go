// Package driver holds the interfaces a botstate backend implements, one per
// domain, and the plain records they exchange with the portable package.
//
// The portable package (botstate) validates every argument, builds and escapes
// keys, computes absolute times from its clock and generates tokens before it
// calls a driver. A driver therefore receives only well-formed input and owes
// one thing in return: each method is one atomic operation on its storage.
// No method may read, decide in Go, and write back across round trips.
//
// Time: every method that can observe expiry receives now. An item whose
// ExpiresAt is not zero and not after now is absent, whatever the storage still
// holds; native expiry (Redis, DynamoDB TTL, a reaper) is only garbage
// collection. A zero ExpiresAt means the item never expires.
//
// Namespaces: ns is a non-empty string of [A-Za-z0-9._-]. Items in different
// namespaces must never be visible to each other.
//
// The conformance suite in package statetest checks every rule written here.
package driver

import (
	"context"
	"net/url"
	"time"
)

// Config is what botstate.Open hands to a backend's Opener.
type Config struct {
	// Clock returns the current time. Backends use it only for background
	// work such as reaping; every call carries its own now.
	Clock func() time.Time
	// SweepInterval is how often background expiry runs; zero lets the
	// backend choose.
	SweepInterval time.Duration
}

// Opener opens a backend for a parsed URL whose scheme it registered.
type Opener func(ctx context.Context, u *url.URL, cfg Config) (Driver, error)

// Driver is a whole backend: every domain plus Close.
type Driver interface {
	Events
	Conversations
	Threads
	Locks
	Incidents
	Snapshots
	// Close releases the backend's resources and stops its background work.
	// Calls after Close return ErrClosed.
	Close() error
}

// SchemaValidator is implemented by backends whose storage has a schema that
// can be checked (tables, indexes, TTL settings). Incidents.Init calls it
// unless told to skip validation.
type SchemaValidator interface {
	ValidateSchema(ctx context.Context) error
}

// ---- Events ----------------------------------------------------------------

// EventStatus is where an event key stands.
type EventStatus uint8

// Event statuses.
const (
	// EventRecorded: written by Record (one-shot mode); never claimable.
	EventRecorded EventStatus = 1
	// EventClaimed: held by the worker with Token until LeaseUntil.
	EventClaimed EventStatus = 2
	// EventReleased: a worker gave it back; the next Claim takes it.
	EventReleased EventStatus = 3
	// EventCompleted: done, with Result.
	EventCompleted EventStatus = 4
	// EventFailed: parked after its last allowed attempt, or failed on
	// purpose; kept and listed, never claimed again until RetryEvent.
	EventFailed EventStatus = 5
)

// Event is a remembered event key.
type Event struct {
	Key        string
	Status     EventStatus
	Payload    []byte // the first payload ever given for the key
	Result     []byte // set by Complete
	Token      string // current claim token; empty unless claimed
	Attempts   int    // number of claims that were attempts (see ReleaseRequest.Defer)
	LastError  string // why it was last released or failed
	CreatedAt  time.Time
	LeaseUntil time.Time // lease end while claimed
	// RetryAt is when a released event becomes due again: a Claim before
	// it answers ClaimInProgress. Zero means at once.
	RetryAt   time.Time
	ExpiresAt time.Time // retention end
}

// EventWrite carries what every inserting event call needs.
type EventWrite struct {
	Key     string
	Payload []byte
	Now     time.Time
	// ExpiresAt is when the key is forgotten (the retention window).
	ExpiresAt time.Time
	// Limit is the most keys the namespace remembers; when an insert takes
	// it over the limit, the oldest keys by insertion are evicted in the same
	// operation. Zero means no limit.
	Limit int
}

// ClaimRequest is a Claim or, with Existing set, a Reclaim.
type ClaimRequest struct {
	EventWrite
	// Token is the token to store when the claim is acquired. It is always
	// set, unless the backend implements LazyTokens; then it is empty and
	// the backend calls MintToken only when it acquires, and returns the
	// token in ClaimReply.Event.Token.
	Token      string
	MintToken  func() string
	LeaseUntil time.Time
	// Existing makes the call a Reclaim: it never inserts (an absent key
	// returns ErrNotFound), and it takes a released event whatever its
	// RetryAt, where a plain Claim waits for it.
	Existing bool
	// Holder, with Existing, makes the call a TakeOver: when the stored
	// event is EventClaimed with this token and its lease is live, the claim
	// passes to the request's token with Attempts unchanged (a handover is
	// not a new attempt). Otherwise the Reclaim rules apply: a lapsed claim
	// with this token is taken over as any lapsed claim is (its holder died
	// trying, which was an attempt).
	Holder string
	// MaxAttempts: a takeover of a released or lapsed event whose Attempts
	// already reached MaxAttempts parks it as EventFailed instead, and
	// answers ClaimFailed. Zero means no limit.
	MaxAttempts int
}

// LazyTokens is implemented by backends that mint claim tokens only when a
// claim is acquired (see ClaimRequest.Token), sparing the common duplicate
// path the work. A backend that decides on a server needs the token up
// front and does not implement it.
type LazyTokens interface {
	LazyClaimTokens()
}

// ClaimOutcome is what a Claim found.
type ClaimOutcome uint8

// Claim outcomes.
const (
	// ClaimAcquired: the caller now holds the claim (key was absent,
	// released, or claimed with a lease that ended at or before now).
	ClaimAcquired ClaimOutcome = 1
	// ClaimInProgress: another live claim holds it, or it was recorded.
	ClaimInProgress ClaimOutcome = 2
	// ClaimCompleted: done already; Event.Result holds the result.
	ClaimCompleted ClaimOutcome = 3
	// ClaimFailed: the event is EventFailed (before the call, or parked by
	// it for MaxAttempts); Event.LastError says why.
	ClaimFailed ClaimOutcome = 4
)

// MaxAttemptsReason is the LastError of an event parked by a takeover for
// reaching ClaimRequest.MaxAttempts, when it had no error of its own.
const MaxAttemptsReason = "attempts exhausted"

// ClaimReply is the outcome and the event as it stands after the call. The
// portable layer reads only Event.Attempts, Event.Result when completed,
// Event.LastError when failed, and Event.Token when acquired by a LazyTokens
// backend, so a backend may leave the other fields of Event empty.
type ClaimReply struct {
	Outcome ClaimOutcome
	Event   Event
}

// Events is exactly-once event bookkeeping.
type Events interface {
	// RecordEvent inserts the key as EventRecorded if it is absent and
	// reports true; a present key is left untouched (payload included) and
	// reports false.
	RecordEvent(ctx context.Context, ns string, w EventWrite) (bool, error)
	// LookupEvent returns the event, or false when absent.
	LookupEvent(ctx context.Context, ns, key string, now time.Time) (Event, bool, error)
	// ForgetEvent deletes the key; absent is not an error.
	ForgetEvent(ctx context.Context, ns, key string) error
	// ClaimEvent claims the key atomically, see ClaimOutcome. On takeover the
	// stored payload is kept, Token and LeaseUntil are replaced, Attempts
	// grows by one and ExpiresAt becomes the request's.
	ClaimEvent(ctx context.Context, ns string, r ClaimRequest) (ClaimReply, error)
	// CompleteEvent marks a claimed key completed with result, keeping it
	// until expiresAt. The key must be EventClaimed with this token (a lapsed
	// lease nobody took over still counts); otherwise ErrNotOwner and nothing
	// changes.
	CompleteEvent(ctx context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error
	// ExtendEvent moves a claim's lease end to leaseUntil and its retention
	// end to expiresAt. The key must be EventClaimed with this token (a
	// lapsed lease nobody took over still counts); otherwise ErrNotOwner and
	// nothing changes.
	ExtendEvent(ctx context.Context, ns, key, token string, now, leaseUntil, expiresAt time.Time) error
	// ReleaseEvent gives a claim back as EventReleased or parks it as
	// EventFailed, fenced like CompleteEvent; see ReleaseRequest.
	ReleaseEvent(ctx context.Context, ns string, r ReleaseRequest) error
	// RetryEvent makes an EventFailed key EventReleased, due at once, with
	// Attempts 0 and LastError kept, retained until expiresAt. An absent key
	// is ErrNotFound; any other status is ErrConflict and changes nothing.
	RetryEvent(ctx context.Context, ns, key string, now, expiresAt time.Time) error
	// ExpiredEvents lists up to limit claimed events whose lease ended at or
	// before now, oldest CreatedAt first (ties by key).
	ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]Event, error)
	// DueEvents lists up to limit events a re-driver should take over now:
	// claimed ones whose lease ended at or before now and released ones
	// whose RetryAt is at or before now, oldest CreatedAt first (ties by key).
	DueEvents(ctx context.Context, ns string, now time.Time, limit int) ([]Event, error)
	// FailedEvents lists up to limit EventFailed events, oldest CreatedAt
	// first (ties by key).
	FailedEvents(ctx context.Context, ns string, now time.Time, limit int) ([]Event, error)
	// PendingEvents lists up to limit events that are neither completed nor
	// failed, oldest CreatedAt first (ties by key).
	PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]Event, error)
}

// ReleaseRequest is a ReleaseEvent call. The stored event must be
// EventClaimed with Token (lapsed or not); otherwise ErrNotOwner and nothing
// changes. Token and LeaseUntil are cleared and LastError becomes Reason.
type ReleaseRequest struct {
	Key   string
	Token string
	Now   time.Time
	// RetryAt is when the released event becomes due; zero means at once.
	RetryAt time.Time
	// ExpiresAt is the event's new retention end.
	ExpiresAt time.Time
	// Reason is stored as LastError.
	Reason string
	// Fail parks the event as EventFailed (RetryAt cleared).
	Fail bool
	// MaxAttempts parks it as EventFailed when Attempts is at least
	// MaxAttempts (zero: no limit). Ignored with Defer.
	MaxAttempts int
	// Defer says the claim was not an attempt (the caller queued the event
	// instead of handling it): Attempts goes down by one, never below zero.
	Defer bool
}

// ---- Conversations -----------------------------------------------------------

// Conversation is one FSM record.
type Conversation struct {
	Key   string
	Flow  string
	State string
	// Data is a compact JSON object with keys in sorted order; "{}" when empty.
	Data      []byte
	Version   int64 // 1 after the first write, +1 on every write
	UpdatedAt time.Time
	ExpiresAt time.Time
}

// ConversationWrite carries what every conversation write needs. Every write
// sets UpdatedAt to Now and ExpiresAt to the given value, covering state and
// data together.
type ConversationWrite struct {
	Key       string
	Now       time.Time
	ExpiresAt time.Time
}

// Conversations is FSM state storage.
type Conversations interface {
	// GetConversation returns the conversation, or false when absent.
	GetConversation(ctx context.Context, ns, key string, now time.Time) (Conversation, bool, error)
	// SetConversationState sets the state (and the flow when setFlow),
	// keeping data; an absent conversation is created with data "{}".
	SetConversationState(ctx context.Context, ns string, w ConversationWrite, flow string, setFlow bool, state string) (Conversation, error)
	// SetConversationData replaces data, keeping flow and state.
	SetConversationData(ctx context.Context, ns string, w ConversationWrite, data []byte) (Conversation, error)
	// MergeConversationData merges the top-level keys of patch into data
	// (patch wins; see MergeObjects) in one atomic step and returns the
	// result. When the merged data would be over maxSize bytes (DataSize;
	// zero is no limit), it returns ErrTooLarge (CheckMergedSize) and
	// changes nothing: the check is part of the atomic step.
	MergeConversationData(ctx context.Context, ns string, w ConversationWrite, patch []byte, maxSize int) (Conversation, error)
	// SwapConversation writes next's flow, state and data if the stored
	// version equals version (0: the conversation must be absent), else
	// returns ErrConflict and changes nothing.
	SwapConversation(ctx context.Context, ns string, w ConversationWrite, version int64, next Conversation) (Conversation, error)
	// DeleteConversation removes it; absent is not an error.
	DeleteConversation(ctx context.Context, ns, key string) error
}

// ---- Threads, channel memory, cache --------------------------------------

// Subscription is a followed thread.
type Subscription struct {
	Thread    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Scope says which map a Doc belongs to.
type Scope uint8

// Doc scopes.
const (
	ScopeThread  Scope = 1
	ScopeChannel Scope = 2
)

// Doc is a JSON object kept per thread or per channel.
type Doc struct {
	ID        string
	Data      []byte // compact JSON object, keys sorted
	UpdatedAt time.Time
	ExpiresAt time.Time
}

// Threads holds subscriptions, thread and channel state, and the cache.
// Cache values and cache lists are separate keyspaces: the same key may name
// both, and CacheDelete removes both.
type Threads interface {
	// Subscribe creates or refreshes a subscription (CreatedAt is kept on
	// refresh of a live one).
	Subscribe(ctx context.Context, ns, thread string, now, expiresAt time.Time) error
	// Unsubscribe removes it; absent is not an error.
	Unsubscribe(ctx context.Context, ns, thread string) error
	// IsSubscribed reports a live subscription.
	IsSubscribed(ctx context.Context, ns, thread string, now time.Time) (bool, error)
	// ListSubscriptions returns up to limit live subscriptions whose thread
	// sorts (bytewise) after after, in ascending order.
	ListSubscriptions(ctx context.Context, ns, after string, limit int, now time.Time) ([]Subscription, error)

	// GetDoc returns the doc, or false when absent.
	GetDoc(ctx context.Context, ns string, scope Scope, id string, now time.Time) (Doc, bool, error)
	// PutDoc replaces the doc.
	PutDoc(ctx context.Context, ns string, scope Scope, id string, data []byte, now, expiresAt time.Time) error
	// MergeDoc merges patch into the doc (created when absent) atomically,
	// bounded by maxSize as MergeConversationData is.
	MergeDoc(ctx context.Context, ns string, scope Scope, id string, patch []byte, maxSize int, now, expiresAt time.Time) (Doc, error)
	// DeleteDoc removes it; absent is not an error.
	DeleteDoc(ctx context.Context, ns string, scope Scope, id string) error

	// CacheGet returns a cache value, or false when absent.
	CacheGet(ctx context.Context, ns, key string, now time.Time) ([]byte, bool, error)
	// CacheSet stores value. With onlyIfAbsent it writes only when no live
	// value exists, and reports whether it wrote.
	CacheSet(ctx context.Context, ns, key string, value []byte, now, expiresAt time.Time, onlyIfAbsent bool) (bool, error)
	// CacheDelete removes the value and the list stored under key.
	CacheDelete(ctx context.Context, ns, key string) error
	// ListAppend appends value to the list, trims it to its newest maxLen
	// entries, sets the list's expiry, and returns the new length.
	ListAppend(ctx context.Context, ns, key string, value []byte, maxLen int, now, expiresAt time.Time) (int, error)
	// ListRange returns the whole list, oldest first; nil when absent.
	ListRange(ctx context.Context, ns, key string, now time.Time) ([][]byte, error)
}

// ---- Locks ------------------------------------------------------------------

// Strategy says what Acquire does when the lock is held.
type Strategy uint8

// Lock strategies.
const (
	// Reject answers Busy.
	Reject Strategy = 1
	// Queue appends the entry to the lock's FIFO and answers Queued.
	Queue Strategy = 2
	// Debounce replaces every pending entry with this one: Debounced.
	Debounce Strategy = 3
	// Concurrent always adds a holder, up to MaxHolders when set.
	Concurrent Strategy = 4
)

// String returns the strategy's name: reject, queue, debounce, concurrent.
func (s Strategy) String() string {
	switch s {
	case Reject:
		return "reject"
	case Queue:
		return "queue"
	case Debounce:
		return "debounce"
	case Concurrent:
		return "concurrent"
	}
	return "invalid"
}

// Entry is a pending message waiting on a lock.
type Entry struct {
	Payload    []byte    `json:"payload,omitempty"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
}

// Holder is one holder of a lock.
type Holder struct {
	Owner      string    `json:"owner"`
	Token      uint64    `json:"token"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	// Entry is the entry the holder is handling: its own from Acquire, or
	// the one Acquire or Handover gave it. When the holder lapses, a live
	// Entry goes back to the front of the queue.
	Entry *Entry `json:"entry,omitempty"`
}

// LockState is a lock as stored: live holders, live pending entries, and the
// highest fencing token ever issued for the key.
type LockState struct {
	Key     string
	Holders []Holder
	Pending []Entry
	// Skipped holds, oldest first and at most MaxSkipped, the entries that
	// left the queue without being given to a holder: dropped by a full
	// queue, refused by drop-newest, replaced by a debounce, or lapsed.
	// The next holder given an entry receives them, and they are cleared.
	Skipped []Entry
	Fence   uint64
	// ExpiresAt is when an idle record (no holder, no entry) may be dropped.
	ExpiresAt time.Time
}

// MaxSkipped is the most skipped entries a lock record keeps.
const MaxSkipped = 100

// AcquireRequest is one Acquire call.
type AcquireRequest struct {
	Key      string
	Owner    string
	Strategy Strategy
	Entry    []byte
	Now      time.Time
	// ExpiresAt is the new holder's lease end.
	ExpiresAt time.Time
	// MaxHolders caps Concurrent holders; zero means no cap.
	MaxHolders int
	// QueueMax caps the Queue FIFO; zero means no cap.
	QueueMax int
	// DropNewest, when the queue is full, refuses the new entry (Busy)
	// instead of dropping the oldest one.
	DropNewest bool
	// EntryExpiresAt is when a queued or debounced entry lapses.
	EntryExpiresAt time.Time
	// IdleExpiresAt is how long a record with no holder and no entry keeps
	// its fence after this call's changes; see NextFence.
	IdleExpiresAt time.Time
	// NoEntry makes the call a TakeOver: the caller brings no entry of its
	// own; it is granted a free lock (with the oldest pending entry as
	// Next, if any) and answered Busy when the lock is held.
	NoEntry bool
	// QueueWhenFull makes Concurrent queue the entry, as Queue does, when
	// MaxHolders hold the lock, instead of answering Busy.
	QueueWhenFull bool
}

// AcquireOutcome is what Acquire did.
type AcquireOutcome uint8

// Acquire outcomes.
const (
	Acquired  AcquireOutcome = 1
	Queued    AcquireOutcome = 2
	Debounced AcquireOutcome = 3
	Busy      AcquireOutcome = 4
)

// String returns the outcome's name: acquired, queued, debounced, busy.
func (o AcquireOutcome) String() string {
	switch o {
	case Acquired:
		return "acquired"
	case Queued:
		return "queued"
	case Debounced:
		return "debounced"
	case Busy:
		return "busy"
	}
	return "invalid"
}

// AcquireReply is the outcome, the new holder when Acquired, and the entries
// dropped to make room (drop-oldest) or replaced (debounce) by this call.
type AcquireReply struct {
	Outcome AcquireOutcome
	Holder  Holder
	Dropped []Entry
	// Next, when Acquired, is a pending entry the new holder must handle
	// first (the lock was free with entries waiting; the caller's own entry
	// joined the back of the queue).
	Next *Entry
	// Skipped, when Acquired, are the lock's skipped entries, now cleared.
	Skipped []Entry
}

// HandoverReply is the outcome of HandoverLock.
type HandoverReply struct {
	// Held reports that the caller still holds the lock.
	Held bool
	// Next is the entry popped for the caller, if any.
	Next   *Entry
	Holder Holder
	// Skipped, when Held, are the lock's skipped entries, now cleared.
	Skipped []Entry
}

// Locks is per-key mutual exclusion with pending entries.
//
// The rules are those of PruneLock and the Apply functions in logic.go, which
// every backend follows: a holder whose ExpiresAt is at or before now is
// gone (its own Extend, Release and Handover get ErrNotOwner) and its live
// entry returns to the front of the queue; lapsed pending entries move to
// Skipped; whoever is granted a lock with entries waiting handles the
// oldest first.
type Locks interface {
	// Acquire applies the request's strategy atomically (ApplyAcquire). A
	// new holder's token is NextFence(stored fence, now).
	Acquire(ctx context.Context, ns string, r AcquireRequest) (AcquireReply, error)
	// ExtendLock moves the live holder's lease end to expiresAt.
	ExtendLock(ctx context.Context, ns, key string, token uint64, now, expiresAt time.Time) (Holder, error)
	// ReleaseLock removes the live holder with token and, when no holder
	// remains and keepPending is false, removes and returns every live
	// pending entry in arrival order. With keepPending the holder leaves as
	// if it lapsed now (its live Entry goes back to the front of the queue)
	// and the entries stay queued for whoever takes the lock next
	// (ApplyRelease).
	ReleaseLock(ctx context.Context, ns, key string, token uint64, now, idleExpiresAt time.Time, keepPending bool) ([]Entry, error)
	// ForceReleaseLock removes every holder and returns every live pending
	// entry in arrival order; absent is not an error.
	ForceReleaseLock(ctx context.Context, ns, key string, now, idleExpiresAt time.Time) ([]Entry, error)
	// HandoverLock, for the live holder with token: if an entry is pending,
	// pops the oldest, makes it the holder's Entry, moves the lease end to
	// expiresAt and returns it with Held true; otherwise releases the lock
	// (Held false) or, with keep, only moves the lease end (Held true, Next
	// nil). In one atomic step, so no entry can arrive in between and be
	// stranded (ApplyHandover).
	HandoverLock(ctx context.Context, ns, key string, token uint64, now, expiresAt, idleExpiresAt time.Time, keep bool) (HandoverReply, error)
	// InspectLock returns the lock as stored (pruned at now), or false when
	// there is no record.
	InspectLock(ctx context.Context, ns, key string, now time.Time) (LockState, bool, error)
	// LapsedLocks lists up to limit locks with no live holder and at least
	// one live pending entry (after PruneLock at now, so a lapsed holder's
	// entry counts), in key order, so a sweeper can take them over.
	LapsedLocks(ctx context.Context, ns string, now time.Time, limit int) ([]LockState, error)
}

// NextFence is the fencing token for a new holder: one more than the highest
// ever issued for the key, and never below the clock in microseconds, so that
// tokens keep growing even after an idle record was dropped.
func NextFence(stored uint64, now time.Time) uint64 {
	floor := uint64(max(now.UnixMicro(), 0))
	if stored+1 > floor {
		return stored + 1
	}
	return floor
}

// ---- Incidents --------------------------------------------------------------

// AlertRecord is a stored alert.
type AlertRecord struct {
	Channel   string
	UniqueID  string
	Timestamp time.Time
	Body      []byte // kept byte for byte
	ExpiresAt time.Time
}

// IssueRecord is a stored issue, identified by (Channel, UniqueID).
type IssueRecord struct {
	Channel       string
	UniqueID      string
	CorrelationID string
	PostID        string
	Open          bool
	Body          []byte // kept byte for byte
	ExpiresAt     time.Time
}

// MoveMappingRecord is a stored move mapping, identified by
// (Channel, CorrelationID).
type MoveMappingRecord struct {
	Channel       string
	CorrelationID string
	UniqueID      string
	Body          []byte
}

// Incidents is the alert manager's store. Identifiers are exact strings:
// a lookup for channel "C1" never matches "C12", nor correlation "abc" "abcd".
type Incidents interface {
	// SaveAlert creates or replaces the alert (Channel, UniqueID).
	SaveAlert(ctx context.Context, ns string, a AlertRecord) error
	// SaveIssues creates or replaces each issue.
	SaveIssues(ctx context.Context, ns string, issues []IssueRecord) error
	// MoveIssue, atomically, removes (source, issue.UniqueID) if present and
	// saves issue (whose Channel is the target).
	MoveIssue(ctx context.Context, ns string, issue IssueRecord, source string) error
	// FindOpenIssues returns every live open issue in channel with the
	// correlation id.
	FindOpenIssues(ctx context.Context, ns, channel, correlationID string, now time.Time) ([]IssueRecord, error)
	// FindIssuesByPostID returns every live issue in channel with the post id.
	FindIssuesByPostID(ctx context.Context, ns, channel, postID string, now time.Time) ([]IssueRecord, error)
	// ActiveChannels returns, sorted and once each, the channels holding at
	// least one open issue.
	ActiveChannels(ctx context.Context, ns string, now time.Time) ([]string, error)
	// OpenIssuesInChannel returns every open issue in channel.
	OpenIssuesInChannel(ctx context.Context, ns, channel string, now time.Time) ([]IssueRecord, error)
	// SaveMoveMapping creates or replaces the mapping.
	SaveMoveMapping(ctx context.Context, ns string, m MoveMappingRecord) error
	// FindMoveMapping returns the mapping body, or false when absent.
	FindMoveMapping(ctx context.Context, ns, channel, correlationID string) ([]byte, bool, error)
	// DeleteMoveMapping removes it; absent is not an error.
	DeleteMoveMapping(ctx context.Context, ns, channel, correlationID string) error
	// SaveProcessingState creates or replaces a channel's processing state.
	SaveProcessingState(ctx context.Context, ns, channel string, body []byte) error
	// FindProcessingState returns it, or false when absent.
	FindProcessingState(ctx context.Context, ns, channel string) ([]byte, bool, error)
	// DropIncidents deletes every alert, issue, mapping and processing state
	// of the namespace.
	DropIncidents(ctx context.Context, ns string) error
}

// ---- Snapshots ---------------------------------------------------------------

// Snapshots streams state out and loads it back.
type Snapshots interface {
	// Export calls emit once per live item of namespace ns (every namespace
	// when ns is empty), in any order.
	Export(ctx context.Context, ns string, now time.Time, emit func(*Record) error) error
	// Import creates or replaces every record; records are already
	// validated. A backend that can do so applies them in one transaction.
	Import(ctx context.Context, recs []Record) error
}

// Browser is optional: a driver that has it lists one kind of a
// namespace's records in key order, a page at a time, reading little more
// than the page. The dashboard of `botstate serve` uses it; for a driver
// without it, the dashboard reads its pages from Export, which costs a walk
// of the namespace per page.
type Browser interface {
	// Browse returns up to limit live records of kind (KindConversation or
	// KindLock; other kinds are ErrInvalidArgument) of namespace ns whose
	// key sorts after after, in key order. Locks are pruned at now (as
	// Export gives them), and a lock neither held nor with entries queued
	// is left out.
	Browse(ctx context.Context, ns string, kind Kind, after string, limit int, now time.Time) ([]Record, error)
}
