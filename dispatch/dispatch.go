// Package dispatch runs a bot's handlers on the messages it receives: each
// message handled once, one handler at a time per scope (a thread, a
// channel, or any key the bot chooses), across every process that shares
// the store.
//
// One call per incoming message:
//
//	d, _ := dispatch.New(store, dispatch.Config{})
//	defer d.Close(ctx)
//	d.Handle("reply", dispatch.Route{Handler: reply, Policy: dispatch.Policy{Mode: dispatch.Queue}})
//	...
//	out, err := d.Dispatch(ctx, "reply", dispatch.Message{Key: eventKey, Scope: threadID, Payload: body})
//
// Dispatch returns as soon as the message is safely accepted (claimed in the
// store and holding or waiting for its scope's lock), so a webhook can answer
// at once; the handler runs in the background.
//
// What it guarantees, on every backend and across processes on the shared
// ones:
//
//   - A message is claimed before it is handled and completed after; a
//     redelivery (a platform retry, another replica) of a message in
//     progress, done or failed is a Duplicate and runs nothing.
//   - The claim and the scope's lock are renewed while a handler runs; a
//     handler that loses either is told through its context.
//   - A handler that fails is retried after a backoff, up to the store's
//     maximum attempts (botstate.WithMaxAttempts); then the event is parked
//     as failed. Permanent(err) parks it at once.
//   - Nothing queued is stranded: a worker hands its lock over to the next
//     waiting message atomically, and a background recovery loop re-drives
//     what a crashed process left: lapsed claims, due retries, and queues
//     whose holder died (the message it was handling first, then the rest
//     in order).
//   - Close finishes the handlers that run and leaves queued work for the
//     other processes.
package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/botstate/botstate"
)

// Message is one incoming message.
type Message struct {
	// Key identifies the message for deduplication: every delivery of one
	// message has the same key (botstate.SlackEventKey and the other key
	// helpers build them).
	Key string
	// Scope is what one handler at a time is allowed per: a thread, a
	// channel, a user.
	Scope string
	// Payload is the message as the handler needs it; it is stored with the
	// event, so a message re-driven after a crash has it too.
	Payload []byte
}

// Job is what a handler receives.
type Job struct {
	Message
	// Route is the name the handler was registered under.
	Route string
	// Attempt counts the attempts at this message, this one included.
	Attempt int
	// Skipped are earlier messages of the scope that were left unhandled
	// since the last handler ran: dropped by a full queue, replaced by a
	// newer one under Debounce or Burst, interrupted, or expired in the
	// queue. Oldest first.
	Skipped []Message
}

// Handler handles one message. It should return soon after ctx is done:
// ctx is cancelled when the handler's claim or lock is lost, when a newer
// message interrupts it (Policy.Interrupt), and when Close gives up
// waiting. A nil error completes the message; Permanent(err) parks it as
// failed; any other error retries it after a backoff.
type Handler func(ctx context.Context, job *Job) error

// Mode says what happens to a message that arrives while its scope is busy.
type Mode uint8

// Modes.
const (
	// Queue (the zero value) waits in a bounded FIFO and is handled in
	// arrival order.
	Queue Mode = iota
	// Drop discards a message that arrives while the scope is busy (one
	// re-driven after a failure, a lost lock or a crash waits for it).
	Drop
	// Debounce waits for a quiet period with no newer message, then handles
	// the latest only; the handler learns what it skipped.
	Debounce
	// Burst debounces the first messages (those that arrive within the
	// quiet period after the first), then handles later ones like Queue.
	Burst
	// Concurrent lets up to Policy.Limit handlers of one scope run at once,
	// across processes; more wait in the queue.
	Concurrent
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case Queue:
		return "queue"
	case Drop:
		return "drop"
	case Debounce:
		return "debounce"
	case Burst:
		return "burst"
	case Concurrent:
		return "concurrent"
	}
	return "invalid"
}

