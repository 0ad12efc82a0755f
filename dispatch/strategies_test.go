package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

// fast is a configuration for tests: short leases, so recovery takes
// fractions of a second.
var fast = Config{Lease: 600 * time.Millisecond, RecoverEvery: 50 * time.Millisecond,
	InterruptPoll: 20 * time.Millisecond, Backoff: func(int) time.Duration { return 20 * time.Millisecond }}

func TestQueueHandlesEachMessageOnceInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 2, fast)
		j := newJournal()
		f.handle("r", Route{Handler: j.wrap(sleepFor(3 * time.Millisecond))})
		want := keys("m", 30)
		for i, k := range want {
			out := f.dispatch(i, "r", Message{Key: k, Scope: "thread", Payload: []byte(k)})
			if out != Started && out != Queued {
				t.Fatalf("dispatch %s: %v", k, out)
			}
			if dup := f.dispatch(i+1, "r", Message{Key: k, Scope: "thread"}); dup != Duplicate {
				t.Fatalf("redelivery of %s: %v, want duplicate", k, dup)
			}
		}
		rs := j.waitFor(t, "30 messages", 20*time.Second, func(rs []run) bool { return countOK(rs) == len(want) })
		if got := okKeys(rs); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("handled %v, want %v in order", got, want)
		}
		if len(rs) != len(want) {
			t.Fatalf("%d runs for %d messages", len(rs), len(want))
		}
		if j.maxConc["thread"] != 1 {
			t.Fatalf("%d handlers of one thread ran at once", j.maxConc["thread"])
		}
		for _, r := range rs {
			if r.attempt != 1 || len(r.skipped) != 0 {
				t.Fatalf("run %+v: want attempt 1 and nothing skipped", r)
			}
		}
	})
}

// blocker is a handler that holds each message until released.
type blocker struct {
	started chan string
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan string, 100), release: make(chan struct{})}
}

func (b *blocker) fn(ctx context.Context, job *Job) error {
	b.started <- job.Key
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (b *blocker) waitStart(t *testing.T, key string) {
	t.Helper()
	select {
	case k := <-b.started:
		if k != key {
			t.Fatalf("handler started %s, want %s", k, key)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("handler of %s did not start", key)
	}
}

func TestQueueTellsTheHandlerWhatItSkipped(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 1, fast)
		j, bl := newJournal(), newBlocker()
		f.handle("r", Route{Handler: j.wrap(bl.fn), Policy: Policy{QueueMax: 2}})
		f.dispatch(0, "r", Message{Key: "m1", Scope: "s"})
		bl.waitStart(t, "m1")
		for _, k := range []string{"m2", "m3", "m4", "m5"} {
			if out := f.dispatch(0, "r", Message{Key: k, Scope: "s"}); out != Queued {
				t.Fatalf("%s: %v, want queued", k, out)
			}
		}
		close(bl.release)
		rs := j.waitFor(t, "three messages", 10*time.Second, func(rs []run) bool { return countOK(rs) == 3 })
		if fmt.Sprint(okKeys(rs)) != "[m1 m4 m5]" {
			t.Fatalf("handled %v, want [m1 m4 m5]", okKeys(rs))
		}
		if fmt.Sprint(rs[1].skipped) != "[m2 m3]" {
			t.Fatalf("m4's handler was told it skipped %v, want [m2 m3]", rs[1].skipped)
		}
		for _, k := range []string{"m2", "m3"} {
			if out := f.dispatch(0, "r", Message{Key: k, Scope: "s"}); out != Duplicate {
				t.Fatalf("redelivery of skipped %s: %v, want duplicate", k, out)
			}
		}
	})
}

