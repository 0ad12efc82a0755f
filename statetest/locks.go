package statetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/botstate/botstate"
)

func entries(es []botstate.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.Payload)
	}
	return out
}

var rejectPolicy = botstate.LockPolicy{Strategy: botstate.Reject, TTL: time.Minute}

func init() {
	add("Locks",
		tc("RejectStrategyAnswersBusy", testLocksRejectStrategyAnswersBusy),
		tc("FencingTokensGrowWithEveryAcquisition", testLocksFencingTokensGrowWithEveryAcquisition),
		tc("QueueReturnsEntriesInArrivalOrder", testLocksQueueReturnsEntriesInArrivalOrder),
		tc("QueueMaxDropsOldestOrNewest", testLocksQueueMaxDropsOldestOrNewest),
		tc("QueuedEntriesLapseAfterEntryTTL", testLocksQueuedEntriesLapseAfterEntryTTL),
		tc("DebounceKeepsOnlyTheLatest", testLocksDebounceKeepsOnlyTheLatest),
		tc("ConcurrentStrategyCapsHolders", testLocksConcurrentStrategyCapsHolders),
		tc("LapsedLockCanBeTakenAndOldHolderIsFenced", testLocksLapsedLockCanBeTakenAndOldHolderIsFenced),
		tc("ExtendKeepsTheLock", testLocksExtendKeepsTheLock),
		tc("ForceReleaseIgnoresOwner", testLocksForceReleaseIgnoresOwner),
		tc("HandoverPopsNextOrReleases", testLocksHandoverPopsNextOrReleases),
		tc("HandoverStrandsNoEntry", testLocksHandoverStrandsNoEntry),
		tc("ConcurrentAcquiresHaveOneWinner", testLocksConcurrentAcquiresHaveOneWinner),
		tc("HeartbeatRenewsAndReportsLoss", testLocksHeartbeatRenewsAndReportsLoss),
		tc("BadInputIsRefusedAndChangesNothing", testLocksBadInputIsRefusedAndChangesNothing),
	)
}

func testLocksRejectStrategyAnswersBusy(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	r, err := l.Acquire(ctx, "thread", "w1", []byte("m1"), rejectPolicy)
	ok(e.t, err, "acquire")
	eq(e.t, r.Status, botstate.Acquired, "first acquire")
	truth(e.t, r.Lock.Token > 0, "token %d", r.Lock.Token)
	eq(e.t, r.Lock.Owner, "w1", "owner")
	truth(e.t, r.Lock.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)), "expires at %v", r.Lock.ExpiresAt)
	r2, err := l.Acquire(ctx, "thread", "w2", []byte("m2"), rejectPolicy)
	ok(e.t, err, "second acquire")
	eq(e.t, r2.Status, botstate.Busy, "acquire while held")
	r3, _ := l.Acquire(ctx, "thread", "w1", nil, rejectPolicy)
	eq(e.t, r3.Status, botstate.Busy, "same owner again (locks are not reentrant)")
	pending, err := l.Release(ctx, r.Lock)
	ok(e.t, err, "release")
	eq(e.t, len(pending), 0, "nothing pending under reject")
	r4, _ := l.Acquire(ctx, "thread", "w2", nil, rejectPolicy)
	eq(e.t, r4.Status, botstate.Acquired, "acquire after release")
	truth(e.t, r4.Lock.Token > r.Lock.Token, "token did not grow: %d then %d", r.Lock.Token, r4.Lock.Token)
	_, err = l.Release(ctx, r.Lock)
	isErr(e.t, err, botstate.ErrNotOwner, "release of a released lock")
}

