package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/statetest"
)

// groupingStore opens a store whose pool has 16 connections (two insert
// workers) and returns its driver and a fresh namespace of it.
func groupingStore(t *testing.T, prefix string) (*Driver, *botstate.Store) {
	t.Helper()
	st, err := botstate.Open(context.Background(), statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")+"&pool_max_conns=16")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st.Driver().(*Driver), st.Namespace(fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()))
}

// TestGroupedInsertsClaimEachKeyOnce has many callers claim the same keys
// at once, each in its own order, so that grouped inserts of new keys
// overlap and carry keys that other groups in flight carry too: each key
// must be claimed by exactly one caller, the calls must really have gone in
// groups, and the server must have refused no group (a refused group falls
// back to one statement per row, which hides the refusal from callers).
func TestGroupedInsertsClaimEachKeyOnce(t *testing.T) {
	ctx := context.Background()
	d, ns := groupingStore(t, "groups")
	ev := ns.Events()
	// In each round every caller claims the round's keys at once, each in
	// its own order.
	const callers, rounds, keys = 32, 40, 24
	var won [rounds * keys]atomic.Int32
	for r := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, k := range rand.Perm(keys) {
					k += r * keys
					cl, err := ev.Claim(ctx, fmt.Sprintf("k%04d", k), []byte("p"), time.Minute)
					if err != nil {
						errs <- fmt.Errorf("caller %d, key %d: %w", c, k, err)
						return
					}
					if cl.Status == botstate.Claimed {
						won[k].Add(1)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	for k := range won {
		if n := won[k].Load(); n != 1 {
			t.Errorf("key %d claimed %d times", k, n)
		}
	}
	groups, rows, refused := d.ins.groups.Load(), d.ins.rows.Load(), d.ins.refused.Load()
	t.Logf("%d rows in %d statements, %d refused", rows, groups, refused)
	if groups == 0 || rows < 2*groups {
		t.Errorf("%d rows in %d statements: the inserts did not go in groups", rows, groups)
	}
	if refused > 0 {
		t.Errorf("the server refused %d groups", refused)
	}
}

// TestHeldInsertsGoWithinGatherFor: while a group is in flight, new keys
// are held for a larger group, but not for longer than gatherFor. A group
// is kept in flight by a key another transaction has inserted and not yet
// committed; a Claim of another key must not wait for it.
func TestHeldInsertsGoWithinGatherFor(t *testing.T) {
	ctx := context.Background()
	d, view := groupingStore(t, "gather")
	ns, ev := view.Name(), view.Events()

	tx, err := d.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // on a failure before the rollback below
	if _, err := tx.Exec(ctx, `INSERT INTO events (namespace, key, status, created_at) VALUES ($1, 'blocked', 'recorded', now())`, ns); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() {
		_, err := ev.Claim(ctx, "blocked", nil, time.Minute)
		blocked <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		d.ins.mu.Lock()
		flying := d.ins.flying
		d.ins.mu.Unlock()
		if flying == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the group of the blocked key never flew")
		}
		time.Sleep(time.Millisecond)
	}
	// The blocked group waits until the transaction ends, which is after
	// the free key's Claim returns or gives up.
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	c, err := ev.Claim(cctx, "free", nil, time.Minute)
	took := time.Since(start)
	if rerr := tx.Rollback(ctx); rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim of a free key while a group was in flight, after %v: %v %v", took, c.Status, err)
	}
	if took > 2*time.Second {
		t.Fatalf("a free key waited %v behind a group in flight (gatherFor is %v)", took, gatherFor)
	}
	t.Logf("a free key went after %v while a group was in flight", took)
	if err := <-blocked; err != nil {
		t.Fatalf("the blocked claim: %v", err)
	}
}
