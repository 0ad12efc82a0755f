package dynamodb

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// fakeBatch is a BatchWriteItem that leaves part of each call unprocessed,
// the way DynamoDB does when a partition is throttled. It stands in for the
// server only to drive batchWrite's own retry loop through cases DynamoDB
// Local never produces.
type fakeBatch struct {
	mu sync.Mutex
	// leave says how many requests of call n (0-based) come back
	// unprocessed; missing entries mean none.
	leave   func(call, size int) int
	calls   []int          // size of each call
	written map[string]int // times each item was accepted
}

func (f *fakeBatch) BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reqs := in.RequestItems["t"]
	call := len(f.calls)
	f.calls = append(f.calls, len(reqs))
	n := f.leave(call, len(reqs))
	for _, r := range reqs[:len(reqs)-n] {
		f.written[getS(r.PutRequest.Item, attrPK)]++
	}
	out := &dynamodb.BatchWriteItemOutput{}
	if n > 0 {
		out.UnprocessedItems = map[string][]types.WriteRequest{"t": reqs[len(reqs)-n:]}
	}
	return out, nil
}

func requests(n int) []types.WriteRequest {
	reqs := make([]types.WriteRequest, n)
	for i := range reqs {
		reqs[i] = putRequest(keyOf("item-"+string(rune('A'+i/26))+string(rune('a'+i%26)), "x"))
	}
	return reqs
}

func TestBatchWriteGroupsOf25AndRetriesUnprocessed(t *testing.T) {
	// Every call leaves half of its requests (rounded down) unprocessed:
	// a group of 25 goes 25, 12, 6, 3, 1.
	f := &fakeBatch{written: map[string]int{}, leave: func(_, size int) int { return size / 2 }}
	var waits []time.Duration
	p := batchPolicy{base: 10 * time.Millisecond, ceiling: 40 * time.Millisecond, attempts: 20,
		sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }}
	if err := batchWrite(context.Background(), f, "t", requests(60), p); err != nil {
		t.Fatal(err)
	}
	want := []int{25, 12, 6, 3, 1, 25, 12, 6, 3, 1, 10, 5, 2, 1}
	if !slices.Equal(f.calls, want) {
		t.Fatalf("call sizes %v, want %v", f.calls, want)
	}
	if len(f.written) != 60 {
		t.Fatalf("%d distinct items written, want 60", len(f.written))
	}
	for k, n := range f.written {
		if n != 1 {
			t.Fatalf("item %s accepted %d times", k, n)
		}
	}
	// Within a group the waits double from base and stop at the ceiling;
	// jitter keeps each in the upper half of its step.
	wi, step := 0, 0
	for _, n := range f.calls {
		if n/2 == 0 {
			step = 0 // this call finished its group
			continue
		}
		want := min(p.base<<step, p.ceiling)
		if w := waits[wi]; w < want/2 || w > want {
			t.Fatalf("wait %d is %v, want within [%v, %v] (waits %v)", wi, w, want/2, want, waits)
		}
		wi++
		step++
	}
	if wi != len(waits) {
		t.Fatalf("%d waits, want %d", len(waits), wi)
	}
}

func TestBatchWriteGivesUpAfterItsAttempts(t *testing.T) {
	f := &fakeBatch{written: map[string]int{}, leave: func(_, size int) int { return 1 }}
	p := batchPolicy{base: time.Millisecond, ceiling: time.Millisecond, attempts: 4, sleep: driver.Sleep}
	err := batchWrite(context.Background(), f, "t", requests(3), p)
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable after the attempts ran out", err)
	}
	if len(f.calls) != 4 {
		t.Fatalf("%d calls, want 4", len(f.calls))
	}
}

func TestBatchWriteHonoursTheContext(t *testing.T) {
	f := &fakeBatch{written: map[string]int{}, leave: func(_, size int) int { return 1 }}
	p := batchPolicy{base: time.Hour, ceiling: time.Hour, attempts: 10, sleep: driver.Sleep}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := batchWrite(ctx, f, "t", requests(3), p)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("backoff ignored the context for %v", d)
	}
}

