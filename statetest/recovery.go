package statetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/botstate/botstate"
)

// The behaviours a dispatcher relies on to finish every event once: claims
// renewed while a handler runs, retries after a backoff, a bounded number of
// attempts, claims handed from one worker to another, and locks whose queue
// survives a holder that died.

func init() {
	add("EventRecovery",
		tc("ExtendRenewsTheLeaseAndIsFenced", testEventRecoveryExtendRenewsTheLeaseAndIsFenced),
		tc("HeartbeatRenewsTheClaimAndReportsLoss", testEventRecoveryHeartbeatRenewsTheClaimAndReportsLoss),
		tc("ReleaseAfterWaitsForTheRetryTime", testEventRecoveryReleaseAfterWaitsForTheRetryTime),
		tc("DueListsLapsedClaimsAndDueRetriesOldestFirst", testEventRecoveryDueListsLapsedClaimsAndDueRetriesOldestFirst),
		tco("MaxAttemptsParksTheEventAsFailed", []botstate.Option{botstate.WithMaxAttempts(2)}, testEventRecoveryMaxAttemptsParksTheEventAsFailed),
		tc("FailParksAtOnce", testEventRecoveryFailParksAtOnce),
		tc("DeferDoesNotCountAnAttempt", testEventRecoveryDeferDoesNotCountAnAttempt),
		tc("TakeOverPassesTheClaimWithoutAnAttempt", testEventRecoveryTakeOverPassesTheClaimWithoutAnAttempt),
		tc("ConcurrentTakeOversHaveOneWinner", testEventRecoveryConcurrentTakeOversHaveOneWinner),
	)
	add("LockRecovery",
		tc("LapsedHolderEntryGoesBackToTheFront", testLockRecoveryLapsedHolderEntryGoesBackToTheFront),
		tc("TakeOverDrainsAnOrphanedQueue", testLockRecoveryTakeOverDrainsAnOrphanedQueue),
		tc("SkippedEntriesReachTheNextHolder", testLockRecoverySkippedEntriesReachTheNextHolder),
		tc("NextKeepsTheLock", testLockRecoveryNextKeepsTheLock),
		tc("AbandonLeavesTheQueueForTheNextHolder", testLockRecoveryAbandonLeavesTheQueueForTheNextHolder),
		tc("EntriesLapseAfterAnHourByDefault", testLockRecoveryEntriesLapseAfterAnHourByDefault),
		tc("ConcurrentQueuesWhenFull", testLockRecoveryConcurrentQueuesWhenFull),
		tc("DebounceTakeoverKeepsTheLatest", testLockRecoveryDebounceTakeoverKeepsTheLatest),
	)
}

func lockKeys(sts []botstate.LockState) []string {
	out := []string{}
	for _, s := range sts {
		out = append(out, s.Key)
	}
	return out
}

// mustHolder returns the token of key's only holder.
func mustHolder(e *env, l *botstate.Locks, key string) uint64 {
	st, err := l.Inspect(ctxT(e.t), key)
	ok(e.t, err, "inspect")
	if len(st.Holders) != 1 {
		e.t.Fatalf("%s has %d holders, want 1", key, len(st.Holders))
	}
	return st.Holders[0].Token
}

func testEventRecoveryExtendRenewsTheLeaseAndIsFenced(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "k", nil, time.Minute)
	e.clock.Advance(50 * time.Second)
	until, err := ev.Extend(ctx, c.Token, time.Minute)
	ok(e.t, err, "extend")
	truth(e.t, until.Equal(e.clock.Now().Add(time.Minute)), "lease until %v", until)
	e.clock.Advance(50 * time.Second)
	c2, _ := ev.Claim(ctx, "k", nil, time.Minute)
	eq(e.t, c2.Status, botstate.InProgress, "claim of an extended lease")
	got, _ := ev.Get(ctx, "k")
	truth(e.t, got.LeaseUntil.Equal(until), "stored lease %v, want %v", got.LeaseUntil, until)
	// A lapsed lease nobody took over can still be extended.
	e.clock.Advance(time.Minute)
	_, err = ev.Extend(ctx, c.Token, time.Minute)
	ok(e.t, err, "extend after a lapse nobody took over")
	e.clock.Advance(2 * time.Minute)
	c3, _ := ev.Claim(ctx, "k", nil, time.Minute)
	eq(e.t, c3.Status, botstate.Claimed, "takeover")
	_, err = ev.Extend(ctx, c.Token, time.Minute)
	isErr(e.t, err, botstate.ErrNotOwner, "extend by a worker taken over")
	_, err = ev.Extend(ctx, botstate.EventToken{Key: "absent", ID: "x"}, time.Minute)
	isErr(e.t, err, botstate.ErrNotOwner, "extend of an absent key")
	ok(e.t, ev.Complete(ctx, c3.Token, nil), "complete")
	_, err = ev.Extend(ctx, c3.Token, time.Minute)
	isErr(e.t, err, botstate.ErrNotOwner, "extend after complete")
	_, err = ev.Extend(ctx, c3.Token, 0)
	isErr(e.t, err, botstate.ErrInvalidArgument, "zero lease")
}

