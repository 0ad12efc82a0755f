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
//
// A holder that dies leaves its queue in order: the entry it was handling
// goes back to the front, whoever is granted the lock next handles the
// oldest waiting entry first (AcquireResult.Next), and Lapsed lists such
// locks so a sweeper can TakeOver them when no new message comes. Entries
// that leave the queue unhandled (dropped, replaced, lapsed) are kept as
// skipped and given to the next holder that takes an entry.
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
	// EntryTTL is how long a queued or debounced entry waits before it
	// lapses (0: DefaultEntryTTL, one hour).
	EntryTTL time.Duration
	// MaxHolders caps Concurrent holders (0: no cap).
	MaxHolders int
	// QueueWhenFull makes Concurrent queue the entry, as Queue does, when
	// MaxHolders hold the lock, instead of answering Busy.
	QueueWhenFull bool
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
	// Next, when Acquired, is an entry to handle before the caller's own:
	// the lock was free with entries waiting (its holder lapsed), so the
	// oldest comes first and the caller's entry joined the back of the
	// queue. Handover then brings the rest in order.
	Next *Entry
	// Skipped, when Acquired, are entries that left the queue unhandled
	// since the last holder took one (dropped, replaced or lapsed), oldest
	// first, at most 100.
	Skipped []Entry
}

// HandoverResult is the outcome of Handover and Next.
type HandoverResult struct {
	// Held reports that the lock is still held.
	Held bool
	// Next is the entry to handle now, if one was waiting.
	Next *Entry
	// Lock is the lock with its new expiry, when Held.
	Lock Lock
	// Skipped, when Held, are entries that left the queue unhandled since
	// the last holder took one, oldest first.
	Skipped []Entry
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
	if err := l.checkAcquire(ctx, op, key, owner); err != nil {
		return AcquireResult{}, err
	}
	if err := s.checkSize(op, "entry", entry); err != nil {
		return AcquireResult{}, err
	}
	st, err := l.checkPolicy(op, p)
	if err != nil {
		return AcquireResult{}, err
	}
	entryTTL := p.EntryTTL
	if entryTTL == 0 {
		entryTTL = DefaultEntryTTL
	}
	now := s.now()
	return l.acquire(ctx, op, driver.AcquireRequest{
		Key: key, Owner: owner, Strategy: st, Entry: entry, Now: s.judged(now), ExpiresAt: after(now, p.TTL),
		MaxHolders: p.MaxHolders, QueueMax: p.QueueMax, DropNewest: p.OnFull == DropNewest,
		EntryExpiresAt: after(now, entryTTL), IdleExpiresAt: after(now, lockIdleRetention),
		QueueWhenFull: p.QueueWhenFull,
	})
}

func (l *Locks) checkAcquire(ctx context.Context, op, key, owner string) error {
	if err := l.s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "lock key", key); err != nil {
		return err
	}
	return checkKey(op, "owner", owner)
}

func (l *Locks) acquire(ctx context.Context, op string, r driver.AcquireRequest) (AcquireResult, error) {
	rep, err := l.s.core.drv.Acquire(ctx, l.s.ns, r)
	if err != nil {
		return AcquireResult{}, wrap(op, err)
	}
	res := AcquireResult{Status: rep.Outcome, Dropped: rep.Dropped}
	if rep.Outcome == Acquired {
		res.Lock = Lock{Key: r.Key, Owner: rep.Holder.Owner, Token: rep.Holder.Token, ExpiresAt: rep.Holder.ExpiresAt}
		res.Next, res.Skipped = rep.Next, rep.Skipped
	}
	return res, nil
}

// TakeOver takes the lock on key for owner if nobody holds it, bringing no
// entry of its own: a sweeper calls it for what Lapsed lists. When entries
// wait, the result's Next is the oldest, to handle first (then Handover);
// when none does, the caller holds an idle lock and should Release it. A
// held lock answers Busy.
func (l *Locks) TakeOver(ctx context.Context, key, owner string, ttl time.Duration) (AcquireResult, error) {
	const op = "Locks.TakeOver"
	s := l.s
	if err := l.checkAcquire(ctx, op, key, owner); err != nil {
		return AcquireResult{}, err
	}
	if err := checkTTL(op, "lock TTL", ttl, false); err != nil {
		return AcquireResult{}, err
	}
	now := s.now()
	return l.acquire(ctx, op, driver.AcquireRequest{
		Key: key, Owner: owner, Strategy: Queue, Now: s.judged(now), ExpiresAt: after(now, ttl),
		IdleExpiresAt: after(now, lockIdleRetention), NoEntry: true,
	})
}

