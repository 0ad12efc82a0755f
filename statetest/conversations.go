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
	add("Conversations",
		tc("GetAbsentIsEmptyNotAnError", testConversationsGetAbsentIsEmptyNotAnError),
		tc("SetStateKeepsDataAndSetDataKeepsState", testConversationsSetStateKeepsDataAndSetDataKeepsState),
		tc("UpdateDataMergesTopLevelAndReturnsMerged", testConversationsUpdateDataMergesTopLevelAndReturnsMerged),
		tc("ConcurrentMergesLoseNothing", testConversationsConcurrentMergesLoseNothing),
		tc("UpdateCompareAndSwapNoLostUpdate", testConversationsUpdateCompareAndSwapNoLostUpdate),
		tc("UpdateErrorAbortsAndChangesNothing", testConversationsUpdateErrorAbortsAndChangesNothing),
		tc("ClearRemovesStateAndDataAndIgnoresAbsent", testConversationsClearRemovesStateAndDataAndIgnoresAbsent),
		tco("TTLExpiresStateAndDataTogether", []botstate.Option{botstate.WithConversationTTL(time.Hour)}, testConversationsTTLExpiresStateAndDataTogether),
		tc("NoTTLByDefault", testConversationsNoTTLByDefault),
		tc("FlowsRefuseDisallowedTransitions", testConversationsFlowsRefuseDisallowedTransitions),
		tc("ConcurrentTransitionsHaveOneWinner", testConversationsConcurrentTransitionsHaveOneWinner),
		tc("KeyStrategiesAndEscapingNeverCollide", testConversationsKeyStrategiesAndEscapingNeverCollide),
		tco("BadInputIsRefusedAndChangesNothing", []botstate.Option{botstate.WithMaxValueSize(64)}, testConversationsBadInputIsRefusedAndChangesNothing),
		tco("MergeOverTheLimitIsRefusedAndChangesNothing", mergeLimitOpts, testConversationsMergeOverTheLimitIsRefusedAndChangesNothing),
		tco("MergeExactlyAtTheLimitIsAcceptedAndOneByteMoreIsRefused", mergeLimitOpts, testConversationsMergeExactlyAtTheLimitIsAcceptedAndOneByteMoreIsRefused),
		tco("ConcurrentMergesNeverGrowPastTheLimit", mergeLimitOpts, testConversationsConcurrentMergesNeverGrowPastTheLimit),
	)
}

func botstateIs(err, target error) bool { return errorsIs(err, target) }

func testConversationsGetAbsentIsEmptyNotAnError(e *env) {
	c, err := e.st.Conversations().Get(ctxT(e.t), "nobody")
	ok(e.t, err, "get")
	truth(e.t, !c.Exists(), "absent conversation exists")
	eq(e.t, c.Version, int64(0), "version")
	eq(e.t, c.State, "", "state")
	eq(e.t, c.Data, map[string]any{}, "data")
}

func testConversationsSetStateKeepsDataAndSetDataKeepsState(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	c, err := cv.SetState(ctx, "k", "asking_name")
	ok(e.t, err, "set state")
	eq(e.t, c.Version, int64(1), "version after first write")
	eq(e.t, c.State, "asking_name", "state")
	eq(e.t, c.Data, map[string]any{}, "data of new conversation")
	c, err = cv.SetData(ctx, "k", map[string]any{"name": "Ada", "n": 1.5})
	ok(e.t, err, "set data")
	eq(e.t, c.State, "asking_name", "state kept by SetData")
	eq(e.t, c.Version, int64(2), "version")
	c, err = cv.SetState(ctx, "k", "asking_age")
	ok(e.t, err, "set state again")
	eq(e.t, c.Data, map[string]any{"name": "Ada", "n": 1.5}, "data kept by SetState")
	c, err = cv.SetData(ctx, "k", map[string]any{"only": true})
	ok(e.t, err, "replace data")
	eq(e.t, c.Data, map[string]any{"only": true}, "SetData replaces")
	got, err := cv.Get(ctx, "k")
	ok(e.t, err, "get")
	eq(e.t, got.State, "asking_age", "stored state")
	eq(e.t, got.Data, map[string]any{"only": true}, "stored data")
	eq(e.t, got.Version, int64(4), "stored version")
	truth(e.t, got.UpdatedAt.Equal(e.clock.Now()), "updated at %v, want %v", got.UpdatedAt, e.clock.Now())
}

