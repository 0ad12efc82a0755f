package statetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/botstate/botstate"
)

// populate writes something of every kind into st, some of it with TTLs.
func populate(e *env, st *botstate.Store) {
	ctx := ctxT(e.t)
	ev := st.Events()
	_, err := ev.Record(ctx, "recorded", []byte("payload \x00\xff binary"))
	ok(e.t, err, "record")
	c, _ := ev.Claim(ctx, "completed", []byte(`{"type":"message"}`), time.Minute)
	ok(e.t, ev.Complete(ctx, c.Token, []byte("result")), "complete")
	_, _ = ev.Claim(ctx, "claimed", nil, time.Hour)
	r, _ := ev.Claim(ctx, "released", []byte("p"), time.Minute)
	ok(e.t, ev.Release(ctx, r.Token), "release")
	r, _ = ev.Claim(ctx, "retry-later", []byte("p"), time.Minute)
	ok(e.t, ev.ReleaseAfter(ctx, r.Token, 10*time.Minute, "upstream said \"503\"\n"), "release after")
	r, _ = ev.Claim(ctx, "failed", nil, time.Minute)
	ok(e.t, ev.Fail(ctx, r.Token, "poison ☠"), "fail")
	cv := st.Conversations()
	_, _ = cv.SetState(ctx, "conv:1", "asking")
	_, err = cv.UpdateData(ctx, "conv:1", map[string]any{"name": "Ada <&>", "n": 1.25, "list": []any{1, "two"}, "deep": map[string]any{"b": 1, "a": 2}})
	ok(e.t, err, "merge")
	_, _ = cv.Start(ctx, "conv:2", &botstate.Flow{Name: "f", Initial: "start"})
	th := st.Threads()
	ok(e.t, th.Subscribe(ctx, "thread-forever", 0), "subscribe")
	ok(e.t, th.Subscribe(ctx, "thread-ttl", time.Hour), "subscribe ttl")
	ok(e.t, st.ThreadState().Put(ctx, "T1", map[string]any{"topic": "x"}, time.Hour), "thread state")
	_, err = st.ChannelState().Merge(ctx, "C1", map[string]any{"mode": "quiet"}, 0)
	ok(e.t, err, "channel state")
	ca := st.Cache()
	ok(e.t, ca.Set(ctx, "val", []byte("v"), time.Hour), "cache set")
	ok(e.t, ca.Set(ctx, "forever", []byte{0, 1, 2}, 0), "cache set forever")
	for i := 0; i < 3; i++ {
		_, err = ca.Append(ctx, "hist", []byte(fmt.Sprintf("m%d", i)), 10, time.Hour)
		ok(e.t, err, "append")
	}
	l := st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Hour, EntryTTL: 30 * time.Minute}
	_, _ = l.Acquire(ctx, "lock-held", "worker-1", []byte("in flight"), p)
	_, _ = l.Acquire(ctx, "lock-held", "worker-2", []byte("queued-1"), p)
	_, _ = l.Acquire(ctx, "lock-held", "worker-3", []byte("queued-2"), p)
	d := botstate.LockPolicy{Strategy: botstate.Debounce, TTL: time.Hour}
	_, _ = l.Acquire(ctx, "lock-skipped", "worker-1", nil, d)
	_, _ = l.Acquire(ctx, "lock-skipped", "worker-2", []byte("replaced"), d)
	_, _ = l.Acquire(ctx, "lock-skipped", "worker-3", []byte("latest"), d)
	in := st.Incidents()
	ok(e.t, in.SaveAlert(ctx, &botstate.BasicAlert{Channel: "C1", ID: "a1", Timestamp: e.clock.Now(), Body: json.RawMessage(`{"b": 2, "a": 1}`)}), "alert")
	ok(e.t, in.SaveIssues(ctx, &testIssue{channel: "C1", id: "i1", corr: "corr\n#1", post: "1700.1", open: true, body: []byte(`{ "z":1, "a":2 }`)},
		issue("C2", "i2", "c2", false)), "issues")
	ok(e.t, in.SaveMoveMapping(ctx, &testMapping{channel: "C0", id: "m1", corr: "corr\n#1"}), "mapping")
	ok(e.t, in.SaveChannelProcessingState(ctx, &botstate.ChannelProcessingState{ChannelID: "C1",
		Created: time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC), OpenIssues: 1}), "processing state")
}

