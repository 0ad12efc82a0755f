package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/backend/postgres"
	"github.com/botstate/botstate/statetest"
)

// freshSchema returns a schema name no run has used, and drops the schema
// when the test ends.
func freshSchema(t *testing.T, url string) string {
	t.Helper()
	var b [5]byte
	rand.Read(b[:])
	name := "bs_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Errorf("drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+name+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

func withParams(url, params string) string {
	if strings.Contains(url, "?") {
		return url + "&" + params
	}
	return url + "?" + params
}

// TestConcurrentOpensMigrateOnce opens eight stores on one fresh schema at
// the same moment, as eight replicas starting together would: the advisory
// lock lets one apply the migrations while the others wait, so every Open
// succeeds and each migration is recorded once.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	schema := freshSchema(t, url)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	stores := make([]*botstate.Store, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stores[i], errs[i] = botstate.Open(ctx, withParams(url, "schema="+schema))
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	// Every store works on the same tables.
	for i, st := range stores {
		res, err := st.Events().Record(ctx, "k", nil)
		if err != nil || (i == 0) != (res == botstate.RecordNew) {
			t.Fatalf("store %d Record: %v, %v", i, res, err)
		}
	}
	var versions []int32
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT array_agg(version ORDER BY version) FROM "+schema+".schema_migrations").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if len(versions) != postgres.SchemaVersion() || versions[len(versions)-1] != int32(postgres.SchemaVersion()) {
		t.Fatalf("schema_migrations holds %v, want each version 1..%d once", versions, postgres.SchemaVersion())
	}
}