func TestPartNeverHoldsTheDelimiterAndNeverCollides(t *testing.T) {
	long := strings.Repeat("x", 4096)
	ids := []string{"C1", "C12", "C1#", "C1%23", "C1%", "~C1", "%7EC1", "abc", "abcd", "a#b", "a%23b",
		"", "#", "%", "~", long, long + "y", strings.Repeat("#", 100), strings.Repeat("#", 67), "emoji 🚨\n\"'",
		strings.Repeat("y", maxPlain), strings.Repeat("y", maxPlain+1)}
	seen := map[string]string{}
	for _, id := range ids {
		p := part(id)
		if strings.Contains(p, "#") {
			t.Fatalf("part(%q) = %q holds the delimiter", id, p)
		}
		if len(p) > maxPlain && len(p) != 44 {
			t.Fatalf("part(%q) is %d bytes", id, len(p))
		}
		if prev, dup := seen[p]; dup {
			t.Fatalf("part(%q) = part(%q) = %q", id, prev, p)
		}
		seen[p] = id
	}
	// With the delimiter after it, no part is a prefix of another's.
	for a := range seen {
		for b := range seen {
			if a != b && strings.HasPrefix(b+"#", a+"#") {
				t.Fatalf("%q# is a prefix of %q#", a, b)
			}
		}
	}
	if got := part("plain-id_1.2"); got != "plain-id_1.2" {
		t.Fatalf("a plain id is escaped: %q", got)
	}
}

func TestTimeNumbersRoundTripAndSort(t *testing.T) {
	times := []time.Time{
		time.Unix(0, 0).UTC(), time.Unix(1700000000, 123456789).UTC(), time.Unix(1700000000, 0).UTC(),
		time.Unix(-1, 750000000).UTC(), time.Unix(-2, 1).UTC(), time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	}
	for _, tm := range times {
		got, err := parseTimeNumber(timeNumber(tm))
		if err != nil || !got.Equal(tm) {
			t.Fatalf("%v -> %q -> %v, %v", tm, timeNumber(tm), got, err)
		}
	}
	// DynamoDB hands numbers back in normal form.
	for s, want := range map[string]time.Time{
		"1700000000.5": time.Unix(1700000000, 500000000), "1700000000": time.Unix(1700000000, 0),
		"-0.25": time.Unix(-1, 750000000), "1.7E9": time.Unix(1700000000, 0),
	} {
		got, err := parseTimeNumber(s)
		if err != nil || !got.Equal(want) {
			t.Fatalf("%q -> %v, %v; want %v", s, got, err, want)
		}
	}
	if timeSortable(time.Unix(1699999999, 999999999)) >= timeSortable(time.Unix(1700000000, 0)) {
		t.Fatal("sortable times out of order")
	}
	if timeSortable(times[5]) >= timeSortable(times[0]) || timeSortable(times[0]) >= timeSortable(times[6]) {
		t.Fatal("sortable times out of order at the extremes")
	}
}

