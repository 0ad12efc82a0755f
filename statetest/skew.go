package statetest

import (
	"time"

	"github.com/botstate/botstate"
)

// Clock skew: a replica whose clock runs ahead must not take over a live
// claim or lock early. Each test runs the holder on the suite's clock and
// two replicas on a clock 3 s ahead: one opened with a 5 s
// WithClockSkewMargin, which must wait, and one without, which shows the
// early takeover the margin prevents.

func init() {
	add("ClockSkew",
		tc("ClaimTakeoverWaitsForTheMargin", testClockSkewClaimTakeoverWaitsForTheMargin),
		tc("LockTakeoverWaitsForTheMargin", testClockSkewLockTakeoverWaitsForTheMargin),
	)
}

const (
	skewAhead  = 3 * time.Second
	skewMargin = 5 * time.Second
	skewLease  = 10 * time.Second
)

// skewed opens the two replicas on a clock skewAhead in front of e's, and
// returns them with a func that moves all clocks forward together. A
// backend whose stores share nothing (mem, and a file that only one store
// can hold) has no replicas, and skips: the margin is the portable layer's,
// the same code on every backend.
func skewed(e *env) (guarded, unguarded *botstate.Store, advance func(time.Duration)) {
	ahead := &Clock{now: e.clock.Now().Add(skewAhead)}
	guarded = e.open(e.t, botstate.WithClock(ahead), botstate.WithClockSkewMargin(skewMargin)).Namespace(e.st.Name())
	unguarded = e.open(e.t, botstate.WithClock(ahead)).Namespace(e.st.Name())
	ctx := ctxT(e.t)
	ok(e.t, e.st.Cache().Set(ctx, "replica-probe", []byte("x"), time.Hour), "probe")
	if _, found, err := guarded.Cache().Get(ctx, "replica-probe"); err != nil || !found {
		e.t.Skipf("stores opened on this backend share no state (found %v, %v): no replicas to skew", found, err)
	}
	return guarded, unguarded, func(d time.Duration) {
		e.clock.Advance(d)
		ahead.Advance(d)
	}
}

func testClockSkewClaimTakeoverWaitsForTheMargin(e *env) {
	ctx := ctxT(e.t)
	guarded, unguarded, advance := skewed(e)
	held, err := e.st.Events().Claim(ctx, "guarded", []byte("p"), skewLease)
	ok(e.t, err, "claim")
	eq(e.t, held.Status, botstate.Claimed, "holder's claim")
	other, err := e.st.Events().Claim(ctx, "unguarded", []byte("p"), skewLease)
	ok(e.t, err, "claim")
	eq(e.t, other.Status, botstate.Claimed, "holder's second claim")

	// 8 s in: the holder's lease has 2 s left by its clock; the replicas'
	// clocks read 1 s past its end.
	advance(8 * time.Second)
	c, err := guarded.Events().Claim(ctx, "guarded", nil, skewLease)
	ok(e.t, err, "claim by the guarded replica")
	eq(e.t, c.Status, botstate.InProgress, "a live claim, seen from a clock 3 s ahead with a 5 s margin")
	for _, list := range []func() ([]botstate.Event, error){
		func() ([]botstate.Event, error) { return guarded.Events().Expired(ctx, 10) },
		func() ([]botstate.Event, error) { return guarded.Events().Due(ctx, 10) },
	} {
		evs, err := list()
		ok(e.t, err, "listing")
		eq(e.t, len(evs), 0, "lapsed claims listed by the guarded replica while the lease is live")
	}
	c, err = unguarded.Events().Claim(ctx, "unguarded", nil, skewLease)
	ok(e.t, err, "claim by the unguarded replica")
	eq(e.t, c.Status, botstate.Claimed, "without a margin a clock 3 s ahead takes a live claim over (what the margin prevents)")
	_, err = e.st.Events().Extend(ctx, held.Token, skewLease) // the holder renews in time
	ok(e.t, err, "extend")

	// The renewed lease ends 10 s after the renewal; the guarded replica
	// takes over only once its clock is past that end plus the margin.
	advance(11 * time.Second) // holder: 1 s past the end; replica: 4 s past
	c, err = guarded.Events().Claim(ctx, "guarded", nil, skewLease)
	ok(e.t, err, "claim within the margin")
	eq(e.t, c.Status, botstate.InProgress, "a lapsed claim within the margin")
	advance(3 * time.Second) // replica: 7 s past the end, 2 s past the margin
	c, err = guarded.Events().Claim(ctx, "guarded", nil, skewLease)
	ok(e.t, err, "claim past the margin")
	eq(e.t, c.Status, botstate.Claimed, "a lapsed claim past the margin")
	evs, err := guarded.Events().Expired(ctx, 10)
	ok(e.t, err, "expired")
	eq(e.t, len(evs), 0, "the taken-over claim is live again")
}

func testClockSkewLockTakeoverWaitsForTheMargin(e *env) {
	ctx := ctxT(e.t)
	guarded, unguarded, advance := skewed(e)
	p := botstate.LockPolicy{Strategy: botstate.Reject, TTL: skewLease}
	for _, k := range []string{"guarded", "unguarded"} {
		r, err := e.st.Locks().Acquire(ctx, k, "holder", nil, p)
		ok(e.t, err, "acquire")
		eq(e.t, r.Status, botstate.Acquired, "holder's lock %s", k)
	}
	advance(8 * time.Second)
	r, err := guarded.Locks().Acquire(ctx, "guarded", "replica", nil, p)
	ok(e.t, err, "acquire by the guarded replica")
	eq(e.t, r.Status, botstate.Busy, "a live lock, seen from a clock 3 s ahead with a 5 s margin")
	r, err = guarded.Locks().TakeOver(ctx, "guarded", "replica", skewLease)
	ok(e.t, err, "take over by the guarded replica")
	eq(e.t, r.Status, botstate.Busy, "TakeOver of a live lock")
	lapsed, err := guarded.Locks().Lapsed(ctx, 10)
	ok(e.t, err, "lapsed")
	eq(e.t, len(lapsed), 0, "lapsed locks listed by the guarded replica while the lock is live")
	r, err = unguarded.Locks().Acquire(ctx, "unguarded", "replica", nil, p)
	ok(e.t, err, "acquire by the unguarded replica")
	eq(e.t, r.Status, botstate.Acquired, "without a margin a clock 3 s ahead takes a live lock (what the margin prevents)")

	advance(3 * time.Second) // holder: 1 s past the end; replica: 4 s past
	r, err = guarded.Locks().Acquire(ctx, "guarded", "replica", nil, p)
	ok(e.t, err, "acquire within the margin")
	eq(e.t, r.Status, botstate.Busy, "a lapsed lock within the margin")
	advance(3 * time.Second) // replica: 7 s past, 2 s past the margin
	r, err = guarded.Locks().Acquire(ctx, "guarded", "replica", nil, p)
	ok(e.t, err, "acquire past the margin")
	eq(e.t, r.Status, botstate.Acquired, "a lapsed lock past the margin")
}
