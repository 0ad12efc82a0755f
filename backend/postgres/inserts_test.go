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

// TestGroupedInsertsClaimEachKeyOnce has many callers claim the same keys
// at once, each in its own order, so that grouped inserts of new keys
// overlap and carry keys that other groups in flight carry too: each key
// must be claimed by exactly one caller, the calls must really have gone in
// groups, and the server must have refused no group (a refused group falls
// back to one statement per row, which hides the refusal from callers).
func TestGroupedInsertsClaimEachKeyOnce(t *testing.T) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	ctx := context.Background()
	st, err := botstate.Open(ctx, url+"&pool_max_conns=16")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := st.Driver().(*Driver)
	ev := st.Namespace(fmt.Sprintf("groups-%d", time.Now().UnixNano())).Events()
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
