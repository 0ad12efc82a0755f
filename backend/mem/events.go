package mem

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/botstate/botstate/driver"
)

// eventOrder remembers, for a namespace with an event limit, the order in
// which keys were inserted, so the oldest can be evicted. Entries of keys
// deleted meanwhile go stale: their seq no longer matches the shard's.
type eventOrder struct {
	mu   sync.Mutex
	ring []orderEnt
	head int
	live atomic.Int64
}

type orderEnt struct {
	key string
	seq uint64
}

func (d *Driver) order(ns string) *eventOrder {
	if o, ok := d.orders.Load(ns); ok {
		return o.(*eventOrder)
	}
	o, _ := d.orders.LoadOrStore(ns, &eventOrder{})
	return o.(*eventOrder)
}

// dropEvent deletes an event; the caller holds s.mu.
func (d *Driver) dropEvent(s *shard, k mkey) {
	delete(s.events, k)
	delete(s.open, k)
	if _, ok := s.seqs[k]; ok {
		delete(s.seqs, k)
		d.order(k.ns).live.Add(-1)
	}
}

// insertEvent stores a new event; the caller holds s.mu. It returns the
// insertion seq when the namespace is limited, for noteInsert.
func (d *Driver) insertEvent(s *shard, k mkey, e *driver.Event, limit int) uint64 {
	if _, ok := s.events[k]; ok {
		d.dropEvent(s, k) // an expired one being replaced
	}
	s.events[k] = e
	s.track(k, e)
	if limit <= 0 {
		return 0
	}
	seq := d.seq.Add(1)
	s.seqs[k] = seq
	d.order(k.ns).live.Add(1)
	return seq
}

// noteInsert records an insertion and evicts the oldest keys while the
// namespace holds more than limit. It runs after the shard lock is released;
// it takes shard locks inside the order lock, never the other way round.
func (d *Driver) noteInsert(ns, key string, seq uint64, limit int) {
	o := d.order(ns)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ring = append(o.ring, orderEnt{key: key, seq: seq})
	for o.live.Load() > int64(limit) && o.head < len(o.ring) {
		victim := o.ring[o.head]
		o.ring[o.head] = orderEnt{}
		o.head++
		d.evictIfCurrent(ns, victim)
	}
	if o.head > len(o.ring)/2 {
		o.ring = append(o.ring[:0], o.ring[o.head:]...)
		o.head = 0
	}
	if n := len(o.ring); n > 2*limit+1024 {
		// Many stale entries (keys forgotten or expired): keep the live ones.
		keep := o.ring[:0]
		for _, e := range o.ring {
			s := d.shard(e.key)
			s.mu.Lock()
			cur, ok := s.seqs[mkey{ns, e.key}]
			s.mu.Unlock()
			if ok && cur == e.seq {
				keep = append(keep, e)
			}
		}
		clear(o.ring[len(keep):])
		o.ring = keep
	}
}

func (d *Driver) evictIfCurrent(ns string, e orderEnt) {
	s := d.shard(e.key)
	k := mkey{ns, e.key}
	s.mu.Lock()
	if cur, ok := s.seqs[k]; ok && cur == e.seq {
		d.dropEvent(s, k)
	}
	s.mu.Unlock()
}

// track keeps s.open in step with the stored event e of k after a write;
// the caller holds s.mu.
func (s *shard) track(k mkey, e *driver.Event) {
	if e.Status == driver.EventCompleted {
		delete(s.open, k)
	} else {
		s.open[k] = e
	}
}

// liveEvent returns the stored event if it exists at now; the caller holds s.mu.
func liveEvent(s *shard, k mkey, now time.Time) (*driver.Event, bool) {
	e, ok := s.events[k]
	if !ok || !driver.Live(e.ExpiresAt, now) {
		return nil, false
	}
	return e, true
}

func copyEvent(e *driver.Event) driver.Event {
	c := *e
	c.Payload, c.Result = driver.Clone(e.Payload), driver.Clone(e.Result)
	return c
}

// LazyClaimTokens implements driver.LazyTokens: a duplicate claim, the
// common case under retries, never pays for a token.
func (d *Driver) LazyClaimTokens() {}

// RecordEvent implements driver.Events.
func (d *Driver) RecordEvent(_ context.Context, ns string, w driver.EventWrite) (bool, error) {
	if err := d.check(); err != nil {
		return false, err
	}
	s, k := d.shard(w.Key), mkey{ns, w.Key}
	s.mu.Lock()
	if _, ok := liveEvent(s, k, w.Now); ok {
		s.mu.Unlock()
		return false, nil
	}
	seq := d.insertEvent(s, k, &driver.Event{Key: w.Key, Status: driver.EventRecorded,
		Payload: driver.Clone(w.Payload), CreatedAt: w.Now, ExpiresAt: w.ExpiresAt}, w.Limit)
	s.mu.Unlock()
	if seq != 0 {
		d.noteInsert(ns, w.Key, seq, w.Limit)
	}
	return true, nil
}

