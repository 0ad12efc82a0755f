package driver

import (
	"encoding/json"
	"time"
)

// Kind names the type of a snapshot record.
type Kind string

// Snapshot record kinds, in the order a canonical snapshot lists them.
const (
	KindEvent           Kind = "event"
	KindConversation    Kind = "conversation"
	KindSubscription    Kind = "subscription"
	KindThreadState     Kind = "thread_state"
	KindChannelState    Kind = "channel_state"
	KindCacheValue      Kind = "cache_value"
	KindCacheList       Kind = "cache_list"
	KindLock            Kind = "lock"
	KindAlert           Kind = "alert"
	KindIssue           Kind = "issue"
	KindMoveMapping     Kind = "move_mapping"
	KindProcessingState Kind = "processing_state"
)

// Kinds lists every kind in canonical order.
var Kinds = []Kind{
	KindEvent, KindConversation, KindSubscription, KindThreadState, KindChannelState,
	KindCacheValue, KindCacheList, KindLock, KindAlert, KindIssue, KindMoveMapping,
	KindProcessingState,
}

// Record is one item of any domain, as a snapshot line holds it. Which fields
// a kind uses:
//
//   - event: Key, Status, Payload, Result, Token, Attempts, LastError,
//     CreatedAt, LeaseUntil, RetryAt, ExpiresAt
//   - conversation: Key, Flow, State, Data, Version, UpdatedAt, ExpiresAt
//   - subscription: Key (the thread), CreatedAt, ExpiresAt
//   - thread_state, channel_state: Key (the id), Data, UpdatedAt, ExpiresAt
//   - cache_value: Key, Payload, ExpiresAt
//   - cache_list: Key, Values, ExpiresAt
//   - lock: Key, Holders, Pending, Skipped, Fence, ExpiresAt
//   - alert: Channel, Key (unique id), Timestamp, Body, ExpiresAt
//   - issue: Channel, Key (unique id), CorrelationID, PostID, Open, Body,
//     ExpiresAt
//   - move_mapping: Channel, CorrelationID, Key (unique id), Body
//   - processing_state: Channel, Body
//
// The field order here is the canonical line's field order.
type Record struct {
	Kind          Kind            `json:"kind"`
	NS            string          `json:"ns"`
	Channel       string          `json:"channel,omitempty"`
	Key           string          `json:"key,omitempty"`
	Status        string          `json:"status,omitempty"`
	Flow          string          `json:"flow,omitempty"`
	State         string          `json:"state,omitempty"`
	Data          json.RawMessage `json:"data,omitempty"`
	Version       int64           `json:"version,omitempty"`
	Payload       []byte          `json:"payload,omitempty"`
	Result        []byte          `json:"result,omitempty"`
	Token         string          `json:"token,omitempty"`
	Attempts      int             `json:"attempts,omitempty"`
	LastError     string          `json:"last_error,omitempty"`
	Values        [][]byte        `json:"values,omitempty"`
	Holders       []Holder        `json:"holders,omitempty"`
	Pending       []Entry         `json:"pending,omitempty"`
	Skipped       []Entry         `json:"skipped,omitempty"`
	Fence         uint64          `json:"fence,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	PostID        string          `json:"post_id,omitempty"`
	Open          bool            `json:"open,omitempty"`
	Body          string          `json:"body,omitempty"`
	Timestamp     time.Time       `json:"timestamp,omitzero"`
	CreatedAt     time.Time       `json:"created_at,omitzero"`
	UpdatedAt     time.Time       `json:"updated_at,omitzero"`
	LeaseUntil    time.Time       `json:"lease_until,omitzero"`
	RetryAt       time.Time       `json:"retry_at,omitzero"`
	ExpiresAt     time.Time       `json:"expires_at,omitzero"`
}

// Status names for event records.
var eventStatusNames = map[EventStatus]string{
	EventRecorded:  "recorded",
	EventClaimed:   "claimed",
	EventReleased:  "released",
	EventCompleted: "completed",
	EventFailed:    "failed",
}

// String returns the status's snapshot name.
func (s EventStatus) String() string {
	if n, ok := eventStatusNames[s]; ok {
		return n
	}
	return "unknown"
}

// ParseEventStatus is the inverse of EventStatus.String.
func ParseEventStatus(name string) (EventStatus, bool) {
	for s, n := range eventStatusNames {
		if n == name {
			return s, true
		}
	}
	return 0, false
}

// EventRecord converts an event to its snapshot record.
func EventRecord(ns string, e Event) Record {
	return Record{Kind: KindEvent, NS: ns, Key: e.Key, Status: e.Status.String(),
		Payload: e.Payload, Result: e.Result, Token: e.Token, Attempts: e.Attempts, LastError: e.LastError,
		CreatedAt: e.CreatedAt, LeaseUntil: e.LeaseUntil, RetryAt: e.RetryAt, ExpiresAt: e.ExpiresAt}
}

// Event converts an event record back; ok is false for another kind.
func (r *Record) Event() (Event, bool) {
	st, ok := ParseEventStatus(r.Status)
	if r.Kind != KindEvent || !ok {
		return Event{}, false
	}
	return Event{Key: r.Key, Status: st, Payload: r.Payload, Result: r.Result, Token: r.Token,
		Attempts: r.Attempts, LastError: r.LastError, CreatedAt: r.CreatedAt, LeaseUntil: r.LeaseUntil,
		RetryAt: r.RetryAt, ExpiresAt: r.ExpiresAt}, true
}

// ConversationRecord converts a conversation to its snapshot record.
func ConversationRecord(ns string, c Conversation) Record {
	return Record{Kind: KindConversation, NS: ns, Key: c.Key, Flow: c.Flow, State: c.State,
		Data: c.Data, Version: c.Version, UpdatedAt: c.UpdatedAt, ExpiresAt: c.ExpiresAt}
}

// Conversation converts a conversation record back.
func (r *Record) Conversation() Conversation {
	return Conversation{Key: r.Key, Flow: r.Flow, State: r.State, Data: r.Data,
		Version: r.Version, UpdatedAt: r.UpdatedAt, ExpiresAt: r.ExpiresAt}
}

// DocKind is the record kind for a doc scope.
func DocKind(s Scope) Kind {
	if s == ScopeChannel {
		return KindChannelState
	}
	return KindThreadState
}

// LockRecord converts a lock to its snapshot record.
func LockRecord(ns string, l LockState) Record {
	return Record{Kind: KindLock, NS: ns, Key: l.Key, Holders: l.Holders, Pending: l.Pending,
		Skipped: l.Skipped, Fence: l.Fence, ExpiresAt: l.ExpiresAt}
}

// Lock converts a lock record back.
func (r *Record) Lock() LockState {
	return LockState{Key: r.Key, Holders: r.Holders, Pending: r.Pending, Skipped: r.Skipped,
		Fence: r.Fence, ExpiresAt: r.ExpiresAt}
}

// IssueRecordOf converts an issue to its snapshot record.
func IssueRecordOf(ns string, is IssueRecord) Record {
	return Record{Kind: KindIssue, NS: ns, Channel: is.Channel, Key: is.UniqueID,
		CorrelationID: is.CorrelationID, PostID: is.PostID, Open: is.Open, Body: string(is.Body),
		ExpiresAt: is.ExpiresAt}
}

// Issue converts an issue record back.
func (r *Record) Issue() IssueRecord {
	return IssueRecord{Channel: r.Channel, UniqueID: r.Key, CorrelationID: r.CorrelationID,
		PostID: r.PostID, Open: r.Open, Body: []byte(r.Body), ExpiresAt: r.ExpiresAt}
}

// AlertRecordOf converts an alert to its snapshot record.
func AlertRecordOf(ns string, a AlertRecord) Record {
	return Record{Kind: KindAlert, NS: ns, Channel: a.Channel, Key: a.UniqueID,
		Timestamp: a.Timestamp, Body: string(a.Body), ExpiresAt: a.ExpiresAt}
}

// Alert converts an alert record back.
func (r *Record) Alert() AlertRecord {
	return AlertRecord{Channel: r.Channel, UniqueID: r.Key, Timestamp: r.Timestamp,
		Body: []byte(r.Body), ExpiresAt: r.ExpiresAt}
}

// MoveMappingRecordOf converts a move mapping to its snapshot record.
func MoveMappingRecordOf(ns string, m MoveMappingRecord) Record {
	return Record{Kind: KindMoveMapping, NS: ns, Channel: m.Channel, Key: m.UniqueID,
		CorrelationID: m.CorrelationID, Body: string(m.Body)}
}

// MoveMapping converts a move mapping record back.
func (r *Record) MoveMapping() MoveMappingRecord {
	return MoveMappingRecord{Channel: r.Channel, CorrelationID: r.CorrelationID,
		UniqueID: r.Key, Body: []byte(r.Body)}
}
