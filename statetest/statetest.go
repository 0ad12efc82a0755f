// Package statetest is the conformance suite every botstate backend passes.
//
// A backend's test calls Run with a function that opens a fresh Store on it:
//
//	func TestConformance(t *testing.T) {
//		statetest.Run(t, func(t *testing.T, opts ...botstate.Option) *botstate.Store {
//			st, err := botstate.Open(context.Background(), url, opts...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { st.Close() })
//			return st
//		})
//	}
//
// Each test works in a namespace of its own, so a shared server needs no
// flushing between tests. Time-dependent tests pass a *Clock with
// botstate.WithClock and move it forward instead of sleeping; backends must
// therefore judge expiry by the time each call carries, never by their own
// clock alone.
package statetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

// Opener opens a fresh Store on the backend under test with opts applied,
// and arranges for it to be closed when t ends.
type Opener func(t *testing.T, opts ...botstate.Option) *botstate.Store

// Clock is a fake clock for botstate.WithClock: it stands still until
// Advance moves it.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock set to the current time, truncated to the
// microsecond. Starting at the real time keeps a server's native expiry
// (which runs on real time) from removing items the fake clock still sees.
func NewClock() *Clock {
	return &Clock{now: time.Now().UTC().Truncate(time.Microsecond)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// RequireBackends reports whether BOTSTATE_REQUIRE_BACKENDS=1 is set, as CI
// sets it: a backend whose server is missing then fails instead of skipping.
func RequireBackends() bool { return os.Getenv("BOTSTATE_REQUIRE_BACKENDS") == "1" }

// BackendURL returns the URL in environment variable name (set by the
// project's test script when it started the server), or skips the test with
// a visible message when it is unset — failing instead under
// BOTSTATE_REQUIRE_BACKENDS=1.
func BackendURL(t testing.TB, name string) string {
	t.Helper()
	u := os.Getenv(name)
	if u == "" {
		if RequireBackends() {
			t.Fatalf("%s is not set and BOTSTATE_REQUIRE_BACKENDS=1: the backend's server did not start (run scripts/test.sh)", name)
		}
		t.Skipf("%s is not set: skipping this backend (scripts/test.sh starts the servers and sets it)", name)
	}
	return u
}

// uniqueNamespace returns a namespace no other test run uses.
func uniqueNamespace(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t-" + hex.EncodeToString(b[:])
}

// env is what each conformance test gets: a store scoped to a fresh
// namespace, its fake clock, and the opener for tests that need options.
type env struct {
	t     *testing.T
	open  Opener
	clock *Clock
	st    *botstate.Store
}

func newEnv(t *testing.T, open Opener, opts ...botstate.Option) *env {
	t.Helper()
	clock := NewClock()
	opts = append([]botstate.Option{botstate.WithClock(clock)}, opts...)
	st := open(t, opts...)
	return &env{t: t, open: open, clock: clock, st: st.Namespace(uniqueNamespace(t))}
}

// Run runs the whole conformance suite against the backend open opens.
func Run(t *testing.T, open Opener) {
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					c.fn(t, open)
				})
			}
		})
	}
}

type testCase struct {
	name string
	fn   func(t *testing.T, open Opener)
}

type group struct {
	name  string
	cases []testCase
}

// groups is filled by each domain's file.
var groups []group

// URLOpener returns an Opener that opens rawURL (whose backend package the
// test imports) and closes the store when the test ends.
func URLOpener(rawURL string) Opener {
	return func(t *testing.T, opts ...botstate.Option) *botstate.Store {
		t.Helper()
		st, err := botstate.Open(context.Background(), rawURL, opts...)
		if err != nil {
			t.Fatalf("open %s: %v", rawURL, err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
}
