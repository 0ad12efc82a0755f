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
	add("Events",
		tc("RecordNewThenDuplicateKeepsFirstPayload", testEventsRecordNewThenDuplicateKeepsFirstPayload),
		tc("SeenForgetAndRecordAgain", testEventsSeenForgetAndRecordAgain),
		tc("ClaimCompleteThenCompletedWithResult", testEventsClaimCompleteThenCompletedWithResult),
		tc("ReleaseMakesClaimableAndFencesOldToken", testEventsReleaseMakesClaimableAndFencesOldToken),
		tc("LapsedLeaseIsTakenOverAndStaleWorkerFenced", testEventsLapsedLeaseIsTakenOverAndStaleWorkerFenced),
		tc("LapsedLeaseNobodyTookStillCompletes", testEventsLapsedLeaseNobodyTookStillCompletes),
		tc("ReclaimTakesOverOnlyLapsedOrReleased", testEventsReclaimTakesOverOnlyLapsedOrReleased),
		tc("RecordedKeyIsNotClaimable", testEventsRecordedKeyIsNotClaimable),
		tc("PendingListsUnfinishedOldestFirst", testEventsPendingListsUnfinishedOldestFirst),
		tc("ExpiredListsOnlyLapsedClaimsOldestFirst", testEventsExpiredListsOnlyLapsedClaimsOldestFirst),
		tc("WindowForgetsRecordedAndCompletedKeys", testEventsWindowForgetsRecordedAndCompletedKeys),
		tco("CustomWindow", []botstate.Option{botstate.WithEventWindow(time.Hour)}, testEventsCustomWindow),
		tco("LimitEvictsOldestKeys", []botstate.Option{botstate.WithEventLimit(3)}, testEventsLimitEvictsOldestKeys),
		tco("LimitHoldsUnderConcurrentInserts", []botstate.Option{botstate.WithEventLimit(10)}, testEventsLimitHoldsUnderConcurrentInserts),
		tc("ConcurrentClaimsHaveOneWinner", testEventsConcurrentClaimsHaveOneWinner),
		tc("ConcurrentRecordsHaveOneNew", testEventsConcurrentRecordsHaveOneNew),
		tc("ConcurrentTakeoverOfLapsedClaimHasOneWinner", testEventsConcurrentTakeoverOfLapsedClaimHasOneWinner),
		tc("NamespacesAreIsolated", testEventsNamespacesAreIsolated),
		tco("BadInputIsRefusedAndChangesNothing", []botstate.Option{botstate.WithMaxValueSize(16)}, testEventsBadInputIsRefusedAndChangesNothing),
		tc("PlatformKeysNeverCollide", testEventsPlatformKeysNeverCollide),
	)
}

func eventKeys(evs []botstate.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Key
	}
	return out
}

func testEventsRecordNewThenDuplicateKeepsFirstPayload(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	r, err := ev.Record(ctx, "k1", []byte("first"))
	ok(e.t, err, "record")
	eq(e.t, r, botstate.RecordNew, "first record")
	r, err = ev.Record(ctx, "k1", []byte("second"))
	ok(e.t, err, "record again")
	eq(e.t, r, botstate.RecordDuplicate, "second record")
	got, err := ev.Get(ctx, "k1")
	ok(e.t, err, "get")
	eqBytes(e.t, got.Payload, []byte("first"), "payload after duplicate")
	eq(e.t, got.Status, botstate.EventRecorded, "status")
}

func testEventsSeenForgetAndRecordAgain(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	seen, err := ev.Seen(ctx, "k")
	ok(e.t, err, "seen")
	truth(e.t, !seen, "unknown key reported seen")
	_, err = ev.Record(ctx, "k", nil)
	ok(e.t, err, "record")
	seen, _ = ev.Seen(ctx, "k")
	truth(e.t, seen, "recorded key not seen")
	ok(e.t, ev.Forget(ctx, "k"), "forget")
	seen, _ = ev.Seen(ctx, "k")
	truth(e.t, !seen, "forgotten key still seen")
	ok(e.t, ev.Forget(ctx, "never-there"), "forget absent key")
	r, err := ev.Record(ctx, "k", nil)
	ok(e.t, err, "record after forget")
	eq(e.t, r, botstate.RecordNew, "record after forget")
	_, err = ev.Get(ctx, "never-there")
	isErr(e.t, err, botstate.ErrNotFound, "get absent")
}

