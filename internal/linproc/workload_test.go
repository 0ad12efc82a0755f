package linproc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/internal/lincheck"
)

// The workload: each worker (a goroutine of a child process, one porcupine
// client) runs random operations on a few shared keys, half on events and
// half on locks, and records each with lincheck.
//
// Tokens travel between processes the way the contract allows: a worker
// uses the tokens it was granted, the claim tokens Get shows and the lock
// tokens Inspect shows (another process's), stale ones it kept, tokens moved
// to another key and forged ones. The contract fences by token, not by
// process: whoever presents the live token succeeds, and the holder is
// refused afterwards.
const (
	eventKeys = 8
	lockKeys  = 8
	// lease is every claim's lease and lock's TTL: far longer than a run,
	// so that none lapses and the models, which know no time, hold.
	lease = time.Hour
	// maxAttempts is the stores' WithMaxAttempts, small so that releases
	// park events and Retry brings them back.
	maxAttempts = 3
	// known is how many event and lock tokens a worker remembers.
	known = 12
	// opTimeout bounds one call; a call that fails is an error the
	// history cannot be judged with.
	opTimeout = 30 * time.Second
)

type worker struct {
	client int
	rng    *rand.Rand
	ev     *botstate.Events
	lk     *botstate.Locks
	rec    *lincheck.Recorder
	n      int
	tokens []botstate.EventToken // newest last
	locks  []botstate.Lock       // newest last
}

func newWorker(st *botstate.Store, rec *lincheck.Recorder, client int, seed uint64) *worker {
	return &worker{client: client, rng: rand.New(rand.NewPCG(seed, uint64(client))), ev: st.Events(), lk: st.Locks(), rec: rec}
}

func (w *worker) run(ops int) {
	for w.n = 0; w.n < ops; w.n++ {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		if w.rng.IntN(2) == 0 {
			w.eventOp(ctx)
		} else {
			w.lockOp(ctx)
		}
		cancel()
	}
}

// tag makes payloads, results and entries unique to the operation.
func (w *worker) tag(prefix string) string { return fmt.Sprintf("%s%d.%d", prefix, w.client, w.n) }

func (w *worker) eventKey() string { return fmt.Sprintf("e%d", w.rng.IntN(eventKeys)) }

func (w *worker) lockKey() string { return fmt.Sprintf("l%d", w.rng.IntN(lockKeys)) }

func remember[T any](list []T, x T) []T {
	if len(list) == known {
		list = append(list[:0], list[1:]...)
	}
	return append(list, x)
}

// eventToken picks a token to present: mostly the newest or a remembered
// one (perhaps stale, perhaps another process's), sometimes one moved to
// another key or a forged one.
func (w *worker) eventToken() botstate.EventToken {
	r := w.rng.IntN(20)
	switch {
	case len(w.tokens) == 0 || r == 0:
		return botstate.EventToken{Key: w.eventKey(), ID: w.tag("forged-")}
	case r == 1:
		tok := w.tokens[w.rng.IntN(len(w.tokens))]
		tok.Key = w.eventKey()
		return tok
	case r < 14:
		return w.tokens[len(w.tokens)-1]
	}
	return w.tokens[w.rng.IntN(len(w.tokens))]
}

func (w *worker) learnClaim(o lincheck.EventOutput, key string) {
	if o.Status == botstate.Claimed.String() && o.Token != "" {
		w.tokens = remember(w.tokens, botstate.EventToken{Key: key, ID: o.Token})
	}
}

func (w *worker) event(in lincheck.EventInput, call func() lincheck.EventOutput) lincheck.EventOutput {
	return w.rec.Do(w.client, in, func() any { return call() }).(lincheck.EventOutput)
}