func testEventRecoveryHeartbeatRenewsTheClaimAndReportsLoss(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	lease := 300 * time.Millisecond
	c, _ := ev.Claim(ctx, "k", nil, lease)
	hctx, hb := ev.Heartbeat(ctx, c, lease)
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The clock moves, slower than real time: a heartbeat treats its
		// lease as lost at its end by the store's clock, so a clock that
		// outran the renewals would end it.
		e.clock.Advance(5 * time.Millisecond)
		got, err := ev.Get(ctx, "k")
		ok(e.t, err, "get")
		if got.LeaseUntil.After(c.LeaseUntil) {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("heartbeat did not renew the claim: %+v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	truth(e.t, hctx.Err() == nil, "heartbeat context ended while the claim was held")
	// Another worker takes the claim over: the handler must be told.
	e.clock.Advance(time.Hour)
	c2, _ := ev.Claim(ctx, "k", nil, time.Hour)
	eq(e.t, c2.Status, botstate.Claimed, "takeover")
	select {
	case <-hctx.Done():
	case <-time.After(5 * time.Second):
		e.t.Fatal("heartbeat context not cancelled after the claim was lost")
	}
	isErr(e.t, context.Cause(hctx), botstate.ErrClaimLost, "cause")
	_, err := hb.Stop()
	isErr(e.t, err, botstate.ErrClaimLost, "stop after loss")
	c3, _ := ev.Claim(ctx, "k2", nil, time.Minute)
	_, hb3 := ev.Heartbeat(ctx, c3, time.Minute)
	got3, err := hb3.Stop()
	ok(e.t, err, "stop while held")
	eq(e.t, got3.Token, c3.Token, "claim from stop")
	_, hb4 := ev.Heartbeat(ctx, botstate.Claim{}, time.Minute)
	_, err = hb4.Stop()
	isErr(e.t, err, botstate.ErrInvalidArgument, "heartbeat of no claim")
}

func testEventRecoveryReleaseAfterWaitsForTheRetryTime(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "k", []byte("p"), time.Minute)
	ok(e.t, ev.ReleaseAfter(ctx, c.Token, time.Minute, "upstream 503"), "release after")
	got, _ := ev.Get(ctx, "k")
	eq(e.t, got.Status, botstate.EventReleased, "status")
	eq(e.t, got.LastError, "upstream 503", "last error")
	truth(e.t, got.RetryAt.Equal(e.clock.Now().Add(time.Minute)), "retry at %v", got.RetryAt)
	eq(e.t, got.Token, "", "token after release")
	c2, _ := ev.Claim(ctx, "k", nil, time.Minute)
	eq(e.t, c2.Status, botstate.InProgress, "claim before the retry time")
	due, _ := ev.Due(ctx, 0)
	eq(e.t, eventKeys(due), []string{}, "due before the retry time")
	e.clock.Advance(time.Minute)
	due, _ = ev.Due(ctx, 0)
	eq(e.t, eventKeys(due), []string{"k"}, "due at the retry time")
	c3, _ := ev.Claim(ctx, "k", nil, time.Minute)
	eq(e.t, c3.Status, botstate.Claimed, "claim at the retry time")
	eq(e.t, c3.Attempts, 2, "attempts")
	isErr(e.t, ev.ReleaseAfter(ctx, c.Token, time.Second, ""), botstate.ErrNotOwner, "stale release")
	isErr(e.t, ev.ReleaseAfter(ctx, c3.Token, -time.Second, ""), botstate.ErrInvalidArgument, "negative delay")
	// Reclaim is explicit: it does not wait for the retry time.
	ok(e.t, ev.ReleaseAfter(ctx, c3.Token, time.Hour, "again"), "release for an hour")
	c4, err := ev.Reclaim(ctx, "k", time.Minute)
	ok(e.t, err, "reclaim")
	eq(e.t, c4.Status, botstate.Claimed, "reclaim before the retry time")
	got, _ = ev.Get(ctx, "k")
	truth(e.t, got.RetryAt.IsZero(), "retry time kept while claimed: %v", got.RetryAt)
}

func testEventRecoveryDueListsLapsedClaimsAndDueRetriesOldestFirst(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	claim := func(k string, lease time.Duration) botstate.Claim {
		c, err := ev.Claim(ctx, k, nil, lease)
		ok(e.t, err, "claim %s", k)
		e.clock.Advance(time.Millisecond)
		return c
	}
	lapsed := claim("a-lapsed", time.Second)
	_ = lapsed
	r := claim("b-released", time.Hour)
	ok(e.t, ev.Release(ctx, r.Token), "release")
	later := claim("c-later", time.Hour)
	ok(e.t, ev.ReleaseAfter(ctx, later.Token, time.Hour, ""), "release later")
	claim("d-live", time.Hour)
	done := claim("e-done", time.Hour)
	ok(e.t, ev.Complete(ctx, done.Token, nil), "complete")
	_, _ = ev.Record(ctx, "f-recorded", nil)
	failed := claim("g-failed", time.Hour)
	ok(e.t, ev.Fail(ctx, failed.Token, "bad"), "fail")
	e.clock.Advance(2 * time.Second)
	due, err := ev.Due(ctx, 0)
	ok(e.t, err, "due")
	eq(e.t, eventKeys(due), []string{"a-lapsed", "b-released"}, "due")
	due, _ = ev.Due(ctx, 1)
	eq(e.t, eventKeys(due), []string{"a-lapsed"}, "due, limit 1")
	e.clock.Advance(time.Hour)
	due, _ = ev.Due(ctx, 0)
	eq(e.t, eventKeys(due), []string{"a-lapsed", "b-released", "c-later", "d-live"}, "due an hour later")
	pending, _ := ev.Pending(ctx, 0)
	eq(e.t, eventKeys(pending), []string{"a-lapsed", "b-released", "c-later", "d-live", "f-recorded"}, "pending leaves out completed and failed")
	_, err = ev.Due(ctx, -1)
	isErr(e.t, err, botstate.ErrInvalidArgument, "negative limit")
}

func testEventRecoveryMaxAttemptsParksTheEventAsFailed(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "k", []byte("p"), time.Minute)
	ok(e.t, ev.ReleaseAfter(ctx, c.Token, 0, "first"), "release 1")
	c, _ = ev.Claim(ctx, "k", nil, time.Minute)
	eq(e.t, c.Status, botstate.Claimed, "second attempt")
	eq(e.t, c.Attempts, 2, "attempts")
	ok(e.t, ev.ReleaseAfter(ctx, c.Token, time.Second, "second"), "release 2")
	got, _ := ev.Get(ctx, "k")
	eq(e.t, got.Status, botstate.EventFailed, "status after the last attempt")
	eq(e.t, got.LastError, "second", "last error")
	c2, err := ev.Claim(ctx, "k", nil, time.Minute)
	ok(e.t, err, "claim of a failed event")
	eq(e.t, c2.Status, botstate.Failed, "claim of a failed event")
	eq(e.t, c2.LastError, "second", "claim's last error")
	c2, _ = ev.Reclaim(ctx, "k", time.Minute)
	eq(e.t, c2.Status, botstate.Failed, "reclaim of a failed event")
	failed, _ := ev.Failed(ctx, 0)
	eq(e.t, eventKeys(failed), []string{"k"}, "failed")
	e.clock.Advance(time.Hour)
	due, _ := ev.Due(ctx, 0)
	eq(e.t, eventKeys(due), []string{}, "a failed event is never due")
	ok(e.t, ev.Retry(ctx, "k"), "retry")
	got, _ = ev.Get(ctx, "k")
	eq(e.t, got.Status, botstate.EventReleased, "status after retry")
	eq(e.t, got.Attempts, 0, "attempts after retry")
	c3, _ := ev.Claim(ctx, "k", nil, time.Minute)
	eq(e.t, c3.Status, botstate.Claimed, "claim after retry")
	eq(e.t, c3.Attempts, 1, "attempts after retry")
	eqBytes(e.t, got.Payload, []byte("p"), "payload kept")
	isErr(e.t, ev.Retry(ctx, "k"), botstate.ErrConflict, "retry of a claimed event")
	isErr(e.t, ev.Retry(ctx, "absent"), botstate.ErrNotFound, "retry of an absent event")
	// A worker that keeps dying: the takeover after the last attempt parks it.
	d, _ := ev.Claim(ctx, "dies", nil, time.Second)
	_ = d
	e.clock.Advance(2 * time.Second)
	d2, _ := ev.Claim(ctx, "dies", nil, time.Second)
	eq(e.t, d2.Status, botstate.Claimed, "second attempt after a lapse")
	e.clock.Advance(2 * time.Second)
	d3, err := ev.Reclaim(ctx, "dies", time.Second)
	ok(e.t, err, "reclaim after the last lapse")
	eq(e.t, d3.Status, botstate.Failed, "takeover past the last attempt")
	eq(e.t, d3.LastError, "attempts exhausted", "reason")
	isErr(e.t, ev.Complete(ctx, d2.Token, nil), botstate.ErrNotOwner, "complete by the parked worker")
}

