package mem

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/botstate/botstate/driver"
)

// ---- conversations ----

func liveConv(s *shard, k mkey, now time.Time) (*driver.Conversation, bool) {
	c, ok := s.convs[k]
	if !ok || !driver.Live(c.ExpiresAt, now) {
		return nil, false
	}
	return c, true
}

func copyConv(c *driver.Conversation) driver.Conversation {
	out := *c
	out.Data = driver.Clone(c.Data)
	return out
}

// GetConversation implements driver.Conversations.
func (d *Driver) GetConversation(_ context.Context, ns, key string, now time.Time) (driver.Conversation, bool, error) {
	if err := d.check(); err != nil {
		return driver.Conversation{}, false, err
	}
	s := d.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := liveConv(s, mkey{ns, key}, now)
	if !ok {
		return driver.Conversation{}, false, nil
	}
	return copyConv(c), true, nil
}

// writeConv applies change to the live conversation (a fresh one when
// absent) under the shard lock, bumps its version and stores it.
func (d *Driver) writeConv(ns string, w driver.ConversationWrite, change func(c *driver.Conversation, existed bool) error) (driver.Conversation, error) {
	if err := d.check(); err != nil {
		return driver.Conversation{}, err
	}
	s, k := d.shard(w.Key), mkey{ns, w.Key}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := liveConv(s, k, w.Now)
	next := driver.Conversation{Key: w.Key, Data: driver.EmptyObject}
	if ok {
		next = *cur
	}
	if err := change(&next, ok); err != nil {
		return driver.Conversation{}, err
	}
	next.Version++
	next.UpdatedAt, next.ExpiresAt = w.Now, w.ExpiresAt
	s.convs[k] = &next
	return copyConv(&next), nil
}

// SetConversationState implements driver.Conversations.
func (d *Driver) SetConversationState(_ context.Context, ns string, w driver.ConversationWrite, flow string, setFlow bool, state string) (driver.Conversation, error) {
	return d.writeConv(ns, w, func(c *driver.Conversation, _ bool) error {
		if setFlow {
			c.Flow = flow
		}
		c.State = state
		return nil
	})
}

// SetConversationData implements driver.Conversations.
func (d *Driver) SetConversationData(_ context.Context, ns string, w driver.ConversationWrite, data []byte) (driver.Conversation, error) {
	return d.writeConv(ns, w, func(c *driver.Conversation, _ bool) error {
		c.Data = driver.Clone(data)
		return nil
	})
}

// MergeConversationData implements driver.Conversations: the merge and its
// size check under the shard lock.
func (d *Driver) MergeConversationData(_ context.Context, ns string, w driver.ConversationWrite, patch []byte, maxSize int) (driver.Conversation, error) {
	return d.writeConv(ns, w, func(c *driver.Conversation, _ bool) error {
		merged, err := driver.MergeWithin(c.Data, patch, maxSize)
		c.Data = merged
		return err
	})
}

// SwapConversation implements driver.Conversations.
func (d *Driver) SwapConversation(_ context.Context, ns string, w driver.ConversationWrite, version int64, next driver.Conversation) (driver.Conversation, error) {
	return d.writeConv(ns, w, func(c *driver.Conversation, existed bool) error {
		if c.Version != version || (!existed && version != 0) {
			return driver.ErrConflict
		}
		c.Flow, c.State, c.Data = next.Flow, next.State, driver.Clone(next.Data)
		return nil
	})
}

// DeleteConversation implements driver.Conversations.
func (d *Driver) DeleteConversation(_ context.Context, ns, key string) error {
	if err := d.check(); err != nil {
		return err
	}
	s := d.shard(key)
	s.mu.Lock()
	delete(s.convs, mkey{ns, key})
	s.mu.Unlock()
	return nil
}

// ---- subscriptions ----

