package statetest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/botstate/botstate"
)

func init() {
	add("Threads",
		tc("SubscribeUnsubscribeAndTTL", testThreadsSubscribeUnsubscribeAndTTL),
		tc("SubscriptionsIterateInOrderAcrossPages", testThreadsSubscriptionsIterateInOrderAcrossPages),
		tc("ThreadAndChannelStateGetPutMergeDelete", testThreadsThreadAndChannelStateGetPutMergeDelete),
		tc("StateTTL", testThreadsStateTTL),
		tc("ConcurrentStateMergesLoseNothing", testThreadsConcurrentStateMergesLoseNothing),
		tc("CacheSetGetDeleteAndTTL", testThreadsCacheSetGetDeleteAndTTL),
		tc("SetIfNotExistsHasOneWinner", testThreadsSetIfNotExistsHasOneWinner),
		tc("ListsKeepNewestEntries", testThreadsListsKeepNewestEntries),
		tc("ConcurrentAppendsAreAllKeptUpToMaxLen", testThreadsConcurrentAppendsAreAllKeptUpToMaxLen),
		tco("BadInputIsRefusedAndChangesNothing", []botstate.Option{botstate.WithMaxValueSize(32)}, testThreadsBadInputIsRefusedAndChangesNothing),
		tco("StateMergeOverTheLimitIsRefusedAndChangesNothing", mergeLimitOpts, testThreadsStateMergeOverTheLimitIsRefusedAndChangesNothing),
		tco("StateMergeExactlyAtTheLimitIsAcceptedAndOneByteMoreIsRefused", mergeLimitOpts, testThreadsStateMergeExactlyAtTheLimitIsAcceptedAndOneByteMoreIsRefused),
		tco("ConcurrentStateMergesNeverGrowPastTheLimit", mergeLimitOpts, testThreadsConcurrentStateMergesNeverGrowPastTheLimit),
	)
}

func testThreadsSubscribeUnsubscribeAndTTL(e *env) {
	ctx, th := ctxT(e.t), e.st.Threads()
	sub, err := th.IsSubscribed(ctx, "C1:1700.1")
	ok(e.t, err, "is subscribed")
	truth(e.t, !sub, "subscribed before subscribing")
	ok(e.t, th.Subscribe(ctx, "C1:1700.1", 30*time.Minute), "subscribe with ttl")
	ok(e.t, th.Subscribe(ctx, "forever", 0), "subscribe without ttl")
	sub, _ = th.IsSubscribed(ctx, "C1:1700.1")
	truth(e.t, sub, "not subscribed after subscribing")
	e.clock.Advance(29 * time.Minute)
	ok(e.t, th.Subscribe(ctx, "C1:1700.1", 30*time.Minute), "refresh")
	e.clock.Advance(29 * time.Minute)
	sub, _ = th.IsSubscribed(ctx, "C1:1700.1")
	truth(e.t, sub, "refreshed subscription lapsed early")
	e.clock.Advance(time.Minute)
	sub, _ = th.IsSubscribed(ctx, "C1:1700.1")
	truth(e.t, !sub, "subscription outlived its ttl")
	e.clock.Advance(10 * 365 * 24 * time.Hour)
	sub, _ = th.IsSubscribed(ctx, "forever")
	truth(e.t, sub, "subscription without ttl lapsed")
	ok(e.t, th.Unsubscribe(ctx, "forever"), "unsubscribe")
	sub, _ = th.IsSubscribed(ctx, "forever")
	truth(e.t, !sub, "still subscribed after unsubscribe")
	ok(e.t, th.Unsubscribe(ctx, "never"), "unsubscribe absent")
}

func testThreadsSubscriptionsIterateInOrderAcrossPages(e *env) {
	ctx, th := ctxT(e.t), e.st.Threads()
	const n = 600
	want := make([]string, 0, n)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("thread-%04d", i)
		ttl := time.Duration(0)
		if i%7 == 0 {
			ttl = time.Minute // these lapse below
		} else {
			want = append(want, id)
		}
		ok(e.t, th.Subscribe(ctx, id, ttl), "subscribe %s", id)
	}
	other := e.st.Namespace(uniqueNamespace(e.t)).Threads()
	ok(e.t, other.Subscribe(ctx, "thread-0001-other-ns", 0), "subscribe in another namespace")
	e.clock.Advance(time.Minute)
	var got []string
	for sub, err := range th.Subscriptions(ctx) {
		ok(e.t, err, "iterate")
		got = append(got, sub.Thread)
	}
	eq(e.t, got, want, "subscriptions")
	// Stopping early is fine.
	count := 0
	for range th.Subscriptions(ctx) {
		count++
		if count == 3 {
			break
		}
	}
	eq(e.t, count, 3, "early stop")
}

