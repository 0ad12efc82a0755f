package driver

import (
	"bytes"
	"slices"
	"time"
)

// The functions in this file are the rules of the event and lock domains as
// pure functions on records. A backend that loads a record, decides and
// writes it back inside one atomic step of its own (a mutex, a bbolt or SQL
// transaction, a conditional write) calls them, so the rules live in one
// place. Backends that decide on the server (Redis Lua) implement the same
// rules and are held to them by the conformance suite.

// Live reports whether an item with this expiry still exists at now.
func Live(expiresAt, now time.Time) bool {
	return expiresAt.IsZero() || expiresAt.After(now)
}

// Clone copies a byte slice, keeping nil as nil.
func Clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return bytes.Clone(b)
}

// ApplyClaim decides a ClaimRequest against the stored event (found false
// when absent or expired). It returns the reply and, when write is true, the
// event to store (which may be a parked EventFailed with a ClaimFailed
// reply).
func ApplyClaim(cur Event, found bool, r ClaimRequest) (reply ClaimReply, next Event, write bool, err error) {
	if !found {
		if r.Existing {
			return ClaimReply{}, Event{}, false, ErrNotFound
		}
		next = Event{Key: r.Key, Status: EventClaimed, Payload: Clone(r.Payload), Token: r.token(),
			Attempts: 1, CreatedAt: r.Now, LeaseUntil: r.LeaseUntil, ExpiresAt: r.ExpiresAt}
		return ClaimReply{Outcome: ClaimAcquired, Event: next}, next, true, nil
	}
	switch cur.Status {
	case EventCompleted:
		return ClaimReply{Outcome: ClaimCompleted, Event: cur}, cur, false, nil
	case EventFailed:
		return ClaimReply{Outcome: ClaimFailed, Event: cur}, cur, false, nil
	case EventRecorded:
		return ClaimReply{Outcome: ClaimInProgress, Event: cur}, cur, false, nil
	case EventClaimed:
		if r.Existing && r.Holder != "" && cur.Token == r.Holder && cur.LeaseUntil.After(r.Now) {
			next = cur
			next.Token, next.LeaseUntil, next.ExpiresAt = r.token(), r.LeaseUntil, r.ExpiresAt
			return ClaimReply{Outcome: ClaimAcquired, Event: next}, next, true, nil
		}
		if cur.LeaseUntil.After(r.Now) {
			return ClaimReply{Outcome: ClaimInProgress, Event: cur}, cur, false, nil
		}
	case EventReleased:
		if !r.Existing && cur.RetryAt.After(r.Now) {
			return ClaimReply{Outcome: ClaimInProgress, Event: cur}, cur, false, nil
		}
	}
	next = cur
	next.Token, next.LeaseUntil, next.RetryAt = "", time.Time{}, time.Time{}
	next.ExpiresAt = r.ExpiresAt
	if r.MaxAttempts > 0 && cur.Attempts >= r.MaxAttempts {
		next.Status = EventFailed
		if next.LastError == "" {
			next.LastError = MaxAttemptsReason
		}
		return ClaimReply{Outcome: ClaimFailed, Event: next}, next, true, nil
	}
	next.Status, next.Token, next.LeaseUntil = EventClaimed, r.token(), r.LeaseUntil
	next.Attempts++
	return ClaimReply{Outcome: ClaimAcquired, Event: next}, next, true, nil
}

// token returns the request's token, minting it when the backend is lazy.
func (r *ClaimRequest) token() string {
	if r.Token == "" && r.MintToken != nil {
		return r.MintToken()
	}
	return r.Token
}

// Owns reports whether the stored event is claimed with token; a lapsed
// lease nobody took over still counts. It is the fence of Complete, Extend
// and Release.
func Owns(cur Event, found bool, token string) bool {
	return found && cur.Status == EventClaimed && cur.Token == token
}

// ApplyComplete decides CompleteEvent: the event to store, or ErrNotOwner.
func ApplyComplete(cur Event, found bool, token string, result []byte, expiresAt time.Time) (Event, error) {
	if !Owns(cur, found, token) {
		return Event{}, ErrNotOwner
	}
	next := cur
	next.Status, next.Token, next.LeaseUntil, next.RetryAt = EventCompleted, "", time.Time{}, time.Time{}
	next.Result, next.ExpiresAt = Clone(result), expiresAt
	return next, nil
}

