package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/botstate/botstate"
)

// recoverBatch is how many items one listing of a recovery pass takes, and
// recoverBatches how many listings of each kind one pass makes at most.
const (
	recoverBatch   = 100
	recoverBatches = 10
)

func (d *Dispatcher) recoverLoop() {
	defer close(d.recoverDone)
	t := time.NewTicker(d.cfg.RecoverEvery)
	defer t.Stop()
	for {
		select {
		case <-d.stopRecover:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(d.runCtx, 4*d.cfg.Lease)
		if _, err := d.Recover(ctx); err != nil && !errors.Is(err, botstate.ErrClosed) {
			d.log.Error("dispatch: recovery pass failed", "err", err)
		}
		cancel()
	}
}

// Recover makes one recovery pass now (the background loop runs one every
// Config.RecoverEvery): it takes over the queues of scopes whose holder
// lapsed, starting with the message the holder was handling, and re-drives
// claims that lapsed and retries that are due, as if they were delivered
// again, except that a busy or full scope does not drop them: they wait.
// Messages that waited in a queue past their entry TTL are settled as
// skipped. It returns how many messages and queues it took. Events of
// the namespace that are not the dispatcher's, or of routes this process
// has not registered, are left alone.
func (d *Dispatcher) Recover(ctx context.Context) (int, error) {
	if d.isClosing() {
		return 0, botstate.ErrClosed
	}
	n := 0
	for range recoverBatches {
		lapsed, err := d.lk.Lapsed(ctx, recoverBatch)
		if err != nil {
			return n, err
		}
		for _, st := range lapsed {
			if d.adopt(ctx, st.Key) {
				n++
			}
		}
		if len(lapsed) < recoverBatch {
			break
		}
	}
	for range recoverBatches {
		due, err := d.ev.Due(ctx, recoverBatch)
		if err != nil {
			return n, err
		}
		for i := range due {
			if d.redrive(ctx, &due[i]) {
				n++
			}
		}
		if len(due) < recoverBatch {
			break
		}
	}
	return n, nil
}

// adopt takes over the lapsed lock key when it is one of this dispatcher's
// routes, and starts a worker on its queue.
func (d *Dispatcher) adopt(ctx context.Context, key string) bool {
	name, scope, ok := parseLockKey(key)
	if !ok {
		return false
	}
	r, err := d.route(name)
	if err != nil {
		return false
	}
	pol, err := r.policy(scope)
	if err != nil {
		d.log.Error("dispatch: recovery", "lock", key, "err", err)
		return false
	}
	res, err := d.lk.TakeOver(ctx, key, d.cfg.Owner, d.lockTTL)
	if err != nil || res.Status != botstate.Acquired {
		return false
	}
	var first item
	if res.Next != nil {
		if first, err = itemOf(*res.Next, scope); err != nil {
			d.log.Error("dispatch: undecodable lock entry; skipping it", "lock", key, "err", err)
		}
	}
	return d.startWorker(r, pol, key, scope, res.Lock, first, res.Skipped)
}

// redrive takes over a due event of this dispatcher's routes and dispatches
// it again; an event deferred to a queue that never took it settles as
// skipped.
func (d *Dispatcher) redrive(ctx context.Context, e *botstate.Event) bool {
	env, err := decodeEnvelope(e.Payload)
	if err != nil {
		return false
	}
	r, err := d.route(env.route)
	if err != nil {
		return false
	}
	pol, err := r.policy(env.scope)
	if err != nil {
		return false
	}
	c, err := d.ev.Reclaim(ctx, e.Key, d.cfg.Lease)
	if err != nil {
		return false
	}
	o := Observation{Route: r.name, Scope: env.scope, Key: e.Key, Attempt: c.Attempts}
	switch c.Status {
	case botstate.Claimed:
	case botstate.Failed:
		o.Kind = KindFailed
		d.observe(o)
		return false
	default:
		return false
	}
	if e.Status == botstate.EventReleased && e.Attempts == 0 && e.LastError == botstate.DeferredReason {
		// It waited in a queue past its entry TTL, or its queue was lost:
		// skipped, as the policy says, and told to the next handler when the
		// lock still knows it.
		d.settle(ctx, r.name, env.scope, c.Token, resultSkipped)
		o.Kind = KindSkipped
		d.observe(o)
		return true
	}
	_, err = d.enter(ctx, r, pol, Message{Key: e.Key, Scope: env.scope, Payload: env.payload}, c, true)
	return err == nil
}
