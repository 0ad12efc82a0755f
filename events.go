package botstate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/botstate/botstate/driver"
)

// Events is exactly-once event processing for one namespace, in two modes.
//
// One-shot: Record marks a key seen and says whether it was new, in one
// atomic step; a crash after Record loses the event, as with SET NX.
//
// Safe: Claim takes a lease on the key; Heartbeat (or Extend) keeps it while
// the handler runs; Complete stores the handler's result; Release or
// ReleaseAfter gives the event back when the handler failed, Fail parks it.
// A worker that died leaves a lapsed lease; Due lists lapsed claims and
// released events whose retry time came, and Reclaim (or the next Claim of a
// redelivery) takes one over. Complete, Extend and the releases are fenced
// by the claim's token: a worker whose lease was taken over gets ErrNotOwner.
// An event claimed more than the store's maximum attempts (WithMaxAttempts,
// default 5) is parked as failed: kept, listed by Failed, claimed by nobody
// until Retry.
//
// Keys are remembered for the store's event window after they are recorded,
// claimed or completed (default 24 h), and, with WithEventLimit, at most that
// many per namespace, oldest forgotten first.
type Events struct{ s *Store }

// Events returns the namespace's events.
func (s *Store) Events() *Events { return &Events{s} }

// EventStatus is where an event stands: EventRecorded, EventClaimed,
// EventReleased or EventCompleted.
type EventStatus = driver.EventStatus

// Event statuses.
const (
	EventRecorded  = driver.EventRecorded
	EventClaimed   = driver.EventClaimed
	EventReleased  = driver.EventReleased
	EventCompleted = driver.EventCompleted
	EventFailed    = driver.EventFailed
)

// Event is a remembered event key, as Pending, Expired and Get return it.
type Event = driver.Event

// RecordResult is what Record found.
type RecordResult uint8

// Record results.
const (
	// RecordNew: the key was not known; it is now. Handle the event.
	RecordNew RecordResult = 1
	// RecordDuplicate: the key was known; nothing was changed. Skip it.
	RecordDuplicate RecordResult = 2
)

func (r RecordResult) String() string {
	switch r {
	case RecordNew:
		return "new"
	case RecordDuplicate:
		return "duplicate"
	}
	return "invalid"
}

// ClaimStatus is what Claim found.
type ClaimStatus uint8

// Claim statuses.
const (
	// Claimed: the caller holds the event until the lease ends. Run the
	// handler, then Complete or Release with the token.
	Claimed ClaimStatus = 1
	// InProgress: another worker holds a live lease, or the key was recorded
	// in one-shot mode. Do not handle it.
	InProgress ClaimStatus = 2
	// Completed: handled already; Result holds what the handler stored.
	Completed ClaimStatus = 3
	// Failed: the event is parked as failed (its attempts ran out, or Fail
	// parked it); LastError says why. Retry makes it claimable again.
	Failed ClaimStatus = 4
)

func (c ClaimStatus) String() string {
	switch c {
	case Claimed:
		return "claimed"
	case InProgress:
		return "in_progress"
	case Completed:
		return "completed"
	case Failed:
		return "failed"
	}
	return "invalid"
}

// EventToken identifies one claim of one key. It is comparable and can be
// sent to another process (Key and ID are plain strings).
type EventToken struct {
	Key string
	ID  string
}

// Claim is the outcome of Claim or Reclaim.
type Claim struct {
	Status ClaimStatus
	// Token is set when Status is Claimed.
	Token EventToken
	// LeaseUntil is when the claim lapses, when Status is Claimed.
	LeaseUntil time.Time
	// Result is the stored result, when Status is Completed.
	Result []byte
	// LastError is why the event was last released or failed.
	LastError string
	// Attempts counts the claims of this key so far, this one included
	// (a claim given back with Defer does not count).
	Attempts int
}

// Record marks key seen with payload, atomically: RecordNew if the key was
// unknown, RecordDuplicate (and nothing changed, the first payload kept) if
// it was known in any status.
func (e *Events) Record(ctx context.Context, key string, payload []byte) (RecordResult, error) {
	const op = "Events.Record"
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return 0, err
	}
	if err := checkKey(op, "event key", key); err != nil {
		return 0, err
	}
	if err := s.checkSize(op, "payload", payload); err != nil {
		return 0, err
	}
	now := s.now()
	ok, err := s.core.drv.RecordEvent(ctx, s.ns, driver.EventWrite{
		Key: key, Payload: payload, Now: now, ExpiresAt: after(now, s.core.cfg.eventWindow), Limit: s.core.cfg.eventLimit,
	})
	if err != nil {
		return 0, wrap(op, err)
	}
	if ok {
		return RecordNew, nil
	}
	return RecordDuplicate, nil
}