func TestDropDiscardsWhileBusy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 2, fast)
		j, bl := newJournal(), newBlocker()
		obs := &observations{}
		f.ds[1].cfg.Observer = obs
		f.handle("r", Route{Handler: j.wrap(bl.fn), Policy: Policy{Mode: Drop}})
		f.dispatch(0, "r", Message{Key: "m1", Scope: "s"})
		bl.waitStart(t, "m1")
		if out := f.dispatch(1, "r", Message{Key: "m2", Scope: "s"}); out != Dropped {
			t.Fatalf("m2 while busy: %v, want dropped", out)
		}
		if out := f.dispatch(0, "r", Message{Key: "m2", Scope: "s"}); out != Duplicate {
			t.Fatalf("redelivery of dropped m2: %v, want duplicate", out)
		}
		close(bl.release)
		j.waitFor(t, "m1", 10*time.Second, func(rs []run) bool { return countOK(rs) == 1 })
		j.waitFor(t, "the lock free", 10*time.Second, func([]run) bool {
			st, _ := f.store.Locks().Inspect(context.Background(), lockKey("r", "s"))
			return len(st.Holders) == 0
		})
		if out := f.dispatch(1, "r", Message{Key: "m3", Scope: "s"}); out != Started {
			t.Fatalf("m3 when free: %v, want started", out)
		}
		rs := j.waitFor(t, "m3", 10*time.Second, func(rs []run) bool { return countOK(rs) == 2 })
		if fmt.Sprint(okKeys(rs)) != "[m1 m3]" {
			t.Fatalf("handled %v", okKeys(rs))
		}
		if obs.count(KindDropped) != 1 {
			t.Fatalf("dropped observed %d times", obs.count(KindDropped))
		}
	})
}

func TestDebounceHandlesTheLatestAfterQuiet(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 2, fast)
		j := newJournal()
		f.handle("r", Route{Handler: j.wrap(sleepFor(0)), Policy: Policy{Mode: Debounce, Quiet: 300 * time.Millisecond}})
		for i, k := range keys("m", 5) {
			f.dispatch(i, "r", Message{Key: k, Scope: "s"})
			time.Sleep(20 * time.Millisecond)
		}
		j.waitFor(t, "the latest", 10*time.Second, func(rs []run) bool { return countOK(rs) == 1 })
		time.Sleep(500 * time.Millisecond)
		rs := j.snapshot()
		if len(rs) != 1 || rs[0].key != "m004" {
			t.Fatalf("runs %+v, want one run of m004", rs)
		}
		if fmt.Sprint(rs[0].skipped) != "[m000 m001 m002 m003]" {
			t.Fatalf("told it skipped %v", rs[0].skipped)
		}
	})
}

func TestBurstDebouncesTheFirstThenQueues(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 1, fast)
		j, bl := newJournal(), newBlocker()
		f.handle("r", Route{Handler: j.wrap(bl.fn), Policy: Policy{Mode: Burst, Quiet: 300 * time.Millisecond}})
		for _, k := range []string{"b1", "b2", "b3"} {
			f.dispatch(0, "r", Message{Key: k, Scope: "s"})
			time.Sleep(20 * time.Millisecond)
		}
		bl.waitStart(t, "b3")
		for _, k := range []string{"q1", "q2"} {
			if out := f.dispatch(0, "r", Message{Key: k, Scope: "s"}); out != Queued {
				t.Fatalf("%s: %v", k, out)
			}
		}
		close(bl.release)
		rs := j.waitFor(t, "three runs", 10*time.Second, func(rs []run) bool { return countOK(rs) == 3 })
		if fmt.Sprint(okKeys(rs)) != "[b3 q1 q2]" {
			t.Fatalf("handled %v, want [b3 q1 q2]", okKeys(rs))
		}
		if fmt.Sprint(rs[0].skipped) != "[b1 b2]" || len(rs[1].skipped)+len(rs[2].skipped) != 0 {
			t.Fatalf("skipped: %v, %v, %v", rs[0].skipped, rs[1].skipped, rs[2].skipped)
		}
	})
}

