package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/botstate/botstate"
)

// item is a message a worker is about to handle.
type item struct {
	msg Message
	// claim is set (Status Claimed) once this process holds the message's
	// claim; until then token is the claim the enqueuer handed to the queue.
	claim    botstate.Claim
	token    string
	enqueued time.Time
}

func (it *item) valid() bool { return it.msg.Key != "" }

func itemOf(e botstate.Entry, scope string) (item, error) {
	en, err := decodeEntry(e.Payload)
	if err != nil {
		return item{}, err
	}
	return item{msg: Message{Key: en.key, Scope: scope, Payload: en.payload}, token: en.token, enqueued: e.EnqueuedAt}, nil
}

// worker holds one scope's lock in this process and handles the scope's
// messages one after another until the queue is empty.
type worker struct {
	d          *Dispatcher
	r          *route
	pol        Policy
	key, scope string
	lock       botstate.Lock
	// skipped are the messages to tell the next handler about.
	skipped []Message
	// gaveBack: the message in hand went back unhandled (shutdown).
	gaveBack bool

	mu        sync.Mutex
	cancelJob context.CancelCauseFunc // set while a handler runs
}

func (w *worker) interrupt() {
	w.mu.Lock()
	if w.cancelJob != nil {
		w.cancelJob(ErrInterrupted)
	}
	w.mu.Unlock()
}

// stopHandler cancels the running handler: Close stopped waiting.
func (w *worker) stopHandler() {
	w.mu.Lock()
	if w.cancelJob != nil {
		w.cancelJob(ErrShutdown)
	}
	w.mu.Unlock()
}

func (w *worker) setCancel(c context.CancelCauseFunc) {
	w.mu.Lock()
	w.cancelJob = c
	if c != nil && w.d.shutdown.Load() {
		c(ErrShutdown)
	}
	w.mu.Unlock()
}

// call returns a context for one store call made on the worker's behalf
// (see Dispatcher.callContext).
func (w *worker) call() (context.Context, context.CancelFunc) {
	return w.d.callContext(), func() {}
}

func (w *worker) obs(it *item, k Kind) Observation {
	return Observation{Kind: k, Route: w.r.name, Scope: w.scope, Key: it.msg.Key, Attempt: it.claim.Attempts}
}

// run handles first, then every message Handover brings, and lets the lock
// go when the queue is empty. On any store error it stops without
// releasing: the lock lapses and recovery (here or elsewhere) takes the
// queue over, with the message in hand back in front.
func (w *worker) run(first item, skipped []botstate.Entry) {
	defer w.d.workerDone(w)
	w.takeSkipped(skipped)
	cur := first
	burst := w.pol.Mode == Burst
	for {
		w.gaveBack = false
		if cur.valid() {
			lost, err := w.step(&cur, burst)
			if err != nil {
				w.d.log.Error("dispatch: worker stops; recovery will take the scope over", "lock", w.key, "err", err)
				return
			}
			if lost {
				return
			}
			burst = false
		}
		if w.d.isClosing() {
			w.leave()
			return
		}
		ctx, cancel := w.call()
		if w.d.fault == faultRelease {
			_, _ = w.d.lk.Release(ctx, w.lock)
			cancel()
			return
		}
		h, err := w.d.lk.Handover(ctx, w.lock, w.d.lockTTL)
		cancel()
		if err != nil {
			if !errors.Is(err, botstate.ErrNotOwner) {
				w.d.log.Error("dispatch: handover failed; recovery will take the scope over", "lock", w.key, "err", err)
			}
			return
		}
		w.takeSkipped(h.Skipped)
		if !h.Held {
			return
		}
		w.lock = h.Lock
		if cur, err = itemOf(*h.Next, w.scope); err != nil {
			w.d.log.Error("dispatch: undecodable lock entry; skipping it", "lock", w.key, "err", err)
		}
	}
}

