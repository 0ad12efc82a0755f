// Package faulttest is the fault check every network backend's test runs
// through faultproxy: under each fault, calls fail with ErrUnavailable
// within their deadline; once the fault is cleared, the same store works
// again by itself. Whether goroutines are left behind is the caller's to
// check, after closing what it opened.
package faulttest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/internal/faultproxy"
)

// Fault is one way a proxy breaks the traffic.
type Fault struct {
	Name string
	Set  func(*faultproxy.Proxy)
}

// Faults are the four every network backend is checked under. The latency
// is far beyond any call's deadline, so a call under it can only end by its
// deadline, as under the black hole and the pause.
var Faults = []Fault{
	{"latency", func(p *faultproxy.Proxy) { p.SetLatency(time.Minute) }},
	{"reset", (*faultproxy.Proxy).Reset},
	{"blackhole", (*faultproxy.Proxy).Blackhole},
	{"pause", (*faultproxy.Proxy).Pause},
}

// Call is one operation on the store under test, on a key no other call
// uses.
type Call func(ctx context.Context, key string) error

// Config says how the calls are made and what they are allowed.
type Config struct {
	// Deadline is each call's context deadline (default 300ms).
	Deadline time.Duration
	// OwnTimeout makes the calls with no context deadline: Deadline is then
	// the timeout the backend was configured with, which alone must end
	// them.
	OwnTimeout bool
	// Slack is how much later than Deadline a call may return: the time to
	// notice it and unwind on a busy 2-core machine under -race (default
	// 500ms).
	Slack time.Duration
	// Calls is how many calls are made at once under each fault (default 4).
	Calls int
	// Recover is how long after the fault is cleared the store may take to
	// work again (default 10s).
	Recover time.Duration
}

func (c Config) withDefaults() Config {
	if c.Deadline <= 0 {
		c.Deadline = 300 * time.Millisecond
	}
	if c.Slack <= 0 {
		c.Slack = 500 * time.Millisecond
	}
	if c.Calls <= 0 {
		c.Calls = 4
	}
	if c.Recover <= 0 {
		c.Recover = 10 * time.Second
	}
	return c
}

// Run checks call under every fault in Faults, one subtest each, applied to
// all the proxies at once (the nodes of a cluster, say): with the fault on,
// each of cfg.Calls concurrent calls fails with an error matching
// driver.ErrUnavailable no later than cfg.Deadline plus cfg.Slack; after
// Clear, call succeeds again within cfg.Recover, on the same store. A call
// must succeed before the first fault.
func Run(t *testing.T, cfg Config, call Call, proxies ...*faultproxy.Proxy) {
	t.Helper()
	cfg = cfg.withDefaults()
	if _, err := recovered(cfg, call, "before"); err != nil {
		t.Fatalf("before any fault: %v", err)
	}
	for _, f := range Faults {
		t.Run(f.Name, func(t *testing.T) {
			cleared := false
			clearFaults := func() {
				if !cleared {
					for _, p := range proxies {
						p.Clear()
					}
					cleared = true
				}
			}
			defer clearFaults()
			for _, p := range proxies {
				f.Set(p)
			}
			took, errs := concurrently(cfg, call, f.Name)
			fastest, slowest := took[0], took[0]
			for i, err := range errs {
				fastest, slowest = min(fastest, took[i]), max(slowest, took[i])
				if !errors.Is(err, driver.ErrUnavailable) {
					t.Errorf("call %d under %s: %v, want an error matching ErrUnavailable", i, f.Name, err)
				}
				if took[i] > cfg.Deadline+cfg.Slack {
					t.Errorf("call %d under %s returned after %v, past its %v deadline (+%v slack): %v",
						i, f.Name, took[i], cfg.Deadline, cfg.Slack, err)
				}
			}
			clearFaults()
			after, err := recovered(cfg, call, f.Name+"-after")
			if err != nil {
				t.Fatalf("the store did not work again within %v of clearing %s: %v", cfg.Recover, f.Name, err)
			}
			bound := "deadline"
			if cfg.OwnTimeout {
				bound = "no deadline; the backend's timeout"
			}
			t.Logf("%s: %d calls failed in %v to %v (%s %v); the store worked again %v after the fault was cleared",
				f.Name, len(errs), fastest.Round(time.Millisecond), slowest.Round(time.Millisecond), bound, cfg.Deadline, after.Round(time.Millisecond))
		})
	}
}

// concurrently makes cfg.Calls calls at once, each under its own deadline
// (or none, with OwnTimeout), and returns how long each took and its error.
func concurrently(cfg Config, call Call, name string) ([]time.Duration, []error) {
	took := make([]time.Duration, cfg.Calls)
	errs := make([]error, cfg.Calls)
	var wg sync.WaitGroup
	for i := range cfg.Calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if !cfg.OwnTimeout {
				ctx, cancel = context.WithTimeout(ctx, cfg.Deadline)
			}
			defer cancel()
			start := time.Now()
			errs[i] = call(ctx, fmt.Sprintf("%s-%d-%d", name, i, start.UnixNano()))
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	return took, errs
}

// recovered calls until a call succeeds, for at most cfg.Recover, and
// returns how long that took, or the last error.
func recovered(cfg Config, call Call, name string) (time.Duration, error) {
	start := time.Now()
	for n := 0; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := call(ctx, fmt.Sprintf("%s-%d-%d", name, n, time.Now().UnixNano()))
		cancel()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > cfg.Recover {
			return 0, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