func testEventRecoveryFailParksAtOnce(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "k", nil, time.Minute)
	ok(e.t, ev.Fail(ctx, c.Token, "payload cannot be parsed"), "fail")
	c2, _ := ev.Claim(ctx, "k", nil, time.Minute)
	eq(e.t, c2.Status, botstate.Failed, "claim after fail")
	eq(e.t, c2.LastError, "payload cannot be parsed", "reason")
	isErr(e.t, ev.Complete(ctx, c.Token, nil), botstate.ErrNotOwner, "complete after fail")
	isErr(e.t, ev.Fail(ctx, c.Token, ""), botstate.ErrNotOwner, "fail twice")
	long := make([]byte, 5000)
	for i := range long {
		long[i] = 'x'
	}
	c3, _ := ev.Claim(ctx, "k3", nil, time.Minute)
	ok(e.t, ev.Fail(ctx, c3.Token, string(long)+"\xff"), "fail with a long, invalid reason")
	got, _ := ev.Get(ctx, "k3")
	eq(e.t, len(got.LastError), botstate.MaxReasonLen, "reason cut to the limit")
}

func testEventRecoveryDeferDoesNotCountAnAttempt(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "k", []byte("p"), time.Minute)
	ok(e.t, ev.Defer(ctx, c.Token, 10*time.Minute), "defer")
	got, _ := ev.Get(ctx, "k")
	eq(e.t, got.Status, botstate.EventReleased, "status")
	eq(e.t, got.Attempts, 0, "attempts after defer")
	eq(e.t, got.LastError, botstate.DeferredReason, "last error after defer")
	c2, _ := ev.Claim(ctx, "k", nil, time.Minute)
	eq(e.t, c2.Status, botstate.InProgress, "a redelivery while deferred")
	due, _ := ev.Due(ctx, 0)
	eq(e.t, eventKeys(due), []string{}, "due while deferred")
	c3, _ := ev.Reclaim(ctx, "k", time.Minute)
	eq(e.t, c3.Status, botstate.Claimed, "reclaim of a deferred event")
	eq(e.t, c3.Attempts, 1, "attempts")
	isErr(e.t, ev.Defer(ctx, c.Token, time.Minute), botstate.ErrNotOwner, "stale defer")
}