// leave gives the scope up at shutdown, leaving its waiting messages to
// whoever takes it next (another process, or this one restarted, through
// recovery). A message in hand that went back unhandled keeps its place at
// the front of the queue (Abandon); a settled one must not come back, so
// the worker first hands over, then abandons the message it is handed.
func (w *worker) leave() {
	ctx, cancel := w.call()
	defer cancel()
	lk := w.lock
	if !w.gaveBack {
		h, err := w.d.lk.Handover(ctx, lk, w.d.lockTTL)
		if err != nil {
			if !errors.Is(err, botstate.ErrNotOwner) {
				w.d.log.Error("dispatch: handing a lock over at shutdown", "lock", w.key, "err", err)
			}
			return
		}
		w.takeSkipped(h.Skipped)
		if !h.Held {
			return
		}
		lk = h.Lock
	}
	if err := w.d.lk.Abandon(ctx, lk); err != nil && !errors.Is(err, botstate.ErrNotOwner) {
		w.d.log.Error("dispatch: abandoning a lock at shutdown", "lock", w.key, "err", err)
	}
}

// step takes cur's claim, waits out the policy's quiet period, and handles
// the message it ends with. lost reports the lock lost.
func (w *worker) step(cur *item, burst bool) (lost bool, err error) {
	if ok, err := w.take(cur, true); !ok || err != nil {
		return false, err
	}
	switch {
	case w.pol.Mode == Debounce:
		// Wait for quiet; a newer message replaces the one in hand.
		for {
			if lost, err := w.hold(cur, w.pol.quiet()); lost || err != nil || !cur.valid() {
				return lost, err
			}
			replaced, err := w.supersede(cur)
			if err != nil || !cur.valid() {
				return errors.Is(err, botstate.ErrNotOwner), ignoreLost(err)
			}
			if !replaced {
				break
			}
		}
	case burst:
		// The first messages of a burst: those queued within the quiet
		// period after the first replace it; later ones wait their turn.
		end := time.Now().Add(w.pol.quiet())
		if lost, err := w.hold(cur, w.pol.quiet()); lost || err != nil || !cur.valid() {
			return lost, err
		}
		for {
			ctx, cancel := w.call()
			st, err := w.d.lk.Inspect(ctx, w.key)
			cancel()
			if err != nil {
				return false, err
			}
			if len(st.Pending) == 0 || st.Pending[0].EnqueuedAt.After(end) {
				break
			}
			replaced, err := w.supersede(cur)
			if err != nil || !cur.valid() {
				return errors.Is(err, botstate.ErrNotOwner), ignoreLost(err)
			}
			if !replaced {
				break
			}
		}
	}
	if w.pol.Interrupt {
		// Answer the latest: a message already waiting supersedes this one.
		ctx, cancel := w.call()
		st, err := w.d.lk.Inspect(ctx, w.key)
		cancel()
		if err != nil {
			return false, err
		}
		if otherWaits(st.Pending, cur.msg.Key) {
			w.skip(cur)
			return false, nil
		}
	}
	return w.handle(cur), nil
}

// otherWaits reports whether a message other than key waits in pending. The
// message in hand can wait there too: when a holder lost its lock or died,
// recovery re-drives the message into the queue while the holder's entry of
// it comes back to the front, and the worker that takes the front entry
// then finds the copy behind it. A copy is no newer message: skipping the
// message in its favour would settle it unhandled, and the copy then finds
// it completed.
func otherWaits(pending []botstate.Entry, key string) bool {
	for _, e := range pending {
		if en, err := decodeEntry(e.Payload); err != nil || en.key != key {
			return true
		}
	}
	return false
}

func ignoreLost(err error) error {
	if errors.Is(err, botstate.ErrNotOwner) {
		return nil
	}
	return err
}

