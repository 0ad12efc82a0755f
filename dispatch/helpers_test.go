package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/dynamodb"
	_ "github.com/botstate/botstate/backend/file"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/postgres"
	_ "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/statetest"
)

func TestMain(m *testing.M) {
	if role := workerRole(); role != "" {
		runWorkerProcess(role)
		return
	}
	goleak.VerifyTestMain(m,
		// rueidis's cluster client, after a failed topology refresh, sleeps
		// five seconds in a goroutine of its own before it looks again,
		// even once closed.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}

// backend is one store to run a behaviour on.
type backend struct {
	name   string
	url    string
	shared bool // several processes can share it
}

// backends lists every backend: mem and the embedded file (one process
// each), and the shared ones whose servers the test script started
// (required under BOTSTATE_REQUIRE_BACKENDS=1).
func backends(t *testing.T) []backend {
	out := []backend{{name: "mem", url: "mem://"}, {name: "file", url: "file://"}}
	for _, b := range []struct{ name, env string }{
		{"redis", "BOTSTATE_REDIS_URL"}, {"redis-cluster", "BOTSTATE_REDIS_CLUSTER_URL"},
		{"postgres", "BOTSTATE_POSTGRES_URL"}, {"dynamodb", "BOTSTATE_DYNAMODB_URL"},
	} {
		if u := envURL(t, b.env); u != "" {
			out = append(out, backend{name: b.name, url: u, shared: true})
		}
	}
	return out
}

// envURL returns a backend URL from the environment, or "" with a visible
// message when it is unset; under BOTSTATE_REQUIRE_BACKENDS=1 that fails.
func envURL(t *testing.T, name string) string {
	t.Helper()
	u := os.Getenv(name)
	if u == "" {
		if statetest.RequireBackends() {
			t.Fatalf("%s is not set and BOTSTATE_REQUIRE_BACKENDS=1 (run scripts/test.sh)", name)
		}
		t.Logf("%s is not set: skipping that backend (scripts/test.sh starts it)", name)
	}
	return u
}

func uniqueNS() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "d-" + hex.EncodeToString(b[:])
}

// fleet opens n stores on one backend in one namespace (for mem, views of
// one store: mem cannot be shared between stores) with a dispatcher each:
// n processes' worth of dispatchers.
type fleet struct {
	t     *testing.T
	ds    []*Dispatcher
	store *botstate.Store // the first store, for inspection
}

func newFleet(t *testing.T, b backend, n int, cfg Config, opts ...botstate.Option) *fleet {
	t.Helper()
	ns := uniqueNS()
	f := &fleet{t: t}
	if b.url == "file://" {
		b.url = "file://" + filepath.Join(t.TempDir(), "state.db")
	}
	var shared *botstate.Store
	for i := 0; i < n; i++ {
		var st *botstate.Store
		if b.shared || shared == nil {
			s, err := botstate.Open(context.Background(), b.url, opts...)
			if err != nil {
				t.Fatalf("open %s: %v", b.name, err)
			}
			t.Cleanup(func() { s.Close() })
			shared = s
			st = s.Namespace(ns)
		} else {
			st = shared.Namespace(ns)
		}
		c := cfg
		c.Owner = fmt.Sprintf("p%d", i)
		d, err := New(st, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = d.Close(ctx)
		})
		f.ds = append(f.ds, d)
		if f.store == nil {
			f.store = st
		}
	}
	return f
}

func (f *fleet) handle(name string, r Route) {
	f.t.Helper()
	for _, d := range f.ds {
		if err := d.Handle(name, r); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fleet) dispatch(i int, route string, m Message) Outcome {
	f.t.Helper()
	out, err := f.ds[i%len(f.ds)].Dispatch(context.Background(), route, m)
	if err != nil {
		f.t.Fatalf("dispatch %s: %v", m.Key, err)
	}
	return out
}

// journal records what handlers did, and checks it.
type journal struct {
	mu      sync.Mutex
	runs    []run
	active  map[string]int // running handlers per scope
	maxConc map[string]int
	changed chan struct{}
}

type run struct {
	key, scope string
	attempt    int
	skipped    []string
	start, end time.Time
	err        error
	cause      error
}

func newJournal() *journal {
	return &journal{active: map[string]int{}, maxConc: map[string]int{}, changed: make(chan struct{}, 1)}
}

// wrap returns a handler that journals every run of fn.
func (j *journal) wrap(fn func(ctx context.Context, job *Job) error) Handler {
	return func(ctx context.Context, job *Job) error {
		r := run{key: job.Key, scope: job.Scope, attempt: job.Attempt, start: time.Now()}
		for _, s := range job.Skipped {
			r.skipped = append(r.skipped, s.Key)
		}
		j.mu.Lock()
		j.active[job.Scope]++
		j.maxConc[job.Scope] = max(j.maxConc[job.Scope], j.active[job.Scope])
		j.mu.Unlock()
		err := fn(ctx, job)
		r.end, r.err, r.cause = time.Now(), err, context.Cause(ctx)
		j.mu.Lock()
		j.active[job.Scope]--
		j.runs = append(j.runs, r)
		j.mu.Unlock()
		select {
		case j.changed <- struct{}{}:
		default:
		}
		return err
	}
}

// ok is a handler that takes d.
func sleepFor(d time.Duration) func(ctx context.Context, job *Job) error {
	return func(ctx context.Context, job *Job) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func (j *journal) snapshot() []run {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.runs)
}

// waitFor waits until cond holds on the runs so far.
func (j *journal) waitFor(t *testing.T, what string, timeout time.Duration, cond func([]run) bool) []run {
	t.Helper()
	deadline := time.After(timeout)
	for {
		rs := j.snapshot()
		if cond(rs) {
			return rs
		}
		select {
		case <-j.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; runs: %+v", what, rs)
		}
	}
}

// okKeys lists the keys of the runs that returned nil, in run order.
func okKeys(rs []run) []string {
	var out []string
	for _, r := range rs {
		if r.err == nil {
			out = append(out, r.key)
		}
	}
	return out
}

func countOK(rs []run) int { return len(okKeys(rs)) }

// observations collects what an Observer heard.
type observations struct {
	mu  sync.Mutex
	obs []Observation
}

func (o *observations) Observe(ob Observation) {
	o.mu.Lock()
	o.obs = append(o.obs, ob)
	o.mu.Unlock()
}

func (o *observations) count(k Kind) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, ob := range o.obs {
		if ob.Kind == k {
			n++
		}
	}
	return n
}

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}