func testEventRecoveryTakeOverPassesTheClaimWithoutAnAttempt(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "k", []byte("p"), time.Minute)
	t1, err := ev.TakeOver(ctx, c.Token, time.Hour)
	ok(e.t, err, "take over")
	eq(e.t, t1.Status, botstate.Claimed, "take over a live claim")
	eq(e.t, t1.Attempts, 1, "a handover is not an attempt")
	truth(e.t, t1.Token.ID != c.Token.ID, "same token after take over")
	truth(e.t, t1.LeaseUntil.Equal(e.clock.Now().Add(time.Hour)), "lease %v", t1.LeaseUntil)
	isErr(e.t, ev.Complete(ctx, c.Token, nil), botstate.ErrNotOwner, "the old token stops working")
	t2, _ := ev.TakeOver(ctx, c.Token, time.Minute)
	eq(e.t, t2.Status, botstate.InProgress, "take over with a token that no longer holds it")
	ok(e.t, ev.Defer(ctx, t1.Token, time.Hour), "defer")
	t3, _ := ev.TakeOver(ctx, t1.Token, time.Minute)
	eq(e.t, t3.Status, botstate.Claimed, "take over of a deferred event acts as reclaim")
	eq(e.t, t3.Attempts, 1, "attempts")
	e.clock.Advance(2 * time.Minute)
	t5, _ := ev.TakeOver(ctx, t3.Token, time.Minute)
	eq(e.t, t5.Status, botstate.Claimed, "take over of a lapsed claim")
	eq(e.t, t5.Attempts, 2, "a lapsed claim was an attempt")
	t3 = t5
	ok(e.t, ev.Complete(ctx, t3.Token, []byte("r")), "complete")
	t4, _ := ev.TakeOver(ctx, t3.Token, time.Minute)
	eq(e.t, t4.Status, botstate.Completed, "take over of a completed event")
	_, err = ev.TakeOver(ctx, botstate.EventToken{Key: "absent", ID: "x"}, time.Minute)
	isErr(e.t, err, botstate.ErrNotFound, "take over of an absent event")
	_, err = ev.TakeOver(ctx, botstate.EventToken{Key: "k"}, time.Minute)
	isErr(e.t, err, botstate.ErrInvalidArgument, "take over without a token")
}