// Seen reports whether key is remembered, in any status.
func (e *Events) Seen(ctx context.Context, key string) (bool, error) {
	_, err := e.Get(ctx, key)
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, err
}

// Get returns the remembered event, or ErrNotFound.
func (e *Events) Get(ctx context.Context, key string) (Event, error) {
	const op = "Events.Get"
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return Event{}, err
	}
	if err := checkKey(op, "event key", key); err != nil {
		return Event{}, err
	}
	ev, ok, err := s.core.drv.LookupEvent(ctx, s.ns, key, s.now())
	if err != nil {
		return Event{}, wrap(op, err)
	}
	if !ok {
		return Event{}, &Error{Op: op, Msg: "event " + strconv.Quote(key), Err: ErrNotFound}
	}
	return ev, nil
}

// Forget deletes key in any status, so that it counts as new again. Absent
// is not an error.
func (e *Events) Forget(ctx context.Context, key string) error {
	const op = "Events.Forget"
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "event key", key); err != nil {
		return err
	}
	return wrap(op, s.core.drv.ForgetEvent(ctx, s.ns, key))
}

// Claim takes key for lease, atomically. It succeeds (Claimed, with a token)
// when the key is unknown, was released and its retry time came, or its
// previous lease lapsed; it reports InProgress while another lease is live or
// a released event waits for its retry time, Completed, with the result, once
// the event was completed, and Failed once it was parked. A takeover that
// would exceed the store's maximum attempts parks the event and reports
// Failed. The first payload given for a key is the one kept.
func (e *Events) Claim(ctx context.Context, key string, payload []byte, lease time.Duration) (Claim, error) {
	return e.claim(ctx, "Events.Claim", key, payload, lease, false, "")
}

// Reclaim takes over key for lease if its claim lapsed or it was released
// (whatever its retry time: Reclaim is the explicit call), with a new token;
// it never creates a key (ErrNotFound) and reports InProgress, Completed or
// Failed like Claim. It is how a recovery loop re-drives what Due lists.
func (e *Events) Reclaim(ctx context.Context, key string, lease time.Duration) (Claim, error) {
	return e.claim(ctx, "Events.Reclaim", key, nil, lease, true, "")
}

// TakeOver takes the live claim tok holds for lease with a new token: the
// claim's holder handed tok over (a queued message's claim passes to the
// worker that handles it), so the attempt count does not grow and tok stops
// working. When tok's lease lapsed (its holder died trying) or tok no
// longer holds the event, TakeOver acts as Reclaim.
func (e *Events) TakeOver(ctx context.Context, tok EventToken, lease time.Duration) (Claim, error) {
	const op = "Events.TakeOver"
	if err := e.checkToken(op, tok); err != nil {
		return Claim{}, err
	}
	return e.claim(ctx, op, tok.Key, nil, lease, true, tok.ID)
}

func (e *Events) claim(ctx context.Context, op, key string, payload []byte, lease time.Duration, existing bool, holder string) (Claim, error) {
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return Claim{}, err
	}
	if err := checkKey(op, "event key", key); err != nil {
		return Claim{}, err
	}
	if err := s.checkSize(op, "payload", payload); err != nil {
		return Claim{}, err
	}
	if err := checkTTL(op, "lease", lease, false); err != nil {
		return Claim{}, err
	}
	now := s.now()
	leaseUntil := after(now, lease)
	// The claim's lease starts now; whether another owner's lease lapsed
	// (or a released event's retry time came) is judged with the margin.
	req := driver.ClaimRequest{
		EventWrite: driver.EventWrite{Key: key, Payload: payload, Now: s.judged(now),
			ExpiresAt: after(leaseUntil, s.core.cfg.eventWindow), Limit: s.core.cfg.eventLimit},
		LeaseUntil: leaseUntil, Existing: existing, Holder: holder, MaxAttempts: s.core.cfg.maxAttempts,
	}
	if s.core.lazyTokens {
		req.MintToken = s.core.mintToken
	} else {
		req.Token = s.core.newToken()
	}
	rep, err := s.core.drv.ClaimEvent(ctx, s.ns, req)
	if err != nil {
		return Claim{}, wrap(op, err)
	}
	c := Claim{Attempts: rep.Event.Attempts}
	switch rep.Outcome {
	case driver.ClaimAcquired:
		token := req.Token
		if token == "" {
			token = rep.Event.Token
		}
		c.Status, c.Token, c.LeaseUntil = Claimed, EventToken{Key: key, ID: token}, leaseUntil
	case driver.ClaimInProgress:
		c.Status = InProgress
	case driver.ClaimCompleted:
		c.Status, c.Result = Completed, rep.Event.Result
	case driver.ClaimFailed:
		c.Status, c.LastError = Failed, rep.Event.LastError
	default:
		return Claim{}, &Error{Op: op, Msg: "backend returned an unknown claim outcome", Err: ErrUnavailable}
	}
	return c, nil
}