func testConversationsUpdateDataMergesTopLevelAndReturnsMerged(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	c, err := cv.UpdateData(ctx, "k", map[string]any{"a": 1, "nested": map[string]any{"x": 1, "y": 2}})
	ok(e.t, err, "first merge creates")
	eq(e.t, c.Version, int64(1), "version")
	c, err = cv.UpdateData(ctx, "k", map[string]any{"b": "two", "nested": map[string]any{"z": 3}, "gone": nil})
	ok(e.t, err, "merge")
	eq(e.t, c.Data, map[string]any{"a": 1.0, "b": "two", "nested": map[string]any{"z": 3.0}, "gone": nil}, "merged data")
	got, _ := cv.Get(ctx, "k")
	eq(e.t, got.Data, c.Data, "stored data equals returned")
	eq(e.t, got.Version, int64(2), "version")
	type form struct {
		A      int            `json:"a"`
		B      string         `json:"b"`
		Nested map[string]int `json:"nested"`
	}
	f, err := botstate.GetData[form](ctx, cv, "k")
	ok(e.t, err, "GetData")
	eq(e.t, f, form{A: 1, B: "two", Nested: map[string]int{"z": 3}}, "typed data")
}

func testConversationsConcurrentMergesLoseNothing(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	const workers, each = 8, 10
	race(workers, func(i int) {
		for j := 0; j < each; j++ {
			if _, err := cv.UpdateData(ctx, "shared", map[string]any{fmt.Sprintf("w%d-%d", i, j): j}); err != nil {
				e.t.Errorf("merge: %v", err)
			}
		}
	})
	got, _ := cv.Get(ctx, "shared")
	eq(e.t, len(got.Data), workers*each, "keys after concurrent merges")
	eq(e.t, got.Version, int64(workers*each), "version after concurrent merges")
}

func testConversationsUpdateCompareAndSwapNoLostUpdate(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	const workers, each = 6, 8
	race(workers, func(int) {
		for j := 0; j < each; j++ {
			_, err := cv.Update(ctx, "counter", func(c *botstate.Conversation) error {
				n, _ := c.Data["n"].(float64)
				c.Data["n"] = n + 1
				c.State = "counting"
				return nil
			})
			if err != nil {
				e.t.Errorf("update: %v", err)
			}
		}
	})
	got, _ := cv.Get(ctx, "counter")
	eq[any](e.t, got.Data["n"], float64(workers*each), "counter after concurrent updates")
	eq(e.t, got.State, "counting", "state")
}

func testConversationsUpdateErrorAbortsAndChangesNothing(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	_, _ = cv.SetData(ctx, "k", map[string]any{"v": 1})
	boom := fmt.Errorf("handler says no")
	_, err := cv.Update(ctx, "k", func(c *botstate.Conversation) error {
		c.Data["v"] = 2
		return boom
	})
	isErr(e.t, err, boom, "update error")
	got, _ := cv.Get(ctx, "k")
	eq[any](e.t, got.Data["v"], 1.0, "data after aborted update")
	eq(e.t, got.Version, int64(1), "version after aborted update")
}

func testConversationsClearRemovesStateAndDataAndIgnoresAbsent(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	_, _ = cv.SetState(ctx, "k", "s")
	_, _ = cv.UpdateData(ctx, "k", map[string]any{"a": 1})
	ok(e.t, cv.Clear(ctx, "k"), "clear")
	got, _ := cv.Get(ctx, "k")
	truth(e.t, !got.Exists() && got.State == "" && len(got.Data) == 0, "after clear: %+v", got)
	ok(e.t, cv.Clear(ctx, "k"), "clear absent")
	c, _ := cv.UpdateData(ctx, "k", map[string]any{"b": 2})
	eq(e.t, c.Data, map[string]any{"b": 2.0}, "data after clear and merge")
	eq(e.t, c.State, "", "state after clear and merge")
}