// Lapsed lists up to limit locks that nobody holds while entries wait for
// them (their holder died), in key order, for a sweeper to TakeOver.
func (l *Locks) Lapsed(ctx context.Context, limit int) ([]LockState, error) {
	const op = "Locks.Lapsed"
	s := l.s
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	limit, err := checkLimit(op, limit)
	if err != nil {
		return nil, err
	}
	sts, err := s.core.drv.LapsedLocks(ctx, s.ns, s.judged(s.now()), limit)
	return sts, wrap(op, err)
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
	es, err := l.s.core.drv.ReleaseLock(ctx, l.s.ns, lk.Key, lk.Token, now, after(now, lockIdleRetention), false)
	return es, wrap(op, err)
}

// Abandon gives the lock up as if it lapsed now: the entry the holder was
// handling goes back to the front of the queue and the waiting entries stay,
// for whoever takes the lock next (Acquire hands them over oldest first, and
// Lapsed lists the lock). It is what a worker shutting down does. A lapsed
// or taken-over lock gets ErrNotOwner.
func (l *Locks) Abandon(ctx context.Context, lk Lock) error {
	const op = "Locks.Abandon"
	if err := l.checkLock(ctx, op, lk); err != nil {
		return err
	}
	now := l.s.now()
	_, err := l.s.core.drv.ReleaseLock(ctx, l.s.ns, lk.Key, lk.Token, now, after(now, lockIdleRetention), true)
	return wrap(op, err)
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
	return l.handover(ctx, "Locks.Handover", lk, ttl, false)
}

// Next takes the next waiting entry, if any, and keeps the lock either way
// (expiring ttl from now): Held is always true, and Next is nil when nothing
// waits. A debouncing worker calls it after its quiet period to learn
// whether a newer message replaced the one it holds.
func (l *Locks) Next(ctx context.Context, lk Lock, ttl time.Duration) (HandoverResult, error) {
	return l.handover(ctx, "Locks.Next", lk, ttl, true)
}