func (e *Events) checkToken(op string, tok EventToken) error {
	if err := checkKey(op, "event key", tok.Key); err != nil {
		return err
	}
	if tok.ID == "" || len(tok.ID) > MaxKeyLen {
		return invalid(op, "token id is empty or too long")
	}
	return nil
}

// Complete marks the claimed event done and stores result (which Claim then
// returns to every later caller). It returns ErrNotOwner, changing nothing,
// when tok no longer holds the claim: another worker took it over, or it was
// completed, released or forgotten. A lease that lapsed without being taken
// over still completes.
func (e *Events) Complete(ctx context.Context, tok EventToken, result []byte) error {
	const op = "Events.Complete"
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := e.checkToken(op, tok); err != nil {
		return err
	}
	if err := s.checkSize(op, "result", result); err != nil {
		return err
	}
	now := s.now()
	return wrap(op, s.core.drv.CompleteEvent(ctx, s.ns, tok.Key, tok.ID, result, now, after(now, s.core.cfg.eventWindow)))
}

// Extend moves the claim's lease end to lease from now and returns it. It
// returns ErrNotOwner, changing nothing, when tok no longer holds the claim;
// a lease that lapsed without being taken over can still be extended.
func (e *Events) Extend(ctx context.Context, tok EventToken, lease time.Duration) (time.Time, error) {
	const op = "Events.Extend"
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return time.Time{}, err
	}
	if err := e.checkToken(op, tok); err != nil {
		return time.Time{}, err
	}
	if err := checkTTL(op, "lease", lease, false); err != nil {
		return time.Time{}, err
	}
	now := s.now()
	leaseUntil := after(now, lease)
	err := s.core.drv.ExtendEvent(ctx, s.ns, tok.Key, tok.ID, now, leaseUntil, after(leaseUntil, s.core.cfg.eventWindow))
	if err != nil {
		return time.Time{}, wrap(op, err)
	}
	return leaseUntil, nil
}

// ErrClaimLost is the cause of a claim heartbeat's context cancellation when
// the claim was lost (taken over, or not renewed before its lease ended).
var ErrClaimLost = fmt.Errorf("%w: claim lost", ErrNotOwner)

// ClaimHeartbeat keeps a claim alive while a handler runs.
type ClaimHeartbeat struct{ k *keeper[Claim] }

// Heartbeat renews the claim c (as Claim, Reclaim or TakeOver returned it)
// to lease from now every lease/3 until Stop, and returns a context derived
// from ctx that is cancelled, with cause ErrClaimLost, as soon as the claim
// is known lost: taken over by another worker, or not renewed before its
// lease ended. Run the handler under it, so a long handler is never run
// twice because its lease lapsed, and never goes on after losing its claim.
func (e *Events) Heartbeat(ctx context.Context, c Claim, lease time.Duration) (context.Context, *ClaimHeartbeat) {
	const op = "Events.Heartbeat"
	err := e.s.begin(ctx, op)
	if err == nil && c.Status != Claimed {
		err = invalid(op, "claim status is %v, not claimed", c.Status)
	}
	if err == nil {
		err = e.checkToken(op, c.Token)
	}
	if err == nil {
		err = checkTTL(op, "lease", lease, false)
	}
	hctx, k := startKeeper(ctx, err, c, c.LeaseUntil, lease, ErrClaimLost,
		func(ctx context.Context, cur Claim) (Claim, time.Time, error) {
			until, err := e.Extend(ctx, cur.Token, lease)
			cur.LeaseUntil = until
			return cur, until, err
		}, e.s.now)
	return hctx, &ClaimHeartbeat{k}
}

