package file

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// Subscriptions, thread and channel docs, and cache values and lists:
// plain items, each kind in its bucket.

// ---- subscriptions ----

func encodeSub(s *driver.Subscription) []byte {
	en := encoder{b: make([]byte, 0, 16)}
	en.time(s.ExpiresAt)
	en.time(s.CreatedAt)
	return en.b
}

func decodeSub(thread string, v []byte) (driver.Subscription, error) {
	d := decoder{b: v}
	s := driver.Subscription{Thread: thread}
	s.ExpiresAt = d.time()
	s.CreatedAt = d.time()
	return s, d.err
}

// Subscribe implements driver.Threads.
func (d *Driver) Subscribe(ctx context.Context, ns, thread string, now, expiresAt time.Time) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		k := key(ns, thread)
		s := driver.Subscription{Thread: thread, CreatedAt: now, ExpiresAt: expiresAt}
		if v := tx.Bucket(bSubs).Get(k); v != nil {
			cur, err := decodeSub(thread, v)
			if err != nil {
				return err
			}
			if driver.Live(cur.ExpiresAt, now) {
				s.CreatedAt = cur.CreatedAt
			}
		}
		return putPlain(tx, bSubs, kSub, k, encodeSub(&s), expiresAt)
	})
}

// Unsubscribe implements driver.Threads.
func (d *Driver) Unsubscribe(ctx context.Context, ns, thread string) error {
	return d.write(ctx, func(tx *bolt.Tx) error { return deletePlain(tx, bSubs, kSub, key(ns, thread)) })
}

// IsSubscribed implements driver.Threads.
func (d *Driver) IsSubscribed(ctx context.Context, ns, thread string, now time.Time) (bool, error) {
	var live bool
	err := d.read(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bSubs).Get(key(ns, thread))
		if v == nil {
			return nil
		}
		exp, err := headExpiry(v)
		live = err == nil && driver.Live(exp, now)
		return err
	})
	return live && err == nil, err
}

// ListSubscriptions implements driver.Threads. Keys are stored in thread
// order, so this is one range scan from after.
func (d *Driver) ListSubscriptions(ctx context.Context, ns, after string, limit int, now time.Time) ([]driver.Subscription, error) {
	var out []driver.Subscription
	err := d.read(ctx, func(tx *bolt.Tx) error {
		out = nil
		p := prefix(ns)
		c := tx.Bucket(bSubs).Cursor()
		for k, v := c.Seek(key(ns, after)); k != nil && bytes.HasPrefix(k, p) && len(out) < limit; k, v = c.Next() {
			thread := string(k[len(p):])
			if thread <= after {
				continue
			}
			s, err := decodeSub(thread, v)
			if err != nil {
				return err
			}
			if driver.Live(s.ExpiresAt, now) {
				out = append(out, s)
			}
		}
		return nil
	})
	return out, err
}

// ---- thread and channel docs ----

func docBucket(scope driver.Scope) ([]byte, byte, error) {
	switch scope {
	case driver.ScopeThread:
		return bThreadDocs, kThreadDoc, nil
	case driver.ScopeChannel:
		return bChannelDocs, kChannelDoc, nil
	}
	return nil, 0, fmt.Errorf("file: unknown doc scope %d: %w", scope, driver.ErrInvalidArgument)
}

func encodeDoc(v *driver.Doc) []byte {
	en := encoder{b: make([]byte, 0, 16+len(v.Data))}
	en.time(v.ExpiresAt)
	en.time(v.UpdatedAt)
	en.bytes(v.Data)
	return en.b
}

func decodeDoc(id string, v []byte) (driver.Doc, error) {
	d := decoder{b: v}
	doc := driver.Doc{ID: id}
	doc.ExpiresAt = d.time()
	doc.UpdatedAt = d.time()
	doc.Data = d.bytes()
	return doc, d.err
}

func liveDoc(tx *bolt.Tx, name []byte, ns, id string, now time.Time) (driver.Doc, bool, error) {
	v := tx.Bucket(name).Get(key(ns, id))
	if v == nil {
		return driver.Doc{}, false, nil
	}
	doc, err := decodeDoc(id, v)
	if err != nil || !driver.Live(doc.ExpiresAt, now) {
		return driver.Doc{}, false, err
	}
	return doc, true, nil
}

// GetDoc implements driver.Threads.
func (d *Driver) GetDoc(ctx context.Context, ns string, scope driver.Scope, id string, now time.Time) (doc driver.Doc, ok bool, err error) {
	name, _, err := docBucket(scope)
	if err != nil {
		return driver.Doc{}, false, err
	}
	err = d.read(ctx, func(tx *bolt.Tx) error {
		doc, ok, err = liveDoc(tx, name, ns, id, now)
		return err
	})
	if err != nil {
		return driver.Doc{}, false, err
	}
	return doc, ok, nil
}

// PutDoc implements driver.Threads.
func (d *Driver) PutDoc(ctx context.Context, ns string, scope driver.Scope, id string, data []byte, now, expiresAt time.Time) error {
	name, kind, err := docBucket(scope)
	if err != nil {
		return err
	}
	doc := driver.Doc{ID: id, Data: data, UpdatedAt: now, ExpiresAt: expiresAt}
	return d.write(ctx, func(tx *bolt.Tx) error {
		return putPlain(tx, name, kind, key(ns, id), encodeDoc(&doc), expiresAt)
	})
}