func (w *worker) eventOp(ctx context.Context) {
	ev, key := w.ev, w.eventKey()
	switch r := w.rng.IntN(100); {
	case r < 28:
		in := lincheck.EventInput{Op: lincheck.EventClaim, Key: key, Payload: w.tag("p")}
		w.learnClaim(w.event(in, func() lincheck.EventOutput {
			return lincheck.ClaimOutput(ev.Claim(ctx, key, []byte(in.Payload), lease))
		}), key)
	case r < 31:
		w.learnClaim(w.event(lincheck.EventInput{Op: lincheck.EventReclaim, Key: key}, func() lincheck.EventOutput {
			return lincheck.ClaimOutput(ev.Reclaim(ctx, key, lease))
		}), key)
	case r < 36:
		tok := w.eventToken()
		w.learnClaim(w.event(lincheck.EventInput{Op: lincheck.EventTakeOver, Key: tok.Key, Token: tok.ID}, func() lincheck.EventOutput {
			return lincheck.ClaimOutput(ev.TakeOver(ctx, tok, lease))
		}), tok.Key)
	case r < 51:
		tok, result := w.eventToken(), w.tag("r")
		w.event(lincheck.EventInput{Op: lincheck.EventComplete, Key: tok.Key, Token: tok.ID, Result: result}, func() lincheck.EventOutput {
			return lincheck.ErrOutput(ev.Complete(ctx, tok, []byte(result)))
		})
	case r < 63:
		tok := w.eventToken()
		w.event(lincheck.EventInput{Op: lincheck.EventRelease, Key: tok.Key, Token: tok.ID}, func() lincheck.EventOutput {
			return lincheck.ErrOutput(ev.Release(ctx, tok))
		})
	case r < 69:
		tok := w.eventToken()
		w.event(lincheck.EventInput{Op: lincheck.EventExtend, Key: tok.Key, Token: tok.ID}, func() lincheck.EventOutput {
			_, err := ev.Extend(ctx, tok, lease)
			return lincheck.ErrOutput(err)
		})
	case r < 72:
		tok, reason := w.eventToken(), w.tag("f")
		w.event(lincheck.EventInput{Op: lincheck.EventFail, Key: tok.Key, Token: tok.ID, Reason: reason}, func() lincheck.EventOutput {
			return lincheck.ErrOutput(ev.Fail(ctx, tok, reason))
		})
	case r < 83:
		w.learnClaim(w.event(lincheck.EventInput{Op: lincheck.EventGet, Key: key}, func() lincheck.EventOutput {
			return lincheck.GetOutput(ev.Get(ctx, key))
		}), key)
	case r < 87:
		payload := w.tag("p")
		w.event(lincheck.EventInput{Op: lincheck.EventRecord, Key: key, Payload: payload}, func() lincheck.EventOutput {
			return lincheck.RecordOutput(ev.Record(ctx, key, []byte(payload)))
		})
	case r < 93:
		w.event(lincheck.EventInput{Op: lincheck.EventForget, Key: key}, func() lincheck.EventOutput {
			return lincheck.ErrOutput(ev.Forget(ctx, key))
		})
	default:
		w.event(lincheck.EventInput{Op: lincheck.EventRetry, Key: key}, func() lincheck.EventOutput {
			return lincheck.ErrOutput(ev.Retry(ctx, key))
		})
	}
}

// lock picks a lock to present, as eventToken does; a forged token is far
// below any issued one (tokens start at the clock in microseconds).
func (w *worker) lock() botstate.Lock {
	r := w.rng.IntN(20)
	switch {
	case len(w.locks) == 0 || r == 0:
		return botstate.Lock{Key: w.lockKey(), Token: uint64(1 + w.rng.IntN(1000))}
	case r < 11:
		return w.locks[len(w.locks)-1]
	}
	return w.locks[w.rng.IntN(len(w.locks))]
}

func (w *worker) learnLock(o lincheck.LockOutput, key string) {
	if o.Status == botstate.Acquired.String() {
		w.locks = remember(w.locks, botstate.Lock{Key: key, Token: o.Token})
	}
	for _, h := range o.Holders {
		w.locks = remember(w.locks, botstate.Lock{Key: key, Token: h.Token})
	}
}

