package driver

import (
	"bytes"
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
// event to store.
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
	case EventRecorded:
		return ClaimReply{Outcome: ClaimInProgress, Event: cur}, cur, false, nil
	case EventClaimed:
		if cur.LeaseUntil.After(r.Now) {
			return ClaimReply{Outcome: ClaimInProgress, Event: cur}, cur, false, nil
		}
	}
	next = cur
	next.Status, next.Token, next.LeaseUntil = EventClaimed, r.token(), r.LeaseUntil
	next.Attempts++
	next.ExpiresAt = r.ExpiresAt
	return ClaimReply{Outcome: ClaimAcquired, Event: next}, next, true, nil
}

// token returns the request's token, minting it when the backend is lazy.
func (r *ClaimRequest) token() string {
	if r.Token == "" && r.MintToken != nil {
		return r.MintToken()
	}
	return r.Token
}

// ApplyFinish decides CompleteEvent (complete true) or ReleaseEvent against
// the stored event, returning the event to store or ErrNotOwner.
func ApplyFinish(cur Event, found bool, token string, complete bool, result []byte, expiresAt time.Time) (Event, error) {
	if !found || cur.Status != EventClaimed || cur.Token != token {
		return Event{}, ErrNotOwner
	}
	next := cur
	next.Token, next.LeaseUntil = "", time.Time{}
	if complete {
		next.Status, next.Result, next.ExpiresAt = EventCompleted, Clone(result), expiresAt
	} else {
		next.Status = EventReleased
	}
	return next, nil
}

// EventBefore orders events for Pending and Expired: oldest CreatedAt first,
// ties by key.
func EventBefore(a, b *Event) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.Key < b.Key
}

// PruneLock drops the holders and entries that lapsed at or before now.
func PruneLock(st *LockState, now time.Time) {
	hs := st.Holders[:0]
	for _, h := range st.Holders {
		if Live(h.ExpiresAt, now) {
			hs = append(hs, h)
		}
	}
	st.Holders = hs
	es := st.Pending[:0]
	for _, e := range st.Pending {
		if Live(e.ExpiresAt, now) {
			es = append(es, e)
		}
	}
	st.Pending = es
}

// LockIdle reports a record with nothing in it but its fence; such a record
// may be dropped once its ExpiresAt passes.
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

// ApplyAcquire decides an AcquireRequest against the stored lock (a zero
// LockState with Key set when absent), mutating st into the record to store.
func ApplyAcquire(st *LockState, r AcquireRequest) AcquireReply {
	PruneLock(st, r.Now)
	st.Key = r.Key
	grant := func() AcquireReply {
		st.Fence = NextFence(st.Fence, r.Now)
		h := Holder{Owner: r.Owner, Token: st.Fence, AcquiredAt: r.Now, ExpiresAt: r.ExpiresAt}
		st.Holders = append(st.Holders, h)
		settle(st, r.IdleExpiresAt)
		return AcquireReply{Outcome: Acquired, Holder: h}
	}
	if len(st.Holders) == 0 {
		return grant()
	}
	entry := Entry{Payload: Clone(r.Entry), EnqueuedAt: r.Now, ExpiresAt: r.EntryExpiresAt}
	var rep AcquireReply
	switch r.Strategy {
	case Concurrent:
		if r.MaxHolders == 0 || len(st.Holders) < r.MaxHolders {
			return grant()
		}
		rep = AcquireReply{Outcome: Busy}
	case Queue:
		if r.QueueMax > 0 && len(st.Pending) >= r.QueueMax {
			if r.DropNewest {
				rep = AcquireReply{Outcome: Busy}
				break
			}
			n := len(st.Pending) - r.QueueMax + 1
			rep.Dropped = append([]Entry(nil), st.Pending[:n]...)
			st.Pending = append(st.Pending[:0:0], st.Pending[n:]...)
		}
		st.Pending = append(st.Pending, entry)
		rep.Outcome = Queued
	case Debounce:
		rep = AcquireReply{Outcome: Debounced, Dropped: st.Pending}
		st.Pending = []Entry{entry}
	default:
		rep = AcquireReply{Outcome: Busy}
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

// ApplyRelease removes the live holder and, when it was the last, takes the
// pending entries out; ErrNotOwner when the token holds nothing.
func ApplyRelease(st *LockState, token uint64, now, idleExpiresAt time.Time) ([]Entry, error) {
	i := findHolder(st, token, now)
	if i < 0 {
		return nil, ErrNotOwner
	}
	PruneLock(st, now)
	i = findHolder(st, token, now)
	st.Holders = append(st.Holders[:i], st.Holders[i+1:]...)
	var out []Entry
	if len(st.Holders) == 0 {
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

// ApplyHandover pops the oldest pending entry for the live holder and
// extends it, or releases the lock when nothing is pending.
func ApplyHandover(st *LockState, token uint64, now, expiresAt, idleExpiresAt time.Time) (*Entry, Holder, bool, error) {
	if findHolder(st, token, now) < 0 {
		return nil, Holder{}, false, ErrNotOwner
	}
	PruneLock(st, now)
	i := findHolder(st, token, now)
	if len(st.Pending) == 0 {
		st.Holders = append(st.Holders[:i], st.Holders[i+1:]...)
		settle(st, idleExpiresAt)
		return nil, Holder{}, false, nil
	}
	next := st.Pending[0]
	st.Pending = append(st.Pending[:0:0], st.Pending[1:]...)
	st.Holders[i].ExpiresAt = expiresAt
	settle(st, idleExpiresAt)
	return &next, st.Holders[i], true, nil
}