func testLocksFencingTokensGrowWithEveryAcquisition(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	var last uint64
	for i := 0; i < 5; i++ {
		r, err := l.Acquire(ctx, "k", "w", nil, rejectPolicy)
		ok(e.t, err, "acquire")
		eq(e.t, r.Status, botstate.Acquired, "acquire %d", i)
		truth(e.t, r.Lock.Token > last, "token %d after %d", r.Lock.Token, last)
		last = r.Lock.Token
		switch i % 3 {
		case 0:
			_, err = l.Release(ctx, r.Lock)
			ok(e.t, err, "release")
		case 1:
			e.clock.Advance(2 * time.Minute) // lapses
		case 2:
			_, err = l.ForceRelease(ctx, "k")
			ok(e.t, err, "force release")
			e.clock.Advance(24 * time.Hour) // long idle
		}
	}
	st, err := l.Inspect(ctx, "k")
	ok(e.t, err, "inspect")
	truth(e.t, st.Fence == 0 || st.Fence >= last, "fence %d below last token %d", st.Fence, last)
}

func testLocksQueueReturnsEntriesInArrivalOrder(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	r, _ := l.Acquire(ctx, "t", "w1", []byte("m0"), p)
	eq(e.t, r.Status, botstate.Acquired, "acquire")
	for i := 1; i <= 3; i++ {
		q, err := l.Acquire(ctx, "t", fmt.Sprintf("w%d", i+1), []byte(fmt.Sprintf("m%d", i)), p)
		ok(e.t, err, "queue")
		eq(e.t, q.Status, botstate.Queued, "acquire while held")
		e.clock.Advance(time.Millisecond)
	}
	st, _ := l.Inspect(ctx, "t")
	eq(e.t, entries(st.Pending), []string{"m1", "m2", "m3"}, "pending")
	eq(e.t, len(st.Holders), 1, "holders")
	pending, err := l.Release(ctx, r.Lock)
	ok(e.t, err, "release")
	eq(e.t, entries(pending), []string{"m1", "m2", "m3"}, "released entries")
	st, _ = l.Inspect(ctx, "t")
	eq(e.t, len(st.Pending), 0, "pending after release")
	eq(e.t, len(st.Holders), 0, "holders after release")
}

func testLocksQueueMaxDropsOldestOrNewest(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	oldest := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute, QueueMax: 2, OnFull: botstate.DropOldest}
	r, _ := l.Acquire(ctx, "a", "w", nil, oldest)
	for i := 1; i <= 4; i++ {
		q, err := l.Acquire(ctx, "a", "x", []byte(fmt.Sprintf("m%d", i)), oldest)
		ok(e.t, err, "queue")
		eq(e.t, q.Status, botstate.Queued, "drop-oldest always queues")
		if i > 2 {
			eq(e.t, entries(q.Dropped), []string{fmt.Sprintf("m%d", i-2)}, "dropped by entry %d", i)
		}
	}
	pending, _ := l.Release(ctx, r.Lock)
	eq(e.t, entries(pending), []string{"m3", "m4"}, "drop-oldest keeps the newest")
	newest := oldest
	newest.OnFull = botstate.DropNewest
	r, _ = l.Acquire(ctx, "b", "w", nil, newest)
	var statuses []botstate.AcquireStatus
	for i := 1; i <= 4; i++ {
		q, _ := l.Acquire(ctx, "b", "x", []byte(fmt.Sprintf("m%d", i)), newest)
		statuses = append(statuses, q.Status)
	}
	eq(e.t, statuses, []botstate.AcquireStatus{botstate.Queued, botstate.Queued, botstate.Busy, botstate.Busy}, "drop-newest statuses")
	pending, _ = l.Release(ctx, r.Lock)
	eq(e.t, entries(pending), []string{"m1", "m2"}, "drop-newest keeps the oldest")
}

func testLocksQueuedEntriesLapseAfterEntryTTL(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Hour, EntryTTL: time.Minute}
	r, _ := l.Acquire(ctx, "t", "w", nil, p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("old"), p)
	e.clock.Advance(30 * time.Second)
	_, _ = l.Acquire(ctx, "t", "x", []byte("new"), p)
	e.clock.Advance(30 * time.Second)
	pending, _ := l.Release(ctx, r.Lock)
	eq(e.t, entries(pending), []string{"new"}, "entries after the first lapsed")
}

