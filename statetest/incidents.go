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

// testIssue is an issue as an alert manager would model it: its body is
// whatever bytes it marshals to, and the store must keep them exactly.
type testIssue struct {
	channel, id, corr, post string
	open                    bool
	body                    []byte
}

func (i *testIssue) ChannelID() string        { return i.channel }
func (i *testIssue) UniqueID() string         { return i.id }
func (i *testIssue) GetCorrelationID() string { return i.corr }
func (i *testIssue) IsOpen() bool             { return i.open }
func (i *testIssue) CurrentPostID() string    { return i.post }
func (i *testIssue) MarshalJSON() ([]byte, error) {
	if i.body != nil {
		return i.body, nil
	}
	return json.Marshal(map[string]any{"id": i.id, "corr": i.corr, "open": i.open, "channel": i.channel})
}

type testMapping struct{ channel, id, corr string }

func (m *testMapping) ChannelID() string        { return m.channel }
func (m *testMapping) UniqueID() string         { return m.id }
func (m *testMapping) GetCorrelationID() string { return m.corr }
func (m *testMapping) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"channel": m.channel, "corr": m.corr, "id": m.id})
}

func issue(channel, id, corr string, open bool) *testIssue {
	return &testIssue{channel: channel, id: id, corr: corr, open: open}
}

func init() {
	add("Incidents",
		tc("InitAndSaveAlertIsIdempotent", testIncidentsInitAndSaveAlertIsIdempotent),
		tc("FindOpenIssueByCorrelationID", testIncidentsFindOpenIssueByCorrelationID),
		tc("PrefixesNeverMatch", testIncidentsPrefixesNeverMatch),
		tc("CorrelationIDsMayHoldAnything", testIncidentsCorrelationIDsMayHoldAnything),
		tc("BodiesAreKeptByteForByte", testIncidentsBodiesAreKeptByteForByte),
		tc("FindIssueBySlackPostID", testIncidentsFindIssueBySlackPostID),
		tc("FindActiveChannelsSortedOnce", testIncidentsFindActiveChannelsSortedOnce),
		tc("MoveIssueIsAtomicAndChecked", testIncidentsMoveIssueIsAtomicAndChecked),
		tc("MoveMappings", testIncidentsMoveMappings),
		tc("ProcessingStateKeepsEveryFieldToTheNanosecond", testIncidentsProcessingStateKeepsEveryFieldToTheNanosecond),
		tc("RetentionExpiresClosedIssuesAndAlertsNeverOpenIssues", testIncidentsRetentionExpiresClosedIssuesAndAlertsNeverOpenIssues),
		tco("CustomRetention", []botstate.Option{botstate.WithIssueRetention(time.Hour), botstate.WithAlertRetention(time.Minute)}, testIncidentsCustomRetention),
		tc("BadInputRefusesTheWholeBatch", testIncidentsBadInputRefusesTheWholeBatch),
		tc("DropAllDataClearsOnlyItsNamespace", testIncidentsDropAllDataClearsOnlyItsNamespace),
	)
}

// exportHas reports whether the namespace's snapshot holds a line with s.
func exportHas(e *env, s string) bool {
	e.t.Helper()
	var buf bytes.Buffer
	_, err := e.st.Export(ctxT(e.t), &buf)
	ok(e.t, err, "export")
	return strings.Contains(buf.String(), s)
}

// ownAlert is an alert manager's own alert type.
type ownAlert struct {
	channel, id, body string
	at                time.Time
	err               error
}

func (a *ownAlert) ChannelID() string            { return a.channel }
func (a *ownAlert) UniqueID() string             { return a.id }
func (a *ownAlert) GetTimestamp() time.Time      { return a.at }
func (a *ownAlert) MarshalJSON() ([]byte, error) { return []byte(a.body), a.err }