func testEventsClaimCompleteThenCompletedWithResult(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, err := ev.Claim(ctx, "evt", []byte("p"), time.Minute)
	ok(e.t, err, "claim")
	eq(e.t, c.Status, botstate.Claimed, "first claim")
	eq(e.t, c.Attempts, 1, "attempts")
	truth(e.t, c.Token.ID != "" && c.Token.Key == "evt", "token %+v", c.Token)
	truth(e.t, c.LeaseUntil.Equal(e.clock.Now().Add(time.Minute)), "lease until %v", c.LeaseUntil)
	c2, err := ev.Claim(ctx, "evt", []byte("other"), time.Minute)
	ok(e.t, err, "second claim")
	eq(e.t, c2.Status, botstate.InProgress, "claim while held")
	ok(e.t, ev.Complete(ctx, c.Token, []byte("result")), "complete")
	c3, err := ev.Claim(ctx, "evt", nil, time.Minute)
	ok(e.t, err, "claim after complete")
	eq(e.t, c3.Status, botstate.Completed, "claim after complete")
	eqBytes(e.t, c3.Result, []byte("result"), "result")
	isErr(e.t, ev.Complete(ctx, c.Token, []byte("again")), botstate.ErrNotOwner, "complete twice")
	isErr(e.t, ev.Release(ctx, c.Token), botstate.ErrNotOwner, "release after complete")
	got, _ := ev.Get(ctx, "evt")
	eqBytes(e.t, got.Result, []byte("result"), "result unchanged by refused complete")
	eqBytes(e.t, got.Payload, []byte("p"), "first payload kept")
}

func testEventsReleaseMakesClaimableAndFencesOldToken(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "evt", nil, time.Minute)
	ok(e.t, ev.Release(ctx, c.Token), "release")
	got, _ := ev.Get(ctx, "evt")
	eq(e.t, got.Status, botstate.EventReleased, "status after release")
	c2, err := ev.Claim(ctx, "evt", nil, time.Minute)
	ok(e.t, err, "claim after release")
	eq(e.t, c2.Status, botstate.Claimed, "claim after release")
	eq(e.t, c2.Attempts, 2, "attempts")
	truth(e.t, c2.Token != c.Token, "new claim reused the token")
	isErr(e.t, ev.Complete(ctx, c.Token, nil), botstate.ErrNotOwner, "stale complete")
	isErr(e.t, ev.Release(ctx, c.Token), botstate.ErrNotOwner, "stale release")
	ok(e.t, ev.Complete(ctx, c2.Token, []byte("ok")), "complete with new token")
}

func testEventsLapsedLeaseIsTakenOverAndStaleWorkerFenced(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "evt", []byte("p"), time.Minute)
	e.clock.Advance(59 * time.Second)
	c2, _ := ev.Claim(ctx, "evt", nil, time.Minute)
	eq(e.t, c2.Status, botstate.InProgress, "claim before lease ends")
	e.clock.Advance(time.Second)
	exp, err := ev.Expired(ctx, 0)
	ok(e.t, err, "expired")
	eq(e.t, len(exp), 1, "expired count")
	eq(e.t, exp[0].Key, "evt", "expired key")
	c3, err := ev.Claim(ctx, "evt", []byte("redelivery"), time.Minute)
	ok(e.t, err, "takeover")
	eq(e.t, c3.Status, botstate.Claimed, "claim after lease lapsed")
	eq(e.t, c3.Attempts, 2, "attempts after takeover")
	isErr(e.t, ev.Complete(ctx, c.Token, []byte("stale")), botstate.ErrNotOwner, "stale complete")
	isErr(e.t, ev.Release(ctx, c.Token), botstate.ErrNotOwner, "stale release")
	ok(e.t, ev.Complete(ctx, c3.Token, []byte("fresh")), "complete by new owner")
	got, _ := ev.Get(ctx, "evt")
	eqBytes(e.t, got.Result, []byte("fresh"), "result")
	eqBytes(e.t, got.Payload, []byte("p"), "payload of first delivery kept")
	exp, _ = ev.Expired(ctx, 0)
	eq(e.t, len(exp), 0, "expired after completion")
}