// ApplyExtendEvent decides ExtendEvent: the event to store, or ErrNotOwner.
func ApplyExtendEvent(cur Event, found bool, token string, leaseUntil, expiresAt time.Time) (Event, error) {
	if !Owns(cur, found, token) {
		return Event{}, ErrNotOwner
	}
	next := cur
	next.LeaseUntil, next.ExpiresAt = leaseUntil, expiresAt
	return next, nil
}

// ApplyReleaseEvent decides ReleaseEvent: the event to store, or ErrNotOwner.
func ApplyReleaseEvent(cur Event, found bool, r ReleaseRequest) (Event, error) {
	if !Owns(cur, found, r.Token) {
		return Event{}, ErrNotOwner
	}
	next := cur
	next.Token, next.LeaseUntil, next.LastError, next.ExpiresAt = "", time.Time{}, r.Reason, r.ExpiresAt
	if r.Defer {
		next.Attempts = max(next.Attempts-1, 0)
	}
	if r.Fail || (!r.Defer && r.MaxAttempts > 0 && cur.Attempts >= r.MaxAttempts) {
		next.Status, next.RetryAt = EventFailed, time.Time{}
		if next.LastError == "" {
			next.LastError = MaxAttemptsReason
		}
		return next, nil
	}
	next.Status, next.RetryAt = EventReleased, r.RetryAt
	return next, nil
}

// ApplyRetryEvent decides RetryEvent: the event to store, ErrNotFound or
// ErrConflict.
func ApplyRetryEvent(cur Event, found bool, expiresAt time.Time) (Event, error) {
	if !found {
		return Event{}, ErrNotFound
	}
	if cur.Status != EventFailed {
		return Event{}, ErrConflict
	}
	next := cur
	next.Status, next.Attempts, next.RetryAt, next.ExpiresAt = EventReleased, 0, time.Time{}, expiresAt
	return next, nil
}

// EventDue reports whether a re-driver should take the event over at now: a
// claim whose lease ended, or a released event whose retry time came.
func EventDue(e *Event, now time.Time) bool {
	switch e.Status {
	case EventClaimed:
		return !e.LeaseUntil.After(now)
	case EventReleased:
		return !e.RetryAt.After(now)
	}
	return false
}

// EventPending reports whether the event is neither completed nor failed.
func EventPending(e *Event) bool {
	return e.Status != EventCompleted && e.Status != EventFailed
}

// EventBefore orders events for Pending and Expired: oldest CreatedAt first,
// ties by key.
func EventBefore(a, b *Event) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.Key < b.Key
}

// FirstEvents sorts evs in listing order (EventBefore) and keeps the first
// limit of them (all when limit is 0).
func FirstEvents(evs []Event, limit int) []Event {
	slices.SortFunc(evs, func(a, b Event) int {
		switch {
		case EventBefore(&a, &b):
			return -1
		case EventBefore(&b, &a):
			return 1
		}
		return 0
	})
	if limit > 0 && len(evs) > limit {
		evs = evs[:limit]
	}
	return evs
}

// PruneLock applies the passage of time to a lock record: holders that
// lapsed at or before now leave, and a lapsed holder's live Entry goes back
// to the front of the queue (oldest first), since it was never finished;
// pending entries that lapsed, and lapsed holders' lapsed entries, move to
// Skipped.
func PruneLock(st *LockState, now time.Time) {
	var back []Entry
	hs := st.Holders[:0]
	for _, h := range st.Holders {
		switch {
		case Live(h.ExpiresAt, now):
			hs = append(hs, h)
		case h.Entry == nil:
		case Live(h.Entry.ExpiresAt, now):
			back = append(back, *h.Entry)
		default:
			st.Skipped = append(st.Skipped, *h.Entry)
		}
	}
	clear(st.Holders[len(hs):])
	st.Holders = hs
	var es []Entry
	if len(back) > 0 {
		slices.SortStableFunc(back, func(a, b Entry) int { return a.EnqueuedAt.Compare(b.EnqueuedAt) })
		es = back
	} else {
		es = st.Pending[:0]
	}
	for _, e := range st.Pending {
		if Live(e.ExpiresAt, now) {
			es = append(es, e)
		} else {
			st.Skipped = append(st.Skipped, e)
		}
	}
	if len(back) == 0 {
		clear(st.Pending[len(es):])
	}
	st.Pending = es
	trimSkipped(st)
}

