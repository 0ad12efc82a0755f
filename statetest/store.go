package statetest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

func init() {
	add("Store",
		testCase{name: "ClosedStoreRefusesEveryDomain", fn: func(t *testing.T, open Opener) {
			st := open(t).Namespace(uniqueNamespace(t))
			ctx := ctxT(t)
			ok(t, st.Close(), "close")
			ok(t, st.Close(), "close twice")
			calls := map[string]error{}
			_, calls["record"] = st.Events().Record(ctx, "k", nil)
			_, calls["claim"] = st.Events().Claim(ctx, "k", nil, time.Minute)
			_, calls["pending"] = st.Events().Pending(ctx, 0)
			_, calls["conversation"] = st.Conversations().UpdateData(ctx, "k", map[string]any{})
			calls["subscribe"] = st.Threads().Subscribe(ctx, "t", 0)
			_, calls["state"] = st.ThreadState().Merge(ctx, "t", map[string]any{}, 0)
			calls["cache"] = st.Cache().Set(ctx, "k", []byte("v"), 0)
			_, calls["lock"] = st.Locks().Acquire(ctx, "k", "o", nil, botstate.LockPolicy{TTL: time.Minute})
			calls["incident"] = st.Incidents().SaveAlert(ctx, &botstate.BasicAlert{Channel: "C", ID: "a", Body: json.RawMessage(`{}`)})
			_, calls["export"] = st.Export(ctx, &strings.Builder{})
			_, calls["import"] = st.Import(ctx, strings.NewReader(""))
			for name, err := range calls {
				isErr(t, err, botstate.ErrClosed, "%s after close", name)
			}
		}},
		tc("CancelledAndNilContextsAreRefused", testStoreCancelledAndNilContextsAreRefused),
		tc("NamespaceNamesAreChecked", testStoreNamespaceNamesAreChecked),
	)
}

func testStoreCancelledAndNilContextsAreRefused(e *env) {
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.st.Locks().Acquire(cctx, "k", "o", nil, rejectPolicy)
	isErr(e.t, err, context.Canceled, "cancelled acquire")
	st, _ := e.st.Locks().Inspect(ctxT(e.t), "k")
	eq(e.t, len(st.Holders), 0, "holders after a cancelled acquire")
	dctx, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	err = e.st.Cache().Set(dctx, "k", []byte("v"), 0)
	isErr(e.t, err, context.DeadlineExceeded, "expired deadline")
	var nilCtx context.Context
	_, err = e.st.Events().Record(nilCtx, "k", nil)
	isErr(e.t, err, botstate.ErrInvalidArgument, "nil context")
}

func testStoreNamespaceNamesAreChecked(e *env) {
	for _, bad := range []string{"", "a:b", "a b", "a/b", "{a}", strings.Repeat("n", 65), "é"} {
		isErr(e.t, botstate.ValidNamespace(bad), botstate.ErrInvalidArgument, "namespace %q", bad)
	}
	for _, good := range []string{"acme", "bot-1", "team_A.prod", strings.Repeat("n", 64)} {
		ok(e.t, botstate.ValidNamespace(good), "namespace %q", good)
	}
	bad := e.st.Namespace("bad name")
	_, err := bad.Events().Record(ctxT(e.t), "k", nil)
	isErr(e.t, err, botstate.ErrInvalidArgument, "call on a namespace with a bad name")
}
