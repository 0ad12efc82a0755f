package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

// These tests run on DynamoDB Local (BOTSTATE_DYNAMODB_URL, set by
// scripts/test.sh), each in a namespace of its own.

func testDriver(t *testing.T) (*Driver, Options) {
	t.Helper()
	raw := statetest.BackendURL(t, "BOTSTATE_DYNAMODB_URL")
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	drv, err := Open(testCtx(t), u, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	return drv.(*Driver), o
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func testNS(t *testing.T) string {
	return fmt.Sprintf("dt-%d", time.Now().UnixNano())
}

func ids(rs []driver.IssueRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Channel + "/" + r.UniqueID
	}
	return out
}

func TestSaveIssuesInBatchesOnDynamoDB(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns, now := testCtx(t), testNS(t), time.Now()
	var recs []driver.IssueRecord
	for i := 0; i < 60; i++ {
		ch := fmt.Sprintf("C%d", i%3)
		recs = append(recs, driver.IssueRecord{Channel: ch, UniqueID: fmt.Sprintf("i%02d", i), CorrelationID: fmt.Sprintf("corr-%d", i),
			Open: i%2 == 0, Body: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
	// The same identity twice in one call: the later one wins, as two
	// saves in a row would (BatchWriteItem refuses duplicate keys).
	recs = append(recs, driver.IssueRecord{Channel: "C0", UniqueID: "i00", CorrelationID: "corr-0", Open: false, Body: []byte(`{"n":"again"}`)})
	if err := d.SaveIssues(ctx, ns, recs); err != nil {
		t.Fatal(err)
	}
	total := 0
	for c := 0; c < 3; c++ {
		open, err := d.OpenIssuesInChannel(ctx, ns, fmt.Sprintf("C%d", c), now)
		if err != nil {
			t.Fatal(err)
		}
		total += len(open)
	}
	if total != 29 {
		t.Fatalf("%d open issues after saving 60 (30 open, one closed again), want 29", total)
	}
	var n int
	err := d.Export(ctx, ns, now, func(r *driver.Record) error {
		if r.Kind == driver.KindIssue {
			n++
			if r.Key == "i00" && r.Body != `{"n":"again"}` {
				t.Errorf("i00 holds %s, want the later save", r.Body)
			}
		}
		return nil
	})
	if err != nil || n != 60 {
		t.Fatalf("exported %d issues (%v), want 60", n, err)
	}
}

func TestPrefixesNeverMatchOnDynamoDB(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns, now := testCtx(t), testNS(t), time.Now()
	longCorr := strings.Repeat("é#%~", 1024) // 4 KiB after UTF-8, digested in keys
	longChan := strings.Repeat("C#", 512)    // 1 KiB
	save := []driver.IssueRecord{
		{Channel: "C1", UniqueID: "u1", CorrelationID: "abc", Open: true},
		{Channel: "C1", UniqueID: "u2", CorrelationID: "abcd", Open: true},
		{Channel: "C12", UniqueID: "u3", CorrelationID: "abc", Open: true},
		{Channel: "C1#abc", UniqueID: "u4", CorrelationID: "d", Open: true},
		{Channel: "C1", UniqueID: "u5", CorrelationID: "abc#d", Open: true},
		{Channel: "C1", UniqueID: "u6", CorrelationID: longCorr, Open: true, PostID: "P1"},
		{Channel: "C1", UniqueID: "u7", CorrelationID: longCorr + "x", Open: true, PostID: "P12"},
		{Channel: longChan, UniqueID: "u8", CorrelationID: longCorr, Open: true},
		{Channel: longChan + "C", UniqueID: "u9", CorrelationID: longCorr, Open: true},
	}
	for i := range save {
		save[i].Body = []byte(`{}`)
	}
	if err := d.SaveIssues(ctx, ns, save); err != nil {
		t.Fatal(err)
	}
	find := func(ch, corr string, want ...string) {
		t.Helper()
		got, err := d.FindOpenIssues(ctx, ns, ch, corr, now)
		if err != nil {
			t.Fatal(err)
		}
		if g := strings.Join(ids(got), ","); g != strings.Join(want, ",") {
			t.Fatalf("FindOpenIssues(%.20q, %.20q) = %s, want %s", ch, corr, g, strings.Join(want, ","))
		}
	}
	find("C1", "abc", "C1/u1")
	find("C1", "abcd", "C1/u2")
	find("C12", "abc", "C12/u3")
	find("C1", "ab")
	find("C1#abc", "d", "C1#abc/u4")
	find("C1", "abc#d", "C1/u5")
	find("C1", longCorr, "C1/u6")
	find("C1", longCorr+"x", "C1/u7")
	find(longChan, longCorr, longChan+"/u8")
	find(longChan+"C", longCorr, longChan+"C/u9")

	open, err := d.OpenIssuesInChannel(ctx, ns, "C1", now)
	if err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(ids(open), ","); g != "C1/u1,C1/u2,C1/u5,C1/u6,C1/u7" {
		t.Fatalf("open issues of C1: %s", g)
	}
	byPost, err := d.FindIssuesByPostID(ctx, ns, "C1", "P1", now)
	if err != nil || len(byPost) != 1 || byPost[0].UniqueID != "u6" {
		t.Fatalf("by post id P1: %v %v", ids(byPost), err)
	}
	chans, err := d.ActiveChannels(ctx, ns, now)
	if err != nil || len(chans) != 5 {
		t.Fatalf("active channels %q, %v", chans, err)
	}

	// Move mappings and processing states: exact identities too.
	for _, m := range []driver.MoveMappingRecord{{Channel: "C1", CorrelationID: "abc", Body: []byte(`1`)},
		{Channel: "C1", CorrelationID: "abcd", Body: []byte(`2`)}, {Channel: "C12", CorrelationID: "abc", Body: []byte(`3`)},
		{Channel: "C1", CorrelationID: longCorr, Body: []byte(`4`)}} {
		if err := d.SaveMoveMapping(ctx, ns, m); err != nil {
			t.Fatal(err)
		}
	}
	for corr, want := range map[string]string{"abc": "1", "abcd": "2", longCorr: "4", "ab": ""} {
		b, ok, err := d.FindMoveMapping(ctx, ns, "C1", corr)
		if err != nil || string(b) != want || ok != (want != "") {
			t.Fatalf("mapping C1/%.10q: %s %v %v, want %q", corr, b, ok, err, want)
		}
	}
	if err := d.DeleteMoveMapping(ctx, ns, "C1", "abc"); err != nil {
		t.Fatal(err)
	}
	if b, _, _ := d.FindMoveMapping(ctx, ns, "C1", "abcd"); string(b) != "2" {
		t.Fatal("deleting abc removed abcd")
	}
	if b, _, _ := d.FindMoveMapping(ctx, ns, "C12", "abc"); string(b) != "3" {
		t.Fatal("deleting C1's abc removed C12's")
	}
}

// createTable makes a table for the schema tests, which the test deletes.
func createTable(t *testing.T, d *Driver, name string, keys [2]string, gsis []indexSpec) {
	t.Helper()
	ctx := testCtx(t)
	defs := map[string]bool{keys[0]: true, keys[1]: true}
	in := &dynamodb.CreateTableInput{
		TableName: aws.String(name), BillingMode: types.BillingModePayPerRequest,
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(keys[0]), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(keys[1]), KeyType: types.KeyTypeRange},
		},
	}
	for _, g := range gsis {
		c := g.create()
		in.GlobalSecondaryIndexes = append(in.GlobalSecondaryIndexes, types.GlobalSecondaryIndex{IndexName: c.IndexName, KeySchema: c.KeySchema, Projection: c.Projection})
		defs[g.hash], defs[g.rng] = true, true
	}
	for n := range defs {
		in.AttributeDefinitions = append(in.AttributeDefinitions, attrDefs(n)...)
	}
	if _, err := d.db.CreateTable(ctx, in); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = d.db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	})
}