func testIncidentsInitAndSaveAlertIsIdempotent(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	ok(e.t, in.Init(ctx, false), "init")
	ok(e.t, in.Init(ctx, true), "init skipping validation")
	a := &botstate.BasicAlert{Channel: "C1", ID: "a1", Timestamp: e.clock.Now(), Body: json.RawMessage(`{"text":"disk full"}`)}
	ok(e.t, in.SaveAlert(ctx, a), "save alert")
	ok(e.t, in.SaveAlert(ctx, a), "save the same alert again")
	isErr(e.t, in.SaveAlert(ctx, nil), botstate.ErrInvalidArgument, "nil alert")
	isErr(e.t, in.SaveAlert(ctx, &botstate.BasicAlert{Channel: "C1", ID: "a2", Body: json.RawMessage(`not json`)}), botstate.ErrInvalidArgument, "alert body not JSON")
	// An alert manager's own alert type, saved as it is: the body
	// its MarshalJSON gives, byte for byte.
	own := &ownAlert{channel: "C1", id: "own1", at: e.clock.Now(), body: `{"z": 1,  "a":[2]}`}
	ok(e.t, in.SaveAlert(ctx, own), "save an alert of the caller's type")
	var snap bytes.Buffer
	_, err := e.st.Export(ctx, &snap)
	ok(e.t, err, "export")
	found := false
	for _, line := range strings.Split(snap.String(), "\n") {
		var r botstate.Record
		if json.Unmarshal([]byte(line), &r) == nil && r.Kind == "alert" && r.Key == "own1" {
			found = true
			if r.Body != own.body || r.Channel != "C1" || !r.Timestamp.Equal(own.at) {
				e.t.Errorf("the caller's alert exported as %+v", r)
			}
		}
	}
	if !found {
		e.t.Error("the caller's alert is not in the export")
	}
	var nilOwn *ownAlert
	isErr(e.t, in.SaveAlert(ctx, nilOwn), botstate.ErrInvalidArgument, "a nil alert of the caller's type")
	isErr(e.t, in.SaveAlert(ctx, &ownAlert{channel: "C1", id: "own2", err: errors.New("cannot")}), botstate.ErrInvalidArgument, "an alert whose MarshalJSON fails")
}

func testIncidentsFindOpenIssueByCorrelationID(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	id, body, err := in.FindOpenIssueByCorrelationID(ctx, "C1", "corr")
	ok(e.t, err, "find in empty store")
	truth(e.t, id == "" && body == nil, "found %q %s in an empty store", id, body)
	ok(e.t, in.SaveIssue(ctx, issue("C1", "i1", "corr", true)), "save open")
	ok(e.t, in.SaveIssue(ctx, issue("C1", "i0", "corr", false)), "save closed with same correlation")
	id, body, err = in.FindOpenIssueByCorrelationID(ctx, "C1", "corr")
	ok(e.t, err, "find")
	eq(e.t, id, "i1", "open issue")
	want, _ := issue("C1", "i1", "corr", true).MarshalJSON()
	eqBytes(e.t, body, want, "body")
	id, _, _ = in.FindOpenIssueByCorrelationID(ctx, "C2", "corr")
	eq(e.t, id, "", "other channel")
	ok(e.t, in.SaveIssue(ctx, issue("C1", "i2", "corr", true)), "second open issue with the same correlation")
	_, _, err = in.FindOpenIssueByCorrelationID(ctx, "C1", "corr")
	isErr(e.t, err, botstate.ErrConflict, "two open issues match")
	ok(e.t, in.SaveIssue(ctx, issue("C1", "i2", "corr", false)), "close the second (save updates)")
	id, _, err = in.FindOpenIssueByCorrelationID(ctx, "C1", "corr")
	ok(e.t, err, "find after close")
	eq(e.t, id, "i1", "remaining open issue")
}