func testThreadsThreadAndChannelStateGetPutMergeDelete(e *env) {
	ctx := ctxT(e.t)
	ts, cs := e.st.ThreadState(), e.st.ChannelState()
	_, found, err := ts.Get(ctx, "T1")
	ok(e.t, err, "get absent")
	truth(e.t, !found, "absent thread state found")
	ok(e.t, ts.Put(ctx, "T1", map[string]any{"topic": "billing", "turns": 1}, 0), "put")
	ok(e.t, cs.Put(ctx, "T1", map[string]any{"mode": "quiet"}, 0), "put channel with same id")
	m, found, err := ts.Get(ctx, "T1")
	ok(e.t, err, "get")
	truth(e.t, found, "thread state not found")
	eq(e.t, m, map[string]any{"topic": "billing", "turns": 1.0}, "thread state")
	m, _, _ = cs.Get(ctx, "T1")
	eq(e.t, m, map[string]any{"mode": "quiet"}, "channel state is separate")
	m, err = ts.Merge(ctx, "T1", map[string]any{"turns": 2, "lang": "en"}, 0)
	ok(e.t, err, "merge")
	eq(e.t, m, map[string]any{"topic": "billing", "turns": 2.0, "lang": "en"}, "merged")
	ok(e.t, ts.Put(ctx, "T1", map[string]any{"fresh": true}, 0), "put replaces")
	m, _, _ = ts.Get(ctx, "T1")
	eq(e.t, m, map[string]any{"fresh": true}, "after put")
	m, err = cs.Merge(ctx, "new-channel", map[string]any{"a": 1}, 0)
	ok(e.t, err, "merge creates")
	eq(e.t, m, map[string]any{"a": 1.0}, "created by merge")
	ok(e.t, ts.Delete(ctx, "T1"), "delete")
	_, found, _ = ts.Get(ctx, "T1")
	truth(e.t, !found, "deleted state found")
	_, found, _ = cs.Get(ctx, "T1")
	truth(e.t, found, "deleting thread state deleted channel state")
	ok(e.t, ts.Delete(ctx, "T1"), "delete absent")
}

func testThreadsStateTTL(e *env) {
	ctx, ts := ctxT(e.t), e.st.ThreadState()
	ok(e.t, ts.Put(ctx, "T", map[string]any{"a": 1}, time.Hour), "put")
	e.clock.Advance(30 * time.Minute)
	_, err := ts.Merge(ctx, "T", map[string]any{"b": 2}, time.Hour)
	ok(e.t, err, "merge refreshes")
	e.clock.Advance(59 * time.Minute)
	m, found, _ := ts.Get(ctx, "T")
	truth(e.t, found, "state lapsed before its refreshed ttl")
	eq(e.t, m, map[string]any{"a": 1.0, "b": 2.0}, "state")
	e.clock.Advance(time.Minute)
	_, found, _ = ts.Get(ctx, "T")
	truth(e.t, !found, "state outlived its ttl")
	m, _ = ts.Merge(ctx, "T", map[string]any{"c": 3}, 0)
	eq(e.t, m, map[string]any{"c": 3.0}, "merge after expiry starts empty")
}

func testThreadsConcurrentStateMergesLoseNothing(e *env) {
	ctx, cs := ctxT(e.t), e.st.ChannelState()
	race(8, func(i int) {
		for j := 0; j < 10; j++ {
			if _, err := cs.Merge(ctx, "C", map[string]any{fmt.Sprintf("k%d-%d", i, j): i}, 0); err != nil {
				e.t.Errorf("merge: %v", err)
			}
		}
	})
	m, _, _ := cs.Get(ctx, "C")
	eq(e.t, len(m), 80, "keys after concurrent merges")
}

func testThreadsCacheSetGetDeleteAndTTL(e *env) {
	ctx, c := ctxT(e.t), e.st.Cache()
	_, found, err := c.Get(ctx, "k")
	ok(e.t, err, "get absent")
	truth(e.t, !found, "absent value found")
	ok(e.t, c.Set(ctx, "k", []byte("v1"), time.Minute), "set")
	v, found, _ := c.Get(ctx, "k")
	truth(e.t, found, "value not found")
	eqBytes(e.t, v, []byte("v1"), "value")
	ok(e.t, c.Set(ctx, "k", []byte("v2"), time.Minute), "overwrite")
	v, _, _ = c.Get(ctx, "k")
	eqBytes(e.t, v, []byte("v2"), "overwritten value")
	ok(e.t, c.Set(ctx, "empty", []byte{}, 0), "empty value")
	v, found, _ = c.Get(ctx, "empty")
	truth(e.t, found && len(v) == 0, "empty value: found %v, %q", found, v)
	e.clock.Advance(time.Minute)
	_, found, _ = c.Get(ctx, "k")
	truth(e.t, !found, "value outlived its ttl")
	_, found, _ = c.Get(ctx, "empty")
	truth(e.t, found, "value without ttl lapsed")
	ok(e.t, c.Delete(ctx, "empty"), "delete")
	_, found, _ = c.Get(ctx, "empty")
	truth(e.t, !found, "deleted value found")
	ok(e.t, c.Delete(ctx, "never"), "delete absent")
}