func export(e *env, st *botstate.Store) string {
	e.t.Helper()
	var buf bytes.Buffer
	_, err := st.Export(ctxT(e.t), &buf)
	ok(e.t, err, "export")
	return buf.String()
}

// renameNS rewrites a snapshot's namespace, so it can be imported beside the
// original on the same backend.
func renameNS(snap, from, to string) string {
	return strings.ReplaceAll(snap, `"ns":"`+from+`"`, `"ns":"`+to+`"`)
}

func init() {
	add("Snapshot",
		tc("ExportImportExportIsByteIdentical", testSnapshotExportImportExportIsByteIdentical),
		tc("ImportedStateBehaves", testSnapshotImportedStateBehaves),
		tc("TTLsCarryOverAsAbsoluteTimes", testSnapshotTTLsCarryOverAsAbsoluteTimes),
		tc("MalformedSnapshotIsRefusedWithLineAndImportsNothing", testSnapshotMalformedSnapshotIsRefusedWithLineAndImportsNothing),
		tc("ExportAllCoversEveryNamespace", testSnapshotExportAllCoversEveryNamespace),
	)
}

func testSnapshotExportImportExportIsByteIdentical(e *env) {
	populate(e, e.st)
	a := export(e, e.st)
	truth(e.t, strings.HasPrefix(a, `{"format":"botstate-snapshot","version":1}`+"\n"), "header: %q", strings.SplitN(a, "\n", 2)[0])
	for _, kind := range []string{"event", "conversation", "subscription", "thread_state", "channel_state", "cache_value",
		"cache_list", "lock", "alert", "issue", "move_mapping", "processing_state"} {
		truth(e.t, strings.Contains(a, `"kind":"`+kind+`"`), "snapshot lacks kind %s:\n%s", kind, a)
	}
	again := export(e, e.st)
	eq(e.t, again, a, "two exports of the same state")
	ns2 := uniqueNamespace(e.t)
	other := e.open(e.t, botstate.WithClock(e.clock)).Namespace(ns2)
	n, err := other.Import(ctxT(e.t), strings.NewReader(renameNS(a, e.st.Name(), ns2)))
	ok(e.t, err, "import")
	eq(e.t, n, strings.Count(a, "\n")-1, "records imported")
	b := renameNS(export(e, other), ns2, e.st.Name())
	if a != b {
		e.t.Fatalf("re-export differs:\n--- first\n%s\n--- after import\n%s", a, b)
	}
}