// supersede pops the next waiting message, keeping the lock. When there is
// one, cur is skipped in its favour (cur and then the entries the lock
// skipped, in age order) and replaced by it, claimed; replaced reports that.
// A copy of cur (see otherWaits) is dropped instead, cur kept, and replaced
// reported too, so that the caller looks again.
func (w *worker) supersede(cur *item) (replaced bool, err error) {
	ctx, cancel := w.call()
	h, err := w.d.lk.Next(ctx, w.lock, w.d.lockTTL)
	cancel()
	if err != nil {
		return false, err
	}
	w.lock = h.Lock
	var next item
	if h.Next != nil {
		if next, err = itemOf(*h.Next, w.scope); err != nil {
			w.d.log.Error("dispatch: undecodable lock entry; skipping it", "lock", w.key, "err", err)
		}
	}
	if next.valid() && next.msg.Key == cur.msg.Key {
		// This worker holds the message's claim: the copy's is stale.
		w.takeSkipped(h.Skipped)
		return true, nil
	}
	if next.valid() {
		w.skip(cur)
		*cur = next
	}
	w.takeSkipped(h.Skipped)
	if !next.valid() {
		return false, nil
	}
	if ok, err := w.take(cur, true); !ok || err != nil {
		*cur = item{}
		return false, err
	}
	return true, nil
}

// take makes sure this process holds its claim: the enqueuer handed its
// claim to the queue, and the worker takes it over. ok is false when the
// message is not to be handled here: done or failed.
//
// A message whose claim another worker holds while this one holds its
// scope was left mid-call by a worker that died or timed out, or is being
// re-driven by recovery on its way back to the queue: its claim will lapse
// or come back within a lease. With wait, take waits for that (keeping the
// lock) rather than skip the message and break the scope's order.
func (w *worker) take(it *item, wait bool) (ok bool, err error) {
	if it.claim.Status == botstate.Claimed {
		return true, nil
	}
	if w.d.fault == faultNoClaim {
		it.claim = botstate.Claim{Status: botstate.Claimed, Token: botstate.EventToken{Key: it.msg.Key, ID: "unclaimed"}, Attempts: 1}
		return true, nil
	}
	deadline := time.Now().Add(2 * w.d.cfg.Lease)
	for {
		c, err := w.claim(it)
		if err != nil {
			return false, err
		}
		it.claim = c
		switch c.Status {
		case botstate.Claimed:
			return true, nil
		case botstate.Failed:
			w.d.observe(w.obs(it, KindFailed))
			return false, nil
		case botstate.InProgress:
			if !wait || time.Now().After(deadline) {
				return false, nil
			}
			if err := w.pause(w.d.cfg.Lease / 4); err != nil {
				return false, err
			}
		default:
			return false, nil
		}
	}
}

// claim takes over the claim an entry carries, or claims afresh a message
// whose event was forgotten (retention, limit).
func (w *worker) claim(it *item) (c botstate.Claim, err error) {
	ctx, cancel := w.call()
	defer cancel()
	if it.token != "" {
		c, err = w.d.ev.TakeOver(ctx, botstate.EventToken{Key: it.msg.Key, ID: it.token}, w.d.cfg.Lease)
	}
	if it.token == "" || errors.Is(err, botstate.ErrNotFound) {
		env := envelope{route: w.r.name, scope: w.scope, payload: it.msg.Payload}
		c, err = w.d.ev.Claim(ctx, it.msg.Key, env.encode(), w.d.cfg.Lease)
	}
	return c, err
}

// pause waits for d holding the lock, renewing it when half its lease is
// gone.
func (w *worker) pause(d time.Duration) error {
	select {
	case <-time.After(d):
	case <-w.d.runCtx.Done():
		return context.Cause(w.d.runCtx)
	}
	if time.Now().Add(w.d.lockTTL / 2).Before(w.lock.ExpiresAt) {
		return nil
	}
	ctx, cancel := w.call()
	defer cancel()
	lk, err := w.d.lk.Extend(ctx, w.lock, w.d.lockTTL)
	if err != nil {
		return err
	}
	w.lock = lk
	return nil
}

