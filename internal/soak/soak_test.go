// Package soak runs a bounded, mixed workload with TTLs through the
// dispatcher for a while and checks that the process's heap and the
// backend's item count stay flat once the TTLs have come round: nothing
// leaks, nothing accumulates. CI runs it for 30 s on mem and 30 s on Redis;
// scripts/soak.sh for five minutes on each (BOTSTATE_SOAK_DURATION).
package soak

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/dispatch"
	"github.com/botstate/botstate/statetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The workload: messages at a fixed rate to 200 threads, each handled by a
// queue route that updates the thread's conversation, appends to its
// history, subscribes to it and writes its thread state, all with TTLs; one
// message in 20 fails once and is retried, one in 100 is parked as failed.
// Events are remembered for eventWindow. Everything expires, so once the
// TTLs have come round the store holds about rate × eventWindow events
// plus a bounded set per thread.
const (
	rate        = 200 // messages per second
	threads     = 200
	eventWindow = 8 * time.Second
	itemTTL     = 6 * time.Second
	sample      = 2 * time.Second
)

type counter func(ctx context.Context) (int64, error)

func TestSoakStaysFlat(t *testing.T) {
	d := 30 * time.Second // per backend: a minute in all
	if s := os.Getenv("BOTSTATE_SOAK_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 30*time.Second {
			t.Fatalf("BOTSTATE_SOAK_DURATION=%q: want a duration of at least 30s", s)
		}
	}
	t.Run("mem", func(t *testing.T) {
		st, err := botstate.Open(context.Background(), "mem://", options()...)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		soak(t, st, d, func(ctx context.Context) (int64, error) {
			var n int64
			_, err := st.Namespace("soak").Export(ctx, countWriter{&n})
			return n - 1, err // less the header line
		})
	})
	t.Run("redis", func(t *testing.T) {
		raw := statetest.BackendURL(t, "BOTSTATE_REDIS_URL")
		// A database of its own, emptied first, so DBSIZE counts only what
		// the soak keeps.
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/9"
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{u.Host}, SelectDB: 9, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		if err := c.Do(ctx, c.B().Flushdb().Build()).Error(); err != nil {
			t.Fatal(err)
		}
		st, err := botstate.Open(ctx, u.String(), options()...)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		soak(t, st, d, func(ctx context.Context) (int64, error) {
			return c.Do(ctx, c.B().Dbsize().Build()).AsInt64()
		})
	})
}

func options() []botstate.Option {
	return []botstate.Option{botstate.WithEventWindow(eventWindow), botstate.WithConversationTTL(itemTTL),
		botstate.WithSweepInterval(time.Second), botstate.WithMaxAttempts(3)}
}

// countWriter counts the lines written to it.
type countWriter struct{ n *int64 }

func (w countWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			*w.n++
		}
	}
	return len(p), nil
}

type point struct {
	at    time.Duration
	heap  uint64
	items int64
}

func soak(t *testing.T, st *botstate.Store, dur time.Duration, items counter) {
	ns := st.Namespace("soak")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dp, err := dispatch.New(ns, dispatch.Config{Lease: 5 * time.Second,
		Backoff: func(int) time.Duration { return 200 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	var handled, failures atomic.Int64
	err = dp.Handle("msg", dispatch.Route{
		Policy: dispatch.Policy{Mode: dispatch.Queue, QueueMax: 20, EntryTTL: itemTTL},
		Handler: func(ctx context.Context, job *dispatch.Job) error {
			thread := job.Scope
			n := job.Payload[0]
			switch {
			case n%100 == 0:
				return dispatch.Permanent(errors.New("poison"))
			case n%20 == 0 && job.Attempt == 1:
				failures.Add(1)
				return errors.New("flaky upstream")
			}
			if _, err := ns.Conversations().UpdateData(ctx, thread, map[string]any{"last": job.Key, "n": int(n)}); err != nil {
				return err
			}
			if _, err := ns.Cache().Append(ctx, "history:"+thread, []byte(job.Key), 10, itemTTL); err != nil {
				return err
			}
			if err := ns.Threads().Subscribe(ctx, thread, itemTTL); err != nil {
				return err
			}
			if err := ns.ThreadState().Put(ctx, thread, map[string]any{"seen": job.Key}, itemTTL); err != nil {
				return err
			}
			handled.Add(1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	// The sender: rate messages a second, each a new event key.
	var wg sync.WaitGroup
	var sent, refused atomic.Int64
	wg.Go(func() {
		tick := time.NewTicker(time.Second / 50)
		defer tick.Stop()
		seq := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for range rate / 50 {
				seq++
				m := dispatch.Message{Key: fmt.Sprintf("ev-%d", seq), Scope: fmt.Sprintf("thread-%03d", rand.IntN(threads)),
					Payload: []byte{byte(seq % 200)}}
				if _, err := dp.Dispatch(ctx, "msg", m); err != nil {
					if ctx.Err() != nil {
						return
					}
					refused.Add(1)
					continue
				}
				sent.Add(1)
			}
		}
	})

	// Samples: the live heap after a collection, and the store's items.
	var pts []point
	start := time.Now()
	for time.Since(start) < dur {
		time.Sleep(sample)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		n, err := items(context.Background())
		if err != nil {
			t.Fatalf("count items: %v", err)
		}
		pts = append(pts, point{at: time.Since(start).Round(time.Second), heap: ms.HeapAlloc, items: n})
	}
	cancel()
	wg.Wait()
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if err := dp.Close(cctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, p := range pts {
		t.Logf("%6v  heap %6.1f MiB  items %6d", p.at, float64(p.heap)/(1<<20), p.items)
	}
	t.Logf("sent %d (refused %d), handled %d, failed once %d", sent.Load(), refused.Load(), handled.Load(), failures.Load())
	if handled.Load() < int64(float64(rate)*dur.Seconds()*0.5) {
		t.Fatalf("handled %d messages in %v, under half the %d/s sent", handled.Load(), dur, rate)
	}
	checkFlat(t, pts)
}

// checkFlat compares the samples after the warm-up (the first 40%: every
// TTL has come round three times) with the one that ends it: neither the
// heap nor the items may grow past it by more than a quarter plus some
// slack.
func checkFlat(t *testing.T, pts []point) {
	t.Helper()
	w := len(pts) * 2 / 5
	base := pts[w]
	var maxHeap uint64
	var maxItems int64
	for _, p := range pts[w:] {
		maxHeap, maxItems = max(maxHeap, p.heap), max(maxItems, p.items)
	}
	if limit := base.heap + base.heap/4 + 8<<20; maxHeap > limit {
		t.Errorf("the heap grew from %.1f MiB at %v to %.1f MiB (limit %.1f MiB)",
			float64(base.heap)/(1<<20), base.at, float64(maxHeap)/(1<<20), float64(limit)/(1<<20))
	}
	if limit := base.items + base.items/4 + 200; maxItems > limit {
		t.Errorf("the store's items grew from %d at %v to %d (limit %d)", base.items, base.at, maxItems, limit)
	}
}
