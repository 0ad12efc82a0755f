package redis

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

func TestParseURL(t *testing.T) {
	good := []struct {
		url     string
		addrs   []string
		db      int
		prefix  string
		cluster bool
		tls     bool
		user    string
		pass    string
		flush   time.Duration
		scan    bool
	}{
		{url: "redis://localhost", addrs: []string{"localhost:6379"}, prefix: DefaultPrefix, flush: DefaultFlushDelay},
		{url: "redis://localhost?flush_delay=0", addrs: []string{"localhost:6379"}, prefix: DefaultPrefix},
		{url: "redis://localhost?flush_delay=50us", addrs: []string{"localhost:6379"}, prefix: DefaultPrefix, flush: 50 * time.Microsecond},
		{url: "redis://u:p%40ss@10.0.0.1:7000/3?prefix=bot:", addrs: []string{"10.0.0.1:7000"}, db: 3, prefix: "bot:", user: "u", pass: "p@ss", flush: DefaultFlushDelay},
		{url: "redis://:secret@h/", addrs: []string{"h:6379"}, prefix: DefaultPrefix, pass: "secret", flush: DefaultFlushDelay},
		{url: "rediss://h:6380?prefix=", addrs: []string{"h:6380"}, prefix: "", tls: true, flush: DefaultFlushDelay},
		{url: "redis+cluster://a,b:2,c:3", addrs: []string{"a:6379", "b:2", "c:3"}, prefix: DefaultPrefix, cluster: true, flush: DefaultFlushDelay},
		{url: "redis://h?events=scan", addrs: []string{"h:6379"}, prefix: DefaultPrefix, flush: DefaultFlushDelay, scan: true},
		{url: "redis://h?events=index", addrs: []string{"h:6379"}, prefix: DefaultPrefix, flush: DefaultFlushDelay},
		{url: "rediss+cluster://a:1,b:2?dial_timeout=2s&write_timeout=3s&client_name=x", addrs: []string{"a:1", "b:2"}, prefix: DefaultPrefix, cluster: true, tls: true, flush: DefaultFlushDelay},
	}
	for _, c := range good {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		o, err := ParseURL(u)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		if strings.Join(o.Client.InitAddress, ",") != strings.Join(c.addrs, ",") || o.Client.SelectDB != c.db ||
			o.Prefix != c.prefix || o.Cluster != c.cluster || (o.Client.TLSConfig != nil) != c.tls ||
			o.Client.Username != c.user || o.Client.Password != c.pass || o.Client.ForceSingleClient == c.cluster ||
			o.Client.MaxFlushDelay != c.flush || o.ScanEvents != c.scan {
			t.Errorf("%s: got %+v", c.url, o)
		}
	}
	bad := []string{
		"redis://", "redis://a,b", "redis://h/x", "redis://h/1/2", "redis+cluster://a/1",
		"redis://h?prefix=a{b", "redis://h?prefix=}", "redis://h?nope=1", "redis://h?dial_timeout=soon",
		"redis://h?skip_verify=1", "redis://h:0", "redis://h:99999", "redis://h?prefix=a&prefix=b",
		"redis://h?flush_delay=-1us", "redis://h?flush_delay=2ms", "redis://h?flush_delay=x",
		"redis://h?events=", "redis://h?events=Scan", "redis://h?events=scan&events=index",
	}
	for _, raw := range bad {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if _, err := ParseURL(u); !errors.Is(err, driver.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", raw, err)
		}
	}
}

