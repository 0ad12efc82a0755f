package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem" // the reference the test compares against
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

// TestEventsMatchMemory runs the same random event operations, at the same
// times, on this backend and on the in-memory one: Record, Claim, Reclaim
// and TakeOver (live and lapsed, with and without an attempt limit),
// Complete, Extend, Release in every form (retry later, Fail, Defer, with a
// limit), Retry, Forget, and expiry. It compares what the portable layer
// reads of every reply, every event as LookupEvent returns it, and the
// Due, Failed, Pending and Expired listings, so the decisions this backend
// makes in SQL are checked against driver's rules. It runs without and
// with an event limit (whose inserts take another statement).
func TestEventsMatchMemory(t *testing.T) {
	for _, limit := range []int{0, 3} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) { eventsMatchMemory(t, limit) })
	}
}

func eventsMatchMemory(t *testing.T, limit int) {
	ctx := context.Background()
	pg, mem, clock := pgAndMem(t)
	ns := fmt.Sprintf("events-%d", time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	keys := []string{"a", "b", "c", "d"}
	reasons := []string{"", "boom", "upstream 503"}
	pick := func(n int) int { return rng.IntN(n) }
	minutes := func(n int) time.Duration { return time.Duration(n) * time.Minute }

	for step := range 1500 {
		now := clock.Now()
		key := keys[pick(len(keys))]
		cur, _, err := mem.LookupEvent(ctx, ns, key, now)
		if err != nil {
			t.Fatal(err)
		}
		token := "stale"
		if cur.Token != "" && pick(5) > 0 {
			token = cur.Token
		}
		newToken := fmt.Sprintf("t%d", step)
		expires := now.Add(minutes(5 + pick(30)))
		var name string
		var run func(d driver.Driver) (any, error)
		switch op := pick(12); {
		case op < 1:
			w := driver.EventWrite{Key: key, Payload: []byte("r"), Now: now, ExpiresAt: expires, Limit: limit}
			name = "RecordEvent " + key
			run = func(d driver.Driver) (any, error) { return d.RecordEvent(ctx, ns, w) }
		case op < 5:
			r := driver.ClaimRequest{
				EventWrite: driver.EventWrite{Key: key, Payload: []byte("p"), Now: now, ExpiresAt: expires, Limit: limit},
				Token:      newToken, LeaseUntil: now.Add(minutes(1 + pick(3))), Existing: pick(2) == 0, MaxAttempts: pick(4),
			}
			if r.Existing && pick(2) == 0 {
				r.Holder = token
			}
			name = fmt.Sprintf("ClaimEvent %+v", r)
			run = func(d driver.Driver) (any, error) {
				rep, err := d.ClaimEvent(ctx, ns, r)
				// What the portable layer reads of the reply.
				seen := struct {
					Outcome   driver.ClaimOutcome
					Attempts  int
					Result    []byte
					LastError string
				}{Outcome: rep.Outcome, Attempts: rep.Event.Attempts}
				switch rep.Outcome {
				case driver.ClaimCompleted:
					seen.Result = rep.Event.Result
				case driver.ClaimFailed:
					seen.LastError = rep.Event.LastError
				}
				return seen, err
			}
		case op < 6:
			name = "CompleteEvent " + key
			run = func(d driver.Driver) (any, error) {
				return nil, d.CompleteEvent(ctx, ns, key, token, []byte("done"), now, expires)
			}
		case op < 7:
			name = "ExtendEvent " + key
			run = func(d driver.Driver) (any, error) {
				return nil, d.ExtendEvent(ctx, ns, key, token, now, now.Add(minutes(2)), expires)
			}
		case op < 9:
			r := driver.ReleaseRequest{Key: key, Token: token, Now: now, ExpiresAt: expires,
				Reason: reasons[pick(len(reasons))], Fail: pick(5) == 0, MaxAttempts: pick(4), Defer: pick(4) == 0}
			if pick(2) == 0 {
				r.RetryAt = now.Add(minutes(pick(3)))
			}
			name = fmt.Sprintf("ReleaseEvent %+v", r)
			run = func(d driver.Driver) (any, error) { return nil, d.ReleaseEvent(ctx, ns, r) }
		case op < 10:
			name = "RetryEvent " + key
			run = func(d driver.Driver) (any, error) { return nil, d.RetryEvent(ctx, ns, key, now, expires) }
		case op < 11 && pick(4) == 0:
			name = "ForgetEvent " + key
			run = func(d driver.Driver) (any, error) { return nil, d.ForgetEvent(ctx, ns, key) }
		default:
			name = "advance"
			clock.Advance(time.Duration(pick(90)) * time.Second)
		}
		compareRun(t, step, name, run, pg, mem)
		now = clock.Now()
		for _, k := range keys {
			want, wantOK, err1 := mem.LookupEvent(ctx, ns, k, now)
			got, gotOK, err2 := pg.LookupEvent(ctx, ns, k, now)
			if err1 != nil || err2 != nil || gotOK != wantOK || canonicalJSON(t, got) != canonicalJSON(t, want) {
				t.Fatalf("step %d, after %s, LookupEvent %s:\npostgres %v %s %v\nmem      %v %s %v",
					step, name, k, gotOK, canonicalJSON(t, got), err2, wantOK, canonicalJSON(t, want), err1)
			}
		}
		for list, fn := range map[string]func(driver.Driver) ([]driver.Event, error){
			"DueEvents":     func(d driver.Driver) ([]driver.Event, error) { return d.DueEvents(ctx, ns, now, 3) },
			"FailedEvents":  func(d driver.Driver) ([]driver.Event, error) { return d.FailedEvents(ctx, ns, now, 3) },
			"PendingEvents": func(d driver.Driver) ([]driver.Event, error) { return d.PendingEvents(ctx, ns, now, 3) },
			"ExpiredEvents": func(d driver.Driver) ([]driver.Event, error) { return d.ExpiredEvents(ctx, ns, now, 3) },
		} {
			want, err1 := fn(mem)
			got, err2 := fn(pg)
			if err1 != nil || err2 != nil || canonicalJSON(t, got) != canonicalJSON(t, want) {
				t.Fatalf("step %d, after %s, %s:\npostgres %s %v\nmem      %s %v", step, name, list, canonicalJSON(t, got), err2, canonicalJSON(t, want), err1)
			}
		}
	}
}

// sameError reports whether two errors match the same sentinel, or are
// both nil.
// pgAndMem opens this backend and the in-memory one on one fake clock.
func pgAndMem(t *testing.T) (pg, mem driver.Driver, clock *statetest.Clock) {
	url := statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	clock = statetest.NewClock()
	// Neither store reaps in the background: a reaper deletes what its
	// clock says lapsed whenever it runs (the in-memory sweeper by the test
	// clock, PostgreSQL's by real time), and an abandoned lock record is
	// visible until then, so the comparison would depend on when each one
	// last ran. The rules are what is compared.
	open := func(u string) driver.Driver {
		st, err := botstate.Open(context.Background(), u, botstate.WithClock(clock), botstate.WithSweepInterval(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st.Driver()
	}
	return open(url), open("mem://"), clock
}

// compareRun runs one operation (nil: none) on mem, then on this backend,
// and fails when the replies or errors differ.
func compareRun(t *testing.T, step int, name string, run func(driver.Driver) (any, error), pg, mem driver.Driver) {
	t.Helper()
	if run == nil {
		return
	}
	want, wantErr := run(mem)
	got, gotErr := run(pg)
	if !sameError(gotErr, wantErr) || canonicalJSON(t, got) != canonicalJSON(t, want) {
		t.Fatalf("step %d, %s:\npostgres %s, %v\nmem      %s, %v", step, name, canonicalJSON(t, got), gotErr, canonicalJSON(t, want), wantErr)
	}
}

func sameError(a, b error) bool {
	for _, s := range []error{driver.ErrNotOwner, driver.ErrNotFound, driver.ErrConflict} {
		if errors.Is(b, s) {
			return errors.Is(a, s)
		}
	}
	return a == nil && b == nil
}