func TestParseURL(t *testing.T) {
	good := map[string]Options{
		"dynamodb://my_table.v1":                                 {Table: "my_table.v1"},
		"dynamodb://tbl?region=eu-west-1":                        {Table: "tbl", Region: "eu-west-1"},
		"dynamodb://tbl?endpoint=http://127.0.0.1:8000&create=1": {Table: "tbl", Endpoint: "http://127.0.0.1:8000", Create: true},
		"dynamodb://tbl/?create=0":                               {Table: "tbl"},
	}
	for raw, want := range good {
		u, _ := url.Parse(raw)
		got, err := ParseURL(u)
		if err != nil || got != want {
			t.Fatalf("%s: got %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{"dynamodb://", "dynamodb://ab", "dynamodb://tbl/path", "dynamodb://tbl:8000",
		"dynamodb://u:p@tbl", "dynamodb://tbl?create=yes", "dynamodb://tbl?endpoint=ftp://x", "dynamodb://tbl?colour=red",
		"dynamodb://tbl?region=a&region=b"} {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if _, err := ParseURL(u); !errors.Is(err, driver.ErrInvalidArgument) {
			t.Fatalf("%s: got %v, want ErrInvalidArgument", raw, err)
		}
	}
}

func TestItemSizeCountsNamesAndValues(t *testing.T) {
	it := item{"pk": avS("abc"), "b": avB(make([]byte, 10)), "n": avN("12345"),
		"l": &types.AttributeValueMemberL{Value: []av{avS("xy")}}}
	// pk 2+3, b 1+10, n 1+(5+1)/2+1, l 1+3+(2+1)
	if got, want := itemSize(it), 5+11+5+7; got != want {
		t.Fatalf("itemSize = %d, want %d", got, want)
	}
	big := item{"v": avB(make([]byte, maxItemSize))}
	if err := checkSize("op", big); !errors.Is(err, driver.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestLockRecordTimesCountHolderEntries(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	entry := func(d time.Duration) *driver.Entry {
		e := driver.Entry{Payload: []byte("m"), EnqueuedAt: t0}
		if d != 0 {
			e.ExpiresAt = t0.Add(d)
		}
		return &e
	}
	for _, c := range []struct {
		name          string
		st            driver.LockState
		gc, lapse     time.Time
		gcOK, lapseOK bool
	}{
		{name: "holder whose entry outlives it",
			st: driver.LockState{Holders: []driver.Holder{{Token: 1, ExpiresAt: t0.Add(time.Minute), Entry: entry(time.Hour)}}},
			gc: t0.Add(time.Hour), gcOK: true, lapse: t0.Add(time.Minute), lapseOK: true},
		{name: "holder whose entry lapses first",
			st: driver.LockState{Holders: []driver.Holder{{Token: 1, ExpiresAt: t0.Add(time.Hour), Entry: entry(time.Minute)}}},
			gc: t0.Add(time.Hour), gcOK: true},
		{name: "holder entry that never lapses",
			st:    driver.LockState{Holders: []driver.Holder{{Token: 1, ExpiresAt: t0.Add(time.Minute), Entry: entry(0)}}},
			lapse: t0.Add(time.Minute), lapseOK: true},
		{name: "last of two holders",
			st: driver.LockState{Holders: []driver.Holder{{Token: 1, ExpiresAt: t0.Add(2 * time.Minute)}, {Token: 2, ExpiresAt: t0.Add(time.Minute)}},
				Pending: []driver.Entry{*entry(time.Hour)}},
			gc: t0.Add(time.Hour), gcOK: true, lapse: t0.Add(2 * time.Minute), lapseOK: true},
		{name: "no holder, entries waiting",
			st: driver.LockState{Pending: []driver.Entry{*entry(time.Hour)}}, gc: t0.Add(time.Hour), gcOK: true, lapseOK: true},
		{name: "holder without entries", st: driver.LockState{Holders: []driver.Holder{{Token: 1, ExpiresAt: t0.Add(time.Minute)}}},
			gc: t0.Add(time.Minute), gcOK: true},
	} {
		gc, ok := lockGC(&c.st)
		if ok != c.gcOK || ok && !gc.Equal(c.gc) {
			t.Errorf("%s: lockGC = %v %v, want %v %v", c.name, gc, ok, c.gc, c.gcOK)
		}
		lapse, ok := lockLapse(&c.st)
		if ok != c.lapseOK || ok && !lapse.Equal(c.lapse) {
			t.Errorf("%s: lockLapse = %v %v, want %v %v", c.name, lapse, ok, c.lapse, c.lapseOK)
		}
	}
}

func TestLockItemRoundTripsHolderEntriesAndSkipped(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	st := driver.LockState{Key: "k", Fence: 7,
		Holders: []driver.Holder{{Owner: "a", Token: 6, AcquiredAt: t0, ExpiresAt: t0.Add(time.Minute)},
			{Owner: "b", Token: 7, AcquiredAt: t0, ExpiresAt: t0.Add(time.Minute), Entry: &driver.Entry{Payload: []byte{0, 1}, EnqueuedAt: t0}}},
		Pending: []driver.Entry{{Payload: []byte("p"), EnqueuedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
		Skipped: []driver.Entry{{EnqueuedAt: t0}},
	}
	it, err := lockItem("ns", &st, "1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(getS(it, lkHolders), "entry") {
		t.Fatalf("holder entries stored in the JSON: %s", getS(it, lkHolders))
	}
	got, err := decodeLock(it)
	if err != nil {
		t.Fatal(err)
	}
	if string(lockPrint(&got)) != string(lockPrint(&st)) {
		t.Fatalf("round trip:\n got %s\nwant %s", lockPrint(&got), lockPrint(&st))
	}
	// A record written before holders kept entries and skipped ones.
	delete(it, lkEntries)
	delete(it, lkSkipped)
	old, err := decodeLock(it)
	if err != nil || old.Holders[1].Entry != nil || old.Skipped != nil || len(old.Pending) != 1 {
		t.Fatalf("older record: %+v %v", old, err)
	}
}

// TestDummyCredentialsOnlyForLoopback: with no credentials configured, an
// endpoint on this machine (DynamoDB Local) gets static dummy credentials,
// and any other endpoint (a VPC endpoint, where an instance role signs)
// keeps the default chain.
func TestDummyCredentialsOnlyForLoopback(t *testing.T) {
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(v, "")
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "none"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "none"))
	for endpoint, static := range map[string]bool{
		"http://127.0.0.1:8000": true,
		"http://localhost:8000": true,
		"http://[::1]:8000":     true,
		"https://vpce-0a1b2c3d.dynamodb.eu-west-1.vpce.amazonaws.com": false,
		"https://dynamodb.eu-west-1.amazonaws.com":                    false,
		"http://10.0.0.7:8000":                                        false,
	} {
		d, err := New(context.Background(), Options{Table: "t", Region: "eu-west-1", Endpoint: endpoint}, driver.Config{})
		if err != nil {
			t.Fatal(err)
		}
		got := aws.IsCredentialsProvider(d.db.Options().Credentials, credentials.StaticCredentialsProvider{})
		if got != static {
			t.Errorf("%s: static dummy credentials %v, want %v", endpoint, got, static)
		}
		d.Close()
	}
}