// trimSkipped keeps the newest MaxSkipped skipped entries.
func trimSkipped(st *LockState) {
	if n := len(st.Skipped) - MaxSkipped; n > 0 {
		st.Skipped = append(st.Skipped[:0:0], st.Skipped[n:]...)
	}
}

// skip moves entries to Skipped.
func skip(st *LockState, es ...Entry) {
	st.Skipped = append(st.Skipped, es...)
	trimSkipped(st)
}

// takeSkipped hands the record's skipped entries to a holder.
func takeSkipped(st *LockState) []Entry {
	out := st.Skipped
	st.Skipped = nil
	return out
}

// LockIdle reports a record with nothing in it but its fence (and perhaps
// skipped entries); such a record may be dropped once its ExpiresAt passes.
func LockIdle(st *LockState) bool { return len(st.Holders) == 0 && len(st.Pending) == 0 }

// settle sets the record's idle expiry: an idle record keeps its fence until
// idleExpiresAt, a busy one never expires on its own (its holders and
// entries do).
func settle(st *LockState, idleExpiresAt time.Time) {
	if LockIdle(st) {
		st.ExpiresAt = idleExpiresAt
	} else {
		st.ExpiresAt = time.Time{}
	}
}

// enqueue appends e under the request's queue bound: a full queue drops its
// oldest entries (returned, and moved to Skipped) or, with DropNewest,
// refuses e (moved to Skipped; ok false).
func enqueue(st *LockState, r *AcquireRequest, e Entry) (dropped []Entry, ok bool) {
	if r.QueueMax > 0 && len(st.Pending) >= r.QueueMax {
		if r.DropNewest {
			skip(st, e)
			return nil, false
		}
		n := len(st.Pending) - r.QueueMax + 1
		dropped = append([]Entry(nil), st.Pending[:n]...)
		st.Pending = append(st.Pending[:0:0], st.Pending[n:]...)
		skip(st, dropped...)
	}
	st.Pending = append(st.Pending, e)
	return dropped, true
}

// ApplyAcquire decides an AcquireRequest against the stored lock (a zero
// LockState with Key set when absent), mutating st into the record to store.
//
// A caller granted the lock while entries wait (its previous holder lapsed,
// or left them with keepPending) handles the oldest first: it is the reply's
// Next and the holder's Entry, and the caller's own entry joins the back of
// the queue, even past QueueMax, so the holder never loses its own message.
// Under Debounce the caller's entry is the latest and replaces the waiting
// ones instead. An empty entry is no message: a holder keeps none, and
// none joins the queue behind a Next (a held lock still queues it).
func ApplyAcquire(st *LockState, r AcquireRequest) AcquireReply {
	PruneLock(st, r.Now)
	st.Key = r.Key
	queued := Entry{Payload: Clone(r.Entry), EnqueuedAt: r.Now, ExpiresAt: r.EntryExpiresAt}
	// entry is the caller's message as a holder keeps it: an empty entry
	// is no message.
	var entry *Entry
	if !r.NoEntry && len(r.Entry) > 0 {
		entry = &queued
	}
	grantable := len(st.Holders) == 0 ||
		r.Strategy == Concurrent && !r.NoEntry && (r.MaxHolders == 0 || len(st.Holders) < r.MaxHolders)
	var rep AcquireReply
	if grantable {
		st.Fence = NextFence(st.Fence, r.Now)
		h := Holder{Owner: r.Owner, Token: st.Fence, AcquiredAt: r.Now, ExpiresAt: r.ExpiresAt}
		switch {
		case len(st.Pending) == 0:
			h.Entry = entry
		case r.Strategy == Debounce && entry != nil:
			rep.Dropped = st.Pending
			skip(st, st.Pending...)
			st.Pending = nil
			h.Entry = entry
		default:
			next := st.Pending[0]
			st.Pending = append(st.Pending[:0:0], st.Pending[1:]...)
			if entry != nil {
				st.Pending = append(st.Pending, *entry)
			}
			h.Entry, rep.Next = &next, &next
		}
		st.Holders = append(st.Holders, h)
		rep.Outcome, rep.Holder, rep.Skipped = Acquired, h, takeSkipped(st)
		settle(st, r.IdleExpiresAt)
		return rep
	}
	switch {
	case r.NoEntry:
		rep.Outcome = Busy
	case r.Strategy == Queue || r.Strategy == Concurrent && r.QueueWhenFull:
		var ok bool
		if rep.Dropped, ok = enqueue(st, &r, queued); ok {
			rep.Outcome = Queued
		} else {
			rep.Outcome = Busy
		}
	case r.Strategy == Debounce:
		rep = AcquireReply{Outcome: Debounced, Dropped: st.Pending}
		skip(st, st.Pending...)
		st.Pending = []Entry{queued}
	default:
		rep.Outcome = Busy
	}
	settle(st, r.IdleExpiresAt)
	return rep
}