func testEventsLapsedLeaseNobodyTookStillCompletes(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "evt", nil, time.Minute)
	e.clock.Advance(2 * time.Minute)
	ok(e.t, ev.Complete(ctx, c.Token, []byte("late")), "late complete")
	c2, _ := ev.Claim(ctx, "evt", nil, time.Minute)
	eq(e.t, c2.Status, botstate.Completed, "claim after late complete")
}

func testEventsReclaimTakesOverOnlyLapsedOrReleased(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	_, err := ev.Reclaim(ctx, "absent", time.Minute)
	isErr(e.t, err, botstate.ErrNotFound, "reclaim absent")
	seen, _ := ev.Seen(ctx, "absent")
	truth(e.t, !seen, "reclaim created a key")
	c, _ := ev.Claim(ctx, "a", []byte("pa"), time.Minute)
	r, err := ev.Reclaim(ctx, "a", time.Minute)
	ok(e.t, err, "reclaim live")
	eq(e.t, r.Status, botstate.InProgress, "reclaim live claim")
	e.clock.Advance(time.Minute)
	r, err = ev.Reclaim(ctx, "a", time.Minute)
	ok(e.t, err, "reclaim lapsed")
	eq(e.t, r.Status, botstate.Claimed, "reclaim lapsed claim")
	truth(e.t, r.Token != c.Token, "reclaim reused token")
	isErr(e.t, ev.Complete(ctx, c.Token, nil), botstate.ErrNotOwner, "old token after reclaim")
	ok(e.t, ev.Release(ctx, r.Token), "release")
	r2, _ := ev.Reclaim(ctx, "a", time.Minute)
	eq(e.t, r2.Status, botstate.Claimed, "reclaim released")
	ok(e.t, ev.Complete(ctx, r2.Token, []byte("done")), "complete")
	r3, _ := ev.Reclaim(ctx, "a", time.Minute)
	eq(e.t, r3.Status, botstate.Completed, "reclaim completed")
	eqBytes(e.t, r3.Result, []byte("done"), "result via reclaim")
	got, _ := ev.Get(ctx, "a")
	eqBytes(e.t, got.Payload, []byte("pa"), "payload survives reclaims")
}

func testEventsRecordedKeyIsNotClaimable(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	_, _ = ev.Record(ctx, "k", nil)
	c, err := ev.Claim(ctx, "k", nil, time.Minute)
	ok(e.t, err, "claim")
	eq(e.t, c.Status, botstate.InProgress, "claim of recorded key")
	r, _ := ev.Record(ctx, "claimed", nil)
	eq(e.t, r, botstate.RecordNew, "record")
	c, _ = ev.Claim(ctx, "c2", nil, time.Minute)
	r, _ = ev.Record(ctx, "c2", nil)
	eq(e.t, r, botstate.RecordDuplicate, "record of claimed key")
	ok(e.t, ev.Complete(ctx, c.Token, nil), "complete")
	r, _ = ev.Record(ctx, "c2", nil)
	eq(e.t, r, botstate.RecordDuplicate, "record of completed key")
}

func testEventsPendingListsUnfinishedOldestFirst(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	_, _ = ev.Record(ctx, "1-recorded", nil)
	e.clock.Advance(time.Second)
	c2, _ := ev.Claim(ctx, "2-claimed", nil, time.Minute)
	e.clock.Advance(time.Second)
	c3, _ := ev.Claim(ctx, "3-released", nil, time.Minute)
	ok(e.t, ev.Release(ctx, c3.Token), "release")
	e.clock.Advance(time.Second)
	c4, _ := ev.Claim(ctx, "4-completed", nil, time.Minute)
	ok(e.t, ev.Complete(ctx, c4.Token, nil), "complete")
	e.clock.Advance(time.Second)
	_, _ = ev.Record(ctx, "5-recorded", nil)
	p, err := ev.Pending(ctx, 0)
	ok(e.t, err, "pending")
	keys := eventKeys(p)
	eq(e.t, keys, []string{"1-recorded", "2-claimed", "3-released", "5-recorded"}, "pending")
	p, _ = ev.Pending(ctx, 2)
	eq(e.t, eventKeys(p), []string{"1-recorded", "2-claimed"}, "pending with limit")
	_ = c2
}