func testSnapshotImportedStateBehaves(e *env) {
	ctx := ctxT(e.t)
	populate(e, e.st)
	ns2 := uniqueNamespace(e.t)
	dst := e.st.Namespace(ns2)
	_, err := dst.Import(ctx, strings.NewReader(renameNS(export(e, e.st), e.st.Name(), ns2)))
	ok(e.t, err, "import")
	c, _ := dst.Events().Claim(ctx, "completed", nil, time.Minute)
	eq(e.t, c.Status, botstate.Completed, "imported completed event")
	eqBytes(e.t, c.Result, []byte("result"), "imported result")
	c, _ = dst.Events().Claim(ctx, "claimed", nil, time.Minute)
	eq(e.t, c.Status, botstate.InProgress, "imported live claim")
	c, _ = dst.Events().Claim(ctx, "released", nil, time.Minute)
	eq(e.t, c.Status, botstate.Claimed, "imported released event")
	eq(e.t, c.Attempts, 2, "attempts carried over")
	c, _ = dst.Events().Claim(ctx, "retry-later", nil, time.Minute)
	eq(e.t, c.Status, botstate.InProgress, "imported retry time")
	c, _ = dst.Events().Claim(ctx, "failed", nil, time.Minute)
	eq(e.t, c.Status, botstate.Failed, "imported failed event")
	eq(e.t, c.LastError, "poison ☠", "imported reason")
	sk, _ := dst.Locks().Inspect(ctx, "lock-skipped")
	eq(e.t, entries(sk.Skipped), []string{"replaced"}, "imported skipped entries")
	conv, _ := dst.Conversations().Get(ctx, "conv:1")
	eq(e.t, conv.State, "asking", "imported state")
	eq(e.t, conv.Version, int64(2), "imported version")
	conv, err = dst.Conversations().UpdateData(ctx, "conv:1", map[string]any{"more": true})
	ok(e.t, err, "merge into imported")
	eq(e.t, conv.Data["name"], any("Ada <&>"), "imported data")
	st, _ := dst.Locks().Inspect(ctx, "lock-held")
	eq(e.t, len(st.Holders), 1, "imported holder")
	truth(e.t, st.Holders[0].Entry != nil && string(st.Holders[0].Entry.Payload) == "in flight", "imported holder entry %+v", st.Holders[0].Entry)
	pending, err := dst.Locks().Release(ctx, botstate.Lock{Key: "lock-held", Owner: "worker-1", Token: st.Holders[0].Token})
	ok(e.t, err, "release imported lock with its token")
	eq(e.t, entries(pending), []string{"queued-1", "queued-2"}, "imported entries")
	r, _ := dst.Locks().Acquire(ctx, "lock-held", "w", nil, rejectPolicy)
	truth(e.t, r.Lock.Token > st.Holders[0].Token, "fence did not carry over: %d after %d", r.Lock.Token, st.Holders[0].Token)
	id, body, _ := dst.Incidents().FindOpenIssueByCorrelationID(ctx, "C1", "corr\n#1")
	eq(e.t, id, "i1", "imported issue")
	eqBytes(e.t, body, []byte(`{ "z":1, "a":2 }`), "imported body byte for byte")
	ps, _ := dst.Incidents().FindChannelProcessingState(ctx, "C1")
	truth(e.t, ps != nil && ps.Created.Nanosecond() == 123456789, "imported processing state %+v", ps)
}

func testSnapshotTTLsCarryOverAsAbsoluteTimes(e *env) {
	ctx := ctxT(e.t)
	populate(e, e.st)
	snap := export(e, e.st)
	e.clock.Advance(30 * time.Minute)
	ns2 := uniqueNamespace(e.t)
	dst := e.st.Namespace(ns2)
	_, err := dst.Import(ctx, strings.NewReader(renameNS(snap, e.st.Name(), ns2)))
	ok(e.t, err, "import")
	v, found, _ := dst.Cache().Get(ctx, "val")
	truth(e.t, found && string(v) == "v", "value inside its ttl after import")
	e.clock.Advance(30 * time.Minute)
	_, found, _ = dst.Cache().Get(ctx, "val")
	truth(e.t, !found, "imported value outlived its original expiry")
	sub, _ := dst.Threads().IsSubscribed(ctx, "thread-ttl")
	truth(e.t, !sub, "imported subscription outlived its original expiry")
	sub, _ = dst.Threads().IsSubscribed(ctx, "thread-forever")
	truth(e.t, sub, "imported subscription without ttl lapsed")
	// An already-expired item is not exported, nor imported.
	after := export(e, e.st)
	truth(e.t, !strings.Contains(after, `"key":"val"`), "expired value exported")
	n, err := dst.Import(ctx, strings.NewReader(renameNS(snap, e.st.Name(), ns2)))
	ok(e.t, err, "import of a stale snapshot")
	truth(e.t, n < strings.Count(snap, "\n")-1, "expired records imported: %d", n)
}