func testLocksDebounceKeepsOnlyTheLatest(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Debounce, TTL: time.Minute}
	r, _ := l.Acquire(ctx, "t", "w", []byte("first"), p)
	eq(e.t, r.Status, botstate.Acquired, "acquire")
	d1, _ := l.Acquire(ctx, "t", "x", []byte("second"), p)
	eq(e.t, d1.Status, botstate.Debounced, "debounce")
	d2, _ := l.Acquire(ctx, "t", "x", []byte("third"), p)
	eq(e.t, d2.Status, botstate.Debounced, "debounce again")
	eq(e.t, entries(d2.Dropped), []string{"second"}, "replaced entry")
	pending, _ := l.Release(ctx, r.Lock)
	eq(e.t, entries(pending), []string{"third"}, "latest wins")
}

func testLocksConcurrentStrategyCapsHolders(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Concurrent, TTL: time.Minute, MaxHolders: 2}
	a, _ := l.Acquire(ctx, "t", "a", nil, p)
	b, _ := l.Acquire(ctx, "t", "b", nil, p)
	c, _ := l.Acquire(ctx, "t", "c", nil, p)
	eq(e.t, []botstate.AcquireStatus{a.Status, b.Status, c.Status}, []botstate.AcquireStatus{botstate.Acquired, botstate.Acquired, botstate.Busy}, "statuses")
	truth(e.t, a.Lock.Token != b.Lock.Token, "holders share a token")
	q, _ := l.Acquire(ctx, "t", "q", []byte("waiting"), botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute})
	eq(e.t, q.Status, botstate.Queued, "queue behind concurrent holders")
	pending, err := l.Release(ctx, a.Lock)
	ok(e.t, err, "release first holder")
	eq(e.t, len(pending), 0, "entries go to the last holder out")
	pending, err = l.Release(ctx, b.Lock)
	ok(e.t, err, "release last holder")
	eq(e.t, entries(pending), []string{"waiting"}, "entries of the last holder out")
	unlimited := botstate.LockPolicy{Strategy: botstate.Concurrent, TTL: time.Minute}
	for i := 0; i < 5; i++ {
		r, _ := l.Acquire(ctx, "u", fmt.Sprintf("o%d", i), nil, unlimited)
		eq(e.t, r.Status, botstate.Acquired, "unlimited holder %d", i)
	}
}

func testLocksLapsedLockCanBeTakenAndOldHolderIsFenced(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	old, _ := l.Acquire(ctx, "t", "w1", nil, p)
	_, _ = l.Acquire(ctx, "t", "w9", []byte("queued"), p)
	e.clock.Advance(time.Minute)
	_, err := l.Extend(ctx, old.Lock, time.Minute)
	isErr(e.t, err, botstate.ErrNotOwner, "extend after lapse")
	nw, _ := l.Acquire(ctx, "t", "w2", []byte("own"), p)
	eq(e.t, nw.Status, botstate.Acquired, "acquire after lapse")
	truth(e.t, nw.Lock.Token > old.Lock.Token, "token did not grow")
	_, err = l.Release(ctx, old.Lock)
	isErr(e.t, err, botstate.ErrNotOwner, "release by lapsed holder")
	_, err = l.Handover(ctx, old.Lock, time.Minute)
	isErr(e.t, err, botstate.ErrNotOwner, "handover by lapsed holder")
	truth(e.t, nw.Next != nil && string(nw.Next.Payload) == "queued", "the new holder gets the waiting entry first: %+v", nw.Next)
	pending, err := l.Release(ctx, nw.Lock)
	ok(e.t, err, "release by new holder")
	eq(e.t, entries(pending), []string{"own"}, "the new holder's own entry joined the back of the queue")
}

func testLocksExtendKeepsTheLock(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	r, _ := l.Acquire(ctx, "t", "w", nil, rejectPolicy)
	lk := r.Lock
	for i := 0; i < 5; i++ {
		e.clock.Advance(50 * time.Second)
		var err error
		lk, err = l.Extend(ctx, lk, time.Minute)
		ok(e.t, err, "extend %d", i)
		truth(e.t, lk.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)), "expiry %v", lk.ExpiresAt)
	}
	b, _ := l.Acquire(ctx, "t", "x", nil, rejectPolicy)
	eq(e.t, b.Status, botstate.Busy, "extended lock still held")
	eq(e.t, lk.Token, r.Lock.Token, "extend keeps the token")
}