// Policy is how a route treats the messages of one scope.
type Policy struct {
	Mode Mode
	// QueueMax bounds the messages waiting per scope (0: no bound); a
	// re-driven message joins the queue past the bound.
	QueueMax int
	// OnFull says which message a full queue drops.
	OnFull botstate.Overflow
	// EntryTTL is how long a message may wait in the queue before it is
	// skipped (0: botstate.DefaultEntryTTL, one hour).
	EntryTTL time.Duration
	// Quiet is the Debounce and Burst quiet period (0: one second).
	Quiet time.Duration
	// Limit is the most Concurrent handlers per scope; required for
	// Concurrent.
	Limit int
	// Interrupt makes a newer message for the scope cancel the running
	// handler (its context's cause is ErrInterrupted) and skips to the
	// latest waiting message: for agents that should answer the last thing
	// said. Not with Drop or Concurrent.
	Interrupt bool
}

// DefaultQuiet is the Debounce and Burst quiet period when Policy.Quiet is 0.
const DefaultQuiet = time.Second

func (p Policy) check() error {
	switch {
	case p.Mode > Concurrent:
		return fmt.Errorf("unknown mode %d", p.Mode)
	case p.QueueMax < 0 || p.QueueMax > botstate.MaxQueue:
		return fmt.Errorf("queue max %d out of range [0, %d]", p.QueueMax, botstate.MaxQueue)
	case p.OnFull > botstate.DropNewest:
		return fmt.Errorf("unknown overflow policy %d", p.OnFull)
	case p.EntryTTL < 0 || p.EntryTTL > botstate.MaxTTL:
		return fmt.Errorf("entry TTL %v out of range", p.EntryTTL)
	case p.Quiet < 0 || p.Quiet > time.Hour:
		return fmt.Errorf("quiet period %v out of range [0, 1h]", p.Quiet)
	case p.Mode == Concurrent && (p.Limit < 1 || p.Limit > botstate.MaxQueue):
		return fmt.Errorf("concurrent limit %d out of range [1, %d]", p.Limit, botstate.MaxQueue)
	case p.Mode != Concurrent && p.Limit != 0:
		return fmt.Errorf("limit is for Concurrent, not %v", p.Mode)
	case p.Interrupt && (p.Mode == Drop || p.Mode == Concurrent):
		return fmt.Errorf("interrupt does not go with %v", p.Mode)
	}
	return nil
}

func (p Policy) entryTTL() time.Duration {
	if p.EntryTTL == 0 {
		return botstate.DefaultEntryTTL
	}
	return p.EntryTTL
}

func (p Policy) quiet() time.Duration {
	if p.Quiet == 0 {
		return DefaultQuiet
	}
	return p.Quiet
}

func (p Policy) lockPolicy(ttl time.Duration) botstate.LockPolicy {
	lp := botstate.LockPolicy{TTL: ttl, QueueMax: p.QueueMax, OnFull: p.OnFull, EntryTTL: p.entryTTL()}
	switch p.Mode {
	case Drop:
		lp.Strategy = botstate.Reject
	case Debounce:
		lp.Strategy = botstate.Debounce
	case Concurrent:
		lp.Strategy, lp.MaxHolders, lp.QueueWhenFull = botstate.Concurrent, p.Limit, true
	default:
		lp.Strategy = botstate.Queue
	}
	return lp
}

// Route is a handler and the policy of its scopes.
type Route struct {
	Handler Handler
	// Policy applies to every scope unless PolicyFor is set.
	Policy Policy
	// PolicyFor, when set, chooses the policy per scope. It must return the
	// same policy for a scope every time, in every process.
	PolicyFor func(scope string) Policy
}

type route struct {
	name string
	Route
}

func (r *route) policy(scope string) (Policy, error) {
	if r.PolicyFor == nil {
		return r.Policy, nil
	}
	p := r.PolicyFor(scope)
	if err := p.check(); err != nil {
		return Policy{}, fmt.Errorf("route %q, scope %q: %v", r.name, scope, err)
	}
	return p, nil
}

// Outcome is what Dispatch did with a message.
type Outcome uint8

