package statetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
)

// ListingSizes are the numbers of completed events BenchmarkListings holds
// by default: none, and a million.
var ListingSizes = []int{0, 1_000_000}

// BenchmarkListings measures the recovery listings (Pending, Expired, Due
// and Failed, ten events each) of a namespace that holds a hundred events
// of each kind a listing returns — recorded, lapsed claims, released and
// failed — and, in turn, each number of completed events in sizes
// (ListingSizes when none): one sub-benchmark per listing and size, named
// completed=N/Listing. A listing that reads only the events it can return
// costs the same at every size. The completed events are loaded with
// Store.Import, in chunks, into a namespace of their own per size, which
// the benchmark forgets afterwards only by their expiry (a day).
func BenchmarkListings(b *testing.B, st *botstate.Store, sizes ...int) {
	if len(sizes) == 0 {
		sizes = ListingSizes
	}
	ctx := context.Background()
	for _, n := range sizes {
		ns := st.Namespace(fmt.Sprintf("listings-%d-%d", n, time.Now().UnixNano()))
		if err := FillListings(ctx, ns, n); err != nil {
			b.Fatal(err)
		}
		ev := ns.Events()
		listings := []struct {
			name string
			list func(context.Context, int) ([]botstate.Event, error)
		}{
			{"Pending", ev.Pending}, {"Expired", ev.Expired}, {"Due", ev.Due}, {"Failed", ev.Failed},
		}
		for _, l := range listings {
			b.Run(fmt.Sprintf("completed=%d/%s", n, l.name), func(b *testing.B) {
				for b.Loop() {
					got, err := l.list(ctx, 10)
					if err != nil {
						b.Fatal(err)
					}
					if len(got) != 10 {
						b.Fatalf("%s listed %d events, want 10", l.name, len(got))
					}
				}
			})
		}
	}
}

// FillListings imports into ns n completed events, then a hundred events of
// each other kind, all created an hour ago and kept for a day.
func FillListings(ctx context.Context, ns *botstate.Store, n int) error {
	now := time.Now().UTC()
	created := now.Add(-time.Hour)
	im := newImporter(ctx, ns)
	add := func(r botstate.Record) error {
		r.Kind, r.NS, r.CreatedAt, r.ExpiresAt = driver.KindEvent, ns.Name(), created, now.Add(24*time.Hour)
		if r.Payload == nil {
			r.Payload = []byte(`{"text":"hello"}`)
		}
		return im.add(&r)
	}
	for i := range n {
		if err := add(botstate.Record{Key: fmt.Sprintf("done-%07d", i), Status: "completed", Attempts: 1}); err != nil {
			return err
		}
	}
	for i := range 100 {
		for _, r := range []botstate.Record{
			{Key: fmt.Sprintf("recorded-%03d", i), Status: "recorded"},
			{Key: fmt.Sprintf("lapsed-%03d", i), Status: "claimed", Token: fmt.Sprintf("tok-%03d", i), Attempts: 1, LeaseUntil: created.Add(time.Minute)},
			{Key: fmt.Sprintf("released-%03d", i), Status: "released", Attempts: 1},
			{Key: fmt.Sprintf("failed-%03d", i), Status: "failed", Attempts: 5, LastError: "boom"},
		} {
			if err := add(r); err != nil {
				return err
			}
		}
	}
	return im.flush()
}

// BenchmarkSnapshotMemory exports n items (cache values, loaded with
// Import) to io.Discard, then migrates them (an export piped into dst's
// Import), and reports for each the peak of the live Go heap above what it
// was before (peak-live-MiB, sampled every 10 ms) and the time. A
// snapshot streams, so the peak stays flat whatever n is; a backend that
// keeps its state in the heap (mem) holds the items themselves besides.
func BenchmarkSnapshotMemory(b *testing.B, src, dst *botstate.Store, n int) {
	ctx := context.Background()
	ns := src.Namespace(fmt.Sprintf("snapmem-%d-%d", n, time.Now().UnixNano()))
	if err := fillCache(ctx, ns, n); err != nil {
		b.Fatal(err)
	}
	b.Run(fmt.Sprintf("items=%d/export", n), func(b *testing.B) {
		for b.Loop() {
			peak := peakHeap(func() {
				got, err := ns.Export(ctx, io.Discard)
				if err != nil || got != n {
					b.Fatalf("export: %d items, %v", got, err)
				}
			})
			b.ReportMetric(peak, "peak-live-MiB")
		}
	})
	b.Run(fmt.Sprintf("items=%d/migrate", n), func(b *testing.B) {
		for b.Loop() {
			peak := peakHeap(func() {
				pr, pw := io.Pipe()
				go func() {
					_, err := ns.Export(ctx, pw)
					pw.CloseWithError(err)
				}()
				got, err := dst.Import(ctx, pr)
				pr.CloseWithError(err)
				if err != nil || got != n {
					b.Fatalf("migrate: %d items, %v", got, err)
				}
			})
			b.ReportMetric(peak, "peak-live-MiB")
		}
	})
}