func testLocksForceReleaseIgnoresOwner(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	r, _ := l.Acquire(ctx, "t", "w", nil, p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("a"), p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("b"), p)
	pending, err := l.ForceRelease(ctx, "t")
	ok(e.t, err, "force release")
	eq(e.t, entries(pending), []string{"a", "b"}, "force-released entries")
	_, err = l.Extend(ctx, r.Lock, time.Minute)
	isErr(e.t, err, botstate.ErrNotOwner, "extend after force release")
	n, _ := l.Acquire(ctx, "t", "y", nil, p)
	eq(e.t, n.Status, botstate.Acquired, "acquire after force release")
	pending, err = l.ForceRelease(ctx, "never-locked")
	ok(e.t, err, "force release of absent lock")
	eq(e.t, len(pending), 0, "entries of absent lock")
}

func testLocksHandoverPopsNextOrReleases(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	r, _ := l.Acquire(ctx, "t", "w", []byte("m0"), p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("m1"), p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("m2"), p)
	e.clock.Advance(30 * time.Second)
	h, err := l.Handover(ctx, r.Lock, time.Minute)
	ok(e.t, err, "handover")
	truth(e.t, h.Held && h.Next != nil, "handover with pending entries released: %+v", h)
	eq(e.t, string(h.Next.Payload), "m1", "next entry")
	eq(e.t, h.Lock.Token, r.Lock.Token, "same token")
	eq(e.t, h.Lock.Owner, "w", "same owner")
	truth(e.t, h.Lock.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)), "handover renews: %v", h.Lock.ExpiresAt)
	h, _ = l.Handover(ctx, h.Lock, time.Minute)
	eq(e.t, string(h.Next.Payload), "m2", "second entry")
	h2, err := l.Handover(ctx, h.Lock, time.Minute)
	ok(e.t, err, "last handover")
	truth(e.t, !h2.Held && h2.Next == nil, "handover with nothing pending kept the lock")
	n, _ := l.Acquire(ctx, "t", "z", nil, p)
	eq(e.t, n.Status, botstate.Acquired, "lock free after the last handover")
}

func testLocksHandoverStrandsNoEntry(e *env) {
	// Producers keep arriving while holders hand over: every entry
	// that was queued must be handled by some holder.
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Hour}
	var handled sync.Map
	var queued, acquired atomic.Int32
	race(6, func(i int) {
		for j := 0; j < 15; j++ {
			msg := fmt.Sprintf("%d-%d", i, j)
			r, err := l.Acquire(ctx, "thread", fmt.Sprintf("w%d", i), []byte(msg), p)
			if err != nil {
				e.t.Errorf("acquire: %v", err)
				return
			}
			if r.Status == botstate.Queued {
				queued.Add(1)
				continue
			}
			acquired.Add(1)
			handled.Store(msg, true)
			lk := r.Lock
			for {
				h, err := l.Handover(ctx, lk, time.Hour)
				if err != nil {
					e.t.Errorf("handover: %v", err)
					return
				}
				if !h.Held {
					break
				}
				if _, dup := handled.LoadOrStore(string(h.Next.Payload), true); dup {
					e.t.Errorf("entry %s handed over twice", h.Next.Payload)
				}
				lk = h.Lock
			}
		}
	})
	n := 0
	handled.Range(func(any, any) bool { n++; return true })
	eq(e.t, n, 90, "entries handled (acquired %d, queued %d)", acquired.Load(), queued.Load())
	st, _ := l.Inspect(ctx, "thread")
	eq(e.t, len(st.Pending), 0, "entries stranded")
	eq(e.t, len(st.Holders), 0, "holders left")
}

func testLocksConcurrentAcquiresHaveOneWinner(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	for round := 0; round < 5; round++ {
		var won atomic.Int32
		tokens := make(chan uint64, 16)
		race(16, func(i int) {
			r, err := l.Acquire(ctx, fmt.Sprintf("k%d", round), fmt.Sprintf("w%d", i), nil, rejectPolicy)
			if err != nil {
				e.t.Errorf("acquire: %v", err)
				return
			}
			if r.Status == botstate.Acquired {
				won.Add(1)
				tokens <- r.Lock.Token
			}
		})
		eq(e.t, won.Load(), int32(1), "winners of round %d", round)
	}
}