func findHolder(st *LockState, token uint64, now time.Time) int {
	for i, h := range st.Holders {
		if h.Token == token && Live(h.ExpiresAt, now) {
			return i
		}
	}
	return -1
}

// ApplyExtend moves the live holder's lease end, or returns ErrNotOwner.
func ApplyExtend(st *LockState, token uint64, now, expiresAt time.Time) (Holder, error) {
	i := findHolder(st, token, now)
	if i < 0 {
		return Holder{}, ErrNotOwner
	}
	st.Holders[i].ExpiresAt = expiresAt
	return st.Holders[i], nil
}

// ApplyRelease removes the live holder and, when it was the last and
// keepPending is false, takes the pending entries out; ErrNotOwner when the
// token holds nothing. With keepPending the holder leaves as if it lapsed
// now: its live Entry goes back to the front of the queue, and the entries
// stay for whoever takes the lock next.
func ApplyRelease(st *LockState, token uint64, now, idleExpiresAt time.Time, keepPending bool) ([]Entry, error) {
	if findHolder(st, token, now) < 0 {
		return nil, ErrNotOwner
	}
	PruneLock(st, now)
	i := findHolder(st, token, now)
	if e := st.Holders[i].Entry; keepPending && e != nil && Live(e.ExpiresAt, now) {
		st.Pending = append([]Entry{*e}, st.Pending...)
	}
	st.Holders = append(st.Holders[:i], st.Holders[i+1:]...)
	var out []Entry
	if len(st.Holders) == 0 && !keepPending {
		out, st.Pending = st.Pending, nil
	}
	settle(st, idleExpiresAt)
	return out, nil
}

// ApplyForceRelease removes every holder and takes the pending entries out.
func ApplyForceRelease(st *LockState, now, idleExpiresAt time.Time) []Entry {
	PruneLock(st, now)
	out := st.Pending
	st.Holders, st.Pending = nil, nil
	settle(st, idleExpiresAt)
	return out
}

// ApplyHandover pops the oldest pending entry for the live holder, makes it
// the holder's Entry and extends the lease; when nothing is pending it
// releases the lock, or with keep only extends it.
func ApplyHandover(st *LockState, token uint64, now, expiresAt, idleExpiresAt time.Time, keep bool) (HandoverReply, error) {
	if findHolder(st, token, now) < 0 {
		return HandoverReply{}, ErrNotOwner
	}
	PruneLock(st, now)
	i := findHolder(st, token, now)
	var rep HandoverReply
	switch {
	case len(st.Pending) > 0:
		next := st.Pending[0]
		st.Pending = append(st.Pending[:0:0], st.Pending[1:]...)
		st.Holders[i].Entry, rep.Next = &next, &next
	case !keep:
		st.Holders = append(st.Holders[:i], st.Holders[i+1:]...)
		settle(st, idleExpiresAt)
		return rep, nil
	}
	st.Holders[i].ExpiresAt = expiresAt
	rep.Held, rep.Holder, rep.Skipped = true, st.Holders[i], takeSkipped(st)
	settle(st, idleExpiresAt)
	return rep, nil
}

// LockLapsed reports a pruned record that a sweeper should take over: no
// live holder, entries waiting.
func LockLapsed(st *LockState) bool { return len(st.Holders) == 0 && len(st.Pending) > 0 }