func testThreadsSetIfNotExistsHasOneWinner(e *env) {
	ctx, c := ctxT(e.t), e.st.Cache()
	var won atomic.Int32
	race(16, func(i int) {
		set, err := c.SetIfNotExists(ctx, "once", []byte{byte('a' + i)}, time.Minute)
		if err != nil {
			e.t.Errorf("set if not exists: %v", err)
		}
		if set {
			won.Add(1)
		}
	})
	eq(e.t, won.Load(), int32(1), "winners")
	set, _ := c.SetIfNotExists(ctx, "once", []byte("late"), time.Minute)
	truth(e.t, !set, "set over a live value")
	e.clock.Advance(time.Minute)
	set, _ = c.SetIfNotExists(ctx, "once", []byte("after"), time.Minute)
	truth(e.t, set, "did not set over an expired value")
	v, _, _ := c.Get(ctx, "once")
	eqBytes(e.t, v, []byte("after"), "value")
}

func testThreadsListsKeepNewestEntries(e *env) {
	ctx, c := ctxT(e.t), e.st.Cache()
	l, err := c.List(ctx, "history")
	ok(e.t, err, "list absent")
	eq(e.t, len(l), 0, "absent list")
	for i := 1; i <= 5; i++ {
		n, err := c.Append(ctx, "history", []byte(fmt.Sprintf("m%d", i)), 3, time.Hour)
		ok(e.t, err, "append")
		eq(e.t, n, min(i, 3), "length after append %d", i)
	}
	l, _ = c.List(ctx, "history")
	eq(e.t, l, [][]byte{[]byte("m3"), []byte("m4"), []byte("m5")}, "newest entries, oldest first")
	ok(e.t, c.Set(ctx, "history", []byte("value"), 0), "a value under the same key")
	l, _ = c.List(ctx, "history")
	eq(e.t, len(l), 3, "value under same key touched the list")
	e.clock.Advance(time.Hour)
	l, _ = c.List(ctx, "history")
	eq(e.t, len(l), 0, "list outlived its ttl")
	v, _, _ := c.Get(ctx, "history")
	eqBytes(e.t, v, []byte("value"), "value under same key")
	_, _ = c.Append(ctx, "history", []byte("again"), 3, 0)
	l, _ = c.List(ctx, "history")
	eq(e.t, l, [][]byte{[]byte("again")}, "list after expiry restarts")
	ok(e.t, c.Delete(ctx, "history"), "delete")
	l, _ = c.List(ctx, "history")
	eq(e.t, len(l), 0, "delete removes the list")
	_, found, _ := c.Get(ctx, "history")
	truth(e.t, !found, "delete removes the value")
}

func testThreadsConcurrentAppendsAreAllKeptUpToMaxLen(e *env) {
	ctx, c := ctxT(e.t), e.st.Cache()
	race(8, func(i int) {
		for j := 0; j < 5; j++ {
			if _, err := c.Append(ctx, "l", []byte(fmt.Sprintf("%d-%d", i, j)), 100, 0); err != nil {
				e.t.Errorf("append: %v", err)
			}
		}
	})
	l, _ := c.List(ctx, "l")
	eq(e.t, len(l), 40, "entries after concurrent appends")
}

func testThreadsBadInputIsRefusedAndChangesNothing(e *env) {
	ctx := ctxT(e.t)
	th, ts, c := e.st.Threads(), e.st.ThreadState(), e.st.Cache()
	isErr(e.t, th.Subscribe(ctx, "", 0), botstate.ErrInvalidArgument, "empty thread")
	isErr(e.t, th.Subscribe(ctx, "t", -time.Second), botstate.ErrInvalidArgument, "negative ttl")
	isErr(e.t, th.Subscribe(ctx, "t", botstate.MaxTTL+1), botstate.ErrInvalidArgument, "absurd ttl")
	sub, _ := th.IsSubscribed(ctx, "t")
	truth(e.t, !sub, "refused subscribe subscribed")
	ok(e.t, ts.Put(ctx, "T", map[string]any{"keep": 1}, 0), "put")
	isErr(e.t, ts.Put(ctx, "T", nil, 0), botstate.ErrInvalidArgument, "nil map")
	_, err := ts.Merge(ctx, "T", map[string]any{"x": strings.Repeat("y", 40)}, 0)
	isErr(e.t, err, botstate.ErrTooLarge, "patch over the limit")
	m, _, _ := ts.Get(ctx, "T")
	eq(e.t, m, map[string]any{"keep": 1.0}, "state after refused calls")
	ok(e.t, c.Set(ctx, "k", []byte("keep"), 0), "set")
	isErr(e.t, c.Set(ctx, "k", nil, 0), botstate.ErrInvalidArgument, "nil value")
	isErr(e.t, c.Set(ctx, "k", make([]byte, 33), 0), botstate.ErrTooLarge, "value over the limit")
	_, err = c.Append(ctx, "l", []byte("x"), 0, 0)
	isErr(e.t, err, botstate.ErrInvalidArgument, "maxLen 0")
	_, err = c.Append(ctx, "l", []byte("x"), botstate.MaxListLen+1, 0)
	isErr(e.t, err, botstate.ErrInvalidArgument, "maxLen over the limit")
	v, _, _ := c.Get(ctx, "k")
	eqBytes(e.t, v, []byte("keep"), "value after refused calls")
	l, _ := c.List(ctx, "l")
	eq(e.t, len(l), 0, "list after refused appends")
}