func testEventRecoveryConcurrentTakeOversHaveOneWinner(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	for round := 0; round < 5; round++ {
		key := fmt.Sprintf("k%d", round)
		c, _ := ev.Claim(ctx, key, nil, time.Minute)
		var won atomic.Int32
		race(8, func(int) {
			t, err := ev.TakeOver(ctx, c.Token, time.Minute)
			if err != nil {
				e.t.Errorf("take over: %v", err)
				return
			}
			if t.Status == botstate.Claimed {
				won.Add(1)
			}
		})
		eq(e.t, won.Load(), int32(1), "winners of round %d", round)
	}
}

func testLockRecoveryLapsedHolderEntryGoesBackToTheFront(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	r, _ := l.Acquire(ctx, "t", "w1", []byte("m0"), p)
	st, _ := l.Inspect(ctx, "t")
	truth(e.t, len(st.Holders) == 1 && st.Holders[0].Entry != nil && string(st.Holders[0].Entry.Payload) == "m0",
		"the holder keeps the entry it handles: %+v", st.Holders)
	for _, m := range []string{"m1", "m2"} {
		e.clock.Advance(time.Millisecond)
		_, _ = l.Acquire(ctx, "t", "wx", []byte(m), p)
	}
	e.clock.Advance(time.Minute) // w1 dies
	st, _ = l.Inspect(ctx, "t")
	eq(e.t, len(st.Holders), 0, "holders after the lapse")
	eq(e.t, entries(st.Pending), []string{"m0", "m1", "m2"}, "pending after the lapse")
	lapsed, err := l.Lapsed(ctx, 0)
	ok(e.t, err, "lapsed")
	eq(e.t, len(lapsed), 1, "lapsed locks")
	eq(e.t, lapsed[0].Key, "t", "lapsed lock")
	n, err := l.Acquire(ctx, "t", "w2", []byte("m3"), p)
	ok(e.t, err, "acquire")
	eq(e.t, n.Status, botstate.Acquired, "acquire after the lapse")
	truth(e.t, n.Next != nil && string(n.Next.Payload) == "m0", "next %+v", n.Next)
	var got []string
	lk := n.Lock
	for {
		h, err := l.Handover(ctx, lk, time.Minute)
		ok(e.t, err, "handover")
		if !h.Held {
			break
		}
		got = append(got, string(h.Next.Payload))
		lk = h.Lock
	}
	eq(e.t, got, []string{"m1", "m2", "m3"}, "the rest in order, own entry last")
	_, err = l.Handover(ctx, r.Lock, time.Minute)
	isErr(e.t, err, botstate.ErrNotOwner, "handover by the dead holder")
	lapsed, _ = l.Lapsed(ctx, 0)
	eq(e.t, len(lapsed), 0, "lapsed locks after the drain")
}