// skip settles a message this worker holds the claim of as skipped, and
// keeps it to tell the next handler.
func (w *worker) skip(it *item) {
	ctx, cancel := w.call()
	defer cancel()
	if err := w.d.ev.Complete(ctx, it.claim.Token, resultSkipped); err != nil {
		if !errors.Is(err, botstate.ErrNotOwner) {
			w.d.log.Error("dispatch: settling a skipped message", "lock", w.key, "key", it.msg.Key, "err", err)
		}
		return
	}
	w.skipped = append(w.skipped, it.msg)
	w.d.observe(w.obs(it, KindSkipped))
}

// takeSkipped settles the entries the lock reports skipped (dropped,
// replaced, lapsed) and keeps them to tell the next handler.
func (w *worker) takeSkipped(es []botstate.Entry) {
	for _, e := range es {
		it, err := itemOf(e, w.scope)
		if err != nil {
			continue
		}
		if ok, err := w.take(&it, false); ok && err == nil {
			w.skip(&it)
		}
	}
}

// hold keeps the lock and its claim for d (a quiet period). It clears
// it when the claim was lost, and reports the lock lost.
func (w *worker) hold(it *item, d time.Duration) (lost bool, err error) {
	lctx, lhb := w.d.lk.Heartbeat(w.d.runCtx, w.lock, w.d.lockTTL)
	cctx, chb := w.d.ev.Heartbeat(lctx, it.claim, w.d.cfg.Lease)
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-cctx.Done():
	}
	t.Stop()
	c, claimErr := chb.Stop()
	lk, lockErr := lhb.Stop()
	if lockErr != nil {
		w.giveBack(it, claimErr)
		return true, nil
	}
	w.lock = lk
	if claimErr != nil {
		*it = item{}
		return false, nil
	}
	it.claim = c
	if err := w.d.runCtx.Err(); err != nil {
		w.giveBack(it, nil)
		*it = item{}
	}
	return false, nil
}

// giveBack releases a claim whose handling stopped early (lock lost,
// shutdown), due at once, so whoever holds the scope next handles it.
func (w *worker) giveBack(it *item, claimErr error) {
	if claimErr != nil {
		return
	}
	ctx, cancel := w.call()
	defer cancel()
	if err := w.d.ev.ReleaseAfter(ctx, it.claim.Token, 0, "handler stopped: lock lost or shutting down"); err != nil && !errors.Is(err, botstate.ErrNotOwner) {
		w.d.log.Error("dispatch: giving a message back", "lock", w.key, "key", it.msg.Key, "err", err)
	}
}

// handle runs the handler on it with the claim and the lock renewed, then
// settles the message by the outcome. It reports the lock lost.
func (w *worker) handle(it *item) (lost bool) {
	d := w.d
	start := time.Now()
	if ok, lost := w.fresh(it, start); !ok {
		return lost
	}
	jctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ka := w.keepAlive(jctx, cancel, it, start)
	w.setCancel(cancel)
	stopPoll := w.pollInterrupts(jctx, cancel, it.msg.Key)
	job := &Job{Message: it.msg, Route: w.r.name, Attempt: it.claim.Attempts, Skipped: w.skipped}
	w.skipped = nil
	err := safeCall(w.r.Handler, jctx, job)
	o := w.obs(it, 0)
	o.Latency = time.Since(start)
	stopPoll()
	w.setCancel(nil)
	cause := context.Cause(jctx)
	claimErr, lockErr := ka.stop()
	ctx, cancelCall := w.call()
	defer cancelCall()
	tok := it.claim.Token
	var settleErr error
	switch {
	case err == nil:
		o.Kind = KindHandled
		settleErr = w.complete(it.claim)
	case claimErr != nil:
		o.Kind, o.Err = KindLost, err
	case lockErr != nil || errors.Is(cause, ErrShutdown):
		o.Kind, o.Err = KindLost, err
		w.giveBack(it, nil)
		w.gaveBack = true
	case errors.Is(cause, ErrInterrupted):
		w.skip(it)
		return false
	case isPermanent(err):
		o.Kind, o.Err = KindFailed, err
		settleErr = d.ev.Fail(ctx, tok, err.Error())
	default:
		o.Kind, o.Err = KindRetried, err
		if m := d.store.MaxAttempts(); m > 0 && it.claim.Attempts >= m {
			o.Kind = KindFailed
		}
		settleErr = d.ev.ReleaseAfter(ctx, tok, d.cfg.Backoff(it.claim.Attempts), err.Error())
	}
	if settleErr != nil {
		// Taken over meanwhile (ErrNotOwner) or the store failed: either way
		// the message is someone else's, or recovery's, now.
		o.Kind, o.Err = KindLost, settleErr
		if !errors.Is(settleErr, botstate.ErrNotOwner) {
			d.log.Error("dispatch: settling a message", "lock", w.key, "key", it.msg.Key, "err", settleErr)
		}
	}
	d.observe(o)
	return lockErr != nil
}

