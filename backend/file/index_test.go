package file

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

// checkIndexes verifies that every index holds exactly the entries the
// stored items call for: the expiry index, the event order, counts, pending
// and failed indexes, the lock lapse index, and the issue indexes.
func checkIndexes(t testing.TB, d *Driver) {
	t.Helper()
	if err := d.db.View(verifyIndexes); err != nil {
		t.Fatal(err)
	}
}

func contents(tx *bolt.Tx, name []byte) map[string]string {
	m := map[string]string{}
	_ = tx.Bucket(name).ForEach(func(k, v []byte) error {
		m[string(k)] = string(v)
		return nil
	})
	return m
}

func verifyIndexes(tx *bolt.Tx) error {
	expiry := map[string]string{}
	order := map[string]string{}
	counts := map[string]string{}
	pending := map[string]string{}
	failed := map[string]string{}
	lapse := map[string]string{}
	n := map[string]uint64{}
	for bk, v := range contents(tx, bEvents) {
		ns, k, _ := splitNS([]byte(bk))
		e, seq, err := decodeEvent(k, []byte(v))
		if err != nil {
			return fmt.Errorf("event %q: %v", bk, err)
		}
		n[ns]++
		order[string(orderKey(ns, seq))] = k
		switch e.Status {
		case driver.EventCompleted:
		case driver.EventFailed:
			failed[string(pendingKey(ns, e.CreatedAt, k))] = string(indexValue(&e))
		default:
			pending[string(pendingKey(ns, e.CreatedAt, k))] = string(indexValue(&e))
		}
		if !e.ExpiresAt.IsZero() {
			expiry[string(expiryKey(e.ExpiresAt, kEvent, []byte(bk)))] = ""
		}
	}
	for ns, c := range n {
		counts[ns] = string(binary.BigEndian.AppendUint64(nil, c))
	}
	for kind, name := range plainKinds {
		for bk, v := range contents(tx, name) {
			exp, err := headExpiry([]byte(v))
			if err != nil {
				return fmt.Errorf("%s %q: %v", name, bk, err)
			}
			if !exp.IsZero() {
				expiry[string(expiryKey(exp, kind, []byte(bk)))] = ""
			}
		}
	}
	for bk, v := range contents(tx, bLocks) {
		ns, k, _ := splitNS([]byte(bk))
		st, err := decodeLock(k, []byte(v))
		if err != nil {
			return fmt.Errorf("lock %q: %v", bk, err)
		}
		if at := lockReapAt(&st); !at.IsZero() {
			expiry[string(expiryKey(at, kLock, []byte(bk)))] = ""
		}
		if m := lapseOf(&st); m.indexed {
			en := encoder{}
			en.time(m.until)
			lapse[string(lapseKey(ns, m.at, k))] = string(en.b)
		}
	}
	open, post := map[string]string{}, map[string]string{}
	for bk, v := range contents(tx, bIssues) {
		ns, rest, _ := splitNS([]byte(bk))
		channel, uid, _ := strings.Cut(rest, "\x00")
		r, err := decodeIssue(channel, uid, []byte(v))
		if err != nil {
			return fmt.Errorf("issue %q: %v", bk, err)
		}
		if r.Open {
			open[string(key(ns, channel, r.CorrelationID, uid))] = ""
		}
		if r.PostID != "" {
			post[string(key(ns, channel, r.PostID, uid))] = ""
		}
		if !r.ExpiresAt.IsZero() {
			expiry[string(expiryKey(r.ExpiresAt, kIssue, []byte(bk)))] = ""
		}
	}
	for _, c := range []struct {
		name []byte
		want map[string]string
	}{{bExpiry, expiry}, {bEventOrder, order}, {bEventCount, counts}, {bPending, pending}, {bFailed, failed}, {bLockLapse, lapse}, {bIssueOpen, open}, {bIssuePost, post}} {
		got := contents(tx, c.name)
		if !maps.Equal(got, c.want) {
			var extra, missing []string
			for k := range got {
				if _, ok := c.want[k]; !ok {
					extra = append(extra, fmt.Sprintf("%q", k))
				}
			}
			for k, v := range c.want {
				if gv, ok := got[k]; !ok || gv != v {
					missing = append(missing, fmt.Sprintf("%q", k))
				}
			}
			slices.Sort(extra)
			slices.Sort(missing)
			return fmt.Errorf("index %s: stale entries %v; missing or wrong entries %v", c.name, extra, missing)
		}
	}
	return nil
}

func statSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// TestConformanceIndexes runs the conformance suite and, after every test,
// checks that the indexes match the data, reaps everything (a clock far in
// the future) and checks again: every write path keeps its index entries
// exact, and the reaper removes every item with an expiry through them.
func TestConformanceIndexes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole suite a second time")
	}
	statetest.Run(t, func(t *testing.T, opts ...botstate.Option) *botstate.Store {
		st := openStore(t, opts...)
		d := st.Driver().(*Driver)
		t.Cleanup(func() {
			if d.closed.Load() {
				return // the test closed it
			}
			checkIndexes(t, d)
			if _, err := d.reap(time.Now().Add(100 * 365 * 24 * time.Hour)); err != nil {
				t.Fatal(err)
			}
			checkIndexes(t, d)
			_ = d.db.View(func(tx *bolt.Tx) error {
				if n := tx.Bucket(bExpiry).Stats().KeyN; n != 0 {
					t.Errorf("%d expiry index entries left after reaping everything", n)
				}
				return nil
			})
		})
		return st
	})
}

// TestReaperRemovesOnlyExpired writes items of every kind with short and
// long TTLs and checks that one reap at a time between the two removes
// exactly the short ones.
func TestReaperRemovesOnlyExpired(t *testing.T) {
	ctx := context.Background()
	clock := statetest.NewClock()
	d, err := open(options{path: filepath.Join(t.TempDir(), "s.db"), timeout: time.Second, noSync: true},
		driver.Config{Clock: clock.Now, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	now := clock.Now()
	short, long := now.Add(time.Second), now.Add(time.Hour)
	for i, exp := range []time.Time{short, long} {
		k := fmt.Sprintf("k%d", i)
		must(t, d.Subscribe(ctx, "ns", k, now, exp))
		must(t, d.PutDoc(ctx, "ns", driver.ScopeThread, k, []byte(`{}`), now, exp))
		must(t, d.PutDoc(ctx, "ns", driver.ScopeChannel, k, []byte(`{}`), now, exp))
		_, err := d.CacheSet(ctx, "ns", k, []byte("v"), now, exp, false)
		must(t, err)
		_, err = d.ListAppend(ctx, "ns", k, []byte("v"), 10, now, exp)
		must(t, err)
		_, err = d.SetConversationState(ctx, "ns", driver.ConversationWrite{Key: k, Now: now, ExpiresAt: exp}, "", false, "s")
		must(t, err)
		_, err = d.RecordEvent(ctx, "ns", driver.EventWrite{Key: k, Now: now, ExpiresAt: exp})
		must(t, err)
		must(t, d.SaveAlert(ctx, "ns", driver.AlertRecord{Channel: "C", UniqueID: k, Timestamp: now, Body: []byte(`{}`), ExpiresAt: exp}))
		must(t, d.SaveIssues(ctx, "ns", []driver.IssueRecord{{Channel: "C", UniqueID: k, CorrelationID: "c", PostID: "p", Body: []byte(`{}`), ExpiresAt: exp}}))
		_, err = d.Acquire(ctx, "ns", driver.AcquireRequest{Key: k, Owner: "o", Strategy: driver.Reject, Now: now,
			ExpiresAt: exp.Add(-lockGrace), IdleExpiresAt: exp})
		must(t, err)
	}
	checkIndexes(t, d)
	n, err := d.reap(now.Add(time.Minute))
	must(t, err)
	if n != 10 {
		t.Errorf("reaped %d index entries, want 10 (one of each kind)", n)
	}
	checkIndexes(t, d)
	at := now.Add(time.Minute)
	for i, live := range []bool{false, true} {
		k := fmt.Sprintf("k%d", i)
		var got []bool
		got = append(got, mustOK(d.IsSubscribed(ctx, "ns", k, at)))
		_, ok, err := d.GetDoc(ctx, "ns", driver.ScopeThread, k, at)
		got = append(got, ok && err == nil)
		_, ok, _ = d.CacheGet(ctx, "ns", k, at)
		got = append(got, ok)
		_, ok, _ = d.LookupEvent(ctx, "ns", k, at)
		got = append(got, ok)
		_, ok, _ = d.InspectLock(ctx, "ns", k, at)
		got = append(got, ok)
		for j, g := range got {
			if g != live {
				t.Errorf("%s item %d: live=%v, want %v", k, j, g, live)
			}
		}
	}
	// Stored expired items are really gone, not just hidden.
	_ = d.db.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if string(name) == "meta" || string(name) == "event_count" {
				continue
			}
			for bk := range contents(tx, name) {
				if strings.Contains(bk, "k0") {
					t.Errorf("bucket %s still holds %q", name, bk)
				}
			}
		}
		return nil
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustOK(ok bool, err error) bool { return ok && err == nil }

// TestFileSizeBounded: under a steady TTL workload (every round writes
// events, cache values and subscriptions with a short TTL, then time passes
// and the reaper runs) the file stops growing once bbolt reuses the pages
// the reaper freed. The same rounds without the reaper then grow it, which
// shows the bound is the reaper's doing.
func TestFileSizeBounded(t *testing.T) {
	const (
		rounds  = 30
		warmup  = 8
		control = 4
		perRnd  = 300
		writers = 8
	)
	ctx := context.Background()
	clock := statetest.NewClock()
	path := filepath.Join(t.TempDir(), "ttl.db")
	d, err := open(options{path: path, timeout: time.Second, noSync: true}, driver.Config{Clock: clock.Now, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	payload := []byte(strings.Repeat("x", 200))
	round := func(r int) {
		now := clock.Now()
		exp := now.Add(time.Second)
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := w; i < perRnd; i += writers {
					k := fmt.Sprintf("round%d-item%d", r, i)
					if _, err := d.RecordEvent(ctx, "ns", driver.EventWrite{Key: k, Payload: payload, Now: now, ExpiresAt: exp}); err != nil {
						errs <- err
						return
					}
					if _, err := d.CacheSet(ctx, "ns", k, payload, now, exp, false); err != nil {
						errs <- err
						return
					}
					if err := d.Subscribe(ctx, "ns", k, now, exp); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Second)
	}
	// used is bbolt's high-water mark (pages up to the last one in use),
	// finer grained than the file size, which grows in doubling steps.
	used := func() (size int64) {
		_ = d.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
		return size
	}
	var sizes, marks []int64
	var fileBound, usedBound int64
	for r := range rounds {
		round(r)
		n, err := d.reap(clock.Now())
		must(t, err)
		if n != 3*perRnd {
			t.Fatalf("round %d: reaped %d, want %d", r, n, 3*perRnd)
		}
		fs, err := statSize(path)
		must(t, err)
		sizes, marks = append(sizes, fs), append(marks, used())
		if r == warmup-1 {
			fileBound, usedBound = fs, marks[r]
		}
		// Fragmentation may move the high-water mark a little while the
		// free pages settle; the bound allows a quarter, and the file (which
		// grows by doubling) one step.
		if r >= warmup && (fs > 2*fileBound || marks[r] > usedBound*5/4) {
			t.Fatalf("file grew after warm-up: file sizes per round %v, bbolt high-water marks %v", sizes, marks)
		}
	}
	checkIndexes(t, d)
	t.Logf("with the reaper, %d rounds of %d items: file sizes %v; high-water marks %v", rounds, 3*perRnd, sizes, marks)
	for r := range control {
		round(rounds + r)
	}
	if grown := used(); grown <= usedBound*5/4 {
		t.Fatalf("without the reaper the high-water mark stayed at %d (bound %d): the test cannot tell", grown, usedBound)
	} else {
		t.Logf("without the reaper, %d more rounds take the high-water mark from %d to %d bytes", control, usedBound, grown)
	}
}

// TestLapseOfMatchesLockLapsed: the lock_lapse mark of a record says, at
// every time, what driver.LockLapsed says of the record pruned at that
// time, for random holders and entries (lapsing at some of the probed
// times, or never), so LapsedLocks can decide from the index alone.
func TestLapseOfMatchesLockLapsed(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	// at picks an expiry among the probed times, or zero (never).
	at := func() time.Time {
		if rng.IntN(6) == 0 {
			return time.Time{}
		}
		return base.Add(time.Duration(rng.IntN(8)) * time.Second)
	}
	entry := func() driver.Entry { return driver.Entry{Payload: []byte("e"), EnqueuedAt: base, ExpiresAt: at()} }
	for i := range 20000 {
		var st driver.LockState
		for range rng.IntN(3) {
			h := driver.Holder{Owner: "w", ExpiresAt: at()}
			if rng.IntN(2) == 0 {
				e := entry()
				h.Entry = &e
			}
			st.Holders = append(st.Holders, h)
		}
		for range rng.IntN(3) {
			st.Pending = append(st.Pending, entry())
		}
		m := lapseOf(&st)
		for s := -1; s <= 9; s++ {
			now := base.Add(time.Duration(s) * time.Second)
			c := st
			c.Holders = slices.Clone(st.Holders)
			c.Pending = slices.Clone(st.Pending)
			driver.PruneLock(&c, now)
			want := driver.LockLapsed(&c)
			got := m.indexed && !m.at.After(now) && driver.Live(m.until, now)
			if got != want {
				t.Fatalf("case %d at +%ds: index says lapsed=%v, PruneLock+LockLapsed %v; mark %+v, record %+v", i, s, got, want, m, st)
			}
		}
	}
}