// testThreadsStateMergeOverTheLimitIsRefusedAndChangesNothing is
// Conversations' test of the same name for thread and channel state.
func testThreadsStateMergeOverTheLimitIsRefusedAndChangesNothing(e *env) {
	ctx := ctxT(e.t)
	a, b, c := bigMember("a"), bigMember("b"), bigMember("c")
	for _, m := range []*botstate.StateMap{e.st.ThreadState(), e.st.ChannelState()} {
		ok(e.t, m.Put(ctx, "T", a, 0), "put under the limit")
		got, err := m.Merge(ctx, "T", b, 0)
		ok(e.t, err, "merge whose result fits")
		want := union(a, b)
		eq(e.t, got, want, "state after a merge that fits")

		over := union(want, c)
		_, err = m.Merge(ctx, "T", c, 0)
		isErr(e.t, err, botstate.ErrTooLarge, "merge into %d bytes, over the %d-byte limit", storedSize(e.t, over), mergeLimit)
		got, found, err := m.Get(ctx, "T")
		ok(e.t, err, "get after the refused merge")
		truth(e.t, found, "state gone after the refused merge")
		eq(e.t, got, want, "state after the refused merge")

		shrink := union(map[string]any{"a": 1.0}, c)
		fits := union(want, shrink)
		got, err = m.Merge(ctx, "T", shrink, 0)
		ok(e.t, err, "merge that replaces a big member with a small one, into %d bytes", storedSize(e.t, fits))
		eq(e.t, got, fits, "merged state")
		got, _, _ = m.Get(ctx, "T")
		eq(e.t, got, fits, "stored state")
	}
}

// testThreadsStateMergeExactlyAtTheLimitIsAcceptedAndOneByteMoreIsRefused is
// Conversations' test of the same name for thread and channel state.
func testThreadsStateMergeExactlyAtTheLimitIsAcceptedAndOneByteMoreIsRefused(e *env) {
	ctx := ctxT(e.t)
	for _, m := range []*botstate.StateMap{e.st.ThreadState(), e.st.ChannelState()} {
		for i, base := range trickyData() {
			for _, extra := range []int{0, 1} {
				id := fmt.Sprintf("T%d-%d", i, extra)
				ok(e.t, m.Put(ctx, id, base, 0), "put data %d", i)
				patch := padTo(e.t, base, mergeLimit+extra)
				got, err := m.Merge(ctx, id, patch, 0)
				if extra == 0 {
					ok(e.t, err, "merge into data %d of exactly the limit", i)
					eq(e.t, got, union(base, patch), "data %d merged to the limit", i)
					continue
				}
				isErr(e.t, err, botstate.ErrTooLarge, "merge into data %d of one byte over the limit", i)
				got, _, _ = m.Get(ctx, id)
				eq(e.t, got, base, "data %d after the refused merge", i)
			}
		}
	}
}

// testThreadsConcurrentStateMergesNeverGrowPastTheLimit is Conversations'
// test of the same name for channel state.
func testThreadsConcurrentStateMergesNeverGrowPastTheLimit(e *env) {
	ctx, cs := ctxT(e.t), e.st.ChannelState()
	raceMergesAtTheLimit(e, func(ctx context.Context, patch map[string]any) error {
		_, err := cs.Merge(ctx, "C", patch, 0)
		return err
	})
	got, _, err := cs.Get(ctx, "C")
	ok(e.t, err, "get")
	eq(e.t, len(got), concurrentFit, "members stored")
	truth(e.t, storedSize(e.t, got) <= mergeLimit, "stored state is %d bytes, over the %d-byte limit", storedSize(e.t, got), mergeLimit)
}