func testConversationsTTLExpiresStateAndDataTogether(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	_, _ = cv.SetState(ctx, "k", "s")
	e.clock.Advance(50 * time.Minute)
	c, _ := cv.UpdateData(ctx, "k", map[string]any{"a": 1})
	truth(e.t, c.ExpiresAt.Equal(e.clock.Now().Add(time.Hour)), "expiry refreshed by the write: %v", c.ExpiresAt)
	e.clock.Advance(59 * time.Minute)
	got, _ := cv.Get(ctx, "k")
	eq(e.t, got.State, "s", "state inside the TTL of the last write")
	eq(e.t, got.Data, map[string]any{"a": 1.0}, "data inside the TTL")
	e.clock.Advance(time.Minute)
	got, _ = cv.Get(ctx, "k")
	truth(e.t, !got.Exists() && got.State == "" && len(got.Data) == 0, "after TTL: %+v", got)
	c, _ = cv.UpdateData(ctx, "k", map[string]any{"b": 1})
	eq(e.t, c.Data, map[string]any{"b": 1.0}, "no half-expired data comes back")
	eq(e.t, c.State, "", "no half-expired state comes back")
	eq(e.t, c.Version, int64(1), "version restarts")
}

func testConversationsNoTTLByDefault(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	_, _ = cv.SetState(ctx, "k", "s")
	e.clock.Advance(365 * 24 * time.Hour)
	got, _ := cv.Get(ctx, "k")
	eq(e.t, got.State, "s", "state a year later")
	truth(e.t, got.ExpiresAt.IsZero(), "expiry set without a TTL")
}

func testConversationsFlowsRefuseDisallowedTransitions(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	f := &botstate.Flow{Name: "signup", Initial: "name", Transitions: map[string][]string{
		"name": {"age"}, "age": {"done", "name"},
	}}
	_, err := cv.Transition(ctx, "k", f, "age")
	isErr(e.t, err, botstate.ErrInvalidTransition, "entering a flow past its initial state")
	c, err := cv.Transition(ctx, "k", f, "name")
	ok(e.t, err, "enter at initial")
	eq(e.t, [2]string{c.Flow, c.State}, [2]string{"signup", "name"}, "flow and state")
	c, err = cv.Transition(ctx, "k", f, "age")
	ok(e.t, err, "allowed move")
	eq(e.t, c.State, "age", "state")
	_, err = cv.Transition(ctx, "k", f, "age")
	isErr(e.t, err, botstate.ErrInvalidTransition, "move the flow does not list")
	got, _ := cv.Get(ctx, "k")
	eq(e.t, got.State, "age", "state after refused move")
	eq(e.t, got.Version, c.Version, "version after refused move")
	c, err = cv.SetState(ctx, "k", "anywhere")
	ok(e.t, err, "SetState forces")
	eq(e.t, [2]string{c.Flow, c.State}, [2]string{"signup", "anywhere"}, "forced state keeps flow")
	c, err = cv.Start(ctx, "k", f)
	ok(e.t, err, "start")
	eq(e.t, c.State, "name", "start puts the initial state")
	_, err = cv.Transition(ctx, "k", &botstate.Flow{Name: ""}, "x")
	isErr(e.t, err, botstate.ErrInvalidArgument, "flow without a name")
}

func testConversationsConcurrentTransitionsHaveOneWinner(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	f := &botstate.Flow{Name: "f", Initial: "a", Transitions: map[string][]string{"a": {"b"}}}
	_, _ = cv.Start(ctx, "k", f)
	var won, refused atomic.Int32
	race(8, func(int) {
		_, err := cv.Transition(ctx, "k", f, "b")
		switch {
		case err == nil:
			won.Add(1)
		case botstateIs(err, botstate.ErrInvalidTransition):
			refused.Add(1)
		default:
			e.t.Errorf("transition: %v", err)
		}
	})
	eq(e.t, won.Load(), int32(1), "transitions a->b that succeeded")
	eq(e.t, refused.Load(), int32(7), "transitions refused")
}