func (w *worker) lockCall(in lincheck.LockInput, call func() lincheck.LockOutput) lincheck.LockOutput {
	return w.rec.Do(w.client, in, func() any { return call() }).(lincheck.LockOutput)
}

// policy is a random Acquire policy: every strategy, bounded and unbounded
// queues under both overflow rules, capped and uncapped concurrency.
func (w *worker) policy(in *lincheck.LockInput) {
	in.Strategy = []string{"reject", "queue", "debounce", "concurrent"}[w.rng.IntN(4)]
	switch in.Strategy {
	case "queue":
		in.QueueMax, in.DropNewest = []int{0, 0, 2, 4}[w.rng.IntN(4)], w.rng.IntN(2) == 0
	case "concurrent":
		in.MaxHolders, in.QueueWhenFull = []int{0, 2, 3}[w.rng.IntN(3)], w.rng.IntN(2) == 0
		if in.QueueWhenFull {
			in.QueueMax, in.DropNewest = []int{0, 3}[w.rng.IntN(2)], w.rng.IntN(2) == 0
		}
	}
}

func (w *worker) lockOp(ctx context.Context) {
	l, key, owner := w.lk, w.lockKey(), fmt.Sprintf("o%d", w.client)
	switch r := w.rng.IntN(100); {
	case r < 34:
		in := lincheck.LockInput{Op: lincheck.LockAcquire, Key: key, Owner: owner, Entry: w.tag("x")}
		w.policy(&in)
		w.learnLock(w.lockCall(in, func() lincheck.LockOutput {
			return lincheck.AcquireOutput(l.Acquire(ctx, key, owner, []byte(in.Entry), in.Policy(lease)))
		}), key)
	case r < 37:
		w.learnLock(w.lockCall(lincheck.LockInput{Op: lincheck.LockTakeOver, Key: key, Owner: owner}, func() lincheck.LockOutput {
			return lincheck.AcquireOutput(l.TakeOver(ctx, key, owner, lease))
		}), key)
	case r < 52:
		lk := w.lock()
		w.lockCall(lincheck.LockInput{Op: lincheck.LockHandover, Key: lk.Key, Token: lk.Token}, func() lincheck.LockOutput {
			return lincheck.HandoverOutput(l.Handover(ctx, lk, lease))
		})
	case r < 57:
		lk := w.lock()
		w.lockCall(lincheck.LockInput{Op: lincheck.LockNext, Key: lk.Key, Token: lk.Token}, func() lincheck.LockOutput {
			return lincheck.HandoverOutput(l.Next(ctx, lk, lease))
		})
	case r < 68:
		lk := w.lock()
		w.lockCall(lincheck.LockInput{Op: lincheck.LockRelease, Key: lk.Key, Token: lk.Token}, func() lincheck.LockOutput {
			return lincheck.EntriesOutput(l.Release(ctx, lk))
		})
	case r < 72:
		lk := w.lock()
		w.lockCall(lincheck.LockInput{Op: lincheck.LockAbandon, Key: lk.Key, Token: lk.Token}, func() lincheck.LockOutput {
			return lincheck.LockErrOutput(l.Abandon(ctx, lk))
		})
	case r < 78:
		lk := w.lock()
		w.lockCall(lincheck.LockInput{Op: lincheck.LockExtend, Key: lk.Key, Token: lk.Token}, func() lincheck.LockOutput {
			_, err := l.Extend(ctx, lk, lease)
			return lincheck.LockErrOutput(err)
		})
	case r < 80:
		w.lockCall(lincheck.LockInput{Op: lincheck.LockForceRelease, Key: key}, func() lincheck.LockOutput {
			return lincheck.EntriesOutput(l.ForceRelease(ctx, key))
		})
	default:
		w.learnLock(w.lockCall(lincheck.LockInput{Op: lincheck.LockInspect, Key: key}, func() lincheck.LockOutput {
			return lincheck.InspectOutput(l.Inspect(ctx, key))
		}), key)
	}
}
