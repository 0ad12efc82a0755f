package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/internal/faultproxy"
	"github.com/botstate/botstate/internal/faultproxy/faulttest"
	"github.com/botstate/botstate/statetest"
)

// TestServerRestartUnderLoad stops PostgreSQL (fast shutdown) under a load
// of claims and completions, keeps it down for a second, and starts it
// again. Meanwhile every call either succeeds or fails with an error
// matching ErrUnavailable, never later than its context deadline (plus
// scheduling slack), a new Store cannot open either, and once the server is
// back the same Store serves calls again. No completed event is lost,
// nothing panics, and closing the store leaves no goroutine behind.
func TestServerRestartUnderLoad(t *testing.T) {
	c := newCluster(t)
	underLoad(t, c, "restart", func(deadline time.Duration) {
		c.Stop("fast")
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		_, err := botstate.Open(ctx, c.URL+"&schema=fault")
		if !errors.Is(err, botstate.ErrUnavailable) || time.Since(start) > deadline+faultSlack {
			t.Errorf("Open while the server is down: %v after %v, want ErrUnavailable within %v", err, time.Since(start), deadline)
		}
		time.Sleep(time.Second)
	}, c.Start)
}

// TestServerHangUnderLoad freezes PostgreSQL (SIGSTOP to the postmaster
// and its backends) under load: the server neither answers nor refuses.
// Calls must still end at their deadline, with an error matching both
// ErrUnavailable and context.DeadlineExceeded, and work again once the
// server resumes.
func TestServerHangUnderLoad(t *testing.T) {
	c := newCluster(t)
	var frozen []int
	thaw := func() {
		for _, pid := range frozen {
			syscall.Kill(pid, syscall.SIGCONT)
		}
		frozen = nil
	}
	t.Cleanup(thaw)
	underLoad(t, c, "hang", func(time.Duration) {
		frozen = c.processes()
		for _, pid := range frozen {
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatalf("SIGSTOP %d: %v", pid, err)
			}
		}
		time.Sleep(1500 * time.Millisecond)
	}, thaw)
}

// faultSlack is how much later than its deadline a call may return: the
// time to notice the deadline and unwind, on a busy machine.
const faultSlack = 400 * time.Millisecond

// underLoad runs workers that claim and complete fresh events on the
// cluster for half a second, calls disrupt while they go on, then restore,
// and checks what the workers saw: failures matching ErrUnavailable, all
// within their deadline, and successes again after restore, on the same
// Store.
func underLoad(t *testing.T, c *cluster, schema string, disrupt func(deadline time.Duration), restore func()) {
	goroutines := runtime.NumGoroutine()
	ctx := context.Background()
	st, err := botstate.Open(ctx, c.URL+"&pool_max_conns=8&schema="+schema)
	if err != nil {
		t.Fatal(err)
	}
	ev := st.Namespace("fault").Events()

	const (
		workers  = 8
		deadline = 500 * time.Millisecond
	)
	var (
		phase     atomic.Int32 // 0 before the disruption, 1 during, 2 after
		failures  atomic.Int64
		deadlines atomic.Int64 // failures that also match DeadlineExceeded
		slowest   atomic.Int64 // the longest a failing call took, in ns
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
		took := time.Since(start)
		if took > deadline+faultSlack {
			problem("%s took %v, over its %v deadline", what, took, deadline)
		}
		if err == nil {
			if phase.Load() == 2 {
				recovered.Add(1)
			}
			return true
		}
		failures.Add(1)
		if errors.Is(err, context.DeadlineExceeded) {
			deadlines.Add(1)
		}
		for old := slowest.Load(); int64(took) > old && !slowest.CompareAndSwap(old, int64(took)); old = slowest.Load() {
		}
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
	disrupt(deadline)
	restore()
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
		t.Error("no call failed during the disruption: it was not observed")
	}
	if n := recovered.Load(); n < 50 {
		t.Errorf("only %d calls succeeded in 15 s after the server came back", n)
	}
	t.Logf("%d calls failed with ErrUnavailable (%d of them also DeadlineExceeded; the slowest after %v, deadline %v); %d succeeded after the server came back; %d events completed",
		failures.Load(), deadlines.Load(), time.Duration(slowest.Load()), deadline, recovered.Load(), len(completed))

	// Every completion acknowledged before, during or after the disruption
	// is still there (fast shutdown checkpoints, so this holds with fsync
	// off).
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

// processes returns the pids of the cluster's postmaster and its children,
// from postmaster.pid and /proc.
func (c *cluster) processes() []int {
	c.t.Helper()
	master, err := c.postmasterPID()
	if err != nil {
		c.t.Fatal(err)
	}
	return append([]int{master}, childrenOf(master)...)
}

// postmasterPID reads the postmaster's pid from postmaster.pid.
func (c *cluster) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	return pid, nil
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		_, rest, ok := strings.Cut(string(b), ") ")
		fields := strings.Fields(rest)
		if !ok || len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pid {
			child, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/stat"))
			out = append(out, child)
		}
	}
	return out
}

// TestProxyFaults puts a fault proxy between the store and the shared
// server and goes through latency, reset, black hole and pause with claims
// and with lock acquisitions (a transaction of two round trips): every call fails
// with ErrUnavailable by its deadline, the same Store works again once the
// fault is cleared, and closing it leaves no goroutine behind.
func TestProxyFaults(t *testing.T) {
	u, err := url.Parse(statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	u.Host = p.Addr()
	leaks := goleak.IgnoreCurrent()
	q := u.Query()
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	st, err := botstate.Open(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	ev := st.Namespace("proxyfault-" + strconv.FormatInt(time.Now().UnixNano(), 36)).Events()
	t.Run("claim", func(t *testing.T) {
		faulttest.Run(t, faulttest.Config{}, func(ctx context.Context, key string) error {
			_, err := ev.Claim(ctx, key, nil, time.Minute)
			return err
		}, p)
	})
	t.Run("acquire", func(t *testing.T) {
		locks := st.Namespace("proxyfault-locks").Locks()
		faulttest.Run(t, faulttest.Config{}, func(ctx context.Context, key string) error {
			_, err := locks.Acquire(ctx, key, "me", nil, botstate.LockPolicy{TTL: time.Minute})
			return err
		}, p)
	})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// With the proxy still up, so that connections the store left open
	// would show (the proxy's goroutines for them included).
	goleak.VerifyNone(t, leaks)
}