// fresh makes sure the lock and its claim have most of their lease left
// before a handler starts, renewing them when not: a process that was
// stopped (or starved) past its leases learns here, before running the
// handler, that another worker took its message or its scope over. ok is
// false when the handler must not run; lost reports the lock lost.
func (w *worker) fresh(it *item, now time.Time) (ok, lost bool) {
	if now.Add(w.d.lockTTL / 2).After(w.lock.ExpiresAt) {
		ctx, cancel := w.call()
		defer cancel()
		lk, err := w.d.lk.Extend(ctx, w.lock, w.d.lockTTL)
		if err != nil {
			w.giveBack(it, nil)
			return false, true
		}
		w.lock = lk
	}
	if now.Add(w.d.cfg.Lease*3/4).After(it.claim.LeaseUntil) && w.d.fault != faultNoClaim {
		ctx, cancel := w.call()
		defer cancel()
		until, err := w.d.ev.Extend(ctx, it.claim.Token, w.d.cfg.Lease)
		if err != nil {
			if !errors.Is(err, botstate.ErrNotOwner) {
				w.giveBack(it, nil)
			}
			return false, false
		}
		it.claim.LeaseUntil = until
	}
	return true, false
}

// complete stores a handled message's completion, trying again when a call
// fails without an answer: until it lands the message is still this
// worker's, and moving on would leave it to be re-driven out of order.
func (w *worker) complete(c botstate.Claim) error {
	if w.d.fault == faultNoClaim {
		return nil
	}
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			time.Sleep(time.Duration(try) * 50 * time.Millisecond)
		}
		ctx, cancel := w.call()
		err = w.d.ev.Complete(ctx, c.Token, nil)
		if errors.Is(err, botstate.ErrNotOwner) && try > 0 {
			// The earlier call may have landed after all: then the event
			// is completed with the attempt count of this claim (a worker
			// that took it over since would have counted one more).
			e, gerr := w.d.ev.Get(ctx, c.Token.Key)
			if gerr == nil && e.Status == botstate.EventCompleted && len(e.Result) == 0 && e.Attempts == c.Attempts {
				err = nil
			}
		}
		cancel()
		if err == nil || errors.Is(err, botstate.ErrNotOwner) {
			return err
		}
	}
	return err
}

// keepAlive renews the lock and a claim while a handler runs. Renewal
// starts only for a handler that has run a quarter of the lease: the
// dispatcher's renewal loop, which looks every eighth of a lease, then
// renews both at once and hands them to Heartbeat. A quick handler so
// costs no timer and no goroutine. A loss cancels the handler's context
// with the heartbeat's cause (botstate.ErrLockLost or
// botstate.ErrClaimLost).
type keepAlive struct {
	w       *worker
	ctx     context.Context
	cancel  context.CancelCauseFunc
	started time.Time
	mu      sync.Mutex
	begun   bool
	lhb     *botstate.Heartbeat
	chb     *botstate.ClaimHeartbeat
	lost    error // a loss found by the first renewal
	claim   botstate.Claim
	halted  bool
	// the registry's links
	prev, next *keepAlive
	shard      uint8
}