// MergeDoc implements driver.Threads: the merge and its size check inside
// the write transaction.
func (d *Driver) MergeDoc(ctx context.Context, ns string, scope driver.Scope, id string, patch []byte, maxSize int, now, expiresAt time.Time) (driver.Doc, error) {
	name, kind, err := docBucket(scope)
	if err != nil {
		return driver.Doc{}, err
	}
	var (
		out     driver.Doc
		outcome error
	)
	err = d.write(ctx, func(tx *bolt.Tx) error {
		out, outcome = driver.Doc{}, nil
		cur, _, err := liveDoc(tx, name, ns, id, now)
		if err != nil {
			return err
		}
		merged, err := driver.MergeWithin(cur.Data, patch, maxSize)
		if err != nil {
			outcome = err
			return nil
		}
		doc := driver.Doc{ID: id, Data: merged, UpdatedAt: now, ExpiresAt: expiresAt}
		if err := putPlain(tx, name, kind, key(ns, id), encodeDoc(&doc), expiresAt); err != nil {
			return err
		}
		out = doc
		return nil
	})
	if err != nil {
		return driver.Doc{}, err
	}
	return out, outcome
}

// DeleteDoc implements driver.Threads.
func (d *Driver) DeleteDoc(ctx context.Context, ns string, scope driver.Scope, id string) error {
	name, kind, err := docBucket(scope)
	if err != nil {
		return err
	}
	return d.write(ctx, func(tx *bolt.Tx) error { return deletePlain(tx, name, kind, key(ns, id)) })
}

// ---- cache ----

func encodeValue(v []byte, expiresAt time.Time) []byte {
	en := encoder{b: make([]byte, 0, 12+len(v))}
	en.time(expiresAt)
	en.bytes(v)
	return en.b
}

func decodeValue(v []byte) ([]byte, time.Time, error) {
	d := decoder{b: v}
	exp := d.time()
	val := d.bytes()
	return val, exp, d.err
}

func encodeList(vals [][]byte, expiresAt time.Time) []byte {
	n := 12
	for _, v := range vals {
		n += len(v) + 3
	}
	en := encoder{b: make([]byte, 0, n)}
	en.time(expiresAt)
	en.uint(uint64(len(vals)))
	for _, v := range vals {
		en.bytes(v)
	}
	return en.b
}

func decodeList(v []byte) ([][]byte, time.Time, error) {
	d := decoder{b: v}
	exp := d.time()
	n := d.count()
	vals := make([][]byte, n)
	for i := range vals {
		vals[i] = d.bytes()
	}
	return vals, exp, d.err
}

// CacheGet implements driver.Threads.
func (d *Driver) CacheGet(ctx context.Context, ns, k string, now time.Time) ([]byte, bool, error) {
	var (
		val  []byte
		live bool
	)
	err := d.read(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bCache).Get(key(ns, k))
		if v == nil {
			return nil
		}
		var exp time.Time
		var err error
		val, exp, err = decodeValue(v)
		live = err == nil && driver.Live(exp, now)
		return err
	})
	if err != nil || !live {
		return nil, false, err
	}
	return val, true, nil
}

// CacheSet implements driver.Threads.
func (d *Driver) CacheSet(ctx context.Context, ns, k string, val []byte, now, expiresAt time.Time, onlyIfAbsent bool) (bool, error) {
	var wrote bool
	err := d.write(ctx, func(tx *bolt.Tx) error {
		wrote = false
		bk := key(ns, k)
		if onlyIfAbsent {
			if v := tx.Bucket(bCache).Get(bk); v != nil {
				exp, err := headExpiry(v)
				if err != nil || driver.Live(exp, now) {
					return err
				}
			}
		}
		if err := putPlain(tx, bCache, kCacheValue, bk, encodeValue(val, expiresAt), expiresAt); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	return wrote && err == nil, err
}

// CacheDelete implements driver.Threads.
func (d *Driver) CacheDelete(ctx context.Context, ns, k string) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		bk := key(ns, k)
		if err := deletePlain(tx, bCache, kCacheValue, bk); err != nil {
			return err
		}
		return deletePlain(tx, bLists, kCacheList, bk)
	})
}

// ListAppend implements driver.Threads.
func (d *Driver) ListAppend(ctx context.Context, ns, k string, val []byte, maxLen int, now, expiresAt time.Time) (int, error) {
	var n int
	err := d.write(ctx, func(tx *bolt.Tx) error {
		n = 0
		bk := key(ns, k)
		var vals [][]byte
		if v := tx.Bucket(bLists).Get(bk); v != nil {
			cur, exp, err := decodeList(v)
			if err != nil {
				return err
			}
			if driver.Live(exp, now) {
				vals = cur
			}
		}
		vals = append(vals, val)
		if len(vals) > maxLen {
			vals = vals[len(vals)-max(maxLen, 0):]
		}
		if err := putPlain(tx, bLists, kCacheList, bk, encodeList(vals, expiresAt), expiresAt); err != nil {
			return err
		}
		n = len(vals)
		return nil
	})
	return n, err
}

// ListRange implements driver.Threads.
func (d *Driver) ListRange(ctx context.Context, ns, k string, now time.Time) ([][]byte, error) {
	var out [][]byte
	err := d.read(ctx, func(tx *bolt.Tx) error {
		out = nil
		v := tx.Bucket(bLists).Get(key(ns, k))
		if v == nil {
			return nil
		}
		vals, exp, err := decodeList(v)
		if err == nil && driver.Live(exp, now) {
			out = vals
		}
		return err
	})
	return out, err
}
