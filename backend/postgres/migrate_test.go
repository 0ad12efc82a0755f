package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

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