func (l *Locks) handover(ctx context.Context, op string, lk Lock, ttl time.Duration, keep bool) (HandoverResult, error) {
	if err := l.checkLock(ctx, op, lk); err != nil {
		return HandoverResult{}, err
	}
	if err := checkTTL(op, "ttl", ttl, false); err != nil {
		return HandoverResult{}, err
	}
	now := l.s.now()
	rep, err := l.s.core.drv.HandoverLock(ctx, l.s.ns, lk.Key, lk.Token, now, after(now, ttl), after(now, lockIdleRetention), keep)
	if err != nil {
		return HandoverResult{}, wrap(op, err)
	}
	if !rep.Held {
		return HandoverResult{}, nil
	}
	lk.ExpiresAt = rep.Holder.ExpiresAt
	return HandoverResult{Held: true, Next: rep.Next, Lock: lk, Skipped: rep.Skipped}, nil
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
type Heartbeat struct{ k *keeper[Lock] }

// Heartbeat renews lk to ttl from now every ttl/3 until Stop, and returns a
// context derived from ctx that is cancelled, with cause ErrLockLost, as soon
// as the lock is known lost — so a long handler never goes on silently after
// losing its lock. Run the handler under the returned context.
func (l *Locks) Heartbeat(ctx context.Context, lk Lock, ttl time.Duration) (context.Context, *Heartbeat) {
	const op = "Locks.Heartbeat"
	err := l.checkLock(ctx, op, lk)
	if err == nil {
		err = checkTTL(op, "ttl", ttl, false)
	}
	hctx, k := startKeeper(ctx, err, lk, lk.ExpiresAt, ttl, ErrLockLost, func(ctx context.Context, cur Lock) (Lock, time.Time, error) {
		next, err := l.Extend(ctx, cur, ttl)
		return next, next.ExpiresAt, err
	}, l.s.now)
	return hctx, &Heartbeat{k}
}

// Stop ends the renewals and returns the lock as last renewed, or the error
// that ended them (wrapping ErrLockLost when the lock was lost, or
// ErrInvalidArgument when the lock or ttl was refused at the start).
func (hb *Heartbeat) Stop() (Lock, error) { return hb.k.stop() }

// keeper renews something (a lock, a claim) in the background until stopped,
// cancelling the context it hands out as soon as the thing is known lost.
type keeper[T any] struct {
	mu     sync.Mutex
	cur    T
	until  time.Time // when cur lapses unless renewed
	err    error
	cancel context.CancelCauseFunc
	stopc  chan struct{}
	done   chan struct{}
}

// startKeeper starts renewing cur (which lapses at until) every ttl/3 with
// renew. A refused start (err set, or a nil ctx) returns a cancelled context
// and a keeper that reports err.
func startKeeper[T any](ctx context.Context, err error, cur T, until time.Time, ttl time.Duration, lost error,
	renew func(context.Context, T) (T, time.Time, error), now func() time.Time) (context.Context, *keeper[T]) {
	if ctx == nil {
		ctx = context.Background()
	}
	hctx, cancel := context.WithCancelCause(ctx)
	k := &keeper[T]{cur: cur, until: until, cancel: cancel, stopc: make(chan struct{}), done: make(chan struct{})}
	if err != nil {
		k.err = err
		cancel(err)
		close(k.done)
		return hctx, k
	}
	go k.run(hctx, ttl, lost, renew, now)
	return hctx, k
}

func (k *keeper[T]) run(ctx context.Context, ttl time.Duration, lost error, renew func(context.Context, T) (T, time.Time, error), now func() time.Time) {
	defer close(k.done)
	// Renew every ttl/3; after a transient failure, again after ttl/10.
	// end fires when the lease ends by this process's clock with no renewal
	// in: the holder treats the lease as lost at its end, whatever the
	// backend would say later (another replica may take it over from then,
	// see WithClockSkewMargin). A renewal may take until that end.
	// The first renewal comes sooner when the lease handed in is close to
	// its end already (a claim that waited for its thread's lock).
	period, retry := max(ttl/3, time.Millisecond), max(ttl/10, time.Millisecond)
	first := period
	if !k.until.IsZero() {
		first = max(min(period, k.until.Sub(now())/2), time.Millisecond)
	}
	next := time.NewTimer(first)
	defer next.Stop()
	end := time.NewTimer(time.Hour)
	defer end.Stop()
	fail := func(err error) {
		k.mu.Lock()
		k.err = err
		k.mu.Unlock()
		k.cancel(lost)
	}
	ended := func(until time.Time) error {
		return fmt.Errorf("%w: the lease ended at %v with no renewal in", lost, until.Format(time.RFC3339Nano))
	}
	for {
		k.mu.Lock()
		cur, until := k.cur, k.until
		k.mu.Unlock()
		// A zero end is not known (the dispatcher hands in such claims):
		// nothing to watch for until a renewal sets it.
		var endC <-chan time.Time
		if !until.IsZero() {
			end.Reset(max(until.Sub(now()), time.Millisecond))
			endC = end.C
		}
		select {
		case <-k.stopc:
			return
		case <-ctx.Done():
			return
		case <-endC:
			if !now().Before(until) {
				fail(ended(until))
				return
			}
			continue // a clock that stands still (tests): wait again
		case <-next.C:
		}
		left := period
		if !until.IsZero() {
			if left = until.Sub(now()); left <= 0 {
				fail(ended(until))
				return
			}
		}
		rctx, cancel := context.WithTimeout(ctx, left)
		upd, updUntil, err := renew(rctx, cur)
		cancel()
		switch {
		case err == nil:
			k.mu.Lock()
			k.cur, k.until = upd, updUntil
			k.mu.Unlock()
			next.Reset(period)
		case errors.Is(err, ErrNotOwner) || !until.IsZero() && !now().Before(until):
			// Lost for sure, or a transient error lasted past the end.
			fail(fmt.Errorf("%w: %v", lost, err))
			return
		default:
			next.Reset(retry)
		}
	}
}

func (k *keeper[T]) stop() (T, error) {
	k.mu.Lock()
	select {
	case <-k.stopc:
	default:
		close(k.stopc)
	}
	k.mu.Unlock()
	<-k.done
	k.cancel(nil)
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur, k.err
}
