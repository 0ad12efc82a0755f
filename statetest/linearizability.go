package statetest

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/internal/lincheck"
)

// Histories of concurrent operations are recorded from the real backend and
// checked against a sequential model of the domain (internal/lincheck) with
// porcupine: every history must be explainable by some order of the
// operations that respects real time. The fake clock stands still, so
// leases never lapse here.

func newRecorder() *lincheck.Recorder {
	start := time.Now()
	return &lincheck.Recorder{Now: func() int64 { return time.Since(start).Nanoseconds() }}
}

func check(e *env, name string, model porcupine.Model, ops []porcupine.Operation) {
	e.t.Helper()
	lincheck.Verify(e.t, name, model, ops, 30*time.Second)
}

func init() {
	add("Linearizability",
		// No attempt limit, as EventModel(0) assumes.
		tco("EventHistoriesAreLinearizable", []botstate.Option{botstate.WithMaxAttempts(0)}, testLinearizabilityEventHistoriesAreLinearizable),
		tc("LockHistoriesAreLinearizable", testLinearizabilityLockHistoriesAreLinearizable),
	)
}

func testLinearizabilityEventHistoriesAreLinearizable(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	rec := newRecorder()
	race(6, func(client int) {
		rng := rand.New(rand.NewPCG(uint64(client), 7))
		var stale []botstate.EventToken
		for j := 0; j < 25; j++ {
			key := fmt.Sprintf("k%d", rng.IntN(3))
			out := rec.Do(client, lincheck.EventInput{Op: lincheck.EventClaim, Key: key}, func() any {
				return lincheck.ClaimOutput(ev.Claim(ctx, key, nil, time.Hour))
			}).(lincheck.EventOutput)
			tok := botstate.EventToken{Key: key, ID: out.Token}
			if out.Status != botstate.Claimed.String() {
				if len(stale) == 0 || rng.IntN(3) > 0 {
					continue
				}
				tok = stale[rng.IntN(len(stale))] // a worker that lost its claim
			}
			stale = append(stale, tok)
			op, result := lincheck.EventRelease, ""
			if rng.IntN(4) == 0 {
				op, result = lincheck.EventComplete, fmt.Sprintf("r%d-%d", client, j)
			}
			rec.Do(client, lincheck.EventInput{Op: op, Key: tok.Key, Token: tok.ID, Result: result}, func() any {
				if op == lincheck.EventComplete {
					return lincheck.ErrOutput(ev.Complete(ctx, tok, []byte(result)))
				}
				return lincheck.ErrOutput(ev.Release(ctx, tok))
			})
		}
	})
	check(e, "events", lincheck.EventModel(0), rec.Operations())
}

func testLinearizabilityLockHistoriesAreLinearizable(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Hour}
	rec := newRecorder()
	race(5, func(client int) {
		rng := rand.New(rand.NewPCG(uint64(client), 11))
		for j := 0; j < 15; j++ {
			key := fmt.Sprintf("L%d", rng.IntN(2))
			entry := fmt.Sprintf("e%d.%d", client, j)
			owner := fmt.Sprintf("c%d", client)
			out := rec.Do(client, lincheck.LockInput{Op: lincheck.LockAcquire, Key: key, Owner: owner, Entry: entry, Strategy: "queue"}, func() any {
				return lincheck.AcquireOutput(l.Acquire(ctx, key, owner, []byte(entry), p))
			}).(lincheck.LockOutput)
			if out.Status != botstate.Acquired.String() {
				continue
			}
			lk := botstate.Lock{Key: key, Token: out.Token}
			for held := true; held; {
				if rng.IntN(3) == 0 {
					rec.Do(client, lincheck.LockInput{Op: lincheck.LockRelease, Key: key, Token: lk.Token}, func() any {
						return lincheck.EntriesOutput(l.Release(ctx, lk))
					})
					break
				}
				o := rec.Do(client, lincheck.LockInput{Op: lincheck.LockHandover, Key: key, Token: lk.Token}, func() any {
					return lincheck.HandoverOutput(l.Handover(ctx, lk, time.Hour))
				}).(lincheck.LockOutput)
				held = o.Held
			}
		}
	})
	check(e, "locks", lincheck.LockModel(), rec.Operations())
}
