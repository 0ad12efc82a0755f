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
	"sync/atomic"
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

// Record and Claim of fresh keys through the botstate API, against pgbench
// running the equivalent INSERT ... ON CONFLICT DO NOTHING into a scratch
// table with the same columns (and only the primary key: the cheapest
// version of the same write), with the same number of clients, on the same
// server, in the same run, in benchRounds interleaved pairs. Each
// sub-benchmark starts from empty tables. Run (with -benchtime equal to
// pgbench's -T):
//
//	go test -run '^$' -bench ClaimVsPgbench -benchtime 10s ./backend/postgres
//
// ops/s is throughput over all clients; x-pgbench is ops/s divided by
// pgbench's tps for the equivalent statement in the same round.
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
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+benchSchema+`.pgbench_scratch (LIKE `+benchSchema+`.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE `+benchSchema+`.pgbench_scratch DROP CONSTRAINT IF EXISTS pgbench_scratch_pkey,
		ADD CONSTRAINT pgbench_scratch_pkey PRIMARY KEY (namespace, key)`); err != nil {
		b.Fatal(err)
	}
	truncate := func(b *testing.B) {
		if _, err := conn.Exec(ctx, `TRUNCATE `+benchSchema+`.events, `+benchSchema+`.pgbench_scratch`); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `VACUUM ANALYZE `+benchSchema+`.events, `+benchSchema+`.pgbench_scratch`); err != nil {
			b.Fatal(err)
		}
	}
	// The statements pgbench runs: what Record and Claim insert for a new
	// key, column for column, as one INSERT ... ON CONFLICT DO NOTHING.
	scripts := map[string]string{
		"record": `\set id random(1, 2000000000)
INSERT INTO ` + benchSchema + `.pgbench_scratch (namespace, key, status, payload, attempts, created_at, expires_at)
VALUES ('bench', 'pgbench-' || :id, 'recorded', '\x7b226576656e74223a226d657373616765222c2274657874223a2268656c6c6f20776f726c64227d'::bytea,
        0, now(), now() + interval '1 day')
ON CONFLICT DO NOTHING;
`,
		"claim": `\set id random(1, 2000000000)
INSERT INTO ` + benchSchema + `.pgbench_scratch (namespace, key, status, payload, token, attempts, created_at, lease_until, expires_at)
VALUES ('bench', 'pgbench-' || :id, 'claimed', '\x7b226576656e74223a226d657373616765222c2274657874223a2268656c6c6f20776f726c64227d'::bytea,
        '0123456789abcdef-' || :id, 1, now(), now() + interval '1 minute', now() + interval '1 day 1 minute')
ON CONFLICT DO NOTHING;
`,
	}
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
	for round := 1; round <= benchRounds; round++ {
		for _, op := range []string{"record", "claim"} {
			b.Run(fmt.Sprintf("%s/clients=%d/round=%d/baseline=pgbench", op, benchClients, round), func(b *testing.B) {
				if pgbench == "" {
					b.Skip("no pgbench: install postgresql or set BOTSTATE_POSTGRES_PGBENCH")
				}
				truncate(b)
				tps := runPgbench(b, pgbench, rawURL, scripts[op])
				baseline[op] = tps
				b.ReportMetric(tps, "ops/s")
				b.ReportMetric(1e9/tps, "ns/op")
			})
			b.Run(fmt.Sprintf("%s/clients=%d/round=%d/botstate", op, benchClients, round), func(b *testing.B) {
				truncate(b)
				ev := st.Namespace("bench").Events()
				prefix := fmt.Sprintf("bench-%d-", run.Add(1))
				var seq atomic.Int64
				fn := ops[op]
				b.SetParallelism((benchClients + 1) / 2) // GOMAXPROCS is 2 on the reference machine
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
				if base := baseline[op]; base > 0 {
					b.ReportMetric(opsPerSec/base, "x-pgbench")
				}
			})
		}
	}
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// runPgbench runs script with pgbench against the server of rawURL and
// returns its tps.
func runPgbench(b *testing.B, pgbench, rawURL, script string) float64 {
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
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		b.Fatalf("no tps in pgbench's output:\n%s", out)
	}
	tps, _ := strconv.ParseFloat(string(m[1]), 64)
	b.Logf("%s %v: %.0f tps", pgbench, args, tps)
	return tps
}
