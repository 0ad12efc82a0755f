package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/statetest"
)

// benchClients is the client count of both sides: goroutines calling the
// store (with as many pooled connections) and pgbench clients.
const benchClients = 16

// benchSchema holds the benchmark's tables, apart from the tests'.
const benchSchema = "botstate_bench"

// pgbenchSeconds is how long pgbench runs (-T).
const pgbenchSeconds = 10

// benchRounds is how many times each pair (pgbench, then botstate) runs,
// one pair after the other, so that a machine whose load changes during the
// run (other work on the same cores) affects both sides of a pair alike.
const benchRounds = 3

// baseline holds pgbench's tps per statement, measured just before, so the
// botstate sub-benchmarks report their ratio to it.
var baseline = map[string]float64{}

// baselineCPU holds pgbench's CPU time per transaction (server and client)
// likewise: on a machine where both sides compete for the same cores, the
// ratio of CPU per operation is the throughput ratio to expect, whatever
// else the machine runs (x-pgbench-cpu).
var baselineCPU = map[string]float64{}

// Record and Claim of fresh keys through the botstate API, against pgbench
// running the dedupe a bot author would write by hand instead: INSERT ...
// ON CONFLICT DO NOTHING into a table (k, v, expires_at) with only its
// primary key, with the same number of clients, on the same server, in the
// same run, in benchRounds interleaved pairs. Each
// sub-benchmark starts from empty tables. Run (with -benchtime equal to
// pgbench's -T):
//
//	go test -run '^$' -bench ClaimVsPgbench -benchtime 10s ./backend/postgres
//
// ops/s is throughput over all clients; x-pgbench is ops/s divided by
// pgbench's tps in the run just before; x-pgbench-bracketed (on the
// pgbench-after line) divides it by the mean of the runs before and after.
func BenchmarkClaimVsPgbench(b *testing.B) {
	rawURL := statetest.BackendURL(b, "BOTSTATE_POSTGRES_URL")
	pgbench := os.Getenv("BOTSTATE_POSTGRES_PGBENCH")
	if pgbench == "" {
		pgbench, _ = exec.LookPath("pgbench")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, rawURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	st, err := botstate.Open(ctx, fmt.Sprintf("%s&schema=%s&pool_max_conns=%d&pool_min_conns=%d", rawURL, benchSchema, benchClients, benchClients),
		botstate.WithSweepInterval(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	// The baseline: the table a bot author writes for dedupe by hand, with
	// only its primary key.
	if _, err := conn.Exec(ctx, `DROP TABLE IF EXISTS `+benchSchema+`.pgbench_scratch;
		CREATE TABLE IF NOT EXISTS `+benchSchema+`.dedupe (k text PRIMARY KEY, v bytea, expires_at timestamptz)`); err != nil {
		b.Fatal(err)
	}
	truncate := func(b *testing.B) {
		if _, err := conn.Exec(ctx, `TRUNCATE `+benchSchema+`.events, `+benchSchema+`.dedupe`); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `VACUUM ANALYZE `+benchSchema+`.events, `+benchSchema+`.dedupe`); err != nil {
			b.Fatal(err)
		}
	}
	// What pgbench runs for both: the hand-written dedupe, one INSERT ...
	// ON CONFLICT DO NOTHING of the key, the payload and an expiry.
	dedupe := `\set id random(1, 2000000000)
INSERT INTO ` + benchSchema + `.dedupe (k, v, expires_at)
VALUES ('pgbench-' || :id, '\x7b226576656e74223a226d657373616765222c2274657874223a2268656c6c6f20776f726c64227d'::bytea,
        now() + interval '1 day')
ON CONFLICT DO NOTHING;
`
	scripts := map[string]string{"record": dedupe, "claim": dedupe}
	payload := []byte(`{"event":"message","text":"hello world"}`)
	var run atomic.Int64
	ops := map[string]func(ctx context.Context, ev *botstate.Events, key string) error{
		"record": func(ctx context.Context, ev *botstate.Events, key string) error {
			_, err := ev.Record(ctx, key, payload)
			return err
		},
		"claim": func(ctx context.Context, ev *botstate.Events, key string) error {
			_, err := ev.Claim(ctx, key, payload, time.Minute)
			return err
		},
	}
	// pgbench runs before and after botstate in each pair: x-pgbench on
	// botstate's line is against the run before; x-pgbench-bracketed, on
	// the after line, against the mean of both, which cancels the drift of
	// a shared machine across the pair.
	pgbenchRun := func(op string) func(b *testing.B) {
		return func(b *testing.B) {
			if pgbench == "" {
				b.Skip("no pgbench: install postgresql or set BOTSTATE_POSTGRES_PGBENCH")
			}
			truncate(b)
			server, backends := serverCPU(), serverProcesses()
			tps, txns, client := runPgbench(b, pgbench, rawURL, scripts[op])
			// pgbench's backends exit after it does; their CPU time
			// counts once the postmaster has reaped them.
			for end := time.Now().Add(3 * time.Second); serverProcesses() > backends && time.Now().Before(end); {
				time.Sleep(10 * time.Millisecond)
			}
			b.ReportMetric(tps, "ops/s")
			b.ReportMetric(1e9/tps, "ns/op")
			cpu := reportCPU(b, serverCPU()-server, client, txns)
			if mine, before := botstateOps[op], baseline[op]; mine > 0 && before > 0 {
				b.ReportMetric(mine/((before+tps)/2), "x-pgbench-bracketed")
				botstateOps[op] = 0
				return
			}
			baseline[op], baselineCPU[op] = tps, cpu
		}
	}
	for round := 1; round <= benchRounds; round++ {
		for _, op := range []string{"record", "claim"} {
			b.Run(fmt.Sprintf("%s/clients=%d/round=%d/baseline=pgbench", op, benchClients, round), pgbenchRun(op))
			b.Run(fmt.Sprintf("%s/clients=%d/round=%d/botstate", op, benchClients, round), func(b *testing.B) {
				truncate(b)
				ev := st.Namespace("bench").Events()
				prefix := fmt.Sprintf("bench-%d-", run.Add(1))
				var seq atomic.Int64
				fn := ops[op]
				b.SetParallelism((benchClients + 1) / 2) // GOMAXPROCS is 2 on the reference machine
				server, client := serverCPU(), processCPU()
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, 0, 32)
					for pb.Next() {
						buf = strconv.AppendInt(append(buf[:0], prefix...), seq.Add(1), 10)
						if err := fn(ctx, ev, string(buf)); err != nil {
							b.Error(err)
							return
						}
					}
				})
				opsPerSec := float64(b.N) / time.Since(start).Seconds()
				b.ReportMetric(opsPerSec, "ops/s")
				cpu := reportCPU(b, serverCPU()-server, processCPU()-client, int64(b.N))
				if base := baseline[op]; base > 0 {
					b.ReportMetric(opsPerSec/base, "x-pgbench")
				}
				if base := baselineCPU[op]; base > 0 && cpu > 0 {
					b.ReportMetric(base/cpu, "x-pgbench-cpu")
				}
				botstateOps[op] = opsPerSec
			})
			b.Run(fmt.Sprintf("%s/clients=%d/round=%d/baseline=pgbench-after", op, benchClients, round), pgbenchRun(op))
		}
	}
}