func TestConcurrentCapsHandlersAcrossDispatchers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 3, fast)
		j := newJournal()
		f.handle("r", Route{Handler: j.wrap(sleepFor(30 * time.Millisecond)), Policy: Policy{Mode: Concurrent, Limit: 2}})
		want := keys("m", 24)
		for i, k := range want {
			f.dispatch(i, "r", Message{Key: k, Scope: "s"})
		}
		rs := j.waitFor(t, "every message", 20*time.Second, func(rs []run) bool { return countOK(rs) == len(want) })
		if len(rs) != len(want) {
			t.Fatalf("%d runs for %d messages", len(rs), len(want))
		}
		if j.maxConc["s"] != 2 {
			t.Fatalf("at most %d handlers ran at once, want exactly the limit 2", j.maxConc["s"])
		}
	})
}

func TestInterruptCancelsTheRunningHandler(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 2, fast)
		j, bl := newJournal(), newBlocker()
		f.handle("r", Route{Handler: j.wrap(bl.fn), Policy: Policy{Interrupt: true}})
		// Interrupted by a message to the same process (at once) and by
		// one to another process (by polling).
		for i, pair := range [][2]string{{"a1", "a2"}, {"b1", "b2"}} {
			scope := fmt.Sprintf("s%d", i)
			f.dispatch(0, "r", Message{Key: pair[0], Scope: scope})
			bl.waitStart(t, pair[0])
			f.dispatch(i, "r", Message{Key: pair[1], Scope: scope})
			bl.waitStart(t, pair[1])
			rs := j.waitFor(t, "the interrupted run", 10*time.Second, func(rs []run) bool { return len(rs) == 2*i+1 })
			r := rs[2*i]
			if r.key != pair[0] || !errors.Is(r.cause, ErrInterrupted) {
				t.Fatalf("run %+v, want %s interrupted", r, pair[0])
			}
			bl.release <- struct{}{}
			rs = j.waitFor(t, "the latest", 10*time.Second, func(rs []run) bool { return len(rs) == 2*i+2 })
			if r := rs[2*i+1]; r.key != pair[1] || r.err != nil || fmt.Sprint(r.skipped) != "["+pair[0]+"]" {
				t.Fatalf("run %+v, want %s told it skipped %s", r, pair[1], pair[0])
			}
		}
	})
}