// Subscribe implements driver.Threads.
func (d *Driver) Subscribe(_ context.Context, ns, thread string, now, expiresAt time.Time) error {
	if err := d.check(); err != nil {
		return err
	}
	s, k := d.shard(thread), mkey{ns, thread}
	s.mu.Lock()
	defer s.mu.Unlock()
	created := now
	if cur, ok := s.subs[k]; ok && driver.Live(cur.ExpiresAt, now) {
		created = cur.CreatedAt
	}
	s.subs[k] = &driver.Subscription{Thread: thread, CreatedAt: created, ExpiresAt: expiresAt}
	return nil
}

// Unsubscribe implements driver.Threads.
func (d *Driver) Unsubscribe(_ context.Context, ns, thread string) error {
	if err := d.check(); err != nil {
		return err
	}
	s := d.shard(thread)
	s.mu.Lock()
	delete(s.subs, mkey{ns, thread})
	s.mu.Unlock()
	return nil
}

// IsSubscribed implements driver.Threads.
func (d *Driver) IsSubscribed(_ context.Context, ns, thread string, now time.Time) (bool, error) {
	if err := d.check(); err != nil {
		return false, err
	}
	s := d.shard(thread)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.subs[mkey{ns, thread}]
	return ok && driver.Live(cur.ExpiresAt, now), nil
}

// ListSubscriptions implements driver.Threads.
func (d *Driver) ListSubscriptions(_ context.Context, ns, after string, limit int, now time.Time) ([]driver.Subscription, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	p := driver.NewPager(after, limit, func(v *driver.Subscription) string { return v.Thread })
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		for k, v := range s.subs {
			if k.ns == ns && p.Wants(k.key) && driver.Live(v.ExpiresAt, now) {
				p.Add(*v)
			}
		}
		s.mu.Unlock()
	}
	return p.Page(), nil
}

// ---- thread and channel docs ----

func liveDoc(s *shard, scope driver.Scope, k mkey, now time.Time) (*driver.Doc, bool) {
	v, ok := s.docs[scope][k]
	if !ok || !driver.Live(v.ExpiresAt, now) {
		return nil, false
	}
	return v, true
}

func copyDoc(v *driver.Doc) driver.Doc {
	out := *v
	out.Data = driver.Clone(v.Data)
	return out
}

// GetDoc implements driver.Threads.
func (d *Driver) GetDoc(_ context.Context, ns string, scope driver.Scope, id string, now time.Time) (driver.Doc, bool, error) {
	if err := d.check(); err != nil {
		return driver.Doc{}, false, err
	}
	s := d.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := liveDoc(s, scope, mkey{ns, id}, now)
	if !ok {
		return driver.Doc{}, false, nil
	}
	return copyDoc(v), true, nil
}

// PutDoc implements driver.Threads.
func (d *Driver) PutDoc(_ context.Context, ns string, scope driver.Scope, id string, data []byte, now, expiresAt time.Time) error {
	if err := d.check(); err != nil {
		return err
	}
	s := d.shard(id)
	s.mu.Lock()
	s.docs[scope][mkey{ns, id}] = &driver.Doc{ID: id, Data: driver.Clone(data), UpdatedAt: now, ExpiresAt: expiresAt}
	s.mu.Unlock()
	return nil
}

// MergeDoc implements driver.Threads: the merge and its size check under
// the shard lock.
func (d *Driver) MergeDoc(_ context.Context, ns string, scope driver.Scope, id string, patch []byte, maxSize int, now, expiresAt time.Time) (driver.Doc, error) {
	if err := d.check(); err != nil {
		return driver.Doc{}, err
	}
	s, k := d.shard(id), mkey{ns, id}
	s.mu.Lock()
	defer s.mu.Unlock()
	var base []byte
	if cur, ok := liveDoc(s, scope, k, now); ok {
		base = cur.Data
	}
	merged, err := driver.MergeWithin(base, patch, maxSize)
	if err != nil {
		return driver.Doc{}, err
	}
	v := &driver.Doc{ID: id, Data: merged, UpdatedAt: now, ExpiresAt: expiresAt}
	s.docs[scope][k] = v
	return copyDoc(v), nil
}

