package botstate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/botstate/botstate/driver"
)

// Locks gives one handler at a time per key (a thread, say), and decides
// what happens to the messages that arrive meanwhile: rejected, queued,
// debounced (latest wins), or let through concurrently.
//
// A lock has an owner, a fencing token that grows with every acquisition of
// its key, and a TTL. A holder whose TTL lapsed is gone: anyone may take the
// lock, and the lapsed holder's Extend, Release and Handover get ErrNotOwner.
// Heartbeat keeps a lock alive while a long handler runs.
type Locks struct{ s *Store }

// Locks returns the namespace's locks.
func (s *Store) Locks() *Locks { return &Locks{s} }

// Strategy says what Acquire does when the lock is held.
type Strategy = driver.Strategy

// Lock strategies.
const (
	// Reject: answer Busy.
	Reject = driver.Reject
	// Queue: append the entry to a bounded FIFO and answer Queued.
	Queue = driver.Queue
	// Debounce: the entry replaces whatever is pending (latest wins);
	// answer Debounced.
	Debounce = driver.Debounce
	// Concurrent: always acquire, up to MaxHolders holders when set.
	Concurrent = driver.Concurrent
)

// AcquireStatus is what Acquire did.
type AcquireStatus = driver.AcquireOutcome

// Acquire statuses.
const (
	Acquired  = driver.Acquired
	Queued    = driver.Queued
	Debounced = driver.Debounced
	Busy      = driver.Busy
)

// Entry is a message that waited on a lock.
type Entry = driver.Entry

// LockState is a lock as stored, for inspection.
type LockState = driver.LockState

// Overflow says what a full queue does with one more entry.
type Overflow uint8

// Overflow policies.
const (
	// DropOldest makes room by dropping the oldest pending entry.
	DropOldest Overflow = iota
	// DropNewest refuses the new entry: Acquire answers Busy.
	DropNewest
)

// LockPolicy is how Acquire behaves for one call.
type LockPolicy struct {
	// Strategy when the lock is held; the zero value means Reject.
	Strategy Strategy
	// TTL of the lock once acquired; required.
	TTL time.Duration
	// QueueMax caps the Queue FIFO (0: no cap).
	QueueMax int
	// OnFull says what a full queue does.
	OnFull Overflow
	// EntryTTL makes queued and debounced entries lapse (0: never).
	EntryTTL time.Duration
	// MaxHolders caps Concurrent holders (0: no cap).
	MaxHolders int
}

// Lock is a held lock. Pass it back to Extend, Release and Handover.
type Lock struct {
	Key       string
	Owner     string
	Token     uint64
	ExpiresAt time.Time
}

// AcquireResult is the outcome of Acquire.
type AcquireResult struct {
	Status AcquireStatus
	// Lock is set when Status is Acquired.
	Lock Lock
	// Dropped holds the entries this call pushed out: the oldest one of a
	// full queue (DropOldest), or those a debounce replaced.
	Dropped []Entry
}

// HandoverResult is the outcome of Handover.
type HandoverResult struct {
	// Held reports that the lock is still held, for Next.
	Held bool
	// Next is the entry to handle now, when Held.
	Next *Entry
	// Lock is the lock with its new expiry, when Held.
	Lock Lock
}

// MaxQueue is the largest QueueMax and MaxHolders accepted.
const MaxQueue = 100000

func (l *Locks) checkPolicy(op string, p LockPolicy) (driver.Strategy, error) {
	st := p.Strategy
	if st == 0 {
		st = Reject
	}
	if st < Reject || st > Concurrent {
		return 0, invalid(op, "unknown strategy %d", p.Strategy)
	}
	if err := checkTTL(op, "lock TTL", p.TTL, false); err != nil {
		return 0, err
	}
	if err := checkTTL(op, "entry TTL", p.EntryTTL, true); err != nil {
		return 0, err
	}
	if p.QueueMax < 0 || p.QueueMax > MaxQueue {
		return 0, invalid(op, "queue max %d out of range [0, %d]", p.QueueMax, MaxQueue)
	}
	if p.MaxHolders < 0 || p.MaxHolders > MaxQueue {
		return 0, invalid(op, "max holders %d out of range [0, %d]", p.MaxHolders, MaxQueue)
	}
	if p.OnFull > DropNewest {
		return 0, invalid(op, "unknown overflow policy %d", p.OnFull)
	}
	return st, nil
}