func testIncidentsPrefixesNeverMatch(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	ok(e.t, in.SaveIssues(ctx, issue("C12", "x1", "abc", true), issue("C1", "x2", "abcd", true),
		issue("C1", "x3", "ab", true)), "save")
	id, _, err := in.FindOpenIssueByCorrelationID(ctx, "C1", "abc")
	ok(e.t, err, "find")
	eq(e.t, id, "", "abc must not match abcd nor C1 match C12")
	id, _, _ = in.FindOpenIssueByCorrelationID(ctx, "C1", "abcd")
	eq(e.t, id, "x2", "exact match")
	open, _ := in.LoadOpenIssuesInChannel(ctx, "C1")
	eq(e.t, len(open), 2, "open issues of C1 (not C12's)")
	_, found := open["x1"]
	truth(e.t, !found, "C12's issue listed under C1")
	ok(e.t, in.SaveMoveMapping(ctx, &testMapping{channel: "C1", id: "m", corr: "abcd"}), "mapping")
	m, err := in.FindMoveMapping(ctx, "C1", "abc")
	ok(e.t, err, "find mapping")
	truth(e.t, m == nil, "abc found abcd's mapping")
	m, _ = in.FindMoveMapping(ctx, "C12", "abcd")
	truth(e.t, m == nil, "C12 found C1's mapping")
}