func TestFailedHandlerIsRetriedThenParked(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 1, fast, botstate.WithMaxAttempts(3))
		obs := &observations{}
		f.ds[0].cfg.Observer = obs
		j := newJournal()
		var calls atomic.Int32
		f.handle("r", Route{Handler: j.wrap(func(ctx context.Context, job *Job) error {
			switch {
			case job.Key == "flaky" && job.Attempt < 3:
				return errors.New("flaky")
			case job.Key == "broken":
				return errors.New("broken")
			case job.Key == "poison":
				calls.Add(1)
				return Permanent(errors.New("cannot parse"))
			}
			return nil
		})})
		for _, k := range []string{"flaky", "broken", "poison"} {
			f.dispatch(0, "r", Message{Key: k, Scope: k})
		}
		rs := j.waitFor(t, "flaky handled, broken tried three times", 20*time.Second, func(rs []run) bool {
			n := 0
			for _, r := range rs {
				if r.key == "broken" {
					n++
				}
			}
			return countOK(rs) == 1 && n == 3
		})
		for _, r := range rs {
			if r.key == "flaky" && r.err == nil && r.attempt != 3 {
				t.Fatalf("flaky succeeded on attempt %d, want 3", r.attempt)
			}
		}
		ev := f.store.Events()
		for _, k := range []string{"broken", "poison"} {
			deadline := time.Now().Add(5 * time.Second)
			for {
				e, err := ev.Get(context.Background(), k)
				if err == nil && e.Status == botstate.EventFailed {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %+v, %v; want failed", k, e, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		time.Sleep(200 * time.Millisecond)
		if n := calls.Load(); n != 1 {
			t.Fatalf("a permanent error was tried %d times", n)
		}
		if obs.count(KindRetried) != 4 || obs.count(KindFailed) != 2 || obs.count(KindHandled) != 1 {
			t.Fatalf("observed retried %d, failed %d, handled %d; want 4, 2, 1",
				obs.count(KindRetried), obs.count(KindFailed), obs.count(KindHandled))
		}
		// An operator retries the broken one, which now works.
		if err := ev.Retry(context.Background(), "broken"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestHandlerLongerThanItsLeaseRunsOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := fast
		cfg.Lease = 300 * time.Millisecond
		f := newFleet(t, b, 2, cfg)
		j := newJournal()
		f.handle("r", Route{Handler: j.wrap(sleepFor(3 * cfg.Lease))})
		f.dispatch(0, "r", Message{Key: "long", Scope: "s"})
		stop := time.After(4 * cfg.Lease)
	redeliver:
		for i := 1; ; i++ {
			select {
			case <-stop:
				break redeliver
			case <-time.After(cfg.Lease / 4):
			}
			if out := f.dispatch(i, "r", Message{Key: "long", Scope: "s"}); out != Duplicate {
				t.Fatalf("redelivery %d while the handler runs: %v", i, out)
			}
		}
		j.waitFor(t, "the run", 10*time.Second, func(rs []run) bool { return len(rs) >= 1 })
		time.Sleep(2 * cfg.Lease)
		rs := j.snapshot()
		if len(rs) != 1 || rs[0].err != nil {
			t.Fatalf("runs %+v, want one successful run", rs)
		}
	})
}

// deadHolder leaves in the store what a process that died while handling
// key in scope leaves: a lapsing claim and a lapsing lock whose entry is
// key's.
func deadHolder(t *testing.T, st *botstate.Store, route, scope, key string, ttl time.Duration) {
	t.Helper()
	staleHolder(t, st, route, scope, key, ttl, ttl)
}

// staleHolder leaves in the store what a worker handling key in scope
// holds, and returns it: key's claim for lease, and the scope's lock, with
// key's entry, for lockTTL.
func staleHolder(t *testing.T, st *botstate.Store, route, scope, key string, lease, lockTTL time.Duration) (botstate.EventToken, botstate.Lock) {
	t.Helper()
	ctx := context.Background()
	env := envelope{route: route, scope: scope, payload: []byte(key)}
	c, err := st.Events().Claim(ctx, key, env.encode(), lease)
	if err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim: %v %v", c.Status, err)
	}
	e := entry{key: key, token: c.Token.ID, payload: []byte(key)}
	r, err := st.Locks().Acquire(ctx, lockKey(route, scope), "dead", e.encode(), botstate.LockPolicy{Strategy: botstate.Queue, TTL: lockTTL})
	if err != nil || r.Status != botstate.Acquired {
		t.Fatalf("acquire: %v %v", r.Status, err)
	}
	return c.Token, r.Lock
}

func TestQueueOfADeadHolderIsHandledInOrderWithNoNewMessage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 2, fast)
		j := newJournal()
		f.handle("r", Route{Handler: j.wrap(sleepFor(time.Millisecond))})
		deadHolder(t, f.store, "r", "s", "m0", 400*time.Millisecond)
		for i, k := range []string{"m1", "m2", "m3"} {
			if out := f.dispatch(i, "r", Message{Key: k, Scope: "s"}); out != Queued {
				t.Fatalf("%s behind the dead holder: %v", k, out)
			}
		}
		rs := j.waitFor(t, "the queue", 10*time.Second, func(rs []run) bool { return countOK(rs) == 4 })
		if fmt.Sprint(okKeys(rs)) != "[m0 m1 m2 m3]" {
			t.Fatalf("handled %v, want the dead holder's message first, then the queue in order", okKeys(rs))
		}
		if rs[0].attempt != 2 {
			t.Fatalf("the dead holder's message ran as attempt %d, want 2", rs[0].attempt)
		}
	})
}