// Stop ends the renewals and returns the claim as last renewed, or the
// error that ended them (wrapping ErrClaimLost when the claim was lost,
// ErrInvalidArgument when the claim or lease was refused at the start).
func (hb *ClaimHeartbeat) Stop() (Claim, error) { return hb.k.stop() }

// Release gives the claimed event back (the handler failed), due at once:
// the next Claim or Reclaim takes it. Fenced like Complete. When the event
// used its last attempt (WithMaxAttempts) it is parked as failed instead.
func (e *Events) Release(ctx context.Context, tok EventToken) error {
	return e.release(ctx, "Events.Release", tok, 0, "", false, false)
}

// ReleaseAfter gives the claimed event back to be retried after delay:
// until then Claim answers InProgress and Due leaves it out. reason (the
// handler's error, say) is kept as the event's LastError. Fenced like
// Complete; an event that used its last attempt is parked as failed.
func (e *Events) ReleaseAfter(ctx context.Context, tok EventToken, delay time.Duration, reason string) error {
	return e.release(ctx, "Events.ReleaseAfter", tok, delay, reason, false, false)
}

// Fail parks the claimed event as failed at once (the handler knows a retry
// cannot help), with reason as its LastError: it is kept, listed by Failed,
// and claimed by nobody until Retry. Fenced like Complete.
func (e *Events) Fail(ctx context.Context, tok EventToken, reason string) error {
	return e.release(ctx, "Events.Fail", tok, 0, reason, true, false)
}

// Defer gives the claim back without counting it as an attempt: the caller
// claimed the event to deduplicate it but hands it to someone else (a queue)
// instead of handling it. Claim answers InProgress until delay has passed,
// while Reclaim and TakeOver may take it at any time; after delay, Due lists
// it. Its LastError reads DeferredReason. Fenced like Complete.
func (e *Events) Defer(ctx context.Context, tok EventToken, delay time.Duration) error {
	return e.release(ctx, "Events.Defer", tok, delay, DeferredReason, false, true)
}

// DeferredReason is the LastError of an event given back with Defer.
const DeferredReason = "deferred"

// MaxReasonLen is the longest LastError kept, in bytes; a longer reason is
// cut at a character boundary.
const MaxReasonLen = 1024

func cleanReason(r string) string {
	r = strings.ToValidUTF8(r, "\uFFFD")
	if len(r) <= MaxReasonLen {
		return r
	}
	cut := MaxReasonLen
	for cut > 0 && !utf8.RuneStart(r[cut]) {
		cut--
	}
	return r[:cut]
}

func (e *Events) release(ctx context.Context, op string, tok EventToken, delay time.Duration, reason string, fail, deferred bool) error {
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := e.checkToken(op, tok); err != nil {
		return err
	}
	if err := checkTTL(op, "delay", delay, true); err != nil {
		return err
	}
	now := s.now()
	retryAt := after(now, delay)
	return wrap(op, s.core.drv.ReleaseEvent(ctx, s.ns, driver.ReleaseRequest{
		Key: tok.Key, Token: tok.ID, Now: now, RetryAt: retryAt,
		ExpiresAt: after(now, delay+s.core.cfg.eventWindow), Reason: cleanReason(reason),
		Fail: fail, MaxAttempts: s.core.cfg.maxAttempts, Defer: deferred,
	}))
}

// Retry makes a failed event claimable again, due at once, with its attempts
// counted from zero. It returns ErrNotFound when the key is not remembered
// and ErrConflict, changing nothing, when the event is not failed.
func (e *Events) Retry(ctx context.Context, key string) error {
	const op = "Events.Retry"
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "event key", key); err != nil {
		return err
	}
	now := s.now()
	err := s.core.drv.RetryEvent(ctx, s.ns, key, now, after(now, s.core.cfg.eventWindow))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return &Error{Op: op, Msg: "event " + strconv.Quote(key), Err: ErrNotFound}
	case errors.Is(err, ErrConflict):
		return &Error{Op: op, Msg: "event " + strconv.Quote(key) + " is not failed", Err: ErrConflict}
	}
	return wrap(op, err)
}

// DefaultListLimit is what Pending, Expired and other listings return when
// asked for limit 0.
const DefaultListLimit = 100

// MaxListLimit is the most items one listing call returns.
const MaxListLimit = 10000