func testLockRecoveryTakeOverDrainsAnOrphanedQueue(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	_, _ = l.Acquire(ctx, "t", "w1", nil, p)
	_, _ = l.Acquire(ctx, "t", "wx", []byte("a"), p)
	_, _ = l.Acquire(ctx, "held", "w1", nil, p)
	_, _ = l.Acquire(ctx, "held", "wx", []byte("x"), p)
	_, _ = l.Acquire(ctx, "idle", "w1", nil, p)
	b, _ := l.TakeOver(ctx, "t", "sweeper", time.Minute)
	eq(e.t, b.Status, botstate.Busy, "take over of a held lock")
	e.clock.Advance(59 * time.Second)
	_, _ = l.Extend(ctx, botstate.Lock{Key: "held", Token: mustHolder(e, l, "held")}, time.Hour)
	e.clock.Advance(2 * time.Second)
	lapsed, _ := l.Lapsed(ctx, 0)
	eq(e.t, lockKeys(lapsed), []string{"t"}, "only the lapsed lock with entries")
	r, err := l.TakeOver(ctx, "t", "sweeper", time.Minute)
	ok(e.t, err, "take over")
	eq(e.t, r.Status, botstate.Acquired, "take over of a lapsed lock")
	truth(e.t, r.Next != nil && string(r.Next.Payload) == "a", "next %+v", r.Next)
	h, _ := l.Handover(ctx, r.Lock, time.Minute)
	truth(e.t, !h.Held, "nothing else waited")
	r2, _ := l.TakeOver(ctx, "never", "sweeper", time.Minute)
	eq(e.t, r2.Status, botstate.Acquired, "take over of a free lock with nothing waiting")
	truth(e.t, r2.Next == nil, "next of an empty queue: %+v", r2.Next)
	_, err = l.TakeOver(ctx, "t", "", time.Minute)
	isErr(e.t, err, botstate.ErrInvalidArgument, "empty owner")
	_, err = l.TakeOver(ctx, "t", "o", 0)
	isErr(e.t, err, botstate.ErrInvalidArgument, "zero ttl")
	_, err = l.Lapsed(ctx, -1)
	isErr(e.t, err, botstate.ErrInvalidArgument, "negative limit")
}

func testLockRecoverySkippedEntriesReachTheNextHolder(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Hour, QueueMax: 2}
	r, _ := l.Acquire(ctx, "t", "w", []byte("m0"), p)
	for _, m := range []string{"m1", "m2", "m3"} {
		_, _ = l.Acquire(ctx, "t", "x", []byte(m), p)
	}
	short := p
	short.EntryTTL = time.Second
	// the queue is full: m2 is dropped to make room for m4
	_, _ = l.Acquire(ctx, "t", "x", []byte("m4"), short)
	e.clock.Advance(2 * time.Second) // m4 lapses
	st, _ := l.Inspect(ctx, "t")
	eq(e.t, entries(st.Skipped), []string{"m1", "m2", "m4"}, "skipped, as stored")
	h, err := l.Handover(ctx, r.Lock, time.Hour)
	ok(e.t, err, "handover")
	eq(e.t, string(h.Next.Payload), "m3", "next")
	eq(e.t, entries(h.Skipped), []string{"m1", "m2", "m4"}, "skipped, dropped and lapsed")
	h, _ = l.Handover(ctx, h.Lock, time.Hour)
	truth(e.t, !h.Held && len(h.Skipped) == 0, "skipped are given once: %+v", h)
	// debounce and drop-newest
	d := botstate.LockPolicy{Strategy: botstate.Debounce, TTL: time.Hour}
	r, _ = l.Acquire(ctx, "d", "w", []byte("d0"), d)
	_, _ = l.Acquire(ctx, "d", "x", []byte("d1"), d)
	_, _ = l.Acquire(ctx, "d", "x", []byte("d2"), d)
	nw := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Hour, QueueMax: 1, OnFull: botstate.DropNewest}
	refused, _ := l.Acquire(ctx, "d", "x", []byte("d3"), nw)
	eq(e.t, refused.Status, botstate.Busy, "drop-newest on a full queue")
	h, _ = l.Next(ctx, r.Lock, time.Hour)
	eq(e.t, string(h.Next.Payload), "d2", "latest")
	eq(e.t, entries(h.Skipped), []string{"d1", "d3"}, "replaced and refused")
}