// LookupEvent implements driver.Events.
func (d *Driver) LookupEvent(_ context.Context, ns, key string, now time.Time) (driver.Event, bool, error) {
	if err := d.check(); err != nil {
		return driver.Event{}, false, err
	}
	s := d.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := liveEvent(s, mkey{ns, key}, now)
	if !ok {
		return driver.Event{}, false, nil
	}
	return copyEvent(e), true, nil
}

// ForgetEvent implements driver.Events.
func (d *Driver) ForgetEvent(_ context.Context, ns, key string) error {
	if err := d.check(); err != nil {
		return err
	}
	s := d.shard(key)
	s.mu.Lock()
	d.dropEvent(s, mkey{ns, key})
	s.mu.Unlock()
	return nil
}

// ClaimEvent implements driver.Events.
func (d *Driver) ClaimEvent(_ context.Context, ns string, r driver.ClaimRequest) (driver.ClaimReply, error) {
	if err := d.check(); err != nil {
		return driver.ClaimReply{}, err
	}
	s, k := d.shard(r.Key), mkey{ns, r.Key}
	s.mu.Lock()
	cur, found := liveEvent(s, k, r.Now)
	var curv driver.Event
	if found {
		curv = *cur
	}
	rep, next, write, err := driver.ApplyClaim(curv, found, r)
	var seq uint64
	if err == nil && write {
		if found {
			*cur = next
			s.track(k, cur)
		} else {
			stored := next // a heap copy only on insert, not on every call
			seq = d.insertEvent(s, k, &stored, r.Limit)
		}
	}
	rep.Event = driver.Event{Key: r.Key, Status: rep.Event.Status, Attempts: rep.Event.Attempts,
		Token: rep.Event.Token, LastError: rep.Event.LastError}
	if rep.Outcome == driver.ClaimCompleted {
		rep.Event.Result = driver.Clone(cur.Result)
	}
	s.mu.Unlock()
	if seq != 0 {
		d.noteInsert(ns, r.Key, seq, r.Limit)
	}
	return rep, err
}

// update applies fn to the live event under its shard lock and stores the
// result, or returns fn's error and changes nothing.
func (d *Driver) update(ns, key string, now time.Time, fn func(cur driver.Event, found bool) (driver.Event, error)) error {
	if err := d.check(); err != nil {
		return err
	}
	s := d.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, found := liveEvent(s, mkey{ns, key}, now)
	var curv driver.Event
	if found {
		curv = *cur
	}
	next, err := fn(curv, found)
	if err != nil {
		return err
	}
	if !found {
		return driver.ErrNotFound // every rule refuses an absent event; never reached
	}
	*cur = next
	s.track(mkey{ns, key}, cur)
	return nil
}

// CompleteEvent implements driver.Events.
func (d *Driver) CompleteEvent(_ context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error {
	return d.update(ns, key, now, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyComplete(cur, found, token, result, expiresAt)
	})
}

// ExtendEvent implements driver.Events.
func (d *Driver) ExtendEvent(_ context.Context, ns, key, token string, now, leaseUntil, expiresAt time.Time) error {
	return d.update(ns, key, now, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyExtendEvent(cur, found, token, leaseUntil, expiresAt)
	})
}

// ReleaseEvent implements driver.Events.
func (d *Driver) ReleaseEvent(_ context.Context, ns string, r driver.ReleaseRequest) error {
	return d.update(ns, r.Key, r.Now, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyReleaseEvent(cur, found, r)
	})
}

// RetryEvent implements driver.Events.
func (d *Driver) RetryEvent(_ context.Context, ns, key string, now, expiresAt time.Time) error {
	return d.update(ns, key, now, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyRetryEvent(cur, found, expiresAt)
	})
}

// scanEvents returns, oldest first, up to limit live events of ns that keep
// says to keep, which must refuse completed events: it reads only the
// events that are not completed.
func (d *Driver) scanEvents(ns string, now time.Time, limit int, keep func(*driver.Event) bool) []driver.Event {
	var out []driver.Event
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		for k, e := range s.open {
			if k.ns == ns && driver.Live(e.ExpiresAt, now) && keep(e) {
				out = append(out, copyEvent(e))
			}
		}
		s.mu.Unlock()
	}
	return driver.FirstEvents(out, limit)
}

// ExpiredEvents implements driver.Events.
func (d *Driver) ExpiredEvents(_ context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return d.scanEvents(ns, now, limit, func(e *driver.Event) bool {
		return e.Status == driver.EventClaimed && !e.LeaseUntil.After(now)
	}), nil
}

// DueEvents implements driver.Events.
func (d *Driver) DueEvents(_ context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return d.scanEvents(ns, now, limit, func(e *driver.Event) bool { return driver.EventDue(e, now) }), nil
}

// FailedEvents implements driver.Events.
func (d *Driver) FailedEvents(_ context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return d.scanEvents(ns, now, limit, func(e *driver.Event) bool { return e.Status == driver.EventFailed }), nil
}

// PendingEvents implements driver.Events.
func (d *Driver) PendingEvents(_ context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return d.scanEvents(ns, now, limit, driver.EventPending), nil
}