func testEventsExpiredListsOnlyLapsedClaimsOldestFirst(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	_, _ = ev.Claim(ctx, "a", nil, time.Minute)
	e.clock.Advance(time.Second)
	_, _ = ev.Claim(ctx, "b", nil, time.Minute)
	_, _ = ev.Claim(ctx, "long", nil, time.Hour)
	_, _ = ev.Record(ctx, "rec", nil)
	exp, _ := ev.Expired(ctx, 0)
	eq(e.t, len(exp), 0, "nothing lapsed yet")
	e.clock.Advance(2 * time.Minute)
	exp, err := ev.Expired(ctx, 0)
	ok(e.t, err, "expired")
	eq(e.t, eventKeys(exp), []string{"a", "b"}, "expired")
	exp, _ = ev.Expired(ctx, 1)
	eq(e.t, eventKeys(exp), []string{"a"}, "expired with limit")
}

func testEventsWindowForgetsRecordedAndCompletedKeys(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	_, _ = ev.Record(ctx, "rec", nil)
	c, _ := ev.Claim(ctx, "done", nil, time.Minute)
	e.clock.Advance(30 * time.Second)
	ok(e.t, ev.Complete(ctx, c.Token, []byte("r")), "complete")
	// Slack retries for minutes: the default window never drops a key
	// within ten of them.
	e.clock.Advance(10 * time.Minute)
	r, _ := ev.Record(ctx, "rec", nil)
	eq(e.t, r, botstate.RecordDuplicate, "recorded key after 10 minutes")
	e.clock.Advance(botstate.DefaultEventWindow - 10*time.Minute - 30*time.Second - time.Second)
	r, _ = ev.Record(ctx, "rec", nil)
	eq(e.t, r, botstate.RecordDuplicate, "recorded key just inside the window")
	e.clock.Advance(time.Second)
	r, _ = ev.Record(ctx, "rec", nil)
	eq(e.t, r, botstate.RecordNew, "recorded key after the window")
	cl, _ := ev.Claim(ctx, "done", nil, time.Minute)
	eq(e.t, cl.Status, botstate.Completed, "completed key 24h after its first claim but inside the window from completion")
	e.clock.Advance(30 * time.Second)
	cl, _ = ev.Claim(ctx, "done", nil, time.Minute)
	eq(e.t, cl.Status, botstate.Claimed, "completed key after the window")
}

func testEventsCustomWindow(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	_, _ = ev.Record(ctx, "k", nil)
	e.clock.Advance(time.Hour - time.Millisecond)
	seen, _ := ev.Seen(ctx, "k")
	truth(e.t, seen, "key forgotten inside the window")
	e.clock.Advance(time.Millisecond)
	seen, _ = ev.Seen(ctx, "k")
	truth(e.t, !seen, "key remembered after the window")
}

func testEventsLimitEvictsOldestKeys(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	for i := 1; i <= 5; i++ {
		e.clock.Advance(time.Millisecond)
		if i%2 == 0 {
			_, err := ev.Claim(ctx, fmt.Sprintf("k%d", i), nil, time.Minute)
			ok(e.t, err, "claim k%d", i)
		} else {
			_, err := ev.Record(ctx, fmt.Sprintf("k%d", i), nil)
			ok(e.t, err, "record k%d", i)
		}
	}
	for i := 1; i <= 5; i++ {
		seen, err := ev.Seen(ctx, fmt.Sprintf("k%d", i))
		ok(e.t, err, "seen")
		eq(e.t, seen, i > 2, "k%d seen", i)
	}
	// Duplicates do not count as insertions.
	r, _ := ev.Record(ctx, "k5", nil)
	eq(e.t, r, botstate.RecordDuplicate, "duplicate")
	seen, _ := ev.Seen(ctx, "k3")
	truth(e.t, seen, "a duplicate evicted a key")
	// Another namespace has its own count.
	other := e.st.Namespace(uniqueNamespace(e.t)).Events()
	_, _ = other.Record(ctx, "x", nil)
	seen, _ = ev.Seen(ctx, "k3")
	truth(e.t, seen, "another namespace's insert evicted a key")
}

