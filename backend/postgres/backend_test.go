package postgres_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem" // the reference the tests compare against
	"github.com/botstate/botstate/backend/postgres"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

// TestDataJsonbCannotKeep writes data that jsonb would refuse (\u0000) or
// rewrite (1e+21, -0), then merges into it and with it, and checks every
// result against the in-memory backend byte for byte: such data takes the
// merge under the row lock instead of jsonb ||, and comes back as written.
func TestDataJsonbCannotKeep(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	clock := statetest.NewClock()
	pg, err := botstate.Open(ctx, url, botstate.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	mem, err := botstate.Open(ctx, "mem://", botstate.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	ns := "jsonb-" + time.Now().Format("150405.000000")
	stores := map[string]*botstate.Store{"postgres": pg.Namespace(ns), "mem": mem.Namespace(ns)}

	steps := []struct {
		name string
		do   func(st *botstate.Store, key string) error
	}{
		{"merge into absent with a NUL", func(st *botstate.Store, key string) error {
			_, err := st.Conversations().UpdateData(ctx, key, map[string]any{"nul": "a\x00b", "n": 1.5})
			return err
		}},
		{"merge an exact patch into inexact data", func(st *botstate.Store, key string) error {
			_, err := st.Conversations().UpdateData(ctx, key, map[string]any{"plain": "x", "big": 12345678901234567890.0})
			return err
		}},
		{"replace with exponent numbers and -0", func(st *botstate.Store, key string) error {
			_, err := st.Conversations().SetData(ctx, key, map[string]any{"huge": 1e21, "tiny": 1e-7, "negzero": math.Copysign(0, -1)})
			return err
		}},
		{"merge exact into exponent numbers", func(st *botstate.Store, key string) error {
			_, err := st.Conversations().UpdateData(ctx, key, map[string]any{"k": []any{1, "two", map[string]any{"b": 1, "a": 2}}})
			return err
		}},
		{"replace with exact data", func(st *botstate.Store, key string) error {
			_, err := st.Conversations().SetData(ctx, key, map[string]any{"a": 1})
			return err
		}},
		{"merge an inexact patch into exact data", func(st *botstate.Store, key string) error {
			_, err := st.Conversations().UpdateData(ctx, key, map[string]any{"z": 1e300, "s": "\x00"})
			return err
		}},
	}
	docSteps := []struct {
		name  string
		patch map[string]any
	}{
		{"doc merge into absent with a NUL", map[string]any{"nul": "\x00"}},
		{"doc merge exact into inexact", map[string]any{"a": 1}},
		{"doc merge exponent", map[string]any{"e": 1e25}},
	}
	for _, s := range steps {
		got := map[string]string{}
		for name, st := range stores {
			if err := s.do(st, "conv"); err != nil {
				t.Fatalf("%s on %s: %v", s.name, name, err)
			}
			c, ok, err := st.Driver().GetConversation(ctx, ns, "conv", clock.Now())
			if err != nil || !ok {
				t.Fatalf("%s on %s: get: %v %v", s.name, name, ok, err)
			}
			got[name] = string(c.Data) + " v" + string(rune('0'+c.Version))
		}
		if got["postgres"] != got["mem"] {
			t.Fatalf("%s: postgres has %s, mem %s", s.name, got["postgres"], got["mem"])
		}
	}
	for _, s := range docSteps {
		got := map[string]string{}
		for name, st := range stores {
			doc, err := st.ThreadState().Merge(ctx, "T1", s.patch, 0)
			if err != nil {
				t.Fatalf("%s on %s: %v", s.name, name, err)
			}
			_ = doc
			d, ok, err := st.Driver().GetDoc(ctx, ns, driver.ScopeThread, "T1", clock.Now())
			if err != nil || !ok {
				t.Fatalf("%s on %s: get: %v %v", s.name, name, ok, err)
			}
			got[name] = string(d.Data)
		}
		if got["postgres"] != got["mem"] {
			t.Fatalf("%s: postgres has %s, mem %s", s.name, got["postgres"], got["mem"])
		}
	}
}

// TestDataSizeIsDriverDataSize: the schema's data_size, which measures the
// result of a merge by jsonb ||, gives driver.DataSize of the canonical
// form for every document jsonb keeps exactly: names and strings with every
// kind of escape, U+2028 and U+2029, non-ASCII, nesting, empty objects and
// arrays, numbers with fractions and trailing zeros. An estimate over the
// truth would only send merges to the locked path; one under it would let
// a merge past the limit, and this test would fail.
func TestDataSizeIsDriverDataSize(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	st, err := botstate.Open(ctx, url) // migrates the default schema
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	docs := []string{`{}`, `{"":""}`, `{"a":[]}`, `{"a":{}}`, `{"a":[{},[],[[]],{"b":{}}]}`,
		`{"q\"\\":"\b\f\n\r\t\u0001\u001f\u007f"}`, `{"l\u2028":"\u2029\u2028x"}`,
		`{"<>&":"&amp;","é":"😀"}`, `{"n":[1.50,-2,0.001,12345678901234567890123,0]}`,
		`{"t":true,"f":false,"z":null}`}
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		docs = append(docs, randomObject(r, 3))
	}
	for _, doc := range docs {
		want, err := driver.CanonicalObject([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		var got int64
		if err := conn.QueryRow(ctx, `SELECT botstate.data_size($1::jsonb)`, doc).Scan(&got); err != nil {
			t.Fatalf("data_size(%s): %v", doc, err)
		}
		if got != int64(driver.DataSize(want)) {
			t.Errorf("data_size(%s) = %d, want %d (%s)", doc, got, driver.DataSize(want), want)
		}
	}
}

// randomObject is a JSON object of random members, nested up to depth.
func randomObject(r *rand.Rand, depth int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range r.IntN(5) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%s", randomString(r), randomValue(r, depth))
	}
	b.WriteByte('}')
	return b.String()
}

func randomValue(r *rand.Rand, depth int) string {
	n := 6
	if depth > 0 {
		n = 8
	}
	switch r.IntN(n) {
	case 0:
		return "null"
	case 1:
		return []string{"true", "false"}[r.IntN(2)]
	case 2:
		return []string{"0", "-1", "42", "1.50", "-0.25", "3.14159", "100000000000000000000"}[r.IntN(7)]
	case 3, 4, 5:
		return randomString(r)
	case 6:
		return randomObject(r, depth-1)
	default:
		items := make([]string, r.IntN(4))
		for i := range items {
			items[i] = randomValue(r, depth-1)
		}
		return "[" + strings.Join(items, ",") + "]"
	}
}

// randomString is a JSON string of pieces that encode differently.
func randomString(r *rand.Rand) string {
	pieces := []string{"a", "Z", " ", "<", ">", "&", `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`,
		`\u0001`, `\u001f`, `\u007f`, "\x7f", `\u2028`, "\u2029", "é", "ü", "😀", `\u00e9`, `\ud83d\ude00`}
	var b strings.Builder
	b.WriteByte('"')
	for range r.IntN(6) {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	b.WriteByte('"')
	return b.String()
}

// TestReapDeletesOnlyExpiredRows checks Reap on a schema of its own: rows
// expired at the given time go, live ones stay.
func TestReapDeletesOnlyExpiredRows(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	schema := freshSchema(t, url)
	clock := statetest.NewClock()
	st, err := botstate.Open(ctx, withParams(url, "schema="+schema), botstate.WithClock(clock),
		botstate.WithEventWindow(time.Hour), botstate.WithConversationTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := st.Namespace("reap")
	for i := range 2500 { // more than one reaper batch
		if _, err := s.Events().Record(ctx, "short-"+string(rune('a'+i%26))+time.Duration(i).String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	s.Threads().Subscribe(ctx, "short", time.Hour)
	s.Threads().Subscribe(ctx, "forever", 0)
	s.Cache().Set(ctx, "short", []byte("v"), time.Hour)
	s.Conversations().SetState(ctx, "short", "s")
	clock.Advance(30 * time.Minute)
	s.Events().Record(ctx, "long", nil)
	s.Cache().Set(ctx, "long", []byte("v"), 2*time.Hour)

	d := st.Driver().(*postgres.Driver)
	n, err := d.Reap(ctx, clock.Now().Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2500+1+1+1 {
		t.Fatalf("Reap deleted %d rows, want %d", n, 2503)
	}
	count := func(table string) int {
		var n int
		if err := d.Pool().QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for table, want := range map[string]int{"events": 1, "subscriptions": 1, "cache_values": 1, "conversations": 0} {
		if got := count(table); got != want {
			t.Errorf("%s holds %d rows after Reap, want %d", table, got, want)
		}
	}
}

// TestReapDropsAbandonedLocks: a lock whose holders all lapsed without a
// release is reaped like an idle one, as the in-memory backend's sweeper
// does; a held one stays.
func TestReapDropsAbandonedLocks(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	schema := freshSchema(t, url)
	clock := statetest.NewClock()
	st, err := botstate.Open(ctx, withParams(url, "schema="+schema), botstate.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	locks := st.Namespace("reap").Locks()
	for _, k := range []string{"a", "b"} {
		if _, err := locks.Acquire(ctx, k, "owner", nil, botstate.LockPolicy{TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	d := st.Driver().(*postgres.Driver)
	count := func() (n int) {
		if err := d.Pool().QueryRow(ctx, "SELECT count(*) FROM locks").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := d.Reap(ctx, clock.Now().Add(30*time.Minute)); err != nil || count() != 2 {
		t.Fatalf("after a reap while held: %d lock rows, %v; want 2", count(), err)
	}
	if _, err := d.Reap(ctx, clock.Now().Add(2*time.Hour)); err != nil || count() != 0 {
		t.Fatalf("after a reap once every holder lapsed: %d lock rows, %v; want 0", count(), err)
	}
}

// TestBackgroundReaper checks that the reaper runs by itself, on the
// store's sweep interval, and stops with Close.
func TestBackgroundReaper(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	schema := freshSchema(t, url)
	st, err := botstate.Open(ctx, withParams(url, "schema="+schema), botstate.WithSweepInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := st.Namespace("reap")
	for _, k := range []string{"a", "b", "c"} {
		if err := s.Cache().Set(ctx, k, []byte("v"), 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	pool := st.Driver().(*postgres.Driver).Pool()
	var n int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM cache_values").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatalf("%d expired cache values still stored 5 s after they expired", n)
}