// Acquire tries to take the lock on key for owner, atomically, and applies
// p.Strategy when it is held; entry is the message the caller came with
// (queued or debounced when the lock is busy).
func (l *Locks) Acquire(ctx context.Context, key, owner string, entry []byte, p LockPolicy) (AcquireResult, error) {
	const op = "Locks.Acquire"
	s := l.s
	if err := s.begin(ctx, op); err != nil {
		return AcquireResult{}, err
	}
	if err := checkKey(op, "lock key", key); err != nil {
		return AcquireResult{}, err
	}
	if err := checkKey(op, "owner", owner); err != nil {
		return AcquireResult{}, err
	}
	if err := s.checkSize(op, "entry", entry); err != nil {
		return AcquireResult{}, err
	}
	st, err := l.checkPolicy(op, p)
	if err != nil {
		return AcquireResult{}, err
	}
	now := s.now()
	exp := after(now, p.TTL)
	rep, err := s.core.drv.Acquire(ctx, s.ns, driver.AcquireRequest{
		Key: key, Owner: owner, Strategy: st, Entry: entry, Now: now, ExpiresAt: exp,
		MaxHolders: p.MaxHolders, QueueMax: p.QueueMax, DropNewest: p.OnFull == DropNewest,
		EntryExpiresAt: after(now, p.EntryTTL), IdleExpiresAt: after(now, lockIdleRetention),
	})
	if err != nil {
		return AcquireResult{}, wrap(op, err)
	}
	res := AcquireResult{Status: rep.Outcome, Dropped: rep.Dropped}
	if rep.Outcome == Acquired {
		res.Lock = Lock{Key: key, Owner: rep.Holder.Owner, Token: rep.Holder.Token, ExpiresAt: rep.Holder.ExpiresAt}
	}
	return res, nil
}

func (l *Locks) checkLock(ctx context.Context, op string, lk Lock) error {
	if err := l.s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "lock key", lk.Key); err != nil {
		return err
	}
	if lk.Token == 0 {
		return invalid(op, "lock has no token (was it acquired?)")
	}
	return nil
}

// Extend moves the lock's expiry to ttl from now. A lapsed or taken-over
// lock gets ErrNotOwner.
func (l *Locks) Extend(ctx context.Context, lk Lock, ttl time.Duration) (Lock, error) {
	const op = "Locks.Extend"
	if err := l.checkLock(ctx, op, lk); err != nil {
		return Lock{}, err
	}
	if err := checkTTL(op, "ttl", ttl, false); err != nil {
		return Lock{}, err
	}
	now := l.s.now()
	h, err := l.s.core.drv.ExtendLock(ctx, l.s.ns, lk.Key, lk.Token, now, after(now, ttl))
	if err != nil {
		return Lock{}, wrap(op, err)
	}
	lk.ExpiresAt = h.ExpiresAt
	return lk, nil
}

// Release gives the lock up and returns the entries that waited on it, in
// arrival order, removing them (with Concurrent holders, only the last
// holder out gets them). A lapsed or taken-over lock gets ErrNotOwner.
func (l *Locks) Release(ctx context.Context, lk Lock) ([]Entry, error) {
	const op = "Locks.Release"
	if err := l.checkLock(ctx, op, lk); err != nil {
		return nil, err
	}
	now := l.s.now()
	es, err := l.s.core.drv.ReleaseLock(ctx, l.s.ns, lk.Key, lk.Token, now, after(now, lockIdleRetention))
	return es, wrap(op, err)
}

// ForceRelease drops every holder of key, whoever owns it, and returns the
// entries that waited, in arrival order. Absent is not an error.
func (l *Locks) ForceRelease(ctx context.Context, key string) ([]Entry, error) {
	const op = "Locks.ForceRelease"
	s := l.s
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := checkKey(op, "lock key", key); err != nil {
		return nil, err
	}
	now := s.now()
	es, err := s.core.drv.ForceReleaseLock(ctx, s.ns, key, now, after(now, lockIdleRetention))
	return es, wrap(op, err)
}