func driverFor(t *testing.T, o Options, table string) *Driver {
	t.Helper()
	o.Table, o.Create = table, false
	d, err := New(testCtx(t), o, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func problems(t *testing.T, err error) string {
	t.Helper()
	var se *SchemaError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want a *SchemaError", err)
	}
	return strings.Join(se.Problems, "\n")
}

func TestValidateSchemaSaysWhatIsWrong(t *testing.T) {
	base, o := testDriver(t)
	if err := base.ValidateSchema(testCtx(t)); err != nil {
		t.Fatalf("the test table created with create=1: %v", err)
	}
	suffix := time.Now().UnixNano()

	missing := driverFor(t, o, fmt.Sprintf("schema-missing-%d", suffix))
	got := problems(t, missing.ValidateSchema(testCtx(t)))
	if !strings.Contains(got, "does not exist") {
		t.Fatalf("absent table: %s", got)
	}

	// A table with its keys right but no GSIIsOpen and no TTL.
	name := fmt.Sprintf("schema-nogsi-%d", suffix)
	createTable(t, base, name, [2]string{attrPK, attrSK}, indexes[:1])
	d := driverFor(t, o, name)
	got = problems(t, d.ValidateSchema(testCtx(t)))
	for _, want := range []string{"global secondary index GSIIsOpen is missing", "TTL is disabled"} {
		if !strings.Contains(got, want) {
			t.Fatalf("problems %q do not say %q", got, want)
		}
	}
	if strings.Contains(got, "GSIPostID") {
		t.Fatalf("problems %q blame the index that is right", got)
	}
	// Open with create=1 adds what is missing.
	if err := d.EnsureSchema(testCtx(t)); err != nil {
		t.Fatalf("EnsureSchema on a table missing an index and TTL: %v", err)
	}
	if err := d.ValidateSchema(testCtx(t)); err != nil {
		t.Fatalf("after EnsureSchema: %v", err)
	}

	// Keys of the wrong names, and an index with the wrong keys: nothing
	// create=1 can repair.
	name = fmt.Sprintf("schema-keys-%d", suffix)
	createTable(t, base, name, [2]string{"id", "sort"}, []indexSpec{{IndexPostID, attrPK, "post"}, indexes[1]})
	d = driverFor(t, o, name)
	got = problems(t, d.ValidateSchema(testCtx(t)))
	for _, want := range []string{`the table has partition key "id", want "pk"`, `the table has sort key "sort", want "sk"`,
		`index GSIPostID has sort key "post", want "post_id"`, "TTL is disabled"} {
		if !strings.Contains(got, want) {
			t.Fatalf("problems %q do not say %q", got, want)
		}
	}
	got = problems(t, d.EnsureSchema(testCtx(t)))
	if !strings.Contains(got, `partition key "id"`) || strings.Contains(got, "TTL") {
		t.Fatalf("EnsureSchema should enable TTL and report the keys it cannot fix: %s", got)
	}
}

func TestItemsOverDynamoDBsLimitAreTooLarge(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns, now := testCtx(t), testNS(t), time.Now()
	big := make([]byte, 300*1024)
	if _, err := d.CacheSet(ctx, ns, "k", make([]byte, 500*1024), now, time.Time{}, false); !errors.Is(err, driver.ErrTooLarge) {
		t.Fatalf("500 KB value: got %v, want ErrTooLarge", err)
	}
	if _, err := d.RecordEvent(ctx, ns, driver.EventWrite{Key: "e", Payload: make([]byte, 401*1024), Now: now}); !errors.Is(err, driver.ErrTooLarge) {
		t.Fatalf("401 KB payload: got %v, want ErrTooLarge", err)
	}
	// Two merges of 300 KB each, with no size limit of botstate's: the
	// second would take the item over the limit on the server, which
	// refuses it.
	if _, err := d.MergeDoc(ctx, ns, driver.ScopeThread, "t", []byte(`{"a":"`+string(fill(big))+`"}`), 0, now, time.Time{}); err != nil {
		t.Fatal(err)
	}
	_, err := d.MergeDoc(ctx, ns, driver.ScopeThread, "t", []byte(`{"b":"`+string(fill(big))+`"}`), 0, now, time.Time{})
	if !errors.Is(err, driver.ErrTooLarge) {
		t.Fatalf("merge past 400 KB: got %v, want ErrTooLarge", err)
	}
	doc, ok, err := d.GetDoc(ctx, ns, driver.ScopeThread, "t", now)
	if err != nil || !ok || len(doc.Data) < 300*1024 || strings.Contains(string(doc.Data), `"b"`) {
		t.Fatalf("refused merge changed the doc: %d bytes, %v %v", len(doc.Data), ok, err)
	}
}

func fill(b []byte) []byte {
	for i := range b {
		b[i] = 'x'
	}
	return b
}

func TestUnreachableEndpointIsUnavailable(t *testing.T) {
	// A port nothing listens on: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d, err := New(context.Background(), Options{Table: "nowhere", Endpoint: "http://" + addr, Region: "us-east-1"}, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.RecordEvent(context.Background(), "ns", driver.EventWrite{Key: "k", Now: time.Now()})
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("refused connection: got %v, want ErrUnavailable", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = d.GetConversation(ctx, "ns", "k", time.Now())
	if !errors.Is(err, driver.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: got %v, want ErrUnavailable and context.Canceled", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CacheGet(context.Background(), "ns", "k", time.Now()); !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("after Close: got %v, want ErrClosed", err)
	}
}

func TestEventLimitEvictsAndForgetGivesThePlaceBack(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns := testCtx(t), testNS(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	rec := func(key string) {
		t.Helper()
		now = now.Add(time.Millisecond)
		if _, err := d.RecordEvent(ctx, ns, driver.EventWrite{Key: key, Now: now, ExpiresAt: now.Add(time.Hour), Limit: 2}); err != nil {
			t.Fatal(err)
		}
	}
	seen := func(key string) bool {
		_, ok, err := d.LookupEvent(ctx, ns, key, now)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	rec("a")
	rec("b")
	if err := d.ForgetEvent(ctx, ns, "b"); err != nil {
		t.Fatal(err)
	}
	rec("c") // two live keys: a and c
	if !seen("a") || !seen("c") {
		t.Fatal("a forgotten key still took a place under the limit")
	}
	rec("d")
	if seen("a") || !seen("c") || !seen("d") {
		t.Fatalf("after d: a %v c %v d %v, want the oldest (a) evicted", seen("a"), seen("c"), seen("d"))
	}
	// An expired key replaced by a new insertion keeps the count right.
	now = now.Add(2 * time.Hour)
	rec("c")
	rec("e")
	if !seen("c") || !seen("e") {
		t.Fatal("fresh keys evicted after expired ones were replaced")
	}
	c, err := d.read(ctx, pkEventCount(ns), skCount)
	if err != nil || getInt(c.it, cntN) != 2 {
		t.Fatalf("counter %d (%v), want 2", getInt(c.it, cntN), err)
	}
}

// dropFirstAnswers makes the first answer of each named operation look lost
// in transit after DynamoDB applied the request, as a reset connection
// would: the SDK then resends the request, whose condition now fails.
func dropFirstAnswers(d *Driver, ops ...string) {
	left := map[string]int{}
	for _, op := range ops {
		left[op]++
	}
	var mu sync.Mutex
	d.db = dynamodb.New(d.db.Options(), func(o *dynamodb.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Deserialize.Add(middleware.DeserializeMiddlewareFunc("dropAnswer",
				func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
					out, md, err := next.HandleDeserialize(ctx, in)
					op := awsmiddleware.GetOperationName(ctx)
					mu.Lock()
					defer mu.Unlock()
					if err == nil && left[op] > 0 {
						left[op]--
						return out, md, &smithyhttp.RequestSendError{Err: errors.New("answer lost in transit")}
					}
					return out, md, err
				}), middleware.After)
		})
	})
}

func TestWriteWhoseAnswerWasLostStillCounts(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns := testCtx(t), testNS(t)
	now := time.Now().UTC().Truncate(time.Microsecond)

	dropFirstAnswers(d, "PutItem")
	rep, err := d.ClaimEvent(ctx, ns, driver.ClaimRequest{EventWrite: driver.EventWrite{Key: "k", Now: now, ExpiresAt: now.Add(time.Hour)},
		Token: "tok", LeaseUntil: now.Add(time.Minute)})
	if err != nil || rep.Outcome != driver.ClaimAcquired {
		t.Fatalf("claim whose answer was lost: %v %v, want acquired", rep.Outcome, err)
	}
	dropFirstAnswers(d, "UpdateItem")
	if err := d.CompleteEvent(ctx, ns, "k", "tok", []byte("done"), now, now.Add(time.Hour)); err != nil {
		t.Fatalf("complete whose answer was lost: %v", err)
	}
	if ev, _, _ := d.LookupEvent(ctx, ns, "k", now); ev.Status != driver.EventCompleted || string(ev.Result) != "done" {
		t.Fatalf("event after complete: %+v", ev)
	}

	dropFirstAnswers(d, "PutItem")
	ar, err := d.Acquire(ctx, ns, driver.AcquireRequest{Key: "lock", Owner: "me", Strategy: driver.Reject, Now: now, ExpiresAt: now.Add(time.Minute)})
	if err != nil || ar.Outcome != driver.Acquired {
		t.Fatalf("acquire whose answer was lost: %v %v", ar.Outcome, err)
	}
	st, _, _ := d.InspectLock(ctx, ns, "lock", now)
	if len(st.Holders) != 1 || st.Holders[0].Token != ar.Holder.Token {
		t.Fatalf("lock after acquire: %+v, want one holder with token %d", st, ar.Holder.Token)
	}

	w := driver.ConversationWrite{Key: "c", Now: now}
	c, err := d.SetConversationState(ctx, ns, w, "", false, "s1")
	if err != nil {
		t.Fatal(err)
	}
	dropFirstAnswers(d, "UpdateItem")
	c, err = d.SwapConversation(ctx, ns, w, c.Version, driver.Conversation{State: "s2", Data: []byte(`{}`)})
	if err != nil || c.State != "s2" || c.Version != 2 {
		t.Fatalf("swap whose answer was lost: %+v %v", c, err)
	}
}

// queueAt is an Acquire of lock t under Queue at now.
func queueAt(t *testing.T, d *Driver, ns, owner string, entry []byte, now time.Time, queueMax int) (driver.AcquireReply, error) {
	t.Helper()
	return d.Acquire(testCtx(t), ns, driver.AcquireRequest{Key: "t", Owner: owner, Strategy: driver.Queue, Entry: entry,
		Now: now, ExpiresAt: now.Add(time.Hour), QueueMax: queueMax, EntryExpiresAt: now.Add(time.Hour),
		IdleExpiresAt: now.Add(time.Minute)})
}

func TestSkippedEntriesCanTakeALockOverTheItemLimit(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns := testCtx(t), testNS(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	h, err := queueAt(t, d, ns, "w", nil, now, 1)
	if err != nil || h.Outcome != driver.Acquired {
		t.Fatalf("acquire: %v %v", h.Outcome, err)
	}
	// A queue of one: each entry drops the one before to Skipped, so the
	// record holds up to MaxSkipped+1 entries where it held one before
	// there were skipped entries.
	entry := make([]byte, 30*1024)
	var before driver.LockState
	queued := 0
	for ; queued < 20; queued++ {
		before, _, _ = d.InspectLock(ctx, ns, "t", now)
		if _, err = queueAt(t, d, ns, "x", entry, now, 1); err != nil {
			break
		}
	}
	if !errors.Is(err, driver.ErrTooLarge) || queued < 10 {
		t.Fatalf("after %d entries of 30 KB: got %v, want ErrTooLarge past 300 KB", queued, err)
	}
	after, _, _ := d.InspectLock(ctx, ns, "t", now)
	if len(after.Pending) != 1 || len(after.Skipped) != len(before.Skipped) || len(after.Skipped) != queued-1 {
		t.Fatalf("the refused acquire changed the lock: pending %d, skipped %d -> %d", len(after.Pending), len(before.Skipped), len(after.Skipped))
	}
	// The holder takes the skipped entries with the next one, and the
	// lock takes entries again.
	rep, err := d.HandoverLock(ctx, ns, "t", h.Holder.Token, now, now.Add(time.Hour), now.Add(time.Minute), true)
	if err != nil || rep.Next == nil || len(rep.Skipped) != queued-1 {
		t.Fatalf("handover: next %v, %d skipped, %v; want the last entry and %d skipped", rep.Next != nil, len(rep.Skipped), err, queued-1)
	}
	if r, err := queueAt(t, d, ns, "x", entry, now, 1); err != nil || r.Outcome != driver.Queued {
		t.Fatalf("acquire after the handover: %v %v", r.Outcome, err)
	}
}

func TestAHolderKeepsAnEntryAsLargeAsTheQueueTakes(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns := testCtx(t), testNS(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	// 320 KB fits an item as binary but not as base64 inside JSON.
	big := fill(make([]byte, 320*1024))
	h, err := queueAt(t, d, ns, "w", nil, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := queueAt(t, d, ns, "x", big, now, 0); err != nil || r.Outcome != driver.Queued {
		t.Fatalf("queue 320 KB: %v %v", r.Outcome, err)
	}
	rep, err := d.HandoverLock(ctx, ns, "t", h.Holder.Token, now, now.Add(30*time.Minute), now.Add(time.Minute), false)
	if err != nil || !rep.Held || rep.Next == nil || len(rep.Next.Payload) != len(big) {
		t.Fatalf("handover of a 320 KB entry: held %v, %v", rep.Held, err)
	}
	st, _, err := d.InspectLock(ctx, ns, "t", now)
	if err != nil || len(st.Holders) != 1 || st.Holders[0].Entry == nil || len(st.Holders[0].Entry.Payload) != len(big) {
		t.Fatalf("the holder's entry as stored: %+v %v", st.Holders, err)
	}
	// When the holder lapses the entry goes back to the front.
	lapsed, err := d.LapsedLocks(ctx, ns, now.Add(29*time.Minute), 10)
	if err != nil || len(lapsed) != 0 {
		t.Fatalf("lapsed while held: %d %v", len(lapsed), err)
	}
	lapsed, err = d.LapsedLocks(ctx, ns, now.Add(30*time.Minute), 10)
	if err != nil || len(lapsed) != 1 || len(lapsed[0].Pending) != 1 || len(lapsed[0].Pending[0].Payload) != len(big) {
		t.Fatalf("lapsed once the holder lapsed: %d %v", len(lapsed), err)
	}
}

func TestLapsedLocksReadOnlyLocksWhoseHolderLapsed(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns := testCtx(t), testNS(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	indexed := func() map[string]string {
		t.Helper()
		q, err := d.db.Query(ctx, &dynamodb.QueryInput{
			TableName: aws.String(d.table), IndexName: aws.String(IndexIsOpen),
			KeyConditionExpression:    aws.String("#io = :p"),
			ExpressionAttributeNames:  map[string]string{"#io": attrIsOpen},
			ExpressionAttributeValues: map[string]av{":p": avS(lapsingLocks(ns))},
		})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, it := range q.Items {
			out[getS(it, attrKey)] = getS(it, attrOpenSK)[:21]
		}
		return out
	}
	acquire := func(key string, entry []byte) driver.AcquireReply {
		t.Helper()
		r, err := d.Acquire(ctx, ns, driver.AcquireRequest{Key: key, Owner: "w", Strategy: driver.Queue, Entry: entry,
			Now: now, ExpiresAt: now.Add(time.Minute), EntryExpiresAt: now.Add(time.Hour), IdleExpiresAt: now.Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	acquire("no-entry", nil)
	held := acquire("held", []byte("m"))
	got := indexed()
	if len(got) != 1 || got["held"] != timeSortable(now.Add(time.Minute)) {
		t.Fatalf("indexed %v, want only the lock whose holder has an entry, at the holder's lease end", got)
	}
	if _, err := d.ExtendLock(ctx, ns, "held", held.Holder.Token, now, now.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := indexed(); got["held"] != timeSortable(now.Add(30*time.Minute)) {
		t.Fatalf("after extend the lock is indexed at %v, want the new lease end", got["held"])
	}
	// An entry that lapses with its holder leaves nothing to sweep.
	short, err := d.Acquire(ctx, ns, driver.AcquireRequest{Key: "short", Owner: "w", Strategy: driver.Queue, Entry: []byte("m"),
		Now: now, ExpiresAt: now.Add(time.Hour), EntryExpiresAt: now.Add(time.Minute), IdleExpiresAt: now.Add(time.Minute)})
	if err != nil || short.Outcome != driver.Acquired {
		t.Fatal(err)
	}
	if _, ok := indexed()["short"]; ok {
		t.Fatal("a lock whose entry lapses before its holder is indexed")
	}
	if _, err := d.ReleaseLock(ctx, ns, "held", held.Holder.Token, now, now.Add(time.Minute), true); err != nil {
		t.Fatal(err)
	}
	if got := indexed(); got["held"] != timeSortable(time.Time{}) {
		t.Fatalf("an abandoned lock is indexed at %v, want at once", got["held"])
	}
	lapsed, err := d.LapsedLocks(ctx, ns, now, 10)
	if err != nil || len(lapsed) != 1 || lapsed[0].Key != "held" {
		t.Fatalf("lapsed: %+v %v", lapsed, err)
	}
}

func TestEventsReleasedOrRecordedByOlderVersionsAreListed(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns := testCtx(t), testNS(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	// Before failed events and retry times, recorded and released events
	// shared one index partition, and no item had lerr or retry.
	for i, st := range []driver.EventStatus{driver.EventRecorded, driver.EventReleased} {
		e := driver.Event{Key: fmt.Sprintf("old-%d", i), Status: st, Attempts: i, CreatedAt: now.Add(time.Duration(i) * time.Millisecond),
			ExpiresAt: now.Add(time.Hour)}
		it := eventItem(ns, &e, "", revision())
		it[attrIsOpen] = avS(releasedEvents(ns))
		if _, err := d.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(d.table), Item: it}); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(evs []driver.Event, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			out = append(out, e.Key)
		}
		return strings.Join(out, ",")
	}
	if got := keys(d.DueEvents(ctx, ns, now, 10)); got != "old-1" {
		t.Fatalf("due %q, want the released event only", got)
	}
	if got := keys(d.PendingEvents(ctx, ns, now, 10)); got != "old-0,old-1" {
		t.Fatalf("pending %q, want both", got)
	}
	rep, err := d.ClaimEvent(ctx, ns, driver.ClaimRequest{EventWrite: driver.EventWrite{Key: "old-1", Now: now, ExpiresAt: now.Add(time.Hour)},
		Token: "tok", LeaseUntil: now.Add(time.Minute), MaxAttempts: 5})
	if err != nil || rep.Outcome != driver.ClaimAcquired || rep.Event.Attempts != 2 {
		t.Fatalf("claim of an old released event: %v %d %v", rep.Outcome, rep.Event.Attempts, err)
	}
}

func TestEventUpdatesWhoseAnswerWasLostStillCount(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns := testCtx(t), testNS(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	claim := func(key string) string {
		t.Helper()
		rep, err := d.ClaimEvent(ctx, ns, driver.ClaimRequest{EventWrite: driver.EventWrite{Key: key, Now: now, ExpiresAt: now.Add(time.Hour)},
			Token: key + "-tok", LeaseUntil: now.Add(time.Minute), MaxAttempts: 1})
		if err != nil || rep.Outcome != driver.ClaimAcquired {
			t.Fatalf("claim %s: %v %v", key, rep.Outcome, err)
		}
		return key + "-tok"
	}
	lookup := func(key string) driver.Event {
		t.Helper()
		ev, _, err := d.LookupEvent(ctx, ns, key, now)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	tok := claim("a")
	dropFirstAnswers(d, "UpdateItem")
	if err := d.ExtendEvent(ctx, ns, "a", tok, now, now.Add(time.Hour), now.Add(2*time.Hour)); err != nil {
		t.Fatalf("extend whose answer was lost: %v", err)
	}
	// One UpdateItem while attempts are left.
	dropFirstAnswers(d, "UpdateItem")
	err := d.ReleaseEvent(ctx, ns, driver.ReleaseRequest{Key: "a", Token: tok, Now: now, ExpiresAt: now.Add(time.Hour), Reason: "r", MaxAttempts: 2})
	if ev := lookup("a"); err != nil || ev.Status != driver.EventReleased || ev.LastError != "r" {
		t.Fatalf("release whose answer was lost: %+v %v", ev, err)
	}
	// At the last attempt: a read and a put conditioned on it.
	tok = claim("b")
	dropFirstAnswers(d, "PutItem")
	err = d.ReleaseEvent(ctx, ns, driver.ReleaseRequest{Key: "b", Token: tok, Now: now, ExpiresAt: now.Add(time.Hour), MaxAttempts: 1})
	if ev := lookup("b"); err != nil || ev.Status != driver.EventFailed || ev.LastError != driver.MaxAttemptsReason {
		t.Fatalf("parking release whose answer was lost: %+v %v", ev, err)
	}
	dropFirstAnswers(d, "UpdateItem")
	if err := d.RetryEvent(ctx, ns, "b", now, now.Add(time.Hour)); err != nil {
		t.Fatalf("retry whose answer was lost: %v", err)
	}
	if ev := lookup("b"); ev.Status != driver.EventReleased || ev.Attempts != 0 || ev.LastError != driver.MaxAttemptsReason {
		t.Fatalf("after retry: %+v", ev)
	}
	if err := d.RetryEvent(ctx, ns, "b", now, now.Add(time.Hour)); !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("retry of a released event: %v, want ErrConflict", err)
	}
	if err := d.RetryEvent(ctx, ns, "absent", now, now.Add(time.Hour)); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("retry of an absent event: %v, want ErrNotFound", err)
	}
}

// TestMergeSizeBound follows cvSize through the writes of one conversation:
// exact after a write of whole data, grown by each merge in place (which is
// how a merge far from the limit stays one UpdateItem), reset to the exact
// size by the exact merge a result near the limit takes, and gone after a
// merge without a limit, after which the next merge with one is exact again.
func TestMergeSizeBound(t *testing.T) {
	d, _ := testDriver(t)
	ctx, ns, now := testCtx(t), testNS(t), time.Now()
	w := driver.ConversationWrite{Key: "k", Now: now}
	bound := func(what string, want int64, present bool) {
		t.Helper()
		s, err := d.read(ctx, pkConv(ns, "k"), skConv)
		if err != nil {
			t.Fatal(err)
		}
		_, ok := s.it[cvSize]
		if got := getInt(s.it, cvSize); ok != present || got != want {
			t.Fatalf("%s: bound %d (present %v), want %d (present %v)", what, got, ok, want, present)
		}
	}
	if _, err := d.SetConversationData(ctx, ns, w, []byte(`{"a":"xxxxxxxxxx"}`)); err != nil {
		t.Fatal(err)
	}
	bound("after SetConversationData", 18, true)
	// Replacing a:"xxxxxxxxxx" with a:"y" shrinks the data to 9 bytes; the
	// bound grows by the member set, 8.
	if _, err := d.MergeConversationData(ctx, ns, w, []byte(`{"a":"y"}`), 1000); err != nil {
		t.Fatal(err)
	}
	bound("after a merge in place", 26, true)
	// 26 + 8 is over 30: the merge is measured exactly, 9 bytes.
	c, err := d.MergeConversationData(ctx, ns, w, []byte(`{"a":"z"}`), 30)
	if err != nil || string(c.Data) != `{"a":"z"}` {
		t.Fatalf("exact merge: %s, %v", c.Data, err)
	}
	bound("after an exact merge", 9, true)
	if _, err := d.MergeConversationData(ctx, ns, w, []byte(`{"b":1}`), 0); err != nil {
		t.Fatal(err)
	}
	bound("after a merge without a limit", 0, false)
	// No bound: the merge is measured exactly, 21 bytes.
	if _, err := d.MergeConversationData(ctx, ns, w, []byte(`{"c":2}`), 1000); err != nil {
		t.Fatal(err)
	}
	bound("after a merge with a limit", 21, true)
	if _, err := d.MergeConversationData(ctx, ns, w, []byte(`{"d":"0123456789"}`), 30); !errors.Is(err, driver.ErrTooLarge) {
		t.Fatalf("merge into 38 bytes, limit 30: got %v, want ErrTooLarge", err)
	}
	c, _, _ = d.GetConversation(ctx, ns, "k", now)
	if string(c.Data) != `{"a":"z","b":1,"c":2}` || c.Version != 5 {
		t.Fatalf("after the refused merge: %s v%d", c.Data, c.Version)
	}
	bound("after the refused merge", 21, true)
}
