package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/backend/postgres"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

// TestStoreFromTheApplicationsPool: a store on a pool the application
// already holds migrates its schema, works, and leaves the pool open when
// it closes; a pool built without PoolConfig is refused with the fix.
func TestStoreFromTheApplicationsPool(t *testing.T) {
	ctx := context.Background()
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	schema := fmt.Sprintf("frompool_%d", time.Now().UnixNano())
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := pgxpool.NewWithConfig(ctx, pc.Copy())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := postgres.FromPool(ctx, plain, schema, true, driver.Config{}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("a pool without botstate's search_path: %v", err)
	}
	postgres.PoolConfig(pc, schema)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	defer plain.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") //nolint:errcheck
	if _, err := postgres.FromPool(ctx, pool, schema, false, driver.Config{}); err == nil {
		t.Error("a schema never migrated passed the check without migrating")
	}
	drv, err := postgres.FromPool(ctx, pool, schema, true, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := botstate.OpenDriver(drv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Events().Claim(ctx, "e1", []byte("p"), time.Minute)
	if err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim: %v %v", c.Status, err)
	}
	var n int
	if err := plain.QueryRow(ctx, "SELECT count(*) FROM "+schema+".events").Scan(&n); err != nil || n != 1 {
		t.Fatalf("the event is not in the schema given: %d %v", n, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Errorf("the pool after the store closed: %v", err)
	}
	// Migrated now: without migrating, the check passes.
	drv2, err := postgres.FromPool(ctx, pool, schema, false, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	drv2.Close()
	if _, err := postgres.FromPool(ctx, nil, schema, true, driver.Config{}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("nil pool: %v", err)
	}
}