func testEventsLimitHoldsUnderConcurrentInserts(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	race(8, func(i int) {
		for j := 0; j < 25; j++ {
			_, _ = ev.Record(ctx, fmt.Sprintf("g%d-%d", i, j), nil)
		}
	})
	p, err := ev.Pending(ctx, 1000)
	ok(e.t, err, "pending")
	truth(e.t, len(p) <= 10, "namespace holds %d keys over its limit of 10", len(p))
	truth(e.t, len(p) >= 1, "namespace lost every key")
}

func testEventsConcurrentClaimsHaveOneWinner(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	for round := 0; round < 5; round++ {
		key := fmt.Sprintf("race-%d", round)
		var won, other atomic.Int32
		race(16, func(int) {
			c, err := ev.Claim(ctx, key, nil, time.Minute)
			if err != nil {
				e.t.Errorf("claim: %v", err)
				return
			}
			if c.Status == botstate.Claimed {
				won.Add(1)
			} else {
				other.Add(1)
			}
		})
		eq(e.t, won.Load(), int32(1), "winners of round %d", round)
		eq(e.t, other.Load(), int32(15), "losers of round %d", round)
	}
}

func testEventsConcurrentRecordsHaveOneNew(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	var fresh atomic.Int32
	race(16, func(i int) {
		r, err := ev.Record(ctx, "same", []byte{byte(i)})
		if err != nil {
			e.t.Errorf("record: %v", err)
		}
		if r == botstate.RecordNew {
			fresh.Add(1)
		}
	})
	eq(e.t, fresh.Load(), int32(1), "new records")
}

func testEventsConcurrentTakeoverOfLapsedClaimHasOneWinner(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	_, _ = ev.Claim(ctx, "k", nil, time.Minute)
	e.clock.Advance(time.Minute)
	var won atomic.Int32
	race(16, func(i int) {
		var c botstate.Claim
		var err error
		if i%2 == 0 {
			c, err = ev.Claim(ctx, "k", nil, time.Minute)
		} else {
			c, err = ev.Reclaim(ctx, "k", time.Minute)
		}
		if err == nil && c.Status == botstate.Claimed {
			won.Add(1)
		}
	})
	eq(e.t, won.Load(), int32(1), "takeover winners")
}

func testEventsNamespacesAreIsolated(e *env) {
	ctx := ctxT(e.t)
	a, b := e.st.Events(), e.st.Namespace(uniqueNamespace(e.t)).Events()
	_, _ = a.Record(ctx, "shared", []byte("a"))
	r, _ := b.Record(ctx, "shared", []byte("b"))
	eq(e.t, r, botstate.RecordNew, "same key in another namespace")
	c, _ := a.Claim(ctx, "claim", nil, time.Minute)
	c2, _ := b.Claim(ctx, "claim", nil, time.Minute)
	eq(e.t, c2.Status, botstate.Claimed, "claim in another namespace")
	isErr(e.t, b.Complete(ctx, c.Token, nil), botstate.ErrNotOwner, "token of another namespace")
	got, _ := b.Get(ctx, "shared")
	eqBytes(e.t, got.Payload, []byte("b"), "payload in namespace b")
}