func testConversationsKeyStrategiesAndEscapingNeverCollide(e *env) {
	ref := botstate.ConversationRef{BotID: "bot1", ChatID: "100", UserID: "7", TopicID: "3"}
	keys := map[string]string{}
	addKey := func(name string, s botstate.KeyStrategy, r botstate.ConversationRef) string {
		k, err := botstate.ConversationKey(s, r)
		ok(e.t, err, "%s", name)
		if prev, dup := keys[k]; dup {
			e.t.Fatalf("%s and %s share key %q", prev, name, k)
		}
		keys[k] = name
		return k
	}
	addKey("user in chat", botstate.UserInChat, ref)
	addKey("chat", botstate.Chat, ref)
	addKey("global user", botstate.GlobalUser, ref)
	addKey("user in topic", botstate.UserInTopic, ref)
	addKey("chat topic", botstate.ChatTopic, ref)
	r2 := ref
	r2.BotID = "bot2"
	addKey("other bot", botstate.UserInChat, r2)
	r3 := ref
	r3.ChatID, r3.UserID = "100:7", ""
	r3.UserID = "x"
	addKey("chat id with separator", botstate.UserInChat, r3)
	r4 := ref
	r4.ChatID, r4.UserID = "100", "7:x"
	addKey("user id with separator", botstate.UserInChat, r4)
	r5 := ref
	r5.BusinessConnectionID = "bc1"
	addKey("business connection", botstate.UserInChat, r5)
	r6 := ref
	r6.Destiny = "scenes"
	addKey("destiny", botstate.UserInChat, r6)
	r7 := ref
	r7.UserID = "7:bc:bc1"
	addKey("user id that looks like a tag", botstate.UserInChat, r7)
	_, err := botstate.ConversationKey(botstate.UserInChat, botstate.ConversationRef{BotID: "b", ChatID: "1"})
	isErr(e.t, err, botstate.ErrInvalidArgument, "missing user id")
	_, err = botstate.ConversationKey(botstate.UserInChat, botstate.ConversationRef{ChatID: "1", UserID: "2"})
	isErr(e.t, err, botstate.ErrInvalidArgument, "missing bot id")
	_, err = botstate.ConversationKey(botstate.KeyStrategy(99), ref)
	isErr(e.t, err, botstate.ErrInvalidArgument, "unknown strategy")
	// Destiny keys are independent conversations.
	ctx, cv := ctxT(e.t), e.st.Conversations()
	k1, _ := botstate.ConversationKey(botstate.UserInChat, ref)
	k2, _ := botstate.ConversationKey(botstate.UserInChat, r6)
	_, _ = cv.SetState(ctx, k1, "main")
	_, _ = cv.SetState(ctx, k2, "scene")
	c1, _ := cv.Get(ctx, k1)
	eq(e.t, c1.State, "main", "main destiny state")
}

func testConversationsBadInputIsRefusedAndChangesNothing(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	_, _ = cv.SetData(ctx, "k", map[string]any{"keep": "me"})
	_, err := cv.SetData(ctx, "k", nil)
	isErr(e.t, err, botstate.ErrInvalidArgument, "nil data")
	_, err = cv.UpdateData(ctx, "k", nil)
	isErr(e.t, err, botstate.ErrInvalidArgument, "nil patch")
	_, err = cv.UpdateData(ctx, "k", map[string]any{"f": func() {}})
	isErr(e.t, err, botstate.ErrInvalidArgument, "value that is not JSON")
	_, err = cv.UpdateData(ctx, "k", map[string]any{"big": strings.Repeat("x", 100)})
	isErr(e.t, err, botstate.ErrTooLarge, "patch over the limit")
	_, err = cv.SetState(ctx, "", "s")
	isErr(e.t, err, botstate.ErrInvalidArgument, "empty key")
	_, err = cv.SetState(ctx, "k", "bad\xff")
	isErr(e.t, err, botstate.ErrInvalidArgument, "state not UTF-8")
	_, err = cv.Update(ctx, "k", nil)
	isErr(e.t, err, botstate.ErrInvalidArgument, "nil update function")
	got, _ := cv.Get(ctx, "k")
	eq(e.t, got.Data, map[string]any{"keep": "me"}, "data after refused calls")
	eq(e.t, got.Version, int64(1), "version after refused calls")
}

