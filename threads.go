package botstate

import (
	"context"
	"encoding/json"
	"iter"
	"time"

	"github.com/botstate/botstate/driver"
)

// Threads is the set of threads a bot follows in a namespace.
type Threads struct{ s *Store }

// Threads returns the namespace's thread subscriptions.
func (s *Store) Threads() *Threads { return &Threads{s} }

// Subscription is a followed thread.
type Subscription = driver.Subscription

// Subscribe follows thread for ttl (0: until Unsubscribe). Subscribing again
// refreshes the expiry.
func (t *Threads) Subscribe(ctx context.Context, thread string, ttl time.Duration) error {
	const op = "Threads.Subscribe"
	s := t.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "thread id", thread); err != nil {
		return err
	}
	if err := checkTTL(op, "ttl", ttl, true); err != nil {
		return err
	}
	now := s.now()
	return wrap(op, s.core.drv.Subscribe(ctx, s.ns, thread, now, after(now, ttl)))
}

// Unsubscribe stops following thread. Absent is not an error.
func (t *Threads) Unsubscribe(ctx context.Context, thread string) error {
	const op = "Threads.Unsubscribe"
	s := t.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "thread id", thread); err != nil {
		return err
	}
	return wrap(op, s.core.drv.Unsubscribe(ctx, s.ns, thread))
}

// IsSubscribed reports whether thread is followed (and not expired).
func (t *Threads) IsSubscribed(ctx context.Context, thread string) (bool, error) {
	const op = "Threads.IsSubscribed"
	s := t.s
	if err := s.begin(ctx, op); err != nil {
		return false, err
	}
	if err := checkKey(op, "thread id", thread); err != nil {
		return false, err
	}
	ok, err := s.core.drv.IsSubscribed(ctx, s.ns, thread, s.now())
	return ok, wrap(op, err)
}

// subscriptionPage is how many subscriptions the iterator fetches at a time.
const subscriptionPage = 256

// Subscriptions iterates over the namespace's live subscriptions in
// ascending thread order, fetching them a page at a time. An error ends the
// iteration after being yielded once.
func (t *Threads) Subscriptions(ctx context.Context) iter.Seq2[Subscription, error] {
	const op = "Threads.Subscriptions"
	s := t.s
	return func(yield func(Subscription, error) bool) {
		after := ""
		for {
			if err := s.begin(ctx, op); err != nil {
				yield(Subscription{}, err)
				return
			}
			page, err := s.core.drv.ListSubscriptions(ctx, s.ns, after, subscriptionPage, s.now())
			if err != nil {
				yield(Subscription{}, wrap(op, err))
				return
			}
			for _, sub := range page {
				if !yield(sub, nil) {
					return
				}
			}
			if len(page) < subscriptionPage {
				return
			}
			after = page[len(page)-1].Thread
		}
	}
}

// StateMap is a JSON object kept per thread or per channel: memory a bot
// keeps about where it talks.
type StateMap struct {
	s     *Store
	scope driver.Scope
	name  string
}

// ThreadState returns the namespace's per-thread state.
func (s *Store) ThreadState() *StateMap {
	return &StateMap{s: s, scope: driver.ScopeThread, name: "ThreadState"}
}

// ChannelState returns the namespace's per-channel state.
func (s *Store) ChannelState() *StateMap {
	return &StateMap{s: s, scope: driver.ScopeChannel, name: "ChannelState"}
}

func (m *StateMap) begin(ctx context.Context, op, id string) error {
	if err := m.s.begin(ctx, op); err != nil {
		return err
	}
	return checkKey(op, "id", id)
}

func decodeObject(op string, b []byte) (map[string]any, error) {
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil || out == nil {
		return nil, &Error{Op: op, Msg: "stored data is not a JSON object", Err: ErrUnavailable}
	}
	return out, nil
}

// Get returns the map stored for id; found is false (and the map nil) when
// there is none.
func (m *StateMap) Get(ctx context.Context, id string) (data map[string]any, found bool, err error) {
	op := m.name + ".Get"
	if err := m.begin(ctx, op, id); err != nil {
		return nil, false, err
	}
	d, ok, err := m.s.core.drv.GetDoc(ctx, m.s.ns, m.scope, id, m.s.now())
	if err != nil || !ok {
		return nil, false, wrap(op, err)
	}
	data, err = decodeObject(op, d.Data)
	return data, err == nil, err
}

// Put replaces the map stored for id; it expires after ttl (0: never).
func (m *StateMap) Put(ctx context.Context, id string, data map[string]any, ttl time.Duration) error {
	op := m.name + ".Put"
	if err := m.begin(ctx, op, id); err != nil {
		return err
	}
	if err := checkTTL(op, "ttl", ttl, true); err != nil {
		return err
	}
	b, err := m.s.encodeObject(op, "data", data)
	if err != nil {
		return err
	}
	now := m.s.now()
	return wrap(op, m.s.core.drv.PutDoc(ctx, m.s.ns, m.scope, id, b, now, after(now, ttl)))
}