// Outcomes.
const (
	// Started: this process handles the message now.
	Started Outcome = iota + 1
	// Queued: the message waits for its scope (behind a running handler, or
	// in a quiet period); some process will handle it.
	Queued
	// Duplicate: the message is in progress, done or failed already.
	Duplicate
	// Dropped: the scope was busy under Drop, or its queue was full.
	Dropped
)

// String returns the outcome's name.
func (o Outcome) String() string {
	switch o {
	case Started:
		return "started"
	case Queued:
		return "queued"
	case Duplicate:
		return "duplicate"
	case Dropped:
		return "dropped"
	}
	return "invalid"
}

// Errors a handler's context can be cancelled with (context.Cause), besides
// botstate.ErrLockLost and botstate.ErrClaimLost.
var (
	// ErrInterrupted: a newer message for the scope arrived (Policy.Interrupt).
	ErrInterrupted = errors.New("dispatch: interrupted by a newer message")
	// ErrShutdown: Close stopped waiting for the handler.
	ErrShutdown = errors.New("dispatch: shutting down")
)

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks a handler's error as one a retry cannot fix: the message
// is parked as failed at once instead of retried.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Config configures a Dispatcher. The zero value is ready to use.
type Config struct {
	// Owner names this process in locks (default: host, pid and a random
	// suffix). Every process must have its own.
	Owner string
	// Lease is how long a claim lasts without renewal; the scope's lock
	// lasts half as long again, and both are renewed every third of their
	// length while a handler runs (default 30 s). A crashed process's work
	// is re-driven about a lease after it died.
	Lease time.Duration
	// Backoff is the delay before retry number attempt+1 after a failed
	// attempt (default: 1 s doubling up to 5 min, with jitter).
	Backoff func(attempt int) time.Duration
	// RecoverEvery is how often the recovery loop looks for lapsed claims,
	// due retries and orphaned queues (default: a sixth of Lease). Negative
	// turns recovery off in this process.
	RecoverEvery time.Duration
	// InterruptPoll is how often a handler under Policy.Interrupt checks for
	// a newer message queued by another process (default 250 ms); one from
	// this process interrupts at once.
	InterruptPoll time.Duration
	// Observer is told of every outcome (nil: nobody).
	Observer Observer
	// Logger receives the errors the background work meets (default:
	// slog.Default()).
	Logger *slog.Logger
}

// DefaultLease is Config.Lease's default.
const DefaultLease = 30 * time.Second

// DefaultBackoff is 1 s before the second attempt, doubling up to 5 min,
// with up to 20% jitter either way.
func DefaultBackoff(attempt int) time.Duration {
	d := time.Second << min(max(attempt-1, 0), 9)
	d = min(d, 5*time.Minute)
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}

// Dispatcher runs handlers on messages. It is safe for concurrent use.
type Dispatcher struct {
	store   *botstate.Store
	ev      *botstate.Events
	lk      *botstate.Locks
	cfg     Config
	lockTTL time.Duration
	log     *slog.Logger

	// runCtx ends (cause ErrShutdown) when Close gives up waiting: it bounds
	// the recovery loop and the quiet periods. A handler's context is not
	// derived from it (a shared parent would make every handler's context
	// contend for its lock); Close cancels those one by one.
	runCtx    context.Context
	cancelRun context.CancelCauseFunc

	mu      sync.Mutex // serializes Handle and the start of Close
	routes  atomic.Pointer[map[string]*route]
	closing atomic.Bool
	// shutdown is set when Close stops waiting: workers cancel themselves.
	shutdown atomic.Bool
	workers  sync.WaitGroup
	startMu  sync.RWMutex // orders workers.Add against Close's Wait
	// interruptible holds, by lock key, the workers of Interrupt policies.
	interruptible sync.Map // string -> *sync.Map of *worker
	// inflight holds the running handlers, for the renewal loop and for
	// Close to cancel them.
	inflight      registry
	tasks         chan task // idle goroutines wait here for a worker to run
	stopRenew     chan struct{}
	stopRenewOnce sync.Once

	stopRecover chan struct{}
	recoverDone chan struct{}

	// calls bounds the workers' store calls (see callContext).
	calls atomic.Pointer[callWindow]

	// fault breaks the dispatcher on purpose, for the tests that show the
	// end-to-end checks catch a broken dispatcher; always zero otherwise.
	fault fault
}