// testConversationsMergeOverTheLimitIsRefusedAndChangesNothing: the size
// limit bounds the data a merge leaves, not only the patch: a patch that
// fits, merged into data that fits, into a result that does not, is
// ErrTooLarge and leaves data and version as they were; a merge whose
// result fits works, even when stored data plus patch would not (it
// replaces a big member with a small one).
func testConversationsMergeOverTheLimitIsRefusedAndChangesNothing(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	a, b, c := bigMember("a"), bigMember("b"), bigMember("c")
	_, err := cv.SetData(ctx, "k", a)
	ok(e.t, err, "set data under the limit")
	got, err := cv.UpdateData(ctx, "k", b)
	ok(e.t, err, "merge whose result fits")
	want := union(a, b)
	eq(e.t, got.Data, want, "data after a merge that fits")

	over := union(want, c)
	truth(e.t, storedSize(e.t, c) <= mergeLimit && storedSize(e.t, over) > mergeLimit,
		"the test's premise: a patch of %d bytes and a result of %d, limit %d", storedSize(e.t, c), storedSize(e.t, over), mergeLimit)
	_, err = cv.UpdateData(ctx, "k", c)
	isErr(e.t, err, botstate.ErrTooLarge, "merge into %d bytes, over the %d-byte limit", storedSize(e.t, over), mergeLimit)
	got, err = cv.Get(ctx, "k")
	ok(e.t, err, "get after the refused merge")
	eq(e.t, got.Data, want, "data after the refused merge")
	eq(e.t, got.Version, int64(2), "version after the refused merge")

	shrink := union(map[string]any{"a": 1.0}, c)
	fits := union(want, shrink)
	truth(e.t, storedSize(e.t, fits) <= mergeLimit && storedSize(e.t, want)+storedSize(e.t, shrink) > mergeLimit,
		"the test's premise: a result of %d bytes, stored data and patch of %d and %d, limit %d",
		storedSize(e.t, fits), storedSize(e.t, want), storedSize(e.t, shrink), mergeLimit)
	got, err = cv.UpdateData(ctx, "k", shrink)
	ok(e.t, err, "merge that replaces a big member with a small one, into %d bytes", storedSize(e.t, fits))
	eq(e.t, got.Data, fits, "merged data")
	eq(e.t, got.Version, int64(3), "version after the merge")
	got, _ = cv.Get(ctx, "k")
	eq(e.t, got.Data, fits, "stored data")
}

// testConversationsMergeExactlyAtTheLimitIsAcceptedAndOneByteMoreIsRefused:
// the limit counts the data as stored (compact JSON, keys sorted, escapes
// as Go writes them, <, > and & as themselves), to the byte, whatever the
// backend keeps: a merge whose result is exactly the limit is accepted and
// one a byte over it is refused, for data whose names and values need every
// kind of escape, nest, and hold what some stores keep differently.
func testConversationsMergeExactlyAtTheLimitIsAcceptedAndOneByteMoreIsRefused(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	for i, base := range trickyData() {
		for _, extra := range []int{0, 1} {
			key := fmt.Sprintf("k%d-%d", i, extra)
			_, err := cv.SetData(ctx, key, base)
			ok(e.t, err, "set data %d", i)
			patch := padTo(e.t, base, mergeLimit+extra)
			got, err := cv.UpdateData(ctx, key, patch)
			if extra == 0 {
				ok(e.t, err, "merge into data %d of exactly the limit", i)
				eq(e.t, got.Data, union(base, patch), "data %d merged to the limit", i)
				eq(e.t, storedSize(e.t, got.Data), mergeLimit, "size of data %d merged to the limit", i)
				continue
			}
			isErr(e.t, err, botstate.ErrTooLarge, "merge into data %d of one byte over the limit", i)
			got, _ = cv.Get(ctx, key)
			eq(e.t, got.Data, base, "data %d after the refused merge", i)
			eq(e.t, got.Version, int64(1), "version of data %d after the refused merge", i)
		}
	}
}

// testConversationsConcurrentMergesNeverGrowPastTheLimit: workers merge a
// member each into one conversation at once; each patch fits, only four
// of them fit together. Exactly four merges succeed, the others are
// ErrTooLarge, and the stored data holds four members, within the limit.
func testConversationsConcurrentMergesNeverGrowPastTheLimit(e *env) {
	ctx, cv := ctxT(e.t), e.st.Conversations()
	raceMergesAtTheLimit(e, func(ctx context.Context, patch map[string]any) error {
		_, err := cv.UpdateData(ctx, "shared", patch)
		return err
	})
	got, err := cv.Get(ctx, "shared")
	ok(e.t, err, "get")
	eq(e.t, len(got.Data), concurrentFit, "members stored")
	eq(e.t, got.Version, int64(concurrentFit), "version")
	truth(e.t, storedSize(e.t, got.Data) <= mergeLimit, "stored data is %d bytes, over the %d-byte limit", storedSize(e.t, got.Data), mergeLimit)
}