func testLocksHeartbeatRenewsAndReportsLoss(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	// A TTL of a second: a server that expires keys on its own clock (Redis)
	// drops the lock if no renewal lands within it, which a loaded machine
	// can delay a few hundred milliseconds.
	ttl := time.Second
	r, _ := l.Acquire(ctx, "t", "w", nil, botstate.LockPolicy{TTL: ttl})
	hctx, hb := l.Heartbeat(ctx, r.Lock, ttl)
	e.clock.Advance(300 * time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := l.Inspect(ctx, "t")
		ok(e.t, err, "inspect")
		if len(st.Holders) == 1 && st.Holders[0].ExpiresAt.After(r.Lock.ExpiresAt) {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("heartbeat did not renew the lock: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	truth(e.t, hctx.Err() == nil, "heartbeat context ended while the lock was held")
	_, err := l.ForceRelease(ctx, "t")
	ok(e.t, err, "force release")
	select {
	case <-hctx.Done():
	case <-time.After(5 * time.Second):
		e.t.Fatal("heartbeat context not cancelled after the lock was lost")
	}
	isErr(e.t, context.Cause(hctx), botstate.ErrLockLost, "cause")
	_, err = hb.Stop()
	isErr(e.t, err, botstate.ErrLockLost, "stop after loss")
	// A heartbeat stopped while the lock is held returns it.
	r2, _ := l.Acquire(ctx, "t2", "w", nil, botstate.LockPolicy{TTL: time.Minute})
	_, hb2 := l.Heartbeat(ctx, r2.Lock, time.Minute)
	lk, err := hb2.Stop()
	ok(e.t, err, "stop while held")
	eq(e.t, lk.Token, r2.Lock.Token, "lock from stop")
}

func testLocksBadInputIsRefusedAndChangesNothing(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	r, _ := l.Acquire(ctx, "t", "w", nil, rejectPolicy)
	for name, p := range map[string]botstate.LockPolicy{
		"zero ttl":          {TTL: 0},
		"negative ttl":      {TTL: -time.Second},
		"absurd ttl":        {TTL: botstate.MaxTTL + 1},
		"unknown strategy":  {Strategy: 99, TTL: time.Minute},
		"negative queue":    {Strategy: botstate.Queue, TTL: time.Minute, QueueMax: -1},
		"negative entries":  {Strategy: botstate.Queue, TTL: time.Minute, EntryTTL: -1},
		"negative holders":  {Strategy: botstate.Concurrent, TTL: time.Minute, MaxHolders: -1},
		"unknown overflow":  {Strategy: botstate.Queue, TTL: time.Minute, OnFull: 9},
		"queue max too big": {Strategy: botstate.Queue, TTL: time.Minute, QueueMax: botstate.MaxQueue + 1},
	} {
		_, err := l.Acquire(ctx, "t", "x", []byte("e"), p)
		isErr(e.t, err, botstate.ErrInvalidArgument, "%s", name)
	}
	_, err := l.Acquire(ctx, "t", "", nil, rejectPolicy)
	isErr(e.t, err, botstate.ErrInvalidArgument, "empty owner")
	_, err = l.Acquire(ctx, "", "w", nil, rejectPolicy)
	isErr(e.t, err, botstate.ErrInvalidArgument, "empty key")
	_, err = l.Release(ctx, botstate.Lock{Key: "t"})
	isErr(e.t, err, botstate.ErrInvalidArgument, "lock without token")
	_, err = l.Extend(ctx, r.Lock, 0)
	isErr(e.t, err, botstate.ErrInvalidArgument, "extend by zero")
	st, _ := l.Inspect(ctx, "t")
	eq(e.t, len(st.Holders), 1, "holders after refused calls")
	eq(e.t, st.Holders[0].Token, r.Lock.Token, "holder after refused calls")
	eq(e.t, len(st.Pending), 0, "pending after refused calls")
}