// DeleteDoc implements driver.Threads.
func (d *Driver) DeleteDoc(_ context.Context, ns string, scope driver.Scope, id string) error {
	if err := d.check(); err != nil {
		return err
	}
	s := d.shard(id)
	s.mu.Lock()
	delete(s.docs[scope], mkey{ns, id})
	s.mu.Unlock()
	return nil
}

// ---- cache ----

// CacheGet implements driver.Threads.
func (d *Driver) CacheGet(_ context.Context, ns, key string, now time.Time) ([]byte, bool, error) {
	if err := d.check(); err != nil {
		return nil, false, err
	}
	s := d.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[mkey{ns, key}]
	if !ok || !driver.Live(v.expires, now) {
		return nil, false, nil
	}
	return driver.Clone(v.v), true, nil
}

// CacheSet implements driver.Threads.
func (d *Driver) CacheSet(_ context.Context, ns, key string, val []byte, now, expiresAt time.Time, onlyIfAbsent bool) (bool, error) {
	if err := d.check(); err != nil {
		return false, err
	}
	s, k := d.shard(key), mkey{ns, key}
	s.mu.Lock()
	defer s.mu.Unlock()
	if onlyIfAbsent {
		if v, ok := s.values[k]; ok && driver.Live(v.expires, now) {
			return false, nil
		}
	}
	s.values[k] = &value{v: driver.Clone(val), expires: expiresAt}
	return true, nil
}

// CacheDelete implements driver.Threads.
func (d *Driver) CacheDelete(_ context.Context, ns, key string) error {
	if err := d.check(); err != nil {
		return err
	}
	s, k := d.shard(key), mkey{ns, key}
	s.mu.Lock()
	delete(s.values, k)
	delete(s.lists, k)
	s.mu.Unlock()
	return nil
}

// ListAppend implements driver.Threads.
func (d *Driver) ListAppend(_ context.Context, ns, key string, val []byte, maxLen int, now, expiresAt time.Time) (int, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	s, k := d.shard(key), mkey{ns, key}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.lists[k]
	if !ok || !driver.Live(l.expires, now) {
		l = &list{}
		s.lists[k] = l
	}
	l.vals = append(l.vals, driver.Clone(val))
	if n := len(l.vals); n > maxLen {
		l.vals = append(l.vals[:0:0], l.vals[n-maxLen:]...)
	}
	l.expires = expiresAt
	return len(l.vals), nil
}

// ListRange implements driver.Threads.
func (d *Driver) ListRange(_ context.Context, ns, key string, now time.Time) ([][]byte, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	s := d.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.lists[mkey{ns, key}]
	if !ok || !driver.Live(l.expires, now) {
		return nil, nil
	}
	out := make([][]byte, len(l.vals))
	for i, v := range l.vals {
		out[i] = driver.Clone(v)
	}
	return out, nil
}

// ---- locks ----

func copyEntry(e *driver.Entry) *driver.Entry {
	if e == nil {
		return nil
	}
	c := *e
	c.Payload = driver.Clone(e.Payload)
	return &c
}

func copyEntries(es []driver.Entry) []driver.Entry {
	if es == nil {
		return nil
	}
	out := make([]driver.Entry, len(es))
	for i := range es {
		out[i] = *copyEntry(&es[i])
	}
	return out
}

func copyHolder(h driver.Holder) driver.Holder {
	h.Entry = copyEntry(h.Entry)
	return h
}

func copyLock(l *driver.LockState) driver.LockState {
	out := *l
	out.Holders = make([]driver.Holder, len(l.Holders))
	for i, h := range l.Holders {
		out.Holders[i] = copyHolder(h)
	}
	out.Pending = copyEntries(l.Pending)
	if out.Pending == nil {
		out.Pending = []driver.Entry{}
	}
	out.Skipped = copyEntries(l.Skipped)
	return out
}