// TestMigrateThenOpenWithoutMigrating is the migrate-schema path: Migrate
// creates the schema, and a store opened with migrate=false checks it
// instead of changing it.
func TestMigrateThenOpenWithoutMigrating(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	schema := freshSchema(t, url)

	_, err := botstate.Open(ctx, withParams(url, "schema="+schema+"&migrate=false"))
	if !errors.Is(err, botstate.ErrUnavailable) || !strings.Contains(err.Error(), "migrate-schema") {
		t.Fatalf("Open with migrate=false on an empty schema: %v, want ErrUnavailable naming migrate-schema", err)
	}
	if err := postgres.Migrate(ctx, withParams(url, "schema="+schema)); err != nil {
		t.Fatal(err)
	}
	if err := postgres.Migrate(ctx, withParams(url, "schema="+schema)); err != nil {
		t.Fatalf("Migrate twice: %v", err)
	}
	st, err := botstate.Open(ctx, withParams(url, "schema="+schema+"&migrate=false"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Incidents().Init(ctx, false); err != nil {
		t.Fatalf("Init validating the schema: %v", err)
	}
	if d := st.Driver().(*postgres.Driver); d.Schema() != schema {
		t.Fatalf("Schema() = %q, want %q", d.Schema(), schema)
	}
}

func TestURLOptions(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	for _, c := range []struct {
		name, params string
		want         error
	}{
		{"schema not an identifier", "schema=a;drop", botstate.ErrInvalidArgument},
		{"schema too long", "schema=" + strings.Repeat("s", 64), botstate.ErrInvalidArgument},
		{"migrate not a boolean", "migrate=perhaps", botstate.ErrInvalidArgument},
		{"bad pool option", "pool_max_conns=lots", botstate.ErrInvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := botstate.Open(ctx, withParams(url, c.params))
			if err == nil {
				st.Close()
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Open(%s): %v, want %v", c.params, err, c.want)
			}
		})
	}
	t.Run("pool options reach the pool", func(t *testing.T) {
		st, err := botstate.Open(ctx, withParams(url, "pool_max_conns=3&pool_min_conns=1"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if got := st.Driver().(*postgres.Driver).Pool().Config().MaxConns; got != 3 {
			t.Fatalf("MaxConns = %d, want 3", got)
		}
	})
	t.Run("postgresql scheme", func(t *testing.T) {
		st, err := botstate.Open(ctx, "postgresql"+strings.TrimPrefix(url, "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
	})
	t.Run("unreachable server", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 2e9)
		defer cancel()
		_, err := botstate.Open(cctx, "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=1")
		if !errors.Is(err, botstate.ErrUnavailable) {
			t.Fatalf("Open on a closed port: %v, want ErrUnavailable", err)
		}
	})
}

// TestMigrationFromVersion1KeepsData builds a schema as version 1 left it,
// with rows as the code of that version wrote them (no retry_at or
// last_error, holders without an entry, no skipped entries), then opens a
// store on it: Open applies the later migrations, and the old rows read as
// they did, with the new fields at their zero values, and work under the
// new rules.
func TestMigrationFromVersion1KeepsData(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	schema := freshSchema(t, url)
	clock := statetest.NewClock()
	now := clock.Now()

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	v1, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	holders, _ := json.Marshal([]map[string]any{{"owner": "w1", "token": 7, "acquired_at": now, "expires_at": now.Add(time.Minute)}})
	for _, sql := range []string{
		`CREATE SCHEMA ` + schema,
		`CREATE TABLE ` + schema + `.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		`SET search_path TO ` + schema,
		string(v1),
		`INSERT INTO schema_migrations (version, name) VALUES (1, 'init')`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%.60s: %v", sql, err)
		}
	}
	day := now.Add(24 * time.Hour)
	for _, row := range [][]any{
		{"released", "released", nil, 1, nil},
		{"lapsed", "claimed", "tok", 1, now.Add(-time.Second)},
		{"done", "completed", nil, 1, nil},
	} {
		if _, err := conn.Exec(ctx, `INSERT INTO events (namespace, key, status, payload, token, attempts, created_at, lease_until, expires_at)
			VALUES ('old', $1, $2, 'p', $3, $4, $5, $6, $7)`, row[0], row[1], row[2], row[3], now.Add(-time.Minute), row[4], day); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `INSERT INTO locks (namespace, key, fence, holders) VALUES ('old', 'l', 7, $1)`, string(holders)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"e1", "e2"} {
		if _, err := conn.Exec(ctx, `INSERT INTO lock_entries (namespace, key, payload, enqueued_at, expires_at) VALUES ('old', 'l', $1, $2, $3)`,
			[]byte(p), now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}

	st, err := botstate.Open(ctx, withParams(url, "schema="+schema), botstate.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var versions []int32
	if err := conn.QueryRow(ctx, "SELECT array_agg(version ORDER BY version) FROM schema_migrations").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if len(versions) != postgres.SchemaVersion() {
		t.Fatalf("schema_migrations holds %v after Open, want 1..%d", versions, postgres.SchemaVersion())
	}

	ev := st.Namespace("old").Events()
	got, err := ev.Get(ctx, "released")
	if err != nil || got.Status != botstate.EventReleased || got.LastError != "" || !got.RetryAt.IsZero() || got.Attempts != 1 {
		t.Fatalf("old released event: %+v, %v", got, err)
	}
	due, err := ev.Due(ctx, 0)
	if err != nil || len(due) != 2 || due[0].Key != "lapsed" || due[1].Key != "released" {
		t.Fatalf("Due over old rows: %+v, %v", due, err)
	}
	c, err := ev.Claim(ctx, "released", nil, time.Minute)
	if err != nil || c.Status != botstate.Claimed || c.Attempts != 2 {
		t.Fatalf("claim of an old released event: %+v, %v", c, err)
	}
	if err := ev.Fail(ctx, c.Token, "bad"); err != nil {
		t.Fatalf("fail: %v", err)
	}
	failed, err := ev.Failed(ctx, 0)
	if err != nil || len(failed) != 1 || failed[0].Key != "released" || failed[0].LastError != "bad" {
		t.Fatalf("Failed after failing an old event: %+v, %v", failed, err)
	}
	c, err = ev.Claim(ctx, "done", nil, time.Minute)
	if err != nil || c.Status != botstate.Completed {
		t.Fatalf("claim of an old completed event: %+v, %v", c, err)
	}

	l := st.Namespace("old").Locks()
	ls, err := l.Inspect(ctx, "l")
	if err != nil || len(ls.Holders) != 1 || ls.Holders[0].Entry != nil || len(ls.Pending) != 2 || len(ls.Skipped) != 0 {
		t.Fatalf("old lock: %+v, %v", ls, err)
	}
	h, err := l.Handover(ctx, botstate.Lock{Key: "l", Owner: "w1", Token: 7}, time.Minute)
	if err != nil || !h.Held || string(h.Next.Payload) != "e1" {
		t.Fatalf("handover of an old lock: %+v, %v", h, err)
	}
	clock.Advance(2 * time.Minute) // the holder lapses with e1: it goes back in front
	ls, _ = l.Inspect(ctx, "l")
	if len(ls.Holders) != 0 || len(ls.Pending) != 2 || string(ls.Pending[0].Payload) != "e1" {
		t.Fatalf("old lock after its holder lapsed: %+v", ls)
	}
}