func checkLimit(op string, limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, invalid(op, "negative limit %d", limit)
	case limit == 0:
		return DefaultListLimit, nil
	case limit > MaxListLimit:
		return 0, invalid(op, "limit %d over %d", limit, MaxListLimit)
	}
	return limit, nil
}

// Expired lists up to limit claims whose lease lapsed (their worker died or
// hung), oldest first. Reclaim takes one over.
func (e *Events) Expired(ctx context.Context, limit int) ([]Event, error) {
	return e.list(ctx, "Events.Expired", limit, true, e.s.core.drv.ExpiredEvents)
}

// Due lists up to limit events to re-drive now, oldest first: claims whose
// lease lapsed and released events whose retry time came. Reclaim takes
// one over. It is the one listing a recovery loop needs.
func (e *Events) Due(ctx context.Context, limit int) ([]Event, error) {
	return e.list(ctx, "Events.Due", limit, true, e.s.core.drv.DueEvents)
}

// Failed lists up to limit events parked as failed, oldest first.
func (e *Events) Failed(ctx context.Context, limit int) ([]Event, error) {
	return e.list(ctx, "Events.Failed", limit, false, e.s.core.drv.FailedEvents)
}

// Pending lists up to limit events that are neither completed nor failed
// (recorded, claimed or released), oldest first.
func (e *Events) Pending(ctx context.Context, limit int) ([]Event, error) {
	return e.list(ctx, "Events.Pending", limit, false, e.s.core.drv.PendingEvents)
}

// list runs a listing; takeovers lists what may be taken over, judged
// with the clock skew margin.
func (e *Events) list(ctx context.Context, op string, limit int, takeovers bool, fn func(context.Context, string, time.Time, int) ([]Event, error)) ([]Event, error) {
	s := e.s
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	limit, err := checkLimit(op, limit)
	if err != nil {
		return nil, err
	}
	now := s.now()
	if takeovers {
		now = s.judged(now)
	}
	evs, err := fn(ctx, s.ns, now, limit)
	return evs, wrap(op, err)
}

// ---- platform keys ------------------------------------------------------------

// escapePart makes an id safe to join with ':' — '%' and ':' are
// percent-encoded — so that no id can make two joined keys collide.
func escapePart(s string) string {
	if !strings.ContainsAny(s, "%:") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '%':
			b.WriteString("%25")
		case ':':
			b.WriteString("%3A")
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// joinKey builds "prefix:part1:part2…" from escaped parts, refusing empty or
// malformed parts.
func joinKey(op, prefix string, names []string, parts ...string) (string, error) {
	var b strings.Builder
	b.WriteString(prefix)
	for i, p := range parts {
		if err := checkKey(op, names[i], p); err != nil {
			return "", err
		}
		b.WriteByte(':')
		b.WriteString(escapePart(p))
	}
	if b.Len() > MaxKeyLen {
		return "", tooLarge(op, "key is %d bytes, over the %d-byte limit", b.Len(), MaxKeyLen)
	}
	return b.String(), nil
}

// SlackEventKey is the event key of a Slack Events API delivery: its team and
// event id. Retries of one delivery share it.
func SlackEventKey(teamID, eventID string) (string, error) {
	return joinKey("SlackEventKey", "slack:event", []string{"team id", "event id"}, teamID, eventID)
}

// SlackMessageKey is the key of a Slack message by team, channel and ts.
// Slack sometimes sends one message again under a new event id; this key
// catches that where SlackEventKey cannot.
func SlackMessageKey(teamID, channelID, ts string) (string, error) {
	return joinKey("SlackMessageKey", "slack:message", []string{"team id", "channel id", "ts"}, teamID, channelID, ts)
}

// SocketModeKey is the key of a Slack Socket Mode envelope.
func SocketModeKey(envelopeID string) (string, error) {
	return joinKey("SocketModeKey", "slack:envelope", []string{"envelope id"}, envelopeID)
}

// TelegramUpdateKey is the key of a Telegram update: update ids are unique
// per bot only, so the bot id is part of it.
func TelegramUpdateKey(botID, updateID int64) (string, error) {
	return joinKey("TelegramUpdateKey", "telegram:update", []string{"bot id", "update id"},
		strconv.FormatInt(botID, 10), strconv.FormatInt(updateID, 10))
}

// DiscordMessageKey is the key of a Discord message (snowflake ids are
// globally unique).
func DiscordMessageKey(messageID string) (string, error) {
	return joinKey("DiscordMessageKey", "discord:message", []string{"message id"}, messageID)
}