func (w *worker) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, it *item, now time.Time) *keepAlive {
	k := &keepAlive{w: w, ctx: ctx, cancel: cancel, claim: it.claim, started: now}
	w.d.inflight.add(k)
	return k
}

// due reports whether k's handler ran long enough to need renewals, and
// marks it begun.
func (k *keepAlive) due(now time.Time) bool {
	if now.Sub(k.started) < k.w.d.cfg.Lease/4 {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.begun || k.halted {
		return false
	}
	k.begun = true
	return true
}

// begin renews the lock and the claim now, then starts their heartbeats.
func (k *keepAlive) begin() {
	k.mu.Lock()
	defer k.mu.Unlock()
	w, ctx, cancel := k.w, k.ctx, k.cancel
	if k.halted {
		return
	}
	// Renew both now (the heartbeats' first renewal comes a third of a
	// lease later). Only a refusal is a loss: a call that failed otherwise
	// is retried by the heartbeats, which give up only at the lease's end.
	rctx, rcancel := context.WithTimeout(ctx, w.d.cfg.Lease/4)
	defer rcancel()
	lk, err := w.d.lk.Extend(rctx, w.lock, w.d.lockTTL)
	switch {
	case errors.Is(err, botstate.ErrNotOwner):
		k.lost = fmt.Errorf("%w: %v", botstate.ErrLockLost, err)
		cancel(botstate.ErrLockLost)
		return
	case err == nil:
		w.lock = lk
	}
	if w.d.fault == faultNoClaim {
		return
	}
	until, err := w.d.ev.Extend(rctx, k.claim.Token, w.d.cfg.Lease)
	switch {
	case errors.Is(err, botstate.ErrNotOwner):
		k.lost = fmt.Errorf("%w: %v", botstate.ErrClaimLost, err)
		cancel(botstate.ErrClaimLost)
		return
	case err == nil:
		k.claim.LeaseUntil = until
	}
	lctx, lhb := w.d.lk.Heartbeat(ctx, w.lock, w.d.lockTTL)
	cctx, chb := w.d.ev.Heartbeat(lctx, k.claim, w.d.cfg.Lease)
	k.lhb, k.chb = lhb, chb
	context.AfterFunc(cctx, func() {
		if c := context.Cause(cctx); errors.Is(c, botstate.ErrNotOwner) {
			cancel(c)
		}
	})
}

// stop ends the renewals and reports a lost claim or a lost lock.
func (k *keepAlive) stop() (claimErr, lockErr error) {
	k.w.d.inflight.remove(k)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.halted = true
	switch {
	case errors.Is(k.lost, botstate.ErrLockLost):
		return nil, k.lost
	case k.lost != nil:
		return k.lost, nil
	case k.lhb == nil:
		return nil, nil
	}
	_, claimErr = k.chb.Stop()
	lk, lockErr := k.lhb.Stop()
	if lockErr == nil {
		k.w.lock = lk
	}
	return claimErr, lockErr
}

func isPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// safeCall runs the handler, turning a panic into an error.
func safeCall(h Handler, ctx context.Context, job *Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("dispatch: handler panicked: %v", r)
		}
	}()
	return h(ctx, job)
}

// pollInterrupts watches, under Policy.Interrupt, for a message queued for
// the scope by another process while the handler of key runs, and cancels
// the handler when one is (a copy of key is none: see otherWaits). The
// returned func stops it.
func (w *worker) pollInterrupts(ctx context.Context, cancel context.CancelCauseFunc, key string) func() {
	if !w.pol.Interrupt {
		return func() {}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.d.cfg.InterruptPoll)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			st, err := w.d.lk.Inspect(ctx, w.key)
			if err == nil && otherWaits(st.Pending, key) {
				cancel(ErrInterrupted)
				return
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}