// TestRedrivenMessageIsHandledBesideItsOwnEntry: a holder that lost its
// scope's lock while handling m0, and gave m0 back at once as a worker does
// then, or that died (m0's claim lapses before its lock), leaves m0's entry
// on the lock. Recovery re-drives m0 into the scope while that entry still
// holds it; then the lock lapses, and the entry comes back to the front of
// the queue, before the re-driven copy. Whatever the policy, m0 is handled
// once. Before, it never was: under Drop, or with a full queue that drops
// the newest, the re-drive found the scope busy (with m0 itself) and
// settled m0 as dropped; under Debounce, Burst and Interrupt the worker
// that took the front entry skipped m0 in favour of its own copy, and the
// copy found m0 completed (as skipped).
func TestRedrivenMessageIsHandledBesideItsOwnEntry(t *testing.T) {
	policies := []struct {
		name string
		pol  Policy
		want []string // handled, in order
	}{
		{"queue", Policy{}, []string{"m0"}},
		{"drop", Policy{Mode: Drop}, []string{"m0"}},
		{"full queue", Policy{QueueMax: 1, OnFull: botstate.DropNewest}, []string{"m0", "m1"}},
		{"debounce", Policy{Mode: Debounce, Quiet: 50 * time.Millisecond}, []string{"m0"}},
		{"burst", Policy{Mode: Burst, Quiet: 50 * time.Millisecond}, []string{"m0"}},
		{"interrupt", Policy{Interrupt: true}, []string{"m0"}},
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, p := range policies {
			for _, died := range []bool{false, true} {
				how := "lost its lock"
				if died {
					how = "died"
				}
				t.Run(p.name+"/"+how, func(t *testing.T) {
					cfg := fast
					cfg.RecoverEvery = -1 // the recovery passes are made below, in order
					f := newFleet(t, b, 1, cfg)
					j := newJournal()
					// Long enough for Interrupt's poll to see the copy.
					f.handle("r", Route{Handler: j.wrap(sleepFor(100 * time.Millisecond)), Policy: p.pol})
					ctx := context.Background()
					ev, lk, d := f.store.Events(), f.store.Locks(), f.ds[0]
					lease := time.Hour
					if died {
						lease = 100 * time.Millisecond
					}
					tok, lock := staleHolder(t, f.store, "r", "s", "m0", lease, time.Hour)
					if len(p.want) > 1 {
						if out := f.dispatch(0, "r", Message{Key: "m1", Scope: "s"}); out != Queued {
							t.Fatalf("m1 behind m0: %v, want queued", out)
						}
					}
					if died {
						time.Sleep(2 * lease)
					} else if err := ev.ReleaseAfter(ctx, tok, 0, "handler stopped: lock lost or shutting down"); err != nil {
						t.Fatal(err) // what worker.giveBack does
					}
					if _, err := d.Recover(ctx); err != nil { // re-drives m0
						t.Fatal(err)
					}
					if err := lk.Abandon(ctx, lock); err != nil { // the lock lapses
						t.Fatal(err)
					}
					if _, err := d.Recover(ctx); err != nil { // takes the scope over
						t.Fatal(err)
					}
					j.waitFor(t, "everything settled", 10*time.Second, func([]run) bool {
						evs, err := ev.Pending(ctx, 10)
						st, ierr := lk.Inspect(ctx, lockKey("r", "s"))
						return err == nil && ierr == nil && len(evs) == 0 && len(st.Holders) == 0 && len(st.Pending) == 0
					})
					rs := j.snapshot()
					if fmt.Sprint(okKeys(rs)) != fmt.Sprint(p.want) || len(rs) != len(p.want) {
						e, err := ev.Get(ctx, "m0")
						t.Fatalf("runs %+v, want %v handled once each; m0 in the store: %v %s (%v)", rs, p.want, e.Status, e.Result, err)
					}
					if e, err := ev.Get(ctx, "m0"); err != nil || e.Status != botstate.EventCompleted || len(e.Result) > 0 {
						t.Fatalf("m0 in the store: %v %s (%v), want completed by its handler", e.Status, e.Result, err)
					}
				})
			}
		}
	})
}

