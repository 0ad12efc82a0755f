package statetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
)

func init() {
	add("Browse",
		tc("PagesInKeyOrderWithinTheNamespace", testBrowsePagesInKeyOrderWithinTheNamespace),
		tc("LocksShowHoldersAndQueueNotIdleRecords", testBrowseLocksShowHoldersAndQueueNotIdleRecords),
		tc("OtherKindsAreInvalid", testBrowseOtherKindsAreInvalid),
	)
}

// browseAll reads every page of kind with page size size.
func browseAll(e *env, st *botstate.Store, kind driver.Kind, size int) []driver.Record {
	var all []driver.Record
	after := ""
	for pages := 0; ; pages++ {
		truth(e.t, pages < 1000, "browse never ends")
		page, err := driver.Browse(ctxT(e.t), st.Driver(), st.Name(), kind, after, size, e.clock.Now())
		ok(e.t, err, "browse %s after %q", kind, after)
		truth(e.t, len(page) <= size, "a page of %d records for a limit of %d", len(page), size)
		all = append(all, page...)
		if len(page) < size {
			return all
		}
		after = page[len(page)-1].Key
	}
}

func recordKeys(rs []driver.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Key
	}
	return out
}

func testBrowsePagesInKeyOrderWithinTheNamespace(e *env) {
	ctx := ctxT(e.t)
	var want []string
	for _, i := range rand.Perm(23) {
		k := fmt.Sprintf("conv:%02d", i)
		_, err := e.st.Conversations().SetState(ctx, k, "s"+k)
		ok(e.t, err, "set state")
		want = append(want, k)
	}
	slices.Sort(want)
	// Another namespace's conversations, and expired ones, are not listed.
	other := e.st.Namespace(uniqueNamespace(e.t))
	_, err := other.Conversations().SetState(ctx, "conv:05a", "elsewhere")
	ok(e.t, err, "other namespace")
	short := e.open(e.t, botstate.WithClock(e.clock), botstate.WithConversationTTL(time.Minute)).Namespace(e.st.Name())
	_, err = short.Conversations().SetState(ctx, "conv:07a", "gone soon")
	ok(e.t, err, "conversation with a TTL")
	e.clock.Advance(2 * time.Minute)
	for _, size := range []int{1, 5, 23, 100} {
		got := browseAll(e, e.st, driver.KindConversation, size)
		eq(e.t, recordKeys(got), want, "conversation keys, pages of %d", size)
		for _, r := range got {
			eq(e.t, r.State, "s"+r.Key, "state of %s", r.Key)
			eq(e.t, r.NS, e.st.Name(), "namespace of %s", r.Key)
		}
	}
	page, err := driver.Browse(ctx, e.st.Driver(), e.st.Name(), driver.KindConversation, want[20], 10, e.clock.Now())
	ok(e.t, err, "browse from a key")
	eq(e.t, recordKeys(page), want[21:], "the page after %s", want[20])
}

func testBrowseLocksShowHoldersAndQueueNotIdleRecords(e *env) {
	ctx := ctxT(e.t)
	l := e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Hour, EntryTTL: 30 * time.Minute}
	for i := range 6 {
		_, err := l.Acquire(ctx, fmt.Sprintf("held-%d", i), "w", nil, p)
		ok(e.t, err, "acquire")
	}
	_, err := l.Acquire(ctx, "held-3", "w2", []byte("queued"), p)
	ok(e.t, err, "queue")
	r, err := l.Acquire(ctx, "idle", "w", nil, p)
	ok(e.t, err, "acquire idle")
	_, err = l.Release(ctx, r.Lock)
	ok(e.t, err, "release")
	short := botstate.LockPolicy{Strategy: botstate.Reject, TTL: time.Minute}
	_, err = l.Acquire(ctx, "lapsed", "w", nil, short)
	ok(e.t, err, "acquire lapsed")
	e.clock.Advance(2 * time.Minute)
	got := browseAll(e, e.st, driver.KindLock, 4)
	eq(e.t, recordKeys(got), []string{"held-0", "held-1", "held-2", "held-3", "held-4", "held-5"}, "lock keys")
	for _, r := range got {
		eq(e.t, len(r.Holders), 1, "holders of %s", r.Key)
		eq(e.t, r.Holders[0].Owner, "w", "owner of %s", r.Key)
	}
	eq(e.t, len(got[3].Pending), 1, "entries queued behind held-3")
	eq(e.t, string(got[3].Pending[0].Payload), "queued", "the queued entry")
}

func testBrowseOtherKindsAreInvalid(e *env) {
	for _, k := range []driver.Kind{driver.KindEvent, driver.KindSubscription, "nonsense"} {
		_, err := driver.Browse(ctxT(e.t), e.st.Driver(), e.st.Name(), k, "", 10, e.clock.Now())
		truth(e.t, errors.Is(err, botstate.ErrInvalidArgument), "browse of %q: %v", k, err)
	}
}
