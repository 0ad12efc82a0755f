package redis_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/statetest"
)

// The Claim benchmark and its two baselines run in one go test -bench run
// against the same server (BOTSTATE_REDIS_URL):
//
//   - Claim through the botstate API with 64 and 256 goroutines (rueidis
//     auto-pipelining, one EVALSHA per claim);
//   - redis-benchmark -P 16 -c 50 running SET key NX EX 60 on random keys,
//     as a subprocess, its requests per second parsed from its output;
//   - plain go-redis SetNX, one round trip per operation, with the same
//     goroutine counts (its default pool, and one connection per goroutine).
//
// BenchmarkClaim logs the figures side by side with their ratios.

type benchResult struct {
	name     string
	opsPerS  float64
	p50, p99 time.Duration
}

var (
	benchMu      sync.Mutex
	benchResults = map[string]benchResult{}
)

func record(r benchResult) {
	benchMu.Lock()
	benchResults[r.name] = r
	benchMu.Unlock()
}

// runParallel runs op b.N times across goroutines goroutines and reports
// throughput and latency percentiles.
func runParallel(b *testing.B, name string, goroutines int, op func(ctx context.Context, i int64) error) {
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((goroutines + procs - 1) / procs)
	var (
		seq  atomic.Int64
		mu   sync.Mutex
		lats []time.Duration
		fail atomic.Value
	)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			i := seq.Add(1)
			t0 := time.Now()
			if err := op(ctx, i); err != nil {
				fail.CompareAndSwap(nil, err)
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lats = append(lats, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := fail.Load().(error); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lats)
	pct := func(p float64) time.Duration {
		if len(lats) == 0 {
			return 0
		}
		return lats[min(len(lats)-1, int(float64(len(lats))*p))]
	}
	r := benchResult{name: name, opsPerS: float64(b.N) / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99)}
	b.ReportMetric(r.opsPerS, "ops/s")
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
	record(r)
}

var rpsLine = regexp.MustCompile(`([0-9.]+) requests per second`)

// redisBenchmark runs redis-benchmark's SET NX EX against addr and returns
// its requests per second.
func redisBenchmark(b *testing.B, addr string, n int) float64 {
	host, port, _ := splitHostPort(addr)
	cmd := exec.Command("redis-benchmark", "-h", host, "-p", port, "-P", "16", "-c", "50",
		"-n", strconv.Itoa(n), "-r", "100000000", "-q",
		"SET", "bench:setnx:__rand_int__", "v", "NX", "EX", "60")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("redis-benchmark: %v: %s", err, out.String())
	}
	// -q prints progress lines separated by carriage returns; the last
	// figure is the final one.
	m := rpsLine.FindAllStringSubmatch(out.String(), -1)
	if len(m) == 0 {
		b.Fatalf("no requests per second in redis-benchmark output: %q", out.String())
	}
	rps, err := strconv.ParseFloat(m[len(m)-1][1], 64)
	if err != nil {
		b.Fatal(err)
	}
	return rps
}

