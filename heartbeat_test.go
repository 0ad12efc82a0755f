package botstate_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/driver"
)

// unreachable is a mem driver whose renewals fail as an unreachable backend's
// do, from when cut is set.
type unreachable struct {
	*mem.Driver
	cut atomic.Bool
}

func (u *unreachable) ExtendEvent(ctx context.Context, ns, key, token string, now, leaseUntil, expiresAt time.Time) error {
	if u.cut.Load() {
		return fmt.Errorf("network down: %w", driver.ErrUnavailable)
	}
	return u.Driver.ExtendEvent(ctx, ns, key, token, now, leaseUntil, expiresAt)
}

func (u *unreachable) ExtendLock(ctx context.Context, ns, key string, token uint64, now, expiresAt time.Time) (driver.Holder, error) {
	if u.cut.Load() {
		return driver.Holder{}, fmt.Errorf("network down: %w", driver.ErrUnavailable)
	}
	return u.Driver.ExtendLock(ctx, ns, key, token, now, expiresAt)
}

// TestHeartbeatTreatsTheLeaseAsLostAtItsEnd: when renewals stop getting
// through, the handler's context is cancelled at the lease's end by the
// holder's own clock — not a renewal tick later — so a replica that takes
// over after the end plus its clock skew margin never overlaps it.
func TestHeartbeatTreatsTheLeaseAsLostAtItsEnd(t *testing.T) {
	const lease = 1500 * time.Millisecond
	for _, what := range []string{"claim", "lock"} {
		t.Run(what, func(t *testing.T) {
			t.Parallel()
			drv := &unreachable{Driver: mem.New(driver.Config{})}
			st, err := botstate.OpenDriver(drv)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			var hctx context.Context
			var stop func() (time.Time, error) // the lease's end as last renewed
			if what == "claim" {
				c, err := st.Events().Claim(ctx, "k", nil, lease)
				if err != nil {
					t.Fatal(err)
				}
				var hb *botstate.ClaimHeartbeat
				hctx, hb = st.Events().Heartbeat(ctx, c, lease)
				stop = func() (time.Time, error) { c, err := hb.Stop(); return c.LeaseUntil, err }
			} else {
				r, err := st.Locks().Acquire(ctx, "k", "me", nil, botstate.LockPolicy{Strategy: botstate.Reject, TTL: lease})
				if err != nil {
					t.Fatal(err)
				}
				var hb *botstate.Heartbeat
				hctx, hb = st.Locks().Heartbeat(ctx, r.Lock, lease)
				stop = func() (time.Time, error) { l, err := hb.Stop(); return l.ExpiresAt, err }
			}
			// Renewals go through for a while, then the network goes.
			time.Sleep(lease)
			drv.cut.Store(true)
			<-hctx.Done()
			lostAt := time.Now()
			end, err := stop()
			want := botstate.ErrClaimLost
			if what == "lock" {
				want = botstate.ErrLockLost
			}
			if !errors.Is(err, want) || !errors.Is(context.Cause(hctx), want) {
				t.Fatalf("heartbeat ended with %v (cause %v), want %v", err, context.Cause(hctx), want)
			}
			// The context ends at the end of the last lease that got
			// through, give or take the scheduler: not before, and not a
			// renewal period (lease/3, 500 ms) after.
			if lostAt.Before(end) {
				t.Fatalf("the context ended at %v, before the lease's end %v", lostAt, end)
			}
			if late := lostAt.Sub(end); late > lease/10 {
				t.Fatalf("the context ended %v after the lease's end", late)
			}
			t.Logf("the context ended %v after the lease's end", lostAt.Sub(end))
		})
	}
}

// TestHeartbeatOfAnUnknownEndRenews: a claim handed in with no lease end
// (the zero time: not known) is renewed, not ended at once as if its end
// had passed.
func TestHeartbeatOfAnUnknownEndRenews(t *testing.T) {
	st, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	c, err := st.Events().Claim(ctx, "k", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c.LeaseUntil = time.Time{}
	hctx, hb := st.Events().Heartbeat(ctx, c, 300*time.Millisecond)
	time.Sleep(400 * time.Millisecond)
	if err := hctx.Err(); err != nil {
		t.Fatalf("the heartbeat ended: %v (%v)", err, context.Cause(hctx))
	}
	got, err := hb.Stop()
	if err != nil || got.LeaseUntil.IsZero() {
		t.Fatalf("stop: %v, lease until %v: want renewed", err, got.LeaseUntil)
	}
}