// peakHeap runs fn and returns the highest live heap (as of each garbage
// collection, runtime/metrics' /gc/heap/live:bytes) while it ran, above
// the live heap before it, in MiB: what fn holds, not the garbage it
// leaves for the collector, whose amount depends on GOGC and on the heap
// around it.
func peakHeap(fn func()) float64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	live := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runtime.GC()
	base := live()
	var peak atomic.Uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v := live(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	fn()
	runtime.GC() // what fn held at its end counts too
	if v := live(); v > peak.Load() {
		peak.Store(v)
	}
	close(done)
	<-stopped
	p := peak.Load()
	if p < base {
		return 0
	}
	return float64(p-base) / (1 << 20)
}

// fillCache imports n cache values into ns, kept for a day.
func fillCache(ctx context.Context, ns *botstate.Store, n int) error {
	exp := time.Now().UTC().Add(24 * time.Hour)
	im := newImporter(ctx, ns)
	for i := range n {
		r := botstate.Record{Kind: driver.KindCacheValue, NS: ns.Name(), Key: fmt.Sprintf("item-%08d", i),
			Payload: []byte("a cached value of some sixty bytes, as a bot would keep it"), ExpiresAt: exp}
		if err := im.add(&r); err != nil {
			return err
		}
	}
	return im.flush()
}

// importer loads records into a store with Import, 8 MiB of snapshot at a
// time.
type importer struct {
	ctx context.Context
	ns  *botstate.Store
	buf bytes.Buffer
	enc *json.Encoder
}

const snapshotHeader = `{"format":"botstate-snapshot","version":1}` + "\n"

func newImporter(ctx context.Context, ns *botstate.Store) *importer {
	im := &importer{ctx: ctx, ns: ns}
	im.enc = json.NewEncoder(&im.buf)
	im.buf.WriteString(snapshotHeader)
	return im
}

func (im *importer) add(r *botstate.Record) error {
	if err := im.enc.Encode(r); err != nil {
		return err
	}
	if im.buf.Len() > 8<<20 {
		return im.flush()
	}
	return nil
}

// flush imports what add gathered.
func (im *importer) flush() error {
	if im.buf.Len() == len(snapshotHeader) {
		return nil
	}
	_, err := im.ns.Import(im.ctx, &im.buf)
	im.buf.Reset()
	im.buf.WriteString(snapshotHeader)
	return err
}

// FillBrowse imports into ns n of each thing the dashboard lists a page at
// a time: conversations, held locks with one entry queued each, and
// subscriptions, keyed item-00000000 up, kept for a day.
func FillBrowse(ctx context.Context, ns *botstate.Store, n int) error {
	now := time.Now().UTC()
	exp := now.Add(24 * time.Hour)
	im := newImporter(ctx, ns)
	for i := range n {
		k := fmt.Sprintf("item-%08d", i)
		for _, r := range []botstate.Record{
			{Kind: driver.KindConversation, Key: k, Flow: "signup", State: "asking_email", Version: 3,
				Data: []byte(`{"email":"ada@example.com","step":2}`), UpdatedAt: now, ExpiresAt: exp},
			{Kind: driver.KindLock, Key: k, Fence: 2,
				Holders: []driver.Holder{{Owner: "worker-a", Token: 1, AcquiredAt: now, ExpiresAt: exp}},
				Pending: []driver.Entry{{Payload: []byte(`{"text":"next"}`), EnqueuedAt: now, ExpiresAt: exp}}},
			{Kind: driver.KindSubscription, Key: k, CreatedAt: now, ExpiresAt: exp},
		} {
			r.NS = ns.Name()
			if err := im.add(&r); err != nil {
				return err
			}
		}
	}
	return im.flush()
}

// BenchmarkBrowse measures a page of 50 conversations and of 50 locks
// (driver.Browse, as the dashboard reads them) at the start and near the
// end of a namespace holding n of each (FillBrowse): a backend that reads
// only the page costs the same at both ends and at any n.
func BenchmarkBrowse(b *testing.B, st *botstate.Store, n int) {
	ctx := context.Background()
	ns := st.Namespace(fmt.Sprintf("browse-%d-%d", n, time.Now().UnixNano()))
	if err := FillBrowse(ctx, ns, n); err != nil {
		b.Fatal(err)
	}
	for _, kind := range []driver.Kind{driver.KindConversation, driver.KindLock} {
		for _, at := range []struct {
			name  string
			after string
		}{{"first", ""}, {"last", fmt.Sprintf("item-%08d", max(n-51, 0))}} {
			b.Run(fmt.Sprintf("items=%d/%s/%s-page", n, kind, at.name), func(b *testing.B) {
				for b.Loop() {
					page, err := driver.Browse(ctx, ns.Driver(), ns.Name(), kind, at.after, 50, time.Now())
					if err != nil {
						b.Fatal(err)
					}
					if len(page) != min(50, n) {
						b.Fatalf("a page of %d, want %d", len(page), min(50, n))
					}
				}
			})
		}
	}
}