func testLockRecoveryNextKeepsTheLock(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Debounce, TTL: time.Minute}
	r, _ := l.Acquire(ctx, "t", "w", []byte("m0"), p)
	e.clock.Advance(30 * time.Second)
	h, err := l.Next(ctx, r.Lock, time.Minute)
	ok(e.t, err, "next")
	truth(e.t, h.Held && h.Next == nil, "next with nothing waiting: %+v", h)
	truth(e.t, h.Lock.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)), "next renews: %v", h.Lock.ExpiresAt)
	b, _ := l.Acquire(ctx, "t", "x", []byte("m1"), botstate.LockPolicy{TTL: time.Minute})
	eq(e.t, b.Status, botstate.Busy, "lock still held")
	_, _ = l.Acquire(ctx, "t", "x", []byte("m2"), p)
	h, _ = l.Next(ctx, h.Lock, time.Minute)
	truth(e.t, h.Held && h.Next != nil && string(h.Next.Payload) == "m2", "next %+v", h)
	st, _ := l.Inspect(ctx, "t")
	eq(e.t, string(st.Holders[0].Entry.Payload), "m2", "the holder's entry")
	_, err = l.Next(ctx, r.Lock, 0)
	isErr(e.t, err, botstate.ErrInvalidArgument, "zero ttl")
	_, err = l.Next(ctx, botstate.Lock{Key: "t"}, time.Minute)
	isErr(e.t, err, botstate.ErrInvalidArgument, "lock without token")
}

func testLockRecoveryAbandonLeavesTheQueueForTheNextHolder(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	r, _ := l.Acquire(ctx, "t", "w", []byte("m0"), p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("a"), p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("b"), p)
	ok(e.t, l.Abandon(ctx, r.Lock), "abandon")
	isErr(e.t, l.Abandon(ctx, r.Lock), botstate.ErrNotOwner, "abandon twice")
	st, _ := l.Inspect(ctx, "t")
	eq(e.t, len(st.Holders), 0, "holders")
	eq(e.t, entries(st.Pending), []string{"m0", "a", "b"}, "the holder's entry back in front, pending kept")
	lapsed, _ := l.Lapsed(ctx, 0)
	eq(e.t, lockKeys(lapsed), []string{"t"}, "listed for a sweeper")
	n, _ := l.Acquire(ctx, "t", "y", []byte("c"), p)
	truth(e.t, n.Next != nil && string(n.Next.Payload) == "m0", "next %+v", n.Next)
}

func testLockRecoveryEntriesLapseAfterAnHourByDefault(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: 2 * time.Hour}
	_, _ = l.Acquire(ctx, "t", "w", nil, p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("a"), p)
	e.clock.Advance(59 * time.Minute)
	st, _ := l.Inspect(ctx, "t")
	eq(e.t, entries(st.Pending), []string{"a"}, "pending after 59 minutes")
	e.clock.Advance(2 * time.Minute)
	st, _ = l.Inspect(ctx, "t")
	eq(e.t, len(st.Pending), 0, "pending after 61 minutes")
	eq(e.t, entries(st.Skipped), []string{"a"}, "the lapsed entry is skipped")
}

func testLockRecoveryConcurrentQueuesWhenFull(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Concurrent, TTL: time.Minute, MaxHolders: 2, QueueWhenFull: true}
	a, _ := l.Acquire(ctx, "t", "a", []byte("ma"), p)
	b, _ := l.Acquire(ctx, "t", "b", []byte("mb"), p)
	eq(e.t, b.Status, botstate.Acquired, "second holder")
	c, _ := l.Acquire(ctx, "t", "c", []byte("mc"), p)
	eq(e.t, c.Status, botstate.Queued, "third, queued")
	h, _ := l.Handover(ctx, a.Lock, time.Minute)
	truth(e.t, h.Held && string(h.Next.Payload) == "mc", "a takes the queued entry: %+v", h)
	h, _ = l.Handover(ctx, h.Lock, time.Minute)
	truth(e.t, !h.Held, "nothing more")
	st, _ := l.Inspect(ctx, "t")
	eq(e.t, len(st.Holders), 1, "b still holds")
}

func testLockRecoveryDebounceTakeoverKeepsTheLatest(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Debounce, TTL: time.Minute}
	_, _ = l.Acquire(ctx, "t", "w", []byte("old"), p)
	_, _ = l.Acquire(ctx, "t", "x", []byte("newer"), p)
	e.clock.Advance(time.Minute)
	n, _ := l.Acquire(ctx, "t", "y", []byte("latest"), p)
	eq(e.t, n.Status, botstate.Acquired, "acquire")
	truth(e.t, n.Next == nil, "debounce hands nothing older: %+v", n.Next)
	eq(e.t, entries(n.Skipped), []string{"old", "newer"}, "the older ones are skipped")
	st, _ := l.Inspect(ctx, "t")
	eq(e.t, len(st.Pending), 0, "pending")
}
