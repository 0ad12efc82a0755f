// Package wire is the HTTP API's vocabulary, shared by the server and the
// Go client: one operation per driver method, each a POST of a JSON request
// to /v1/ns/{ns}/{name} answered by a JSON response (the snapshot
// operations stream NDJSON instead). Items travel as snapshot records
// (driver.Record), the one JSON form every kind already has; binary values
// are base64 strings; bodies that must keep their bytes are strings.
//
// Times are RFC 3339 with their fraction. A request's "now" is the instant
// its expiry and lease decisions are made at; omitted, the server's clock
// decides. Every other time is as given: a zero or omitted expiry means
// never.
package wire

import (
	"encoding/json"
	"reflect"
	"time"

	"github.com/botstate/botstate/driver"
)

// Op is one operation of the API.
type Op struct {
	// Name is the path below /v1/ns/{ns}/, and the operationId's base.
	Name    string
	Summary string
	// Req and Resp are the request and response types.
	Req, Resp reflect.Type
	// Stream marks the snapshot operations: an NDJSON body (import) or
	// response (export) instead of JSON.
	Stream bool
}

func op[Req, Resp any](name, summary string) Op {
	return Op{Name: name, Summary: summary, Req: reflect.TypeFor[Req](), Resp: reflect.TypeFor[Resp]()}
}

// Empty is the response of operations that answer nothing but success.
type Empty struct{}

// ---- events ----

type RecordReq struct {
	Key       string    `json:"key"`
	Payload   []byte    `json:"payload,omitempty"`
	Now       time.Time `json:"now,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Limit     int       `json:"limit,omitempty"`
}

type RecordResp struct {
	New bool `json:"new"`
}

type KeyReq struct {
	Key string `json:"key"`
}

type KeyNowReq struct {
	Key string    `json:"key"`
	Now time.Time `json:"now,omitzero"`
}

// ItemResp is a lookup's answer: the item as a record, when found.
type ItemResp struct {
	Found bool           `json:"found"`
	Item  *driver.Record `json:"item,omitempty"`
}

type ClaimReq struct {
	Key         string    `json:"key"`
	Payload     []byte    `json:"payload,omitempty"`
	Now         time.Time `json:"now,omitzero"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	Limit       int       `json:"limit,omitempty"`
	Token       string    `json:"token"`
	LeaseUntil  time.Time `json:"lease_until"`
	Existing    bool      `json:"existing,omitempty"`
	Holder      string    `json:"holder,omitempty"`
	MaxAttempts int       `json:"max_attempts,omitempty"`
}

type ClaimResp struct {
	// Outcome is "acquired", "in_progress", "completed" or "failed".
	Outcome string        `json:"outcome"`
	Event   driver.Record `json:"event"`
}

type CompleteReq struct {
	Key       string    `json:"key"`
	Token     string    `json:"token"`
	Result    []byte    `json:"result,omitempty"`
	Now       time.Time `json:"now,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

type ExtendEventReq struct {
	Key        string    `json:"key"`
	Token      string    `json:"token"`
	Now        time.Time `json:"now,omitzero"`
	LeaseUntil time.Time `json:"lease_until"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
}