func splitHostPort(hostport string) (string, string, error) {
	u, err := url.Parse("redis://" + hostport)
	if err != nil {
		return "", "", err
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	return u.Hostname(), port, nil
}

var goroutineCounts = []int{64, 256}

// BenchmarkClaim compares Claim with the two baselines; see the comment at
// the top of this file. Run it with
//
//	go test -run '^$' -bench BenchmarkClaim -benchtime 3s ./backend/redis/
//
// after starting the servers (scripts/services/redis.sh start DIR, then
// source DIR/env).
func BenchmarkClaim(b *testing.B) {
	raw := statetest.BackendURL(b, "BOTSTATE_REDIS_URL")
	u, err := url.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Fatal("redis-benchmark is not installed (scripts/services/redis.sh installs redis-tools)")
	}
	st, err := botstate.Open(context.Background(), raw)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	payload := []byte("{\"type\":\"message\"}")
	for _, g := range goroutineCounts {
		b.Run(fmt.Sprintf("botstate/goroutines=%d", g), func(b *testing.B) {
			ns := st.Namespace(fmt.Sprintf("bench-%d-%d", g, time.Now().UnixNano()))
			ev := ns.Events()
			defer cleanNamespace(b, raw, ns.Name())
			runParallel(b, fmt.Sprintf("claim/%d", g), g, func(ctx context.Context, i int64) error {
				_, err := ev.Claim(ctx, "k"+strconv.FormatInt(i, 10), payload, time.Minute)
				return err
			})
		})
	}
	for _, pool := range []string{"default-pool", "pool=goroutines"} {
		for _, g := range goroutineCounts {
			b.Run(fmt.Sprintf("go-redis-SetNX/%s/goroutines=%d", pool, g), func(b *testing.B) {
				opt := &goredis.Options{Addr: u.Host}
				if pool != "default-pool" {
					opt.PoolSize = g
				}
				rdb := goredis.NewClient(opt)
				defer rdb.Close()
				prefix := fmt.Sprintf("bench:goredis:%d:", time.Now().UnixNano())
				runParallel(b, fmt.Sprintf("go-redis/%s/%d", pool, g), g, func(ctx context.Context, i int64) error {
					return rdb.SetNX(ctx, prefix+strconv.FormatInt(i, 10), "v", time.Minute).Err()
				})
			})
		}
	}
	// The ceiling of an index-free Claim (a new key as one SET NX GET PX,
	// no script, no index): that command alone, from Go through rueidis
	// with its automatic pipelining, as the backend sends its commands.
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{u.Host}, DisableCache: true, MaxFlushDelay: redis.DefaultFlushDelay})
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	for _, g := range goroutineCounts {
		b.Run(fmt.Sprintf("rueidis-SET-NX-GET-PX/goroutines=%d", g), func(b *testing.B) {
			prefix := fmt.Sprintf("bench:rueidis:%d:", time.Now().UnixNano())
			runParallel(b, fmt.Sprintf("rueidis/%d", g), g, func(ctx context.Context, i int64) error {
				err := rc.Do(ctx, rc.B().Set().Key(prefix+strconv.FormatInt(i, 10)).Value(string(payload)).Nx().Get().PxMilliseconds(60000).Build()).Error()
				if rueidis.IsRedisNil(err) {
					return nil
				}
				return err
			})
		})
	}
	b.Run("redis-benchmark-P16-c50-SET-NX-EX", func(b *testing.B) {
		// redis-benchmark sends b.N requests (at least 20000, so that even
		// the framework's first probe lasts long enough to be timed); its
		// own requests per second, which leaves out its start-up, is the
		// figure compared.
		rps := redisBenchmark(b, u.Host, max(b.N, 20000))
		b.ReportMetric(rps, "ops/s")
		record(benchResult{name: "redis-benchmark", opsPerS: rps})
	})
	benchMu.Lock()
	defer benchMu.Unlock()
	rb := benchResults["redis-benchmark"].opsPerS
	for _, g := range goroutineCounts {
		c := benchResults[fmt.Sprintf("claim/%d", g)]
		gd := benchResults[fmt.Sprintf("go-redis/default-pool/%d", g)]
		gp := benchResults[fmt.Sprintf("go-redis/pool=goroutines/%d", g)]
		best := max(gd.opsPerS, gp.opsPerS)
		if c.opsPerS == 0 || rb == 0 || best == 0 {
			continue // a filtered run: nothing to compare
		}
		rd := benchResults[fmt.Sprintf("rueidis/%d", g)]
		b.Logf("goroutines=%d: Claim %.0f ops/s (p50 %v, p99 %v); redis-benchmark -P 16 SET NX EX %.0f ops/s (ratio %.2f, target 0.8); go-redis SetNX %.0f ops/s default pool, %.0f pool=goroutines (ratio to the better %.2f, target 2); rueidis bare SET NX GET PX %.0f ops/s (%.2f of redis-benchmark, %.2f of go-redis)",
			g, c.opsPerS, c.p50, c.p99, rb, c.opsPerS/rb, gd.opsPerS, gp.opsPerS, c.opsPerS/best, rd.opsPerS, rd.opsPerS/rb, rd.opsPerS/best)
	}
}

// cleanNamespace deletes a benchmark namespace's keys so repeated runs do
// not fill the shared server.
func cleanNamespace(b *testing.B, raw, ns string) {
	b.StopTimer()
	u, _ := url.Parse(raw)
	rdb := goredis.NewClient(&goredis.Options{Addr: u.Host})
	defer rdb.Close()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, "botstate:{"+ns+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Unlink(ctx, batch...)
	}
}

// BenchmarkListings: the recovery listings with no completed events held,
// and with a million (statetest.BenchmarkListings), on the standalone
// server and on the Cluster.
func BenchmarkListings(b *testing.B) {
	for name, env := range map[string]string{"standalone": "BOTSTATE_REDIS_URL", "cluster": "BOTSTATE_REDIS_CLUSTER_URL"} {
		b.Run(name, func(b *testing.B) {
			st, err := botstate.Open(context.Background(), statetest.BackendURL(b, env))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			statetest.BenchmarkListings(b, st)
		})
	}
}

// BenchmarkSnapshotMemory: export and migrate (to another key prefix) of a
// million items, peak live heap (statetest.BenchmarkSnapshotMemory).
func BenchmarkSnapshotMemory(b *testing.B) {
	raw := statetest.BackendURL(b, "BOTSTATE_REDIS_URL")
	open := func(prefix string) *botstate.Store {
		u, err := url.Parse(raw)
		if err != nil {
			b.Fatal(err)
		}
		q := u.Query()
		q.Set("prefix", prefix)
		u.RawQuery = q.Encode()
		st, err := botstate.Open(context.Background(), u.String())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	statetest.BenchmarkSnapshotMemory(b, open("snapsrc:"), open("snapdst:"), 1_000_000)
}

// BenchmarkBrowse: a dashboard page of conversations and of locks at the
// start and the end of 100 k of each (statetest.BenchmarkBrowse). Redis
// keeps no order of them, so a page is read from Export (driver.Browse's
// fallback): a walk of the namespace.
func BenchmarkBrowse(b *testing.B) {
	st, err := botstate.Open(context.Background(), statetest.BackendURL(b, "BOTSTATE_REDIS_URL"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkBrowse(b, st, 100_000)
}