// withLock runs fn on the lock record of key (a fresh one when absent) under
// the shard lock, and drops the record if it ends idle and expired.
func (d *Driver) withLock(ns, key string, now time.Time, fn func(st *driver.LockState) error) error {
	if err := d.check(); err != nil {
		return err
	}
	s, k := d.shard(key), mkey{ns, key}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.locks[k]
	if !ok {
		st = &driver.LockState{Key: key}
	}
	if err := fn(st); err != nil {
		return err
	}
	if driver.LockIdle(st) && !driver.Live(st.ExpiresAt, now) {
		delete(s.locks, k)
	} else {
		s.locks[k] = st
	}
	return nil
}

// Acquire implements driver.Locks.
func (d *Driver) Acquire(_ context.Context, ns string, r driver.AcquireRequest) (rep driver.AcquireReply, err error) {
	err = d.withLock(ns, r.Key, r.Now, func(st *driver.LockState) error {
		rep = driver.ApplyAcquire(st, r)
		// The reply must not share memory with the stored record.
		rep.Holder, rep.Next = copyHolder(rep.Holder), copyEntry(rep.Next)
		rep.Dropped, rep.Skipped = copyEntries(rep.Dropped), copyEntries(rep.Skipped)
		return nil
	})
	return rep, err
}

// ExtendLock implements driver.Locks.
func (d *Driver) ExtendLock(_ context.Context, ns, key string, token uint64, now, expiresAt time.Time) (h driver.Holder, err error) {
	err = d.withLock(ns, key, now, func(st *driver.LockState) error {
		h, err = driver.ApplyExtend(st, token, now, expiresAt)
		h = copyHolder(h)
		return err
	})
	return h, err
}

// ReleaseLock implements driver.Locks.
func (d *Driver) ReleaseLock(_ context.Context, ns, key string, token uint64, now, idle time.Time, keepPending bool) (es []driver.Entry, err error) {
	err = d.withLock(ns, key, now, func(st *driver.LockState) error {
		es, err = driver.ApplyRelease(st, token, now, idle, keepPending)
		return err
	})
	return es, err
}

// ForceReleaseLock implements driver.Locks.
func (d *Driver) ForceReleaseLock(_ context.Context, ns, key string, now, idle time.Time) (es []driver.Entry, err error) {
	err = d.withLock(ns, key, now, func(st *driver.LockState) error {
		es = driver.ApplyForceRelease(st, now, idle)
		return nil
	})
	return es, err
}

// HandoverLock implements driver.Locks.
func (d *Driver) HandoverLock(_ context.Context, ns, key string, token uint64, now, expiresAt, idle time.Time, keep bool) (rep driver.HandoverReply, err error) {
	err = d.withLock(ns, key, now, func(st *driver.LockState) error {
		rep, err = driver.ApplyHandover(st, token, now, expiresAt, idle, keep)
		rep.Holder, rep.Next = copyHolder(rep.Holder), copyEntry(rep.Next)
		return err
	})
	return rep, err
}

// InspectLock implements driver.Locks.
func (d *Driver) InspectLock(_ context.Context, ns, key string, now time.Time) (driver.LockState, bool, error) {
	if err := d.check(); err != nil {
		return driver.LockState{}, false, err
	}
	s := d.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.locks[mkey{ns, key}]
	if !ok {
		return driver.LockState{}, false, nil
	}
	out := copyLock(st)
	driver.PruneLock(&out, now)
	if driver.LockIdle(&out) && !driver.Live(out.ExpiresAt, now) {
		return driver.LockState{}, false, nil
	}
	return out, true, nil
}

// LapsedLocks implements driver.Locks by scanning the shards.
func (d *Driver) LapsedLocks(_ context.Context, ns string, now time.Time, limit int) ([]driver.LockState, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	var out []driver.LockState
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		for k, st := range s.locks {
			if k.ns != ns || len(st.Pending) == 0 && len(st.Holders) == 0 {
				continue
			}
			c := copyLock(st)
			driver.PruneLock(&c, now)
			if driver.LockLapsed(&c) {
				out = append(out, c)
			}
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b driver.LockState) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