func TestCloseFinishesOrGivesBackAndLeavesTheQueue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newFleet(t, b, 2, fast)
		j, bl := newJournal(), newBlocker()
		slow := Route{Handler: j.wrap(bl.fn)}
		if err := f.ds[0].Handle("r", slow); err != nil {
			t.Fatal(err)
		}
		f.dispatch(0, "r", Message{Key: "m1", Scope: "s"})
		bl.waitStart(t, "m1")
		f.dispatch(0, "r", Message{Key: "m2", Scope: "s"})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := f.ds[0].Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("close with a handler that never ends: %v", err)
		}
		if r := j.snapshot(); len(r) != 1 || !errors.Is(r[0].cause, ErrShutdown) {
			t.Fatalf("runs %+v, want m1 cancelled by shutdown", r)
		}
		if _, err := f.ds[0].Dispatch(context.Background(), "r", Message{Key: "m3", Scope: "s"}); !errors.Is(err, botstate.ErrClosed) {
			t.Fatalf("dispatch after close: %v", err)
		}
		// The other process takes over: m1 first, then m2.
		if err := f.ds[1].Handle("r", Route{Handler: j.wrap(sleepFor(0))}); err != nil {
			t.Fatal(err)
		}
		rs := j.waitFor(t, "m1 and m2", 10*time.Second, func(rs []run) bool { return countOK(rs) == 2 })
		if fmt.Sprint(okKeys(rs)) != "[m1 m2]" {
			t.Fatalf("handled %v, want [m1 m2]", okKeys(rs))
		}
	})
}

// A worker that finishes its message during shutdown leaves the scope with
// only the messages still to handle: the one it handled does not come back
// to the front of the queue, and with none waiting the scope is free.
func TestCloseAfterAHandledMessageLeavesOnlyWhatWaits(t *testing.T) {
	for _, waiting := range [][]string{{"m2", "m3"}, nil} {
		t.Run(fmt.Sprint(len(waiting), " waiting"), func(t *testing.T) {
			f := newFleet(t, backend{name: "mem", url: "mem://"}, 1, fast)
			bl := newBlocker()
			f.handle("r", Route{Handler: bl.fn})
			f.dispatch(0, "r", Message{Key: "m1", Scope: "s"})
			bl.waitStart(t, "m1")
			for _, k := range waiting {
				f.dispatch(0, "r", Message{Key: k, Scope: "s"})
			}
			closed := make(chan error, 1)
			go func() { closed <- f.ds[0].Close(context.Background()) }()
			for !f.ds[0].isClosing() {
				time.Sleep(time.Millisecond)
			}
			close(bl.release)
			if err := <-closed; err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if e, err := f.store.Events().Get(ctx, "m1"); err != nil || e.Status != botstate.EventCompleted {
				t.Fatalf("m1: %+v %v, want completed", e, err)
			}
			st, err := f.store.Locks().Inspect(ctx, lockKey("r", "s"))
			if err != nil && !errors.Is(err, botstate.ErrNotFound) {
				t.Fatal(err)
			}
			var left []string
			for _, e := range st.Pending {
				it, err := itemOf(e, "s")
				if err != nil {
					t.Fatal(err)
				}
				left = append(left, it.msg.Key)
			}
			if len(st.Holders) != 0 || fmt.Sprint(left) != fmt.Sprint(waiting) {
				t.Fatalf("after close: %d holders, waiting %v; want none and %v", len(st.Holders), left, waiting)
			}
			lapsed, err := f.store.Locks().Lapsed(ctx, 10)
			if err != nil || len(lapsed) != min(len(waiting), 1) {
				t.Fatalf("lapsed %v %v, want the scope listed only when messages wait", lapsed, err)
			}
		})
	}
}