type ReleaseEventReq struct {
	Key         string    `json:"key"`
	Token       string    `json:"token"`
	Now         time.Time `json:"now,omitzero"`
	RetryAt     time.Time `json:"retry_at,omitzero"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	Reason      string    `json:"reason,omitempty"`
	Fail        bool      `json:"fail,omitempty"`
	MaxAttempts int       `json:"max_attempts,omitempty"`
	Defer       bool      `json:"defer,omitempty"`
}

type RetryEventReq struct {
	Key       string    `json:"key"`
	Now       time.Time `json:"now,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

type ListReq struct {
	Now   time.Time `json:"now,omitzero"`
	Limit int       `json:"limit"`
}

// ItemsResp is a listing's answer.
type ItemsResp struct {
	Items []driver.Record `json:"items"`
}

// ---- conversations ----

type SetStateReq struct {
	Key       string    `json:"key"`
	Now       time.Time `json:"now,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Flow      string    `json:"flow,omitempty"`
	SetFlow   bool      `json:"set_flow,omitempty"`
	State     string    `json:"state"`
}

type SetDataReq struct {
	Key       string          `json:"key"`
	Now       time.Time       `json:"now,omitzero"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
	Data      json.RawMessage `json:"data"`
}

// MergeDataReq is a merge into a conversation's data. MaxSize, when
// positive, is the most bytes the merged data may take as stored (compact
// JSON): a merge whose result would be bigger is refused (413) and changes
// nothing. The server's own limit applies whatever MaxSize says.
type MergeDataReq struct {
	Key       string          `json:"key"`
	Now       time.Time       `json:"now,omitzero"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
	Data      json.RawMessage `json:"data"`
	MaxSize   int             `json:"max_size,omitempty"`
}

type SwapReq struct {
	Key       string          `json:"key"`
	Now       time.Time       `json:"now,omitzero"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
	Version   int64           `json:"version"`
	Flow      string          `json:"flow,omitempty"`
	State     string          `json:"state,omitempty"`
	Data      json.RawMessage `json:"data"`
}

// ---- threads, docs, cache ----

type SubscribeReq struct {
	Thread    string    `json:"thread"`
	Now       time.Time `json:"now,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

type ThreadReq struct {
	Thread string    `json:"thread"`
	Now    time.Time `json:"now,omitzero"`
}

type BoolResp struct {
	Value bool `json:"value"`
}

type ListSubscriptionsReq struct {
	After string    `json:"after,omitempty"`
	Limit int       `json:"limit"`
	Now   time.Time `json:"now,omitzero"`
}

// DocReq names a thread's or a channel's state: Scope is "thread" or
// "channel".
type DocReq struct {
	Scope string    `json:"scope"`
	ID    string    `json:"id"`
	Now   time.Time `json:"now,omitzero"`
}

type PutDocReq struct {
	Scope     string          `json:"scope"`
	ID        string          `json:"id"`
	Data      json.RawMessage `json:"data"`
	Now       time.Time       `json:"now,omitzero"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
}

// MergeDocReq is a merge into a thread's or a channel's state, bounded by
// MaxSize as MergeDataReq is.
type MergeDocReq struct {
	Scope     string          `json:"scope"`
	ID        string          `json:"id"`
	Data      json.RawMessage `json:"data"`
	Now       time.Time       `json:"now,omitzero"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
	MaxSize   int             `json:"max_size,omitempty"`
}

type ValueResp struct {
	Found bool   `json:"found"`
	Value []byte `json:"value,omitempty"`
}

type CacheSetReq struct {
	Key          string    `json:"key"`
	Value        []byte    `json:"value"`
	Now          time.Time `json:"now,omitzero"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	OnlyIfAbsent bool      `json:"only_if_absent,omitempty"`
}

type AppendReq struct {
	Key       string    `json:"key"`
	Value     []byte    `json:"value"`
	MaxLen    int       `json:"max_len"`
	Now       time.Time `json:"now,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

type LenResp struct {
	Len int `json:"len"`
}

type ValuesResp struct {
	Values [][]byte `json:"values"`
}

// ---- locks ----

type AcquireReq struct {
	Key string `json:"key"`
	// Owner names the caller.
	Owner string `json:"owner"`
	// Strategy is "reject", "queue", "debounce" or "concurrent".
	Strategy       string    `json:"strategy"`
	Entry          []byte    `json:"entry,omitempty"`
	Now            time.Time `json:"now,omitzero"`
	ExpiresAt      time.Time `json:"expires_at"`
	MaxHolders     int       `json:"max_holders,omitempty"`
	QueueMax       int       `json:"queue_max,omitempty"`
	DropNewest     bool      `json:"drop_newest,omitempty"`
	EntryExpiresAt time.Time `json:"entry_expires_at,omitzero"`
	IdleExpiresAt  time.Time `json:"idle_expires_at,omitzero"`
	NoEntry        bool      `json:"no_entry,omitempty"`
	QueueWhenFull  bool      `json:"queue_when_full,omitempty"`
}

type AcquireResp struct {
	// Outcome is "acquired", "queued", "debounced" or "busy".
	Outcome string         `json:"outcome"`
	Holder  *driver.Holder `json:"holder,omitempty"`
	Dropped []driver.Entry `json:"dropped,omitempty"`
	Next    *driver.Entry  `json:"next,omitempty"`
	Skipped []driver.Entry `json:"skipped,omitempty"`
}

type LockReq struct {
	Key       string    `json:"key"`
	Token     uint64    `json:"token"`
	Now       time.Time `json:"now,omitzero"`
	ExpiresAt time.Time `json:"expires_at"`
}

type HolderResp struct {
	Holder driver.Holder `json:"holder"`
}

type ReleaseLockReq struct {
	Key           string    `json:"key"`
	Token         uint64    `json:"token"`
	Now           time.Time `json:"now,omitzero"`
	IdleExpiresAt time.Time `json:"idle_expires_at,omitzero"`
	KeepPending   bool      `json:"keep_pending,omitempty"`
}

type ForceReleaseReq struct {
	Key           string    `json:"key"`
	Now           time.Time `json:"now,omitzero"`
	IdleExpiresAt time.Time `json:"idle_expires_at,omitzero"`
}

type EntriesResp struct {
	Entries []driver.Entry `json:"entries"`
}

type HandoverReq struct {
	Key           string    `json:"key"`
	Token         uint64    `json:"token"`
	Now           time.Time `json:"now,omitzero"`
	ExpiresAt     time.Time `json:"expires_at"`
	IdleExpiresAt time.Time `json:"idle_expires_at,omitzero"`
	Keep          bool      `json:"keep,omitempty"`
}

type HandoverResp struct {
	Held    bool           `json:"held"`
	Next    *driver.Entry  `json:"next,omitempty"`
	Holder  *driver.Holder `json:"holder,omitempty"`
	Skipped []driver.Entry `json:"skipped,omitempty"`
}

// ---- incidents ----

type Alert struct {
	Channel   string    `json:"channel"`
	UniqueID  string    `json:"unique_id"`
	Timestamp time.Time `json:"timestamp"`
	// Body is the alert's JSON, kept byte for byte.
	Body      string    `json:"body"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

type Issue struct {
	Channel       string    `json:"channel"`
	UniqueID      string    `json:"unique_id"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	PostID        string    `json:"post_id,omitempty"`
	Open          bool      `json:"open,omitempty"`
	Body          string    `json:"body"`
	ExpiresAt     time.Time `json:"expires_at,omitzero"`
}

type SaveIssuesReq struct {
	Issues []Issue `json:"issues"`
}

type MoveIssueReq struct {
	Issue  Issue  `json:"issue"`
	Source string `json:"source"`
}

type FindIssuesReq struct {
	Channel       string    `json:"channel"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	PostID        string    `json:"post_id,omitempty"`
	Now           time.Time `json:"now,omitzero"`
}

type IssuesResp struct {
	Issues []Issue `json:"issues"`
}

type NowReq struct {
	Now time.Time `json:"now,omitzero"`
}

type ChannelsResp struct {
	Channels []string `json:"channels"`
}

type MoveMapping struct {
	Channel       string `json:"channel"`
	CorrelationID string `json:"correlation_id"`
	UniqueID      string `json:"unique_id,omitempty"`
	Body          string `json:"body,omitempty"`
}

type BodyResp struct {
	Found bool   `json:"found"`
	Body  string `json:"body,omitempty"`
}

type ProcessingStateReq struct {
	Channel string `json:"channel"`
	Body    string `json:"body,omitempty"`
}

// ---- snapshots ----

// SnapshotReq asks for an export; the response is a snapshot (NDJSON).
type SnapshotReq struct {
	Now time.Time `json:"now,omitzero"`
}

// Ops is every operation, in the order the API documents them.
var Ops = []Op{
	op[RecordReq, RecordResp]("events/record", "Record an event key (one-shot dedupe): new is false when it was known."),
	op[KeyNowReq, ItemResp]("events/get", "Look an event up."),
	op[KeyReq, Empty]("events/forget", "Forget an event key."),
	op[ClaimReq, ClaimResp]("events/claim", "Claim an event for a lease (or, with existing, reclaim or take over one)."),
	op[CompleteReq, Empty]("events/complete", "Complete a claimed event with its result (fenced by the token)."),
	op[ExtendEventReq, Empty]("events/extend", "Extend a claim's lease (fenced by the token)."),
	op[ReleaseEventReq, Empty]("events/release", "Release a claim, to retry at retry_at, or park it as failed (fenced by the token)."),
	op[RetryEventReq, Empty]("events/retry", "Make a failed event claimable again."),
	op[ListReq, ItemsResp]("events/expired", "List claims whose lease lapsed, oldest first."),
	op[ListReq, ItemsResp]("events/due", "List lapsed claims and released events whose retry time came, oldest first."),
	op[ListReq, ItemsResp]("events/failed", "List events parked as failed, oldest first."),
	op[ListReq, ItemsResp]("events/pending", "List events neither completed nor failed, oldest first."),

	op[KeyNowReq, ItemResp]("conversations/get", "Look a conversation up."),
	op[SetStateReq, ItemResp]("conversations/set-state", "Set a conversation's state (and flow), keeping its data."),
	op[SetDataReq, ItemResp]("conversations/set-data", "Replace a conversation's data, keeping its state."),
	op[MergeDataReq, ItemResp]("conversations/merge-data", "Merge top-level keys into a conversation's data, atomically; 413 when the result would be over the size limit."),
	op[SwapReq, ItemResp]("conversations/swap", "Write a conversation if its version is the given one (0: absent), else 409."),
	op[KeyReq, Empty]("conversations/delete", "Delete a conversation."),

	op[SubscribeReq, Empty]("threads/subscribe", "Subscribe to a thread (until expires_at; zero: until unsubscribed)."),
	op[ThreadReq, Empty]("threads/unsubscribe", "Unsubscribe from a thread."),
	op[ThreadReq, BoolResp]("threads/is-subscribed", "Report a live subscription."),
	op[ListSubscriptionsReq, ItemsResp]("threads/subscriptions", "List subscriptions after a thread id, in order."),
	op[DocReq, ItemResp]("docs/get", "Look a thread's or channel's state up."),
	op[PutDocReq, Empty]("docs/put", "Replace a thread's or channel's state."),
	op[MergeDocReq, ItemResp]("docs/merge", "Merge top-level keys into a thread's or channel's state, atomically; 413 when the result would be over the size limit."),
	op[DocReq, Empty]("docs/delete", "Delete a thread's or channel's state."),
	op[KeyNowReq, ValueResp]("cache/get", "Get a cache value."),
	op[CacheSetReq, BoolResp]("cache/set", "Set a cache value (only if absent, with only_if_absent); value reports a write."),
	op[KeyReq, Empty]("cache/delete", "Delete a cache value and the list of the same key."),
	op[AppendReq, LenResp]("lists/append", "Append to a list, keeping its newest max_len values."),
	op[KeyNowReq, ValuesResp]("lists/range", "Read a list, oldest first."),

	op[AcquireReq, AcquireResp]("locks/acquire", "Acquire a lock, or queue or debounce an entry, by strategy."),
	op[LockReq, HolderResp]("locks/extend", "Extend a held lock (fenced by the token)."),
	op[ReleaseLockReq, EntriesResp]("locks/release", "Release a held lock; the last holder gets the waiting entries (or leaves them, with keep_pending)."),
	op[ForceReleaseReq, EntriesResp]("locks/force-release", "Drop every holder of a lock and take its waiting entries."),
	op[HandoverReq, HandoverResp]("locks/handover", "Hand a lock to its next waiting entry, or release it (keep: never release)."),
	op[KeyNowReq, ItemResp]("locks/inspect", "Look a lock up: holders, waiting and skipped entries, fence."),
	op[ListReq, ItemsResp]("locks/lapsed", "List locks nobody holds while entries wait."),

	op[Alert, Empty]("incidents/save-alert", "Save an alert."),
	op[SaveIssuesReq, Empty]("incidents/save-issues", "Save issues."),
	op[MoveIssueReq, Empty]("incidents/move-issue", "Move an issue to its channel from source, atomically."),
	op[FindIssuesReq, IssuesResp]("incidents/find-open-issues", "Find the open issues of a channel with a correlation id."),
	op[FindIssuesReq, IssuesResp]("incidents/find-issues-by-post-id", "Find the issues of a channel with a post id."),
	op[NowReq, ChannelsResp]("incidents/active-channels", "List the channels with open issues."),
	op[FindIssuesReq, IssuesResp]("incidents/open-issues-in-channel", "List a channel's open issues."),
	op[MoveMapping, Empty]("incidents/save-move-mapping", "Save a move mapping."),
	op[MoveMapping, BodyResp]("incidents/find-move-mapping", "Find a move mapping."),
	op[MoveMapping, Empty]("incidents/delete-move-mapping", "Delete a move mapping."),
	op[ProcessingStateReq, Empty]("incidents/save-processing-state", "Save a channel's processing state."),
	op[ProcessingStateReq, BodyResp]("incidents/find-processing-state", "Find a channel's processing state."),
	op[Empty, Empty]("incidents/drop", "Delete every alert, issue, mapping and processing state."),
	op[Empty, Empty]("incidents/validate-schema", "Check the backend's schema, when it has one."),

	{Name: "snapshot/export", Summary: "Export the namespace as a canonical NDJSON snapshot.", Req: reflect.TypeFor[SnapshotReq](), Stream: true},
	{Name: "snapshot/import", Summary: "Import an NDJSON snapshot (every record of the namespace), all or nothing.", Stream: true},
}

// Problem is an error answer (RFC 9457 application/problem+json).
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Code is stable, one per kind of error (see Codes).
	Code string `json:"code"`
}

// Problem codes.
const (
	CodeInvalid           = "invalid_argument"
	CodeInvalidTransition = "invalid_transition"
	CodeNotFound          = "not_found"
	CodeConflict          = "conflict"
	CodeNotOwner          = "not_owner"
	CodeTooLarge          = "too_large"
	CodeUnavailable       = "unavailable"
	CodeClosed            = "closed"
	CodeUnauthorized      = "unauthorized"
	CodeForbidden         = "forbidden"
	CodeRateLimited       = "rate_limited"
	CodeMalformed         = "malformed_request"
	CodeBodyTooLarge      = "body_too_large"
	CodeNoRoute           = "no_such_route"
	CodeMethod            = "method_not_allowed"
	CodeInternal          = "internal"
)

// ProblemType is the type URI of a problem code.
func ProblemType(code string) string { return "urn:botstate:problem:" + code }