func testIncidentsCorrelationIDsMayHoldAnything(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	ids := []string{
		"🔥 disk full on 🖥️", "line1\nline2\r\n", `quote " and ' and \`, "hash#tag#", "ALERT#C1#x",
		"'; DROP TABLE issues; --", strings.Repeat("é", 500), strings.Repeat("🔥", 500), "tab\tand space ", "%41%3A:colon", "{hash}tag",
	}
	for i, c := range ids {
		ok(e.t, in.SaveIssue(ctx, issue("C1", fmt.Sprintf("u%d", i), c, true)), "save %q", c)
		ok(e.t, in.SaveMoveMapping(ctx, &testMapping{channel: "C1", id: fmt.Sprintf("m%d", i), corr: c}), "mapping %q", c)
	}
	for i, c := range ids {
		id, _, err := in.FindOpenIssueByCorrelationID(ctx, "C1", c)
		ok(e.t, err, "find %q", c)
		eq(e.t, id, fmt.Sprintf("u%d", i), "issue for %q", c)
		m, err := in.FindMoveMapping(ctx, "C1", c)
		ok(e.t, err, "mapping %q", c)
		truth(e.t, bytes.Contains(m, []byte(fmt.Sprintf(`"m%d"`, i))), "mapping for %q: %s", c, m)
	}
	_, _, err := in.FindOpenIssueByCorrelationID(ctx, "C1", "")
	isErr(e.t, err, botstate.ErrInvalidArgument, "empty correlation id")
	_, _, err = in.FindOpenIssueByCorrelationID(ctx, "C1", "bad\xff")
	isErr(e.t, err, botstate.ErrInvalidArgument, "invalid UTF-8 correlation id")
}

func testIncidentsBodiesAreKeptByteForByte(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	body := []byte("{ \"z\": 1,\n  \"a\": [3, 2, 1], \"m\": {\"y\": 1.50, \"b\": \"\\u00e9\"} }")
	ok(e.t, in.SaveIssue(ctx, &testIssue{channel: "C1", id: "i", corr: "c", post: "p1", open: true, body: body}), "save")
	_, got, err := in.FindOpenIssueByCorrelationID(ctx, "C1", "c")
	ok(e.t, err, "find")
	eqBytes(e.t, got, body, "body by correlation")
	_, got, _ = in.FindIssueBySlackPostID(ctx, "C1", "p1")
	eqBytes(e.t, got, body, "body by post id")
	all, _ := in.LoadOpenIssuesInChannel(ctx, "C1")
	eqBytes(e.t, all["i"], body, "body in channel load")
}

func testIncidentsFindIssueBySlackPostID(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	ok(e.t, in.SaveIssues(ctx,
		&testIssue{channel: "C1", id: "i1", corr: "a", post: "1700.1", open: true},
		&testIssue{channel: "C1", id: "i2", corr: "b", post: "1700.2", open: false},
		&testIssue{channel: "C2", id: "i3", corr: "c", post: "1700.1", open: true},
	), "save")
	id, _, err := in.FindIssueBySlackPostID(ctx, "C1", "1700.1")
	ok(e.t, err, "find")
	eq(e.t, id, "i1", "by post")
	id, _, _ = in.FindIssueBySlackPostID(ctx, "C1", "1700.2")
	eq(e.t, id, "i2", "closed issues are found by post too")
	id, body, err := in.FindIssueBySlackPostID(ctx, "C1", "1700.10")
	ok(e.t, err, "find absent")
	truth(e.t, id == "" && body == nil, "absent post found %q", id)
}

func testIncidentsFindActiveChannelsSortedOnce(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	chs, err := in.FindActiveChannels(ctx)
	ok(e.t, err, "active channels of empty store")
	truth(e.t, chs != nil && len(chs) == 0, "want an empty slice, got %#v", chs)
	ok(e.t, in.SaveIssues(ctx, issue("C3", "a", "x", true), issue("C1", "b", "y", true), issue("C1", "c", "z", true),
		issue("C2", "d", "w", false), issue("C10", "e", "v", true)), "save")
	chs, _ = in.FindActiveChannels(ctx)
	eq(e.t, chs, []string{"C1", "C10", "C3"}, "active channels")
	open, err := in.LoadOpenIssuesInChannel(ctx, "C1")
	ok(e.t, err, "load open")
	eq(e.t, len(open), 2, "open issues in C1")
	open, _ = in.LoadOpenIssuesInChannel(ctx, "C2")
	truth(e.t, open != nil && len(open) == 0, "closed issues loaded as open: %v", open)
}

func testIncidentsMoveIssueIsAtomicAndChecked(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	ok(e.t, in.SaveIssue(ctx, issue("SRC", "i1", "corr", true)), "save")
	moved := issue("DST", "i1", "corr", true)
	isErr(e.t, in.MoveIssue(ctx, moved, "SRC", "OTHER"), botstate.ErrInvalidArgument, "issue's channel is not the target")
	isErr(e.t, in.MoveIssue(ctx, moved, "DST", "DST"), botstate.ErrInvalidArgument, "source equals target")
	isErr(e.t, in.MoveIssue(ctx, nil, "SRC", "DST"), botstate.ErrInvalidArgument, "nil issue")
	src, _ := in.LoadOpenIssuesInChannel(ctx, "SRC")
	eq(e.t, len(src), 1, "source after refused moves")
	ok(e.t, in.MoveIssue(ctx, moved, "SRC", "DST"), "move")
	src, _ = in.LoadOpenIssuesInChannel(ctx, "SRC")
	dst, _ := in.LoadOpenIssuesInChannel(ctx, "DST")
	eq(e.t, len(src), 0, "source after move")
	eq(e.t, len(dst), 1, "target after move")
	id, _, _ := in.FindOpenIssueByCorrelationID(ctx, "SRC", "corr")
	eq(e.t, id, "", "found in source after move")
	id, _, _ = in.FindOpenIssueByCorrelationID(ctx, "DST", "corr")
	eq(e.t, id, "i1", "found in target")
	chs, _ := in.FindActiveChannels(ctx)
	eq(e.t, chs, []string{"DST"}, "active channels after move")
	// Not in the source: simply saved in the target.
	ok(e.t, in.MoveIssue(ctx, issue("DST2", "i9", "k", true), "NOWHERE", "DST2"), "move of an issue not in the source")
	id, _, _ = in.FindOpenIssueByCorrelationID(ctx, "DST2", "k")
	eq(e.t, id, "i9", "saved in target")
}

func testIncidentsMoveMappings(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	m, err := in.FindMoveMapping(ctx, "C1", "corr")
	ok(e.t, err, "find absent")
	truth(e.t, m == nil, "absent mapping found")
	ok(e.t, in.SaveMoveMapping(ctx, &testMapping{channel: "C1", id: "m1", corr: "corr"}), "save")
	ok(e.t, in.SaveMoveMapping(ctx, &testMapping{channel: "C1", id: "m2", corr: "corr"}), "save replaces")
	m, _ = in.FindMoveMapping(ctx, "C1", "corr")
	want, _ := (&testMapping{channel: "C1", id: "m2", corr: "corr"}).MarshalJSON()
	eqBytes(e.t, m, want, "mapping body")
	ok(e.t, in.DeleteMoveMapping(ctx, "C1", "corr"), "delete")
	m, _ = in.FindMoveMapping(ctx, "C1", "corr")
	truth(e.t, m == nil, "deleted mapping found")
	ok(e.t, in.DeleteMoveMapping(ctx, "C1", "corr"), "delete absent")
	isErr(e.t, in.SaveMoveMapping(ctx, nil), botstate.ErrInvalidArgument, "nil mapping")
	var typedNil *testMapping
	isErr(e.t, in.SaveMoveMapping(ctx, typedNil), botstate.ErrInvalidArgument, "typed nil mapping")
}

func testIncidentsProcessingStateKeepsEveryFieldToTheNanosecond(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	st, err := in.FindChannelProcessingState(ctx, "C1")
	ok(e.t, err, "find absent")
	truth(e.t, st == nil, "absent state found")
	want := &botstate.ChannelProcessingState{
		ChannelID:           "C1",
		Created:             time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
		LastChannelActivity: time.Date(2026, 1, 2, 3, 4, 6, 987654321, time.UTC),
		LastProcessed:       time.Date(2026, 1, 2, 3, 4, 7, 1, time.UTC),
		OpenIssues:          42,
	}
	ok(e.t, in.SaveChannelProcessingState(ctx, want), "save")
	got, err := in.FindChannelProcessingState(ctx, "C1")
	ok(e.t, err, "find")
	truth(e.t, got != nil, "state not found")
	truth(e.t, got.Created.Equal(want.Created) && got.LastChannelActivity.Equal(want.LastChannelActivity) &&
		got.LastProcessed.Equal(want.LastProcessed) && got.OpenIssues == 42 && got.ChannelID == "C1", "state %+v, want %+v", got, want)
	st, _ = in.FindChannelProcessingState(ctx, "C12")
	truth(e.t, st == nil, "C12 found C1's state")
	isErr(e.t, in.SaveChannelProcessingState(ctx, nil), botstate.ErrInvalidArgument, "nil state")
}

func testIncidentsRetentionExpiresClosedIssuesAndAlertsNeverOpenIssues(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	ok(e.t, in.SaveIssues(ctx, &testIssue{channel: "C1", id: "open", corr: "o", post: "p1", open: true},
		&testIssue{channel: "C1", id: "closed", corr: "c", post: "p2", open: false}), "save")
	ok(e.t, in.SaveAlert(ctx, &botstate.BasicAlert{Channel: "C1", ID: "a", Timestamp: e.clock.Now(), Body: json.RawMessage(`{}`)}), "alert")
	e.clock.Advance(botstate.DefaultAlertRetention - time.Second)
	truth(e.t, exportHas(e, `"kind":"alert"`), "alert gone inside its retention")
	e.clock.Advance(time.Second)
	truth(e.t, !exportHas(e, `"kind":"alert"`), "alert outlived its retention")
	e.clock.Advance(botstate.DefaultIssueRetention - botstate.DefaultAlertRetention - time.Second)
	id, _, _ := in.FindIssueBySlackPostID(ctx, "C1", "p2")
	eq(e.t, id, "closed", "closed issue inside its retention")
	e.clock.Advance(time.Second)
	id, _, _ = in.FindIssueBySlackPostID(ctx, "C1", "p2")
	eq(e.t, id, "", "closed issue outlived its retention")
	e.clock.Advance(5 * 365 * 24 * time.Hour)
	id, _, _ = in.FindOpenIssueByCorrelationID(ctx, "C1", "o")
	eq(e.t, id, "open", "open issue expired")
}

func testIncidentsCustomRetention(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	ok(e.t, in.SaveIssue(ctx, &testIssue{channel: "C1", id: "closed", corr: "c", post: "p", open: false}), "save")
	e.clock.Advance(time.Hour)
	id, _, _ := in.FindIssueBySlackPostID(ctx, "C1", "p")
	eq(e.t, id, "", "closed issue outlived a one-hour retention")
}

func testIncidentsBadInputRefusesTheWholeBatch(e *env) {
	ctx, in := ctxT(e.t), e.st.Incidents()
	var typedNil *testIssue
	isErr(e.t, in.SaveIssues(ctx, issue("C1", "ok", "c", true), nil), botstate.ErrInvalidArgument, "nil issue in batch")
	isErr(e.t, in.SaveIssues(ctx, issue("C1", "ok", "c", true), typedNil), botstate.ErrInvalidArgument, "typed nil issue in batch")
	isErr(e.t, in.SaveIssue(ctx, issue("", "x", "c", true)), botstate.ErrInvalidArgument, "empty channel")
	isErr(e.t, in.SaveIssue(ctx, issue("C1", "", "c", true)), botstate.ErrInvalidArgument, "empty unique id")
	isErr(e.t, in.SaveIssue(ctx, &testIssue{channel: "C1", id: "x", corr: "c", open: true, body: []byte("{bad")}), botstate.ErrInvalidArgument, "body not JSON")
	isErr(e.t, in.SaveIssue(ctx, issue("C1", "x", strings.Repeat("c", botstate.MaxCorrelationIDLen+1), true)), botstate.ErrTooLarge, "correlation id too long")
	open, _ := in.LoadOpenIssuesInChannel(ctx, "C1")
	eq(e.t, len(open), 0, "issues saved by refused calls")
	ok(e.t, in.SaveIssues(ctx), "empty batch")
}

func testIncidentsDropAllDataClearsOnlyItsNamespace(e *env) {
	ctx := ctxT(e.t)
	in, other := e.st.Incidents(), e.st.Namespace(uniqueNamespace(e.t)).Incidents()
	for _, x := range []*botstate.Incidents{in, other} {
		ok(e.t, x.SaveIssue(ctx, issue("C1", "i", "c", true)), "save")
		ok(e.t, x.SaveMoveMapping(ctx, &testMapping{channel: "C1", id: "m", corr: "c"}), "mapping")
		ok(e.t, x.SaveChannelProcessingState(ctx, &botstate.ChannelProcessingState{ChannelID: "C1"}), "state")
		ok(e.t, x.SaveAlert(ctx, &botstate.BasicAlert{Channel: "C1", ID: "a", Body: json.RawMessage(`{}`)}), "alert")
	}
	ok(e.t, in.DropAllData(ctx), "drop")
	chs, _ := in.FindActiveChannels(ctx)
	eq(e.t, len(chs), 0, "active channels after drop")
	m, _ := in.FindMoveMapping(ctx, "C1", "c")
	truth(e.t, m == nil, "mapping after drop")
	st, _ := in.FindChannelProcessingState(ctx, "C1")
	truth(e.t, st == nil, "state after drop")
	truth(e.t, !exportHas(e, `"kind":"alert"`), "alert after drop")
	chs, _ = other.FindActiveChannels(ctx)
	eq(e.t, chs, []string{"C1"}, "other namespace's channels after drop")
	m, _ = other.FindMoveMapping(ctx, "C1", "c")
	truth(e.t, m != nil, "other namespace's mapping dropped")
}