// Handover is what a handler calls when it is done: atomically, it either
// takes the next waiting entry and keeps the lock (expiring ttl from now) for
// the same owner, or, when nothing waits, releases the lock. No entry can
// slip in between "nothing waits" and "released" and be stranded.
func (l *Locks) Handover(ctx context.Context, lk Lock, ttl time.Duration) (HandoverResult, error) {
	const op = "Locks.Handover"
	if err := l.checkLock(ctx, op, lk); err != nil {
		return HandoverResult{}, err
	}
	if err := checkTTL(op, "ttl", ttl, false); err != nil {
		return HandoverResult{}, err
	}
	now := l.s.now()
	next, h, held, err := l.s.core.drv.HandoverLock(ctx, l.s.ns, lk.Key, lk.Token, now, after(now, ttl), after(now, lockIdleRetention))
	if err != nil {
		return HandoverResult{}, wrap(op, err)
	}
	if !held {
		return HandoverResult{}, nil
	}
	lk.ExpiresAt = h.ExpiresAt
	return HandoverResult{Held: true, Next: next, Lock: lk}, nil
}

// Inspect returns the lock on key as stored: live holders, waiting entries
// and the last fencing token. A key never locked comes back empty.
func (l *Locks) Inspect(ctx context.Context, key string) (LockState, error) {
	const op = "Locks.Inspect"
	s := l.s
	if err := s.begin(ctx, op); err != nil {
		return LockState{}, err
	}
	if err := checkKey(op, "lock key", key); err != nil {
		return LockState{}, err
	}
	st, ok, err := s.core.drv.InspectLock(ctx, s.ns, key, s.now())
	if err != nil {
		return LockState{}, wrap(op, err)
	}
	if !ok {
		return LockState{Key: key}, nil
	}
	return st, nil
}

// ErrLockLost is the cause of a heartbeat context's cancellation when the
// lock was lost (taken over, force-released, or not renewed in time).
var ErrLockLost = fmt.Errorf("%w: lock lost", ErrNotOwner)

// Heartbeat keeps a lock alive while a handler runs.
type Heartbeat struct {
	mu     sync.Mutex
	lock   Lock
	err    error
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}
}

// Heartbeat renews lk to ttl from now every ttl/3 until Stop, and returns a
// context derived from ctx that is cancelled, with cause ErrLockLost, as soon
// as the lock is known lost — so a long handler never goes on silently after
// losing its lock. Run the handler under the returned context.
func (l *Locks) Heartbeat(ctx context.Context, lk Lock, ttl time.Duration) (context.Context, *Heartbeat) {
	hctx, cancel := context.WithCancelCause(ctx)
	hb := &Heartbeat{lock: lk, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	if err := checkTTL("Locks.Heartbeat", "ttl", ttl, false); err != nil {
		hb.err = err
		cancel(err)
		close(hb.done)
		return hctx, hb
	}
	go hb.run(hctx, l, ttl)
	return hctx, hb
}

func (hb *Heartbeat) run(ctx context.Context, l *Locks, ttl time.Duration) {
	defer close(hb.done)
	t := time.NewTicker(max(ttl/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-hb.stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hb.mu.Lock()
		cur := hb.lock
		hb.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, ttl/3+time.Millisecond)
		next, err := l.Extend(rctx, cur, ttl)
		cancel()
		hb.mu.Lock()
		switch {
		case err == nil:
			hb.lock = next
		case errors.Is(err, ErrNotOwner) || !l.s.now().Before(cur.ExpiresAt):
			// Lost for sure, or a transient error lasted past the expiry.
			hb.err = fmt.Errorf("%w: %v", ErrLockLost, err)
			hb.mu.Unlock()
			hb.cancel(ErrLockLost)
			return
		}
		hb.mu.Unlock()
	}
}

// Stop ends the renewals and returns the lock as last renewed, or the error
// that ended them (wrapping ErrLockLost when the lock was lost).
func (hb *Heartbeat) Stop() (Lock, error) {
	hb.mu.Lock()
	select {
	case <-hb.stop:
	default:
		close(hb.stop)
	}
	hb.mu.Unlock()
	<-hb.done
	hb.cancel(nil)
	hb.mu.Lock()
	defer hb.mu.Unlock()
	return hb.lock, hb.err
}