// botstateOps holds botstate's throughput of the pair in progress, for the
// bracketed ratio.
var botstateOps = map[string]float64{}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

var txnsLine = regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`)

// runPgbench runs script with pgbench against the server of rawURL and
// returns its tps, the transactions it ran, and the CPU time pgbench used.
func runPgbench(b *testing.B, pgbench, rawURL, script string) (tps float64, txns int64, cpu time.Duration) {
	b.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(b.TempDir(), "insert.sql")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		b.Fatal(err)
	}
	args := []string{"-h", u.Hostname(), "-p", u.Port(), "-U", u.User.Username(),
		"-n", "-M", "prepared", "-c", strconv.Itoa(benchClients), "-j", "2", "-T", strconv.Itoa(pgbenchSeconds),
		"-f", file, u.Path[1:]}
	cmd := exec.Command(pgbench, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", pgbench, args, err, out)
	}
	m, n := tpsLine.FindSubmatch(out), txnsLine.FindSubmatch(out)
	if m == nil || n == nil {
		b.Fatalf("no tps in pgbench's output:\n%s", out)
	}
	tps, _ = strconv.ParseFloat(string(m[1]), 64)
	txns, _ = strconv.ParseInt(string(n[1]), 10, 64)
	b.Logf("%s %s: %.0f tps", pgbench, strings.Join(args, " "), tps)
	return tps, txns, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// reportCPU reports CPU time per operation on each side: the server's (all
// PostgreSQL processes) and the client's (pgbench, or this process). Unlike
// throughput, these hardly depend on what else the machine runs, so they
// compare the two sides even on a busy machine. It returns their sum per
// operation in microseconds, or 0 when the server's is unknown.
func reportCPU(b *testing.B, server, client time.Duration, ops int64) float64 {
	if ops == 0 {
		return 0
	}
	c := float64(client.Microseconds()) / float64(ops)
	b.ReportMetric(c, "client-cpu-us/op")
	if server <= 0 {
		return 0
	}
	s := float64(server.Microseconds()) / float64(ops)
	b.ReportMetric(s, "server-cpu-us/op")
	return s + c
}

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverProcesses counts the test server's processes (postmaster
// children), -1 when unknown.
func serverProcesses() int {
	master := postmasterPID()
	if master == "" {
		return -1
	}
	n := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		if ppid, _, ok := procStat(p); ok && ppid == master {
			n++
		}
	}
	return n
}

// postmasterPID is the test server's postmaster pid, from postmaster.pid
// in BOTSTATE_POSTGRES_DATA (set by scripts/services/postgres.sh).
func postmasterPID() string {
	data := os.Getenv("BOTSTATE_POSTGRES_DATA")
	if data == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(first)
}

// procStat reads a /proc/PID/stat file: the parent pid and utime, stime,
// cutime, cstime in clock ticks.
func procStat(path string) (ppid string, ticks [4]int64, ok bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", ticks, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
	_, rest, found := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest)
	if !found || len(f) < 15 {
		return "", ticks, false
	}
	for i := range ticks {
		ticks[i], _ = strconv.ParseInt(f[11+i], 10, 64)
	}
	return f[1], ticks, true
}

// serverCPU is the CPU time the test server's processes have used: the
// postmaster's own and that of its children gone (cutime, cstime), plus
// that of its children alive, from /proc. Zero when the data directory is
// unknown (BOTSTATE_POSTGRES_DATA, set by scripts/services/postgres.sh).
func serverCPU() time.Duration {
	master := postmasterPID()
	if master == "" {
		return 0
	}
	var total int64
	if _, t, ok := procStat("/proc/" + master + "/stat"); ok {
		total += t[0] + t[1] + t[2] + t[3]
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		if ppid, t, ok := procStat(p); ok && ppid == master {
			total += t[0] + t[1]
		}
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(total) * time.Second / hz
}

// BenchmarkListings: the recovery listings with no completed events held,
// and with a million (statetest.BenchmarkListings).
func BenchmarkListings(b *testing.B) {
	rawURL := statetest.BackendURL(b, "BOTSTATE_POSTGRES_URL")
	st, err := botstate.Open(context.Background(), rawURL+"&schema="+benchSchema, botstate.WithSweepInterval(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkListings(b, st)
}

// BenchmarkSnapshotMemory: export and migrate (to a second schema) of a
// million items, peak live heap (statetest.BenchmarkSnapshotMemory).
func BenchmarkSnapshotMemory(b *testing.B) {
	rawURL := statetest.BackendURL(b, "BOTSTATE_POSTGRES_URL")
	open := func(schema string) *botstate.Store {
		st, err := botstate.Open(context.Background(), rawURL+"&schema="+schema, botstate.WithSweepInterval(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	statetest.BenchmarkSnapshotMemory(b, open(benchSchema), open(benchSchema+"_copy"), 1_000_000)
}

// BenchmarkBrowse: a dashboard page of conversations and of locks at the
// start and the end of 100 k of each (statetest.BenchmarkBrowse).
func BenchmarkBrowse(b *testing.B) {
	rawURL := statetest.BackendURL(b, "BOTSTATE_POSTGRES_URL")
	st, err := botstate.Open(context.Background(), rawURL+"&schema="+benchSchema, botstate.WithSweepInterval(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkBrowse(b, st, 100_000)
}