// Merge merges patch into the map stored for id, top-level key by key, in
// one atomic step, and returns the result; the map then expires after ttl
// (0: never). An absent map is created. WithMaxValueSize bounds the result
// as it bounds the patch: a merge whose result would be over it returns
// ErrTooLarge and changes nothing.
func (m *StateMap) Merge(ctx context.Context, id string, patch map[string]any, ttl time.Duration) (map[string]any, error) {
	op := m.name + ".Merge"
	if err := m.begin(ctx, op, id); err != nil {
		return nil, err
	}
	if err := checkTTL(op, "ttl", ttl, true); err != nil {
		return nil, err
	}
	b, err := m.s.encodeObject(op, "patch", patch)
	if err != nil {
		return nil, err
	}
	now := m.s.now()
	d, err := m.s.core.drv.MergeDoc(ctx, m.s.ns, m.scope, id, b, m.s.core.cfg.maxValueSize, now, after(now, ttl))
	if err != nil {
		return nil, wrap(op, err)
	}
	return decodeObject(op, d.Data)
}

// Delete removes the map stored for id. Absent is not an error.
func (m *StateMap) Delete(ctx context.Context, id string) error {
	op := m.name + ".Delete"
	if err := m.begin(ctx, op, id); err != nil {
		return err
	}
	return wrap(op, m.s.core.drv.DeleteDoc(ctx, m.s.ns, m.scope, id))
}

// Cache is a small key-value cache with TTLs and bounded lists (message
// history for an AI agent, say). Values and lists are separate: one key may
// name both.
type Cache struct{ s *Store }

// Cache returns the namespace's cache.
func (s *Store) Cache() *Cache { return &Cache{s} }

// MaxListLen is the largest maxLen Append accepts.
const MaxListLen = 10000

func (c *Cache) begin(ctx context.Context, op, key string) error {
	if err := c.s.begin(ctx, op); err != nil {
		return err
	}
	return checkKey(op, "cache key", key)
}

// Get returns the value under key; found is false when there is none.
func (c *Cache) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	const op = "Cache.Get"
	if err := c.begin(ctx, op, key); err != nil {
		return nil, false, err
	}
	v, ok, err := c.s.core.drv.CacheGet(ctx, c.s.ns, key, c.s.now())
	return v, ok, wrap(op, err)
}

func (c *Cache) set(ctx context.Context, op, key string, value []byte, ttl time.Duration, onlyIfAbsent bool) (bool, error) {
	if err := c.begin(ctx, op, key); err != nil {
		return false, err
	}
	if value == nil {
		return false, invalid(op, "value is nil")
	}
	if err := c.s.checkSize(op, "value", value); err != nil {
		return false, err
	}
	if err := checkTTL(op, "ttl", ttl, true); err != nil {
		return false, err
	}
	now := c.s.now()
	ok, err := c.s.core.drv.CacheSet(ctx, c.s.ns, key, value, now, after(now, ttl), onlyIfAbsent)
	return ok, wrap(op, err)
}

// Set stores value under key for ttl (0: no expiry).
func (c *Cache) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	_, err := c.set(ctx, "Cache.Set", key, value, ttl, false)
	return err
}

// SetIfNotExists stores value under key for ttl only if no live value is
// there, atomically, and reports whether it stored it.
func (c *Cache) SetIfNotExists(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	return c.set(ctx, "Cache.SetIfNotExists", key, value, ttl, true)
}

// Delete removes the value and the list under key. Absent is not an error.
func (c *Cache) Delete(ctx context.Context, key string) error {
	const op = "Cache.Delete"
	if err := c.begin(ctx, op, key); err != nil {
		return err
	}
	return wrap(op, c.s.core.drv.CacheDelete(ctx, c.s.ns, key))
}

// Append adds value to the end of the list under key, keeps only its newest
// maxLen entries (1 to MaxListLen), makes the list expire after ttl (0:
// never), and returns the list's length.
func (c *Cache) Append(ctx context.Context, key string, value []byte, maxLen int, ttl time.Duration) (int, error) {
	const op = "Cache.Append"
	if err := c.begin(ctx, op, key); err != nil {
		return 0, err
	}
	if value == nil {
		return 0, invalid(op, "value is nil")
	}
	if err := c.s.checkSize(op, "value", value); err != nil {
		return 0, err
	}
	if maxLen < 1 || maxLen > MaxListLen {
		return 0, invalid(op, "maxLen %d out of range [1, %d]", maxLen, MaxListLen)
	}
	if err := checkTTL(op, "ttl", ttl, true); err != nil {
		return 0, err
	}
	now := c.s.now()
	n, err := c.s.core.drv.ListAppend(ctx, c.s.ns, key, value, maxLen, now, after(now, ttl))
	return n, wrap(op, err)
}

// List returns the list under key, oldest entry first; nil when absent.
func (c *Cache) List(ctx context.Context, key string) ([][]byte, error) {
	const op = "Cache.List"
	if err := c.begin(ctx, op, key); err != nil {
		return nil, err
	}
	l, err := c.s.core.drv.ListRange(ctx, c.s.ns, key, c.s.now())
	return l, wrap(op, err)
}