type fault uint8

const (
	// faultNoClaim handles messages without claiming or completing them.
	faultNoClaim fault = iota + 1
	// faultRelease releases the lock after a message instead of handing
	// it over, dropping the queue.
	faultRelease
)

// New returns a dispatcher over store (whose namespace it uses for its
// events and locks; give a bot a namespace of its own) and starts its
// recovery loop.
func New(store *botstate.Store, cfg Config) (*Dispatcher, error) {
	if store == nil {
		return nil, fmt.Errorf("dispatch.New: nil store: %w", botstate.ErrInvalidArgument)
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Lease < 10*time.Millisecond || cfg.Lease > time.Hour {
		return nil, fmt.Errorf("dispatch.New: lease %v out of range [10ms, 1h]: %w", cfg.Lease, botstate.ErrInvalidArgument)
	}
	if cfg.Owner == "" {
		cfg.Owner = defaultOwner()
	}
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.RecoverEvery == 0 {
		cfg.RecoverEvery = cfg.Lease / 6
	}
	if cfg.InterruptPoll <= 0 {
		cfg.InterruptPoll = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dispatcher{
		store: store, ev: store.Events(), lk: store.Locks(), cfg: cfg,
		lockTTL: cfg.Lease + cfg.Lease/2, log: cfg.Logger.With("owner", cfg.Owner),
		stopRecover: make(chan struct{}), recoverDone: make(chan struct{}), stopRenew: make(chan struct{}),
		tasks: make(chan task),
	}
	d.routes.Store(&map[string]*route{})
	d.runCtx, d.cancelRun = context.WithCancelCause(context.Background())
	if cfg.RecoverEvery > 0 {
		go d.recoverLoop()
	} else {
		close(d.recoverDone)
	}
	go d.renewLoop()
	return d, nil
}

// callWindow is a context whose deadline is a lease away when it is made.
type callWindow struct {
	ctx context.Context
	end time.Time
	// cancel is never called before end: calls may still be using ctx when
	// the next window replaces it. The timer behind it ends at end.
	cancel context.CancelFunc
}

// callContext returns a context for a worker's store call: its deadline is
// between half a lease and a lease away, and it is never cancelled
// otherwise (a message is given back even after its handler was cancelled
// at shutdown). One is shared by every call until half its time is gone,
// sparing a timer per call.
func (d *Dispatcher) callContext() context.Context {
	now := time.Now()
	if w := d.calls.Load(); w != nil && w.end.Sub(now) >= d.cfg.Lease/2 {
		return w.ctx
	}
	end := now.Add(d.cfg.Lease)
	ctx, cancel := context.WithDeadline(context.Background(), end)
	d.calls.Store(&callWindow{ctx: ctx, end: end, cancel: cancel})
	return ctx
}

// renewLoop starts the renewals of the handlers that run long enough to
// need them (see keepAlive); it ends when Close has no handler left.
func (d *Dispatcher) renewLoop() {
	t := time.NewTicker(d.cfg.Lease / 8)
	defer t.Stop()
	for {
		select {
		case <-d.stopRenew:
			return
		case now := <-t.C:
			d.inflight.each(func(k *keepAlive) {
				if k.due(now) {
					go k.begin()
				}
			})
		}
	}
}

func defaultOwner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Store returns the store the dispatcher runs on (its namespace included),
// for glue that keeps more state beside the messages (conversations, say).
func (d *Dispatcher) Store() *botstate.Store { return d.store }

// Handle registers a route under name: 1 to 64 letters, digits, '.', '_'
// or '-'. Every process must register the same routes, so that each can
// re-drive the others' messages.
func (d *Dispatcher) Handle(name string, r Route) error {
	if err := botstate.ValidNamespace(name); err != nil {
		return fmt.Errorf("dispatch.Handle: route name %q: %w", name, botstate.ErrInvalidArgument)
	}
	if r.Handler == nil {
		return fmt.Errorf("dispatch.Handle: route %q has no handler: %w", name, botstate.ErrInvalidArgument)
	}
	if err := r.Policy.check(); err != nil {
		return fmt.Errorf("dispatch.Handle: route %q: %v: %w", name, err, botstate.ErrInvalidArgument)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old := *d.routes.Load()
	if _, dup := old[name]; dup {
		return fmt.Errorf("dispatch.Handle: route %q registered twice: %w", name, botstate.ErrInvalidArgument)
	}
	routes := make(map[string]*route, len(old)+1)
	for k, v := range old {
		routes[k] = v
	}
	routes[name] = &route{name: name, Route: r}
	d.routes.Store(&routes)
	return nil
}

func (d *Dispatcher) route(name string) (*route, error) {
	if d.closing.Load() {
		return nil, fmt.Errorf("dispatch: %w", botstate.ErrClosed)
	}
	r, ok := (*d.routes.Load())[name]
	if !ok {
		return nil, fmt.Errorf("dispatch: no route %q: %w", name, botstate.ErrInvalidArgument)
	}
	return r, nil
}

// lockKey is the key of a route's scope lock; a route name holds no ':'.
func lockKey(route, scope string) string { return "dispatch:" + route + ":" + scope }

func parseLockKey(key string) (route, scope string, ok bool) {
	const prefix = "dispatch:"
	if len(key) <= len(prefix) || key[:len(prefix)] != prefix {
		return "", "", false
	}
	rest := key[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == ':' {
			return rest[:i], rest[i+1:], true
		}
	}
	return "", "", false
}

// Dispatch accepts one delivery of m for the route: it claims the message
// (a Duplicate when it is in progress, done or failed), then takes or waits
// for its scope as the route's policy says. It returns once the message is
// safely accepted; the handler runs in the background. An error means the
// message was not accepted: deliver it again.
func (d *Dispatcher) Dispatch(ctx context.Context, routeName string, m Message) (Outcome, error) {
	r, err := d.route(routeName)
	if err != nil {
		return 0, err
	}
	if m.Scope == "" {
		return 0, fmt.Errorf("dispatch: message %q has no scope: %w", m.Key, botstate.ErrInvalidArgument)
	}
	pol, err := r.policy(m.Scope)
	if err != nil {
		return 0, fmt.Errorf("dispatch: %v: %w", err, botstate.ErrInvalidArgument)
	}
	env := envelope{route: r.name, scope: m.Scope, payload: m.Payload}
	var c botstate.Claim
	if d.fault == faultNoClaim {
		c = botstate.Claim{Status: botstate.Claimed, Token: botstate.EventToken{Key: m.Key, ID: "unclaimed"}, Attempts: 1}
	} else {
		c, err = d.ev.Claim(ctx, m.Key, env.encode(), d.cfg.Lease)
	}
	if err != nil {
		return 0, err
	}
	if c.Status != botstate.Claimed {
		d.observe(Observation{Kind: KindDuplicate, Route: r.name, Scope: m.Scope, Key: m.Key, Attempt: c.Attempts})
		return Duplicate, nil
	}
	return d.enter(ctx, r, pol, m, c, false)
}

// enter brings a claimed message to its scope's lock: it starts a worker
// when it gets the lock, defers its claim to the queue when it waits, and
// settles it as dropped when the scope refuses it.
//
// A message the recovery loop re-drives (redriven) was accepted before: the
// scope never refuses it, it waits its turn instead. Its scope may even be
// busy with the message itself: a holder that lost its lock, or died,
// still holds its entry, which comes back to the front of the queue when
// the lock lapses; refusing the message then would settle it as dropped,
// unhandled.
func (d *Dispatcher) enter(ctx context.Context, r *route, pol Policy, m Message, c botstate.Claim, redriven bool) (Outcome, error) {
	key := lockKey(r.name, m.Scope)
	e := entry{key: m.Key, token: c.Token.ID, payload: m.Payload}
	lp := pol.lockPolicy(d.lockTTL)
	if redriven {
		if lp.Strategy == botstate.Reject {
			lp.Strategy = botstate.Queue
		}
		lp.QueueMax = 0
	}
	res, err := d.lk.Acquire(ctx, key, d.cfg.Owner, e.encode(), lp)
	if err != nil {
		// Not accepted: give the claim back so a redelivery can take it.
		d.background(func(ctx context.Context) error { return d.ev.Release(ctx, c.Token) })
		return 0, err
	}
	switch res.Status {
	case botstate.Acquired:
		first := item{msg: m, claim: c}
		out := Started
		if res.Next != nil {
			// A holder died with messages waiting: they come first, and
			// ours waits behind them.
			d.deferClaim(c.Token, pol)
			if first, err = itemOf(*res.Next, m.Scope); err != nil {
				d.log.Error("dispatch: undecodable lock entry; skipping it", "lock", key, "err", err)
				first = item{}
			}
			out = Queued
		}
		if !d.startWorker(r, pol, key, m.Scope, res.Lock, first, res.Skipped) {
			return 0, fmt.Errorf("dispatch: %w", botstate.ErrClosed)
		}
		return out, nil
	case botstate.Queued, botstate.Debounced:
		d.deferClaim(c.Token, pol)
		if pol.Interrupt {
			d.interruptLocal(key)
		}
		return Queued, nil
	}
	d.settle(ctx, r.name, m.Scope, c.Token, resultDropped)
	d.observe(Observation{Kind: KindDropped, Route: r.name, Scope: m.Scope, Key: m.Key, Attempt: c.Attempts})
	return Dropped, nil
}

// Results stored with messages the dispatcher settled without handling.
var (
	resultDropped = []byte(`{"dispatch":"dropped"}`)
	resultSkipped = []byte(`{"dispatch":"skipped"}`)
)

// deferClaim hands a queued message's claim to the queue: whoever takes the
// entry takes the claim over, and if the entry lapses unhandled the
// recovery loop finds the claim due after it and settles it as skipped.
func (d *Dispatcher) deferClaim(tok botstate.EventToken, pol Policy) {
	delay := pol.entryTTL() + 2*d.cfg.Lease
	d.background(func(ctx context.Context) error {
		err := d.ev.Defer(ctx, tok, delay)
		if errors.Is(err, botstate.ErrNotOwner) {
			return nil // the worker took it over already
		}
		return err
	})
}

// settle completes a claimed message the dispatcher decided not to handle.
func (d *Dispatcher) settle(ctx context.Context, route, scope string, tok botstate.EventToken, result []byte) {
	if err := d.ev.Complete(context.WithoutCancel(ctx), tok, result); err != nil && !errors.Is(err, botstate.ErrNotOwner) {
		d.log.Error("dispatch: settling a message", "route", route, "scope", scope, "key", tok.Key, "err", err)
	}
}

// background runs a short store call detached from the caller's context,
// logging its error.
func (d *Dispatcher) background(fn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Lease)
	defer cancel()
	if err := fn(ctx); err != nil {
		d.log.Error("dispatch: store call failed", "err", err)
	}
}

func (d *Dispatcher) observe(o Observation) {
	if d.cfg.Observer != nil {
		d.cfg.Observer.Observe(o)
	}
}

// startWorker runs a worker for a lock this process holds; false when the
// dispatcher is closing (the lock is then abandoned for another process).
func (d *Dispatcher) startWorker(r *route, pol Policy, key, scope string, lk botstate.Lock, first item, skipped []botstate.Entry) bool {
	// Under startMu (shared): Close sets closing holding it exclusively,
	// so every Add made before that happens before Close's Wait, and none
	// comes after (a WaitGroup must not grow from zero while it is waited
	// on).
	d.startMu.RLock()
	if d.closing.Load() {
		d.startMu.RUnlock()
		d.background(func(ctx context.Context) error { return d.lk.Abandon(ctx, lk) })
		return false
	}
	d.workers.Add(1)
	d.startMu.RUnlock()
	w := &worker{d: d, r: r, pol: pol, key: key, scope: scope, lock: lk}
	if pol.Interrupt {
		set, _ := d.interruptible.LoadOrStore(key, &sync.Map{})
		set.(*sync.Map).Store(w, struct{}{})
	}
	d.spawn(task{w: w, first: first, skipped: skipped})
	return true
}

// task is a worker to run.
type task struct {
	w       *worker
	first   item
	skipped []botstate.Entry
}

// idleFor is how long a goroutine that ran a worker waits for the next one
// before it exits: reusing it spares a goroutine start and the growth of a
// fresh stack per message.
const idleFor = time.Second

// spawn runs t on an idle goroutine, or on a new one when none waits.
func (d *Dispatcher) spawn(t task) {
	select {
	case d.tasks <- t:
	default:
		go d.runTasks(t)
	}
}

func (d *Dispatcher) runTasks(t task) {
	// One timer for the goroutine's life, reset only when it fires early:
	// resetting it after every worker would cost more than the reuse saves.
	idle := time.NewTimer(idleFor)
	defer idle.Stop()
	for t.w != nil {
		t.w.run(t.first, t.skipped)
		t = task{}
		since := time.Now()
		for t.w == nil {
			select {
			case t = <-d.tasks:
			case <-idle.C:
				left := idleFor - time.Since(since)
				if left <= 0 {
					return
				}
				idle.Reset(left)
			case <-d.stopRenew:
				return
			}
		}
	}
}

func (d *Dispatcher) workerDone(w *worker) {
	if w.pol.Interrupt {
		if set, ok := d.interruptible.Load(w.key); ok {
			set.(*sync.Map).Delete(w)
		}
	}
	d.workers.Done()
}

func (d *Dispatcher) interruptLocal(key string) {
	if set, ok := d.interruptible.Load(key); ok {
		set.(*sync.Map).Range(func(w, _ any) bool {
			w.(*worker).interrupt()
			return true
		})
	}
}

func (d *Dispatcher) isClosing() bool { return d.closing.Load() }

// Close stops accepting messages and the recovery loop, lets running
// handlers finish, and leaves queued messages for the other processes. When
// ctx ends first, the handlers still running are cancelled (cause
// ErrShutdown) and their messages given back to be retried at once; Close
// then returns ctx's error. Closing twice waits again.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if !d.closing.Load() {
		// Exclusively: a worker being started now either finishes its
		// Add first or sees closing (see startWorker).
		d.startMu.Lock()
		d.closing.Store(true)
		d.startMu.Unlock()
		close(d.stopRecover)
	}
	d.mu.Unlock()
	<-d.recoverDone
	done := make(chan struct{})
	go func() {
		d.workers.Wait()
		close(done)
	}()
	go func() {
		<-done
		d.stopRenewOnce.Do(func() { close(d.stopRenew) })
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		d.shutdown.Store(true)
		d.cancelRun(ErrShutdown)
		d.inflight.each(func(k *keepAlive) { k.w.stopHandler() })
		<-done
		return ctx.Err()
	}
}

// registry is the set of running handlers: lists in shards, so that adding
// and removing one allocates nothing and rarely waits.
type registry struct {
	next   atomic.Uint32
	shards [16]struct {
		mu   sync.Mutex
		head *keepAlive
		_    [40]byte // keep shards on separate cache lines
	}
}

func (r *registry) add(k *keepAlive) {
	k.shard = uint8(r.next.Add(1) % uint32(len(r.shards)))
	s := &r.shards[k.shard]
	s.mu.Lock()
	k.next = s.head
	if s.head != nil {
		s.head.prev = k
	}
	s.head = k
	s.mu.Unlock()
}

func (r *registry) remove(k *keepAlive) {
	s := &r.shards[k.shard]
	s.mu.Lock()
	if k.prev != nil {
		k.prev.next = k.next
	} else if s.head == k {
		s.head = k.next
	}
	if k.next != nil {
		k.next.prev = k.prev
	}
	k.prev, k.next = nil, nil
	s.mu.Unlock()
}

func (r *registry) each(fn func(*keepAlive)) {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for k := s.head; k != nil; k = k.next {
			fn(k)
		}
		s.mu.Unlock()
	}
}