func testEventsBadInputIsRefusedAndChangesNothing(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	c, _ := ev.Claim(ctx, "held", []byte("p"), time.Minute)
	for _, k := range []struct {
		key  string
		want error
	}{
		{"", botstate.ErrInvalidArgument},
		{strings.Repeat("k", botstate.MaxKeyLen+1), botstate.ErrTooLarge},
		{"bad\xffutf8", botstate.ErrInvalidArgument},
		{"nul\x00byte", botstate.ErrInvalidArgument},
	} {
		_, err := ev.Record(ctx, k.key, nil)
		isErr(e.t, err, k.want, "record key %q", k.key)
		_, err = ev.Claim(ctx, k.key, nil, time.Minute)
		isErr(e.t, err, k.want, "claim key %q", k.key)
		_, err = ev.Seen(ctx, k.key)
		isErr(e.t, err, k.want, "seen key %q", k.key)
	}
	_, err := ev.Record(ctx, strings.Repeat("k", botstate.MaxKeyLen), nil)
	ok(e.t, err, "key of exactly MaxKeyLen bytes")
	_, err = ev.Record(ctx, "big", make([]byte, 17))
	isErr(e.t, err, botstate.ErrTooLarge, "payload over the limit")
	seen, _ := ev.Seen(ctx, "big")
	truth(e.t, !seen, "refused record stored the key")
	for _, lease := range []time.Duration{0, -time.Second, botstate.MaxTTL + 1} {
		_, err = ev.Claim(ctx, "lease", nil, lease)
		isErr(e.t, err, botstate.ErrInvalidArgument, "lease %v", lease)
	}
	seen, _ = ev.Seen(ctx, "lease")
	truth(e.t, !seen, "refused claim stored the key")
	isErr(e.t, ev.Complete(ctx, c.Token, make([]byte, 17)), botstate.ErrTooLarge, "result over the limit")
	isErr(e.t, ev.Complete(ctx, botstate.EventToken{Key: "held"}, nil), botstate.ErrInvalidArgument, "empty token")
	got, _ := ev.Get(ctx, "held")
	eq(e.t, got.Status, botstate.EventClaimed, "claim after refused completes")
	ok(e.t, ev.Complete(ctx, c.Token, []byte("fits")), "complete after refusals")
	_, err = ev.Pending(ctx, -1)
	isErr(e.t, err, botstate.ErrInvalidArgument, "negative limit")
	_, err = ev.Expired(ctx, botstate.MaxListLimit+1)
	isErr(e.t, err, botstate.ErrInvalidArgument, "limit over the maximum")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = ev.Record(cctx, "cancelled", nil)
	isErr(e.t, err, context.Canceled, "cancelled context")
	seen, _ = ev.Seen(ctx, "cancelled")
	truth(e.t, !seen, "record with a cancelled context stored the key")
}

func testEventsPlatformKeysNeverCollide(e *env) {
	keys := map[string]string{}
	addKey := func(name string, k string, err error) {
		ok(e.t, err, "%s", name)
		if prev, dup := keys[k]; dup {
			e.t.Fatalf("%s and %s share key %q", prev, name, k)
		}
		keys[k] = name
	}
	k, err := botstate.SlackEventKey("T1", "Ev1")
	addKey("slack event T1/Ev1", k, err)
	k, err = botstate.SlackEventKey("T1:Ev", "1")
	addKey("slack event T1:Ev/1", k, err)
	k, err = botstate.SlackEventKey("T1", "Ev:1")
	addKey("slack event T1/Ev:1", k, err)
	k, err = botstate.SlackMessageKey("T1", "C1", "1700000000.000100")
	addKey("slack message", k, err)
	k, err = botstate.SlackMessageKey("T1", "C1:1700000000.000100", "x")
	addKey("slack message with colon", k, err)
	k, err = botstate.SocketModeKey("env-1")
	addKey("socket mode", k, err)
	k, err = botstate.TelegramUpdateKey(1, 23)
	addKey("telegram 1/23", k, err)
	k, err = botstate.TelegramUpdateKey(12, 3)
	addKey("telegram 12/3", k, err)
	k, err = botstate.DiscordMessageKey("1234")
	addKey("discord", k, err)
	k, err = botstate.SlackEventKey("T%3A1", "Ev")
	addKey("slack event with escaped-looking id", k, err)
	k, err = botstate.SlackEventKey("T:1", "Ev")
	addKey("slack event with colon id", k, err)
	_, err = botstate.SlackEventKey("", "Ev")
	isErr(e.t, err, botstate.ErrInvalidArgument, "empty team id")
	_, err = botstate.SlackMessageKey("T", "C", "bad\xff")
	isErr(e.t, err, botstate.ErrInvalidArgument, "invalid UTF-8 ts")
	// Retries of one Slack delivery share a key, so the second is a duplicate.
	ctx, ev := ctxT(e.t), e.st.Events()
	k1, _ := botstate.SlackEventKey("T1", "Ev1")
	k2, _ := botstate.SlackEventKey("T1", "Ev1")
	_, _ = ev.Record(ctx, k1, nil)
	r, _ := ev.Record(ctx, k2, nil)
	eq(e.t, r, botstate.RecordDuplicate, "retry of the same delivery")
}