// TestScanEventsWriteOneKeyPerEvent: with events=scan a namespace's claims
// and records write one key each (no index), spread over many slots, and an
// event limit adds one order key.
func TestScanEventsWriteOneKeyPerEvent(t *testing.T) {
	raw := statetest.BackendURL(t, "BOTSTATE_REDIS_URL")
	ctx := context.Background()
	for _, limit := range []int{0, 100} {
		st, err := botstate.Open(ctx, raw+"?events=scan", botstate.WithEventLimit(limit))
		if err != nil {
			t.Fatal(err)
		}
		ns := st.Namespace("scan-" + strconv.FormatInt(time.Now().UnixNano(), 36))
		d := st.Driver().(*Driver)
		for i := range 20 {
			k := "e" + strconv.Itoa(i)
			if i%2 == 0 {
				_, err = ns.Events().Claim(ctx, k, []byte("p"), time.Minute)
			} else {
				_, err = ns.Events().Record(ctx, k, []byte("p"))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		keys := d.keysOf(t, ns.Name())
		slots := map[int]bool{}
		var order int
		for _, k := range keys {
			pk, ok := d.parseKey(k)
			switch {
			case ok && pk.dom == domEvents && pk.rest == evOrder:
				order++
			case ok && pk.dom == domEvents && strings.HasPrefix(pk.rest, "k:"):
				slots[slotOf(keyTag(pk.ns, domEvents, pk.rest[2:]))] = true
			default:
				t.Errorf("limit %d: unexpected key %q", limit, k)
			}
		}
		if len(keys)-order != 20 || order != min(limit, 1) {
			t.Errorf("limit %d: %d keys (%d order keys), want 20 events and %d order key", limit, len(keys), order, min(limit, 1))
		}
		if len(slots) < 10 {
			t.Errorf("limit %d: 20 events in %d slots", limit, len(slots))
		}
		st.Close()
	}
}

func TestPackRoundTrip(t *testing.T) {
	for _, fields := range [][]string{{}, {""}, {"", ""}, {"a:b", "12:x", "\x00\xff", strings.Repeat("z", 1000)}} {
		got, err := unpack(pack(fields...), len(fields))
		if err != nil || strings.Join(got, "|") != strings.Join(fields, "|") {
			t.Errorf("%q: got %q, %v", fields, got, err)
		}
	}
	for _, bad := range []string{"x", "3:ab", ":", "-1:", "1a:b"} {
		if _, err := unpack(bad, 1); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// open opens a store on the standalone server with a fake clock and returns
// the driver underneath.
func open(t *testing.T, opts ...botstate.Option) (*botstate.Store, *Driver, *statetest.Clock) {
	t.Helper()
	raw := statetest.BackendURL(t, "BOTSTATE_REDIS_URL")
	clock := statetest.NewClock()
	st, err := botstate.Open(context.Background(), raw, append([]botstate.Option{botstate.WithClock(clock)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ns := "it-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	return st.Namespace(ns), st.Driver().(*Driver), clock
}

func (d *Driver) keysOf(t *testing.T, ns string) []string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	var cursor uint64
	for {
		e, err := d.client.Do(ctx, d.client.B().Scan().Cursor(cursor).Match(globEscape(d.prefix)+"{"+ns+":*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, e.Elements...)
		if cursor = e.Cursor; cursor == 0 {
			return keys
		}
	}
}

// TestEveryKeyExpires writes every kind of item with a TTL and checks that
// every key it left behind carries a Redis expiry, so that an idle namespace
// is reclaimed by Redis on its own. The exceptions are the items the
// contract keeps forever: open issues (and their indexes), move mappings and
// processing states.
func TestEveryKeyExpires(t *testing.T) {
	st, d, _ := open(t, botstate.WithEventLimit(100), botstate.WithConversationTTL(time.Hour))
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ev := st.Events()
	_, err := ev.Record(ctx, "r", []byte("p"))
	must(err)
	c, err := ev.Claim(ctx, "c", []byte("p"), time.Minute)
	must(err)
	_, err = ev.Claim(ctx, "done", nil, time.Minute)
	must(err)
	c2, _ := ev.Claim(ctx, "done2", nil, time.Minute)
	must(ev.Complete(ctx, c2.Token, []byte("r")))
	_ = c
	c3, err := ev.Claim(ctx, "released", nil, time.Minute)
	must(err)
	must(ev.ReleaseAfter(ctx, c3.Token, time.Minute, "later"))
	c4, err := ev.Claim(ctx, "failed", nil, time.Minute)
	must(err)
	must(ev.Fail(ctx, c4.Token, "no"))
	_, err = st.Conversations().UpdateData(ctx, "conv", map[string]any{"a": 1})
	must(err)
	must(st.Threads().Subscribe(ctx, "th", time.Hour))
	_, err = st.ThreadState().Merge(ctx, "T", map[string]any{"a": 1}, time.Hour)
	must(err)
	must(st.ChannelState().Put(ctx, "C", map[string]any{"a": 1}, time.Hour))
	must(st.Cache().Set(ctx, "v", []byte("x"), time.Hour))
	_, err = st.Cache().Append(ctx, "l", []byte("x"), 10, time.Hour)
	must(err)
	l, err := st.Locks().Acquire(ctx, "lk", "o", nil, botstate.LockPolicy{TTL: time.Minute})
	must(err)
	_, err = st.Locks().Acquire(ctx, "lk", "o2", []byte("e"), botstate.LockPolicy{TTL: time.Minute, Strategy: botstate.Queue, EntryTTL: time.Minute})
	must(err)
	_, err = st.Locks().Acquire(ctx, "idle", "o", nil, botstate.LockPolicy{TTL: time.Minute})
	must(err)
	deb := botstate.LockPolicy{TTL: time.Minute, Strategy: botstate.Debounce}
	_, err = st.Locks().Acquire(ctx, "skipped", "o", []byte("e0"), deb)
	must(err)
	_, err = st.Locks().Acquire(ctx, "skipped", "o2", []byte("e1"), deb)
	must(err)
	_, err = st.Locks().Acquire(ctx, "skipped", "o3", []byte("e2"), deb)
	must(err)
	_ = l
	must(st.Incidents().SaveAlert(ctx, &botstate.BasicAlert{Channel: "C1", ID: "a", Body: json.RawMessage(`{}`)}))

	keys := d.keysOf(t, st.Name())
	if len(keys) < 19 {
		t.Fatalf("only %d keys: %q", len(keys), keys)
	}
	for _, k := range keys {
		ms, err := d.client.Do(ctx, d.client.B().Pttl().Key(k).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		if ms < 0 {
			t.Errorf("key %q has no expiry (PTTL %d)", k, ms)
		}
	}
}

// TestEventIndexesAreCollected checks that events whose window ended leave
// the namespace's indexes once later inserts of their kind run, without any
// listing.
func TestEventIndexesAreCollected(t *testing.T) {
	st, d, clock := open(t, botstate.WithEventWindow(time.Hour))
	ctx := context.Background()
	ev := st.Events()
	// 200 old inserts keep the sampled collection in step (gcEvery divides 200).
	for i := 0; i < 100; i++ {
		if _, err := ev.Record(ctx, "old-r"+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := ev.Claim(ctx, "old-c"+strconv.Itoa(i), nil, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Hour)
	for i := 0; i < 4*gcEvery; i++ {
		if _, err := ev.Record(ctx, "new-r"+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4*gcEvery; i++ {
		if _, err := ev.Claim(ctx, "new-c"+strconv.Itoa(i), nil, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	base := d.nsBase(st.Name(), domEvents)
	for _, k := range []string{base + evRecords, base + evClaims} {
		n, err := d.client.Do(ctx, d.client.B().Zcard().Key(k).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(4 * gcEvery); n != want {
			t.Errorf("%s holds %d members, want %d", k, n, want)
		}
	}
	for _, k := range d.keysOf(t, st.Name()) {
		if strings.Contains(k, "k:old") {
			t.Errorf("lapsed event %q is still stored", k)
		}
	}
}

// TestLongLivedHeadDoesNotShieldCollection puts events with a long window
// at the head of the records index, then lets events with a short window
// lapse behind them: later inserts still collect those.
func TestLongLivedHeadDoesNotShieldCollection(t *testing.T) {
	short, d, clock := open(t, botstate.WithEventWindow(time.Hour))
	long, err := botstate.Open(context.Background(), statetest.BackendURL(t, "BOTSTATE_REDIS_URL"),
		botstate.WithClock(clock), botstate.WithEventWindow(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	ctx := context.Background()
	lev, sev := long.Namespace(short.Name()).Events(), short.Events()
	for i := 0; i < 40; i++ {
		if _, err := lev.Record(ctx, "long"+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Millisecond)
	for i := 0; i < 100; i++ {
		if _, err := sev.Record(ctx, "old"+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Hour)
	for i := 0; i < 40*gcEvery; i++ {
		clock.Advance(time.Millisecond)
		if _, err := sev.Record(ctx, "new"+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := d.client.Do(ctx, d.client.B().Zrange().Key(d.nsBase(short.Name(), domEvents)+evRecords).Min("0").Max("-1").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	old := 0
	for _, m := range ms {
		if strings.HasPrefix(m, "old") {
			old++
		}
	}
	if old > 0 || len(ms) != 40+40*gcEvery {
		t.Errorf("records index holds %d entries, %d of them lapsed behind the long-lived head", len(ms), old)
	}
}

// TestStaleIndexEntries checks that a key that lapsed and came back as the
// other kind (recorded, then claimed) is listed once, as what it is now.
func TestStaleIndexEntries(t *testing.T) {
	st, _, clock := open(t, botstate.WithEventWindow(time.Hour))
	ctx := context.Background()
	ev := st.Events()
	if _, err := ev.Record(ctx, "k", []byte("first")); err != nil {
		t.Fatal(err)
	}
	c, err := ev.Claim(ctx, "j", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Release(ctx, c.Token); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	if c, err := ev.Claim(ctx, "k", []byte("second"), time.Minute); err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim after the window: %+v %v", c, err)
	}
	clock.Advance(time.Millisecond)
	if r, err := ev.Record(ctx, "j", nil); err != nil || r != botstate.RecordNew {
		t.Fatalf("record after the window: %v %v", r, err)
	}
	p, err := ev.Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 2 || p[0].Key != "k" || p[0].Status != botstate.EventClaimed || string(p[0].Payload) != "second" ||
		p[1].Key != "j" || p[1].Status != botstate.EventRecorded {
		t.Fatalf("pending: %+v", p)
	}
	clock.Advance(2 * time.Minute)
	x, err := ev.Expired(ctx, 0)
	if err != nil || len(x) != 1 || x[0].Key != "k" {
		t.Fatalf("expired: %+v %v", x, err)
	}
}

// TestEventIndexFollowsStatus checks that an event sits in the index of
// its status alone at every step (claims p, released r, recorded n, failed
// f, completed none), so Expired and Due never walk what cannot be due, and
// that each index it joins expires.
func TestEventIndexFollowsStatus(t *testing.T) {
	st, d, clock := open(t, botstate.WithMaxAttempts(0))
	ctx := context.Background()
	ev := st.Events()
	base := d.nsBase(st.Name(), domEvents)
	only := func(step, key, index string) {
		t.Helper()
		for _, idx := range []string{evClaims, evReleased, evRecords, evFailed} {
			_, err := d.client.Do(ctx, d.client.B().Zscore().Key(base+idx).Member(key).Build()).AsFloat64()
			if err != nil && !isNil(err) {
				t.Fatal(err)
			}
			if in := err == nil; in != (idx == index) {
				t.Errorf("%s: %s in index %s: %v, want %v", step, key, idx, in, idx == index)
			}
		}
		if index == "" {
			return
		}
		if ms, err := d.client.Do(ctx, d.client.B().Pexpiretime().Key(base+index).Build()).AsInt64(); err != nil || ms <= 0 {
			t.Errorf("%s: index %s has no expiry: %d %v", step, index, ms, err)
		}
	}
	if _, err := ev.Record(ctx, "rec", nil); err != nil {
		t.Fatal(err)
	}
	only("record", "rec", evRecords)
	c, err := ev.Claim(ctx, "k", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	only("claim", "k", evClaims)
	if err := ev.ReleaseAfter(ctx, c.Token, time.Minute, "later"); err != nil {
		t.Fatal(err)
	}
	only("release", "k", evReleased)
	if c, err = ev.Reclaim(ctx, "k", time.Minute); err != nil || c.Status != botstate.Claimed {
		t.Fatalf("reclaim after release: %+v %v", c, err)
	}
	only("reclaim", "k", evClaims)
	if err := ev.Fail(ctx, c.Token, "no"); err != nil {
		t.Fatal(err)
	}
	only("fail", "k", evFailed)
	if err := ev.Retry(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	only("retry", "k", evReleased)
	if c, err = ev.Claim(ctx, "k", nil, time.Minute); err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim after retry: %+v %v", c, err)
	}
	only("claim after retry", "k", evClaims)
	clock.Advance(time.Minute)
	if x, err := ev.Expired(ctx, 0); err != nil || len(x) != 1 || x[0].Attempts != 1 {
		t.Fatalf("expired: %+v %v", x, err)
	}
	t2, err := ev.TakeOver(ctx, c.Token, time.Minute)
	if err != nil || t2.Status != botstate.Claimed {
		t.Fatalf("take over: %+v %v", t2, err)
	}
	only("take over", "k", evClaims)
	if err := ev.Complete(ctx, t2.Token, nil); err != nil {
		t.Fatal(err)
	}
	only("complete", "k", "")
}

// TestOlderValuesStillRead writes events and locks as the code before
// lastError, retryAt, holder entries and skipped entries wrote them (a
// recorded and a released event in the same index r, eight-field values,
// three-field holders) and checks that every call reads them as the zero
// values of the new fields.
func TestOlderValuesStillRead(t *testing.T) {
	st, d, clock := open(t, botstate.WithEventWindow(time.Hour))
	ctx := context.Background()
	ns := st.Name()
	now := clock.Now()
	base := d.nsBase(ns, domEvents)
	old := func(key string, status driver.EventStatus, created time.Time) {
		t.Helper()
		v := pack(strconv.Itoa(int(status)), "1", us(created), "0", us(now.Add(time.Hour)), "", "p", "")
		if err := d.client.Do(ctx, d.client.B().Set().Key(d.eventKey(base, key)).Value(v).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		if err := d.client.Do(ctx, d.client.B().Zadd().Key(base+evReleased).ScoreMember().
			ScoreMember(float64(created.UnixMicro()), key).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	old("a-recorded", driver.EventRecorded, now.Add(-2*time.Second))
	old("b-released", driver.EventReleased, now.Add(-time.Second))
	ev := st.Events()
	keys := func(es []botstate.Event) (out []string) {
		for _, e := range es {
			out = append(out, e.Key)
		}
		return out
	}
	p, err := ev.Pending(ctx, 0)
	if err != nil || strings.Join(keys(p), ",") != "a-recorded,b-released" {
		t.Fatalf("pending: %v %v", keys(p), err)
	}
	due, err := ev.Due(ctx, 0)
	if err != nil || strings.Join(keys(due), ",") != "b-released" {
		t.Fatalf("due: %v %v", keys(due), err)
	}
	if got, err := ev.Get(ctx, "b-released"); err != nil || got.LastError != "" || !got.RetryAt.IsZero() || got.Attempts != 1 {
		t.Fatalf("get: %+v %v", got, err)
	}
	c, err := ev.Claim(ctx, "b-released", nil, time.Minute)
	if err != nil || c.Status != botstate.Claimed || c.Attempts != 2 {
		t.Fatalf("claim of an older released event: %+v %v", c, err)
	}
	if c, err := ev.Claim(ctx, "a-recorded", nil, time.Minute); err != nil || c.Status != botstate.InProgress {
		t.Fatalf("claim of an older recorded event: %+v %v", c, err)
	}

	lk := d.lockKeys(ns, "lk")
	exp := now.Add(time.Minute)
	if err := d.client.Do(ctx, d.client.B().Hset().Key(lk[0]).FieldValue().FieldValue("f", "7").FieldValue("x", "0").
		FieldValue("h7", pack("w", us(now), us(exp))).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	queued := driver.Entry{Payload: []byte("q"), EnqueuedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := d.client.Do(ctx, d.client.B().Rpush().Key(lk[1]).Element(packEntry(&queued)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	ls, err := st.Locks().Inspect(ctx, "lk")
	if err != nil || len(ls.Holders) != 1 || ls.Holders[0].Entry != nil || len(ls.Pending) != 1 || len(ls.Skipped) != 0 {
		t.Fatalf("inspect: %+v %v", ls, err)
	}
	// Older code kept no lapse bucket: the record joins its bucket at its
	// first write by this code.
	q := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	if r, err := st.Locks().Acquire(ctx, "lk", "x", []byte("q2"), q); err != nil || r.Status != botstate.Queued {
		t.Fatalf("queue behind an older holder: %+v %v", r, err)
	}
	clock.Advance(time.Minute)
	lapsed, err := st.Locks().Lapsed(ctx, 0)
	if err != nil || len(lapsed) != 1 || lapsed[0].Key != "lk" {
		t.Fatalf("lapsed: %+v %v", lapsed, err)
	}
	r, err := st.Locks().TakeOver(ctx, "lk", "sweeper", time.Minute)
	if err != nil || r.Status != botstate.Acquired || r.Next == nil || string(r.Next.Payload) != "q" {
		t.Fatalf("take over: %+v %v", r, err)
	}
}

// TestSlotTags checks the tags that name Cluster lapse buckets: one for
// every slot, landing in it, with no ':' (so no other key's tag equals it).
func TestSlotTags(t *testing.T) {
	for s := 0; s < clusterSlots; s++ {
		tag := slotTag(s)
		if slotOf(tag) != s || strings.ContainsAny(tag, ":{}") {
			t.Fatalf("slot %d: tag %q lands in %d", s, tag, slotOf(tag))
		}
	}
	// The CRC16 of the Redis Cluster specification's example.
	if got := slotOf("123456789"); got != 0x31C3&(clusterSlots-1) {
		t.Fatalf("slotOf(123456789) = %d", got)
	}
}

// openCluster opens a store on the Cluster with a fake clock.
func openCluster(t *testing.T) (*botstate.Store, *Driver, *statetest.Clock) {
	t.Helper()
	clock := statetest.NewClock()
	st, err := botstate.Open(context.Background(), statetest.BackendURL(t, "BOTSTATE_REDIS_CLUSTER_URL"), botstate.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st.Namespace("itc-" + strconv.FormatInt(time.Now().UnixNano(), 36)), st.Driver().(*Driver), clock
}

// TestLapseBucketsOnCluster checks, on the Cluster, that a lock's lapse
// bucket shares its slot (as the server hashes them), that Lapsed gathers
// lapsed locks from every node in key order up to its limit and leaves out
// held ones, and that a lock leaves its bucket once drained.
func TestLapseBucketsOnCluster(t *testing.T) {
	st, d, clock := openCluster(t)
	ctx := context.Background()
	slot := func(k string) int64 {
		t.Helper()
		n, err := d.client.Do(ctx, d.client.B().ClusterKeyslot().Key(k).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	l := st.Locks()
	q := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute}
	var want []string
	slots := map[int64]bool{}
	for i := 0; i < 60; i++ {
		k := "lock-" + strconv.Itoa(i)
		keys := d.lockKeys(st.Name(), k)
		if a, b := slot(keys[0]), slot(keys[2]); a != b {
			t.Fatalf("%s: record in slot %d, bucket in %d", k, a, b)
		}
		slots[slot(keys[0])] = true
		if _, err := l.Acquire(ctx, k, "w", []byte("m-"+k), q); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			// held on past the lapse of the others
			if _, err := l.Extend(ctx, botstate.Lock{Key: k, Token: mustToken(t, l, k)}, time.Hour); err != nil {
				t.Fatal(err)
			}
		} else {
			want = append(want, k)
		}
	}
	if len(slots) < 10 {
		t.Fatalf("the locks sit in only %d slots", len(slots))
	}
	slices.Sort(want)
	if got, err := l.Lapsed(ctx, 0); err != nil || len(got) != 0 {
		t.Fatalf("lapsed while held: %d %v", len(got), err)
	}
	clock.Advance(time.Minute)
	got, err := l.Lapsed(ctx, 0)
	if err != nil || strings.Join(lockNames(got), ",") != strings.Join(want, ",") {
		t.Fatalf("lapsed: %v %v, want %v", lockNames(got), err, want)
	}
	if got[0].Pending[0].Payload == nil || string(got[0].Pending[0].Payload) != "m-"+want[0] {
		t.Fatalf("lapsed state: %+v", got[0])
	}
	got, err = l.Lapsed(ctx, 5)
	if err != nil || strings.Join(lockNames(got), ",") != strings.Join(want[:5], ",") {
		t.Fatalf("lapsed, limit 5: %v %v", lockNames(got), err)
	}
	r, err := l.TakeOver(ctx, want[0], "sweeper", time.Minute)
	if err != nil || r.Status != botstate.Acquired {
		t.Fatalf("take over: %+v %v", r, err)
	}
	if h, err := l.Handover(ctx, r.Lock, time.Minute); err != nil || h.Held {
		t.Fatalf("handover: %+v %v", h, err)
	}
	bucket := d.lockKeys(st.Name(), want[0])[2]
	c := d.lockKeys(st.Name(), want[0])[0]
	member := c[strings.IndexByte(c, '}')-8:strings.IndexByte(c, '}')] + want[0]
	if _, err := d.client.Do(ctx, d.client.B().Zscore().Key(bucket).Member(member).Build()).AsFloat64(); !isNil(err) {
		t.Fatalf("a drained lock is still in its bucket: %v", err)
	}
	if ms, err := d.client.Do(ctx, d.client.B().Pttl().Key(d.lockKeys(st.Name(), want[1])[2]).Build()).AsInt64(); err != nil || ms <= 0 {
		t.Fatalf("a bucket has no expiry: %d %v", ms, err)
	}
}

func lockNames(sts []botstate.LockState) []string {
	out := []string{}
	for _, s := range sts {
		out = append(out, s.Key)
	}
	return out
}

func mustToken(t *testing.T, l *botstate.Locks, key string) uint64 {
	t.Helper()
	st, err := l.Inspect(context.Background(), key)
	if err != nil || len(st.Holders) != 1 {
		t.Fatalf("inspect %s: %+v %v", key, st, err)
	}
	return st.Holders[0].Token
}

// TestLimitWithUnlimitedWriters shares a namespace between a store with an
// event limit and one without: only the limited store's inserts count, and
// a key that lapsed and came back without a limit is not evicted for its
// old insert.
func TestLimitWithUnlimitedWriters(t *testing.T) {
	lim, d, clock := open(t, botstate.WithEventLimit(2), botstate.WithEventWindow(time.Hour))
	free, err := botstate.Open(context.Background(), statetest.BackendURL(t, "BOTSTATE_REDIS_URL"),
		botstate.WithClock(clock), botstate.WithEventWindow(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer free.Close()
	fr := free.Namespace(lim.Name()).Events()
	ev := lim.Events()
	ctx := context.Background()
	rec := func(e *botstate.Events, k string) {
		t.Helper()
		clock.Advance(time.Millisecond)
		if r, err := e.Record(ctx, k, nil); err != nil || r != botstate.RecordNew {
			t.Fatalf("record %s: %v %v", k, r, err)
		}
	}
	rec(ev, "a")
	clock.Advance(2 * time.Hour)
	rec(fr, "a") // back, without a limit: its old place in the order is stale
	rec(ev, "b")
	rec(fr, "c")
	rec(ev, "d")
	rec(ev, "e")
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true, "e": true} {
		seen, err := ev.Seen(ctx, k)
		if err != nil || seen != want {
			t.Errorf("%s seen %v (%v), want %v", k, seen, err, want)
		}
	}
	_ = d
}

// TestKeysNeverCollide stores items under keys built to look like other
// keys' layouts, in two namespaces, and reads each back.
func TestKeysNeverCollide(t *testing.T) {
	st, _, _ := open(t)
	other := st.Namespace(st.Name() + "x")
	ctx := context.Background()
	keys := []string{"a", "a}", "{a}", "}{", "k:a", "p", "c", "x", "o", "s", "h", "v" + "a", "la", "ma", "qa", "1:a", "é{ü}", "a:e}k:b"}
	for _, s := range []*botstate.Store{st, other} {
		for _, k := range keys {
			if err := s.Cache().Set(ctx, k, []byte(s.Name()+"|"+k), 0); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Cache().Append(ctx, k, []byte("L"+s.Name()+"|"+k), 5, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Events().Record(ctx, k, []byte(s.Name()+"|"+k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range []*botstate.Store{st, other} {
		for _, k := range keys {
			v, ok, err := s.Cache().Get(ctx, k)
			if err != nil || !ok || string(v) != s.Name()+"|"+k {
				t.Errorf("cache %q in %s: %q %v %v", k, s.Name(), v, ok, err)
			}
			l, err := s.Cache().List(ctx, k)
			if err != nil || len(l) != 1 || string(l[0]) != "L"+s.Name()+"|"+k {
				t.Errorf("list %q in %s: %q %v", k, s.Name(), l, err)
			}
			e, err := s.Events().Get(ctx, k)
			if err != nil || string(e.Payload) != s.Name()+"|"+k {
				t.Errorf("event %q in %s: %q %v", k, s.Name(), e.Payload, err)
			}
		}
		p, err := s.Events().Pending(ctx, 1000)
		if err != nil || len(p) != len(keys) {
			t.Errorf("pending in %s: %d events, %v", s.Name(), len(p), err)
		}
	}
}

func TestParseURLIPv6(t *testing.T) {
	u, err := url.Parse("redis://[::1]:7000")
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseURL(u)
	if err != nil || o.Client.InitAddress[0] != "[::1]:7000" {
		t.Fatalf("got %v, %v", o.Client.InitAddress, err)
	}
}

// TestOpenUnreachable: no server behind the URL is ErrUnavailable, at once.
func TestOpenUnreachable(t *testing.T) {
	for _, raw := range []string{"redis://127.0.0.1:1", "redis+cluster://127.0.0.1:1,127.0.0.1:2"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := botstate.Open(ctx, raw)
		cancel()
		if err == nil {
			st.Close()
			t.Fatalf("%s: opened", raw)
		}
		if !errors.Is(err, botstate.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", raw, err)
		}
	}
}
