package redis_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
//   - Claim and Record through the botstate API with 64 and 256 goroutines
//     (rueidis auto-pipelining; one EVALSHA per new key with the indexed
//     layout, one SET NX GET PXAT with events=scan);
//   - redis-benchmark -P 16 -c 50 running SET key NX EX 60 on random keys,
//     as a subprocess, its requests per second parsed from its output;
//   - plain go-redis SetNX, one round trip per operation, with the same
//     goroutine counts (its default pool, and one connection per goroutine).
//
// Claim and Record run with each event layout (the indexed default and
// events=scan). BenchmarkClaim logs the figures side by side with their
// ratios.

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
	payload := []byte("{\"type\":\"message\"}")
	for _, layout := range []string{"index", "scan"} {
		q := u.Query()
		q.Set("events", layout)
		lu := *u
		lu.RawQuery = q.Encode()
		st, err := botstate.Open(context.Background(), lu.String())
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		for _, op := range []string{"Claim", "Record"} {
			for _, g := range goroutineCounts {
				b.Run(fmt.Sprintf("botstate-%s/events=%s/goroutines=%d", op, layout, g), func(b *testing.B) {
					ns := st.Namespace(fmt.Sprintf("bench-%d-%d", g, time.Now().UnixNano()))
					ev := ns.Events()
					defer cleanNamespace(b, raw, ns.Name())
					runParallel(b, fmt.Sprintf("%s/%s/%d", op, layout, g), g, func(ctx context.Context, i int64) error {
						var err error
						if op == "Claim" {
							_, err = ev.Claim(ctx, "k"+strconv.FormatInt(i, 10), payload, time.Minute)
						} else {
							_, err = ev.Record(ctx, "k"+strconv.FormatInt(i, 10), payload)
						}
						return err
					})
				})
			}
		}
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
		gd := benchResults[fmt.Sprintf("go-redis/default-pool/%d", g)]
		gp := benchResults[fmt.Sprintf("go-redis/pool=goroutines/%d", g)]
		best := max(gd.opsPerS, gp.opsPerS)
		rd := benchResults[fmt.Sprintf("rueidis/%d", g)]
		if rb == 0 || best == 0 {
			continue // a filtered run: nothing to compare
		}
		b.Logf("goroutines=%d: redis-benchmark -P 16 SET NX EX %.0f ops/s; go-redis SetNX %.0f ops/s default pool, %.0f pool=goroutines; rueidis bare SET NX GET PX %.0f ops/s (%.2f of redis-benchmark, %.2f of go-redis)",
			g, rb, gd.opsPerS, gp.opsPerS, rd.opsPerS, rd.opsPerS/rb, rd.opsPerS/best)
		for _, layout := range []string{"index", "scan"} {
			for _, op := range []string{"Claim", "Record"} {
				c := benchResults[fmt.Sprintf("%s/%s/%d", op, layout, g)]
				if c.opsPerS == 0 {
					continue
				}
				b.Logf("goroutines=%d: %s events=%s %.0f ops/s (p50 %v, p99 %v): %.2f of redis-benchmark (target 0.8), %.2f of go-redis (target 2)",
					g, op, layout, c.opsPerS, c.p50, c.p99, c.opsPerS/rb, c.opsPerS/best)
			}
		}
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

// BenchmarkSweep measures what a re-driver's sweep costs with each event
// layout (the indexed default and events=scan): Due(10), the listing a
// sweeper calls to find lapsed claims and due retries, in a namespace that
// holds a hundred events of each unfinished kind and n completed ones
// (statetest.FillListings), n from BOTSTATE_SWEEP_SIZES (default
// "0,1000000"; "10000000" for ten million). Beside the time per sweep it
// reports the server's CPU per sweep (redis-server's used_cpu_user and
// used_cpu_sys from INFO, before and after). It works in database 9 of
// the standalone server, which it empties (FLUSHDB ASYNC) before each size
// and at the end.
//
//	BOTSTATE_SWEEP_SIZES=0,1000000,10000000 go test -run '^$' -bench Sweep -benchtime 5x -timeout 60m ./backend/redis/
func BenchmarkSweep(b *testing.B) {
	raw := statetest.BackendURL(b, "BOTSTATE_REDIS_URL")
	u, err := url.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	u.Path = "/9"
	sizes := []int{0, 1_000_000}
	if s := os.Getenv("BOTSTATE_SWEEP_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 0 {
				b.Fatalf("BOTSTATE_SWEEP_SIZES: %q is not a size", f)
			}
			sizes = append(sizes, n)
		}
	}
	ctx := context.Background()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{u.Host}, SelectDB: 9, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	flush := func() {
		if err := rc.Do(ctx, rc.B().Flushdb().Async().Build()).Error(); err != nil {
			b.Fatal(err)
		}
	}
	for _, layout := range []string{"index", "scan"} {
		b.Run("events="+layout, func(b *testing.B) {
			lu := *u
			q := lu.Query()
			q.Set("events", layout)
			lu.RawQuery = q.Encode()
			st, err := botstate.Open(ctx, lu.String())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			for _, n := range sizes {
				flush()
				ns := st.Namespace("sweep")
				if err := statetest.FillListings(ctx, ns, n); err != nil {
					b.Fatal(err)
				}
				ev := ns.Events()
				b.Run(fmt.Sprintf("completed=%d/Due", n), func(b *testing.B) {
					cpu0 := serverCPU(b, rc)
					for b.Loop() {
						got, err := ev.Due(ctx, 10)
						if err != nil {
							b.Fatal(err)
						}
						if len(got) != 10 {
							b.Fatalf("Due listed %d events, want 10", len(got))
						}
					}
					b.ReportMetric(float64((serverCPU(b, rc)-cpu0).Microseconds())/float64(b.N), "server-µs/op")
				})
			}
			flush()
		})
	}
}