func TestCloseWaitsForRunningHandlers(t *testing.T) {
	f := newFleet(t, backend{name: "mem", url: "mem://"}, 1, fast)
	var done atomic.Bool
	f.handle("r", Route{Handler: func(ctx context.Context, job *Job) error {
		time.Sleep(100 * time.Millisecond)
		done.Store(true)
		return nil
	}})
	f.dispatch(0, "r", Message{Key: "m", Scope: "s"})
	if err := f.ds[0].Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !done.Load() {
		t.Fatal("close returned before the handler finished")
	}
	e, err := f.store.Events().Get(context.Background(), "m")
	if err != nil || e.Status != botstate.EventCompleted {
		t.Fatalf("event after close: %+v %v", e, err)
	}
}

func TestBadInputIsRefused(t *testing.T) {
	if _, err := New(nil, Config{}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Fatalf("nil store: %v", err)
	}
	st, _ := botstate.Open(context.Background(), "mem://")
	defer st.Close()
	if _, err := New(st, Config{Lease: time.Nanosecond}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Fatalf("tiny lease: %v", err)
	}
	d, err := New(st, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	h := func(context.Context, *Job) error { return nil }
	for name, r := range map[string]Route{
		"no handler":             {},
		"unknown mode":           {Handler: h, Policy: Policy{Mode: 9}},
		"negative queue":         {Handler: h, Policy: Policy{QueueMax: -1}},
		"concurrent no limit":    {Handler: h, Policy: Policy{Mode: Concurrent}},
		"limit without conc":     {Handler: h, Policy: Policy{Limit: 2}},
		"interrupt with drop":    {Handler: h, Policy: Policy{Mode: Drop, Interrupt: true}},
		"negative quiet":         {Handler: h, Policy: Policy{Mode: Debounce, Quiet: -1}},
		"negative entry ttl":     {Handler: h, Policy: Policy{EntryTTL: -1}},
		"unknown overflow":       {Handler: h, Policy: Policy{OnFull: 7}},
		"interrupt + concurrent": {Handler: h, Policy: Policy{Mode: Concurrent, Limit: 2, Interrupt: true}},
	} {
		if err := d.Handle("r", r); !errors.Is(err, botstate.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"", "a:b", "has space"} {
		if err := d.Handle(name, Route{Handler: h}); !errors.Is(err, botstate.ErrInvalidArgument) {
			t.Errorf("route name %q: %v", name, err)
		}
	}
	if err := d.Handle("r", Route{Handler: h}); err != nil {
		t.Fatal(err)
	}
	if err := d.Handle("r", Route{Handler: h}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("duplicate route: %v", err)
	}
	d.Handle("per-scope", Route{Handler: h, PolicyFor: func(string) Policy { return Policy{Mode: 42} }})
	ctx := context.Background()
	for name, c := range map[string]struct {
		route string
		m     Message
	}{
		"unknown route":    {"nope", Message{Key: "k", Scope: "s"}},
		"no scope":         {"r", Message{Key: "k"}},
		"no key":           {"r", Message{Scope: "s"}},
		"bad scope policy": {"per-scope", Message{Key: "k", Scope: "s"}},
	} {
		if _, err := d.Dispatch(ctx, c.route, c.m); !errors.Is(err, botstate.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	//lint:ignore SA1012 a nil context is the bad input under test
	if _, err := d.Dispatch(nil, "r", Message{Key: "k", Scope: "s"}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("nil context: %v", err)
	}
	if ev, _ := st.Events().Pending(ctx, 0); len(ev) != 0 {
		t.Fatalf("refused dispatches left events: %+v", ev)
	}
}