func testSnapshotMalformedSnapshotIsRefusedWithLineAndImportsNothing(e *env) {
	ctx := ctxT(e.t)
	header := `{"format":"botstate-snapshot","version":1}` + "\n"
	good := fmt.Sprintf(`{"kind":"cache_value","ns":"%s","key":"fine","payload":"dg=="}`, e.st.Name()) + "\n"
	cases := []struct {
		name string
		snap string
		line int
	}{
		{"empty input", "", 1},
		{"not a header", good, 1},
		{"future version", `{"format":"botstate-snapshot","version":2}` + "\n", 1},
		{"invalid JSON", header + good + "{nope\n", 3},
		{"unknown kind", header + good + `{"kind":"teapot","ns":"a","key":"k"}` + "\n", 3},
		{"unknown field", header + good + `{"kind":"cache_value","ns":"a","key":"k","colour":"red"}` + "\n", 3},
		{"bad namespace", header + good + `{"kind":"cache_value","ns":"a:b","key":"k"}` + "\n", 3},
		{"empty key", header + good + `{"kind":"subscription","ns":"a","key":""}` + "\n", 3},
		{"bad event status", header + good + `{"kind":"event","ns":"a","key":"k","status":"maybe"}` + "\n", 3},
		{"claimed without token", header + good + `{"kind":"event","ns":"a","key":"k","status":"claimed"}` + "\n", 3},
		{"conversation without version", header + good + `{"kind":"conversation","ns":"a","key":"k","data":{}}` + "\n", 3},
		{"data not an object", header + good + `{"kind":"thread_state","ns":"a","key":"k","data":[1]}` + "\n", 3},
		{"issue body not JSON", header + good + `{"kind":"issue","ns":"a","channel":"C","key":"i","correlation_id":"c","body":"{"}` + "\n", 3},
		{"lock token over fence", header + good + `{"kind":"lock","ns":"a","key":"k","holders":[{"owner":"o","token":5,"acquired_at":"2026-01-01T00:00:00Z"}],"fence":4}` + "\n", 3},
		{"duplicate item", header + good + good, 3},
		{"blank line", header + good + "\n" + good, 3},
	}
	for _, c := range cases {
		_, err := e.st.Import(ctx, strings.NewReader(c.snap))
		var se *botstate.SnapshotError
		if !errors.As(err, &se) {
			e.t.Fatalf("%s: got %v, want a *SnapshotError", c.name, err)
		}
		eq(e.t, se.Line, c.line, "%s: line of %v", c.name, err)
		isErr(e.t, err, botstate.ErrInvalidArgument, "%s", c.name)
	}
	_, found, _ := e.st.Cache().Get(ctx, "fine")
	truth(e.t, !found, "a refused snapshot imported its good lines")
	n, err := e.st.Import(ctx, strings.NewReader(header+good))
	ok(e.t, err, "the good lines alone")
	eq(e.t, n, 1, "imported")
	_, found, _ = e.st.Cache().Get(ctx, "fine")
	truth(e.t, found, "good snapshot not imported")
}

func testSnapshotExportAllCoversEveryNamespace(e *env) {
	ctx := ctxT(e.t)
	b := e.st.Namespace(uniqueNamespace(e.t))
	ok(e.t, e.st.Cache().Set(ctx, "a-key", []byte("a"), 0), "set a")
	ok(e.t, b.Cache().Set(ctx, "b-key", []byte("b"), 0), "set b")
	var buf bytes.Buffer
	_, err := e.st.ExportAll(ctx, &buf)
	ok(e.t, err, "export all")
	all := buf.String()
	truth(e.t, strings.Contains(all, `"ns":"`+e.st.Name()+`"`) && strings.Contains(all, `"ns":"`+b.Name()+`"`), "export all misses a namespace")
	one := export(e, b)
	truth(e.t, !strings.Contains(one, "a-key"), "namespace export holds another namespace's item")
}
