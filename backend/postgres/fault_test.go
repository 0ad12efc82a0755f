package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

// TestServerRestartUnderLoad stops PostgreSQL under a load of claims and
// completions, keeps it down for a while, and starts it again. Meanwhile
// every call either succeeds or fails with an error matching
// ErrUnavailable, never later than its context deadline (plus scheduling
// slack), and once the server is back the same Store serves calls again.
// No completed event is lost, nothing panics, and closing the store leaves
// no goroutine behind.
func TestServerRestartUnderLoad(t *testing.T) {
	c := newCluster(t)
	goroutines := runtime.NumGoroutine()
	ctx := context.Background()
	st, err := botstate.Open(ctx, c.URL+"&pool_max_conns=8&schema=fault")
	if err != nil {
		t.Fatal(err)
	}
	ev := st.Namespace("fault").Events()

	const (
		workers  = 8
		deadline = 500 * time.Millisecond
		slack    = 400 * time.Millisecond
	)
	var (
		phase     atomic.Int32 // 0 before the stop, 1 while down, 2 after the start
		failures  atomic.Int64
		recovered atomic.Int64 // successes in phase 2
		seq       atomic.Int64
		mu        sync.Mutex
		problems  []string
		completed []string
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	// call runs one operation under its own deadline and checks how it
	// ended.
	call := func(what string, fn func(ctx context.Context) error) bool {
		cctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		start := time.Now()
		err := fn(cctx)
		if took := time.Since(start); took > deadline+slack {
			problem("%s took %v, over its %v deadline", what, took, deadline)
		}
		if err == nil {
			if phase.Load() == 2 {
				recovered.Add(1)
			}
			return true
		}
		failures.Add(1)
		if !errors.Is(err, botstate.ErrUnavailable) {
			problem("%s failed with %v, which does not match ErrUnavailable", what, err)
		}
		return false
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, seq.Add(1))
				var claim botstate.Claim
				if !call("Claim", func(ctx context.Context) error {
					var err error
					claim, err = ev.Claim(ctx, key, []byte("payload"), time.Minute)
					return err
				}) || claim.Status != botstate.Claimed {
					continue
				}
				if call("Complete", func(ctx context.Context) error { return ev.Complete(ctx, claim.Token, []byte("done")) }) {
					mu.Lock()
					completed = append(completed, key)
					mu.Unlock()
				}
			}
		}()
	}

	time.Sleep(500 * time.Millisecond)
	phase.Store(1)
	c.Stop("fast")
	// While the server is down, a new Store cannot open either, and says so
	// in time.
	octx, cancel := context.WithTimeout(ctx, deadline)
	start := time.Now()
	_, err = botstate.Open(octx, c.URL+"&schema=fault")
	cancel()
	if !errors.Is(err, botstate.ErrUnavailable) || time.Since(start) > deadline+slack {
		t.Errorf("Open while the server is down: %v after %v, want ErrUnavailable within %v", err, time.Since(start), deadline)
	}
	time.Sleep(time.Second)
	c.Start()
	phase.Store(2)
	for end := time.Now().Add(15 * time.Second); recovered.Load() < 50 && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	for _, p := range problems {
		t.Error(p)
	}
	if failures.Load() == 0 {
		t.Error("no call failed while the server was down: the outage was not observed")
	}
	if n := recovered.Load(); n < 50 {
		t.Errorf("only %d calls succeeded in 15 s after the server came back", n)
	}
	t.Logf("%d calls failed with ErrUnavailable during the outage; %d succeeded after it; %d events completed", failures.Load(), recovered.Load(), len(completed))

	// Every completion acknowledged before, during or after the outage is
	// still there (fast shutdown checkpoints, so this holds with fsync off).
	for _, key := range completed {
		got, err := ev.Claim(ctx, key, nil, time.Minute)
		if err != nil || got.Status != botstate.Completed || string(got.Result) != "done" {
			t.Fatalf("completed event %s after the restart: %+v, %v", key, got, err)
		}
	}

	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The pool's and the reaper's goroutines end with Close.
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Close, %d before Open:\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
	}
}