// serverCPU is the CPU time redis-server has used (INFO cpu).
func serverCPU(b *testing.B, rc rueidis.Client) time.Duration {
	info, err := rc.Do(context.Background(), rc.B().Info().Section("cpu").Build()).ToString()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// BenchmarkClaimCluster: Claim of new keys in one namespace on the 3-master
// Cluster (BOTSTATE_REDIS_CLUSTER_URL), 256 goroutines, with each event
// layout. Beside the throughput it reports how the commands spread over
// the masters: the busiest master's share of total_commands_processed
// (1.0 when one master does all the work, about 0.33 when three share it).
//
//	go test -run '^$' -bench ClaimCluster -benchtime 3s ./backend/redis/
func BenchmarkClaimCluster(b *testing.B) {
	raw := statetest.BackendURL(b, "BOTSTATE_REDIS_CLUSTER_URL")
	u, err := url.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var masters []rueidis.Client
	for _, addr := range strings.Split(u.Host, ",") {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true, DisableCache: true})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		role, err := c.Do(ctx, c.B().Role().Build()).ToArray()
		if err != nil {
			b.Fatal(err)
		}
		if r, _ := role[0].ToString(); r == "master" {
			masters = append(masters, c)
		}
	}
	processed := func() []int64 {
		out := make([]int64, len(masters))
		for i, c := range masters {
			info, err := c.Do(ctx, c.B().Info().Section("stats").Build()).ToString()
			if err != nil {
				b.Fatal(err)
			}
			for _, line := range strings.Split(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
					out[i], _ = strconv.ParseInt(v, 10, 64)
				}
			}
		}
		return out
	}
	payload := []byte("{\"type\":\"message\"}")
	for _, layout := range []string{"index", "scan"} {
		b.Run("events="+layout, func(b *testing.B) {
			q := u.Query()
			q.Set("events", layout)
			lu := *u
			lu.RawQuery = q.Encode()
			st, err := botstate.Open(ctx, lu.String())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ns := fmt.Sprintf("cbench-%d", time.Now().UnixNano())
			ev := st.Namespace(ns).Events()
			defer unlinkOnMasters(b, masters, "botstate:{"+ns+":*")
			before := processed()
			runParallel(b, "cluster/"+layout, 256, func(ctx context.Context, i int64) error {
				_, err := ev.Claim(ctx, "k"+strconv.FormatInt(i, 10), payload, time.Minute)
				return err
			})
			after := processed()
			var total, busiest int64
			for i := range after {
				d := after[i] - before[i]
				total += d
				busiest = max(busiest, d)
			}
			if total > 0 {
				b.ReportMetric(float64(busiest)/float64(total), "busiest-share")
			}
		})
	}
}

// unlinkOnMasters deletes the keys matching pattern on every master, one
// UNLINK per key (a Cluster refuses several slots in one command).
func unlinkOnMasters(b *testing.B, masters []rueidis.Client, pattern string) {
	b.StopTimer()
	ctx := context.Background()
	for _, c := range masters {
		var cursor uint64
		for {
			e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
			if err != nil {
				b.Fatal(err)
			}
			cmds := make(rueidis.Commands, 0, len(e.Elements))
			for _, k := range e.Elements {
				cmds = append(cmds, c.B().Unlink().Key(k).Build())
			}
			for _, r := range c.DoMulti(ctx, cmds...) {
				if err := r.Error(); err != nil {
					b.Fatal(err)
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
}
