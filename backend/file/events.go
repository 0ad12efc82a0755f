package file

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// An event is stored under ns\0key in the events bucket, and indexed:
//
//   - event_order: ns\0 seq(8, big-endian) -> key, the insertion order, so
//     an event limit evicts the oldest keys without a scan;
//   - event_count: ns -> count(8), the keys the namespace holds;
//   - event_pending: ns\0 created(12) key -> status, lease, expiry, retry
//     time, for the events neither completed nor failed, oldest first, so
//     Pending, Expired and Due read only unfinished work and decide from the
//     index entry alone;
//   - event_failed: the same for the failed events, so Failed reads only
//     them;
//   - expiry: the retention end, for the reaper.

func encodeEvent(e *driver.Event, seq uint64) []byte {
	en := encoder{b: make([]byte, 0, 48+len(e.Key)+len(e.Token)+len(e.Payload)+len(e.Result)+len(e.LastError))}
	en.time(e.ExpiresAt)
	en.byte(byte(e.Status))
	en.uint(seq)
	en.uint(uint64(e.Attempts))
	en.time(e.CreatedAt)
	en.time(e.LeaseUntil)
	en.string(e.Token)
	en.bytes(e.Payload)
	en.bytes(e.Result)
	// Tail (format 2): only when set, so the common event stays as short
	// as format 1 wrote it.
	if e.LastError != "" || !e.RetryAt.IsZero() {
		en.string(e.LastError)
		en.time(e.RetryAt)
	}
	return en.b
}

func decodeEvent(k string, v []byte) (driver.Event, uint64, error) {
	d := decoder{b: v}
	e := driver.Event{Key: k}
	e.ExpiresAt = d.time()
	e.Status = driver.EventStatus(d.byte())
	seq := d.uint()
	e.Attempts = int(d.uint())
	e.CreatedAt = d.time()
	e.LeaseUntil = d.time()
	e.Token = d.string()
	e.Payload = d.bytes()
	e.Result = d.bytes()
	if d.more() {
		e.LastError = d.string()
		e.RetryAt = d.time()
	}
	return e, seq, d.err
}

// getEvent returns the stored event, expired or not, and its insertion seq.
func getEvent(tx *bolt.Tx, ns, k string) (driver.Event, uint64, bool, error) {
	v := tx.Bucket(bEvents).Get(key(ns, k))
	if v == nil {
		return driver.Event{}, 0, false, nil
	}
	e, seq, err := decodeEvent(k, v)
	return e, seq, err == nil, err
}

func orderKey(ns string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix(ns), seq)
}

func pendingKey(ns string, created time.Time, k string) []byte {
	b := sortTime(prefix(ns), created)
	return append(b, k...)
}

// indexValue is an event's entry in event_pending or event_failed: what the
// listings decide by. The retry time is a tail, absent when zero (and in
// format 1).
func indexValue(e *driver.Event) []byte {
	en := encoder{b: make([]byte, 0, 24)}
	en.byte(byte(e.Status))
	en.time(e.LeaseUntil)
	en.time(e.ExpiresAt)
	if !e.RetryAt.IsZero() {
		en.time(e.RetryAt)
	}
	return en.b
}

// decodeIndexValue reads an indexValue back into the fields it holds.
func decodeIndexValue(v []byte) (driver.Event, error) {
	d := decoder{b: v}
	var e driver.Event
	e.Status = driver.EventStatus(d.byte())
	e.LeaseUntil = d.time()
	e.ExpiresAt = d.time()
	if d.more() {
		e.RetryAt = d.time()
	}
	return e, d.err
}

// eventIndex is the bucket that indexes events of status st by creation
// time: event_pending for unfinished work, event_failed for failed events,
// none for completed ones.
func eventIndex(st driver.EventStatus) []byte {
	switch st {
	case driver.EventCompleted:
		return nil
	case driver.EventFailed:
		return bFailed
	}
	return bPending
}

// putEvent stores e under its seq and moves its index entries from prev
// (nil for a new event).
func putEvent(tx *bolt.Tx, ns string, e *driver.Event, seq uint64, prev *driver.Event) error {
	k := key(ns, e.Key)
	if err := tx.Bucket(bEvents).Put(k, encodeEvent(e, seq)); err != nil {
		return err
	}
	var oldExp time.Time
	idx := eventIndex(e.Status)
	if prev != nil {
		oldExp = prev.ExpiresAt
		if was := eventIndex(prev.Status); was != nil && (!bytes.Equal(was, idx) || !prev.CreatedAt.Equal(e.CreatedAt)) {
			if err := tx.Bucket(was).Delete(pendingKey(ns, prev.CreatedAt, prev.Key)); err != nil {
				return err
			}
		}
	}
	if idx != nil {
		if err := tx.Bucket(idx).Put(pendingKey(ns, e.CreatedAt, e.Key), indexValue(e)); err != nil {
			return err
		}
	}
	return setExpiry(tx, kEvent, k, oldExp, e.ExpiresAt)
}

// insertEvent stores a new event with the next insertion seq and, when the
// namespace then holds more than limit keys, evicts the oldest.
func insertEvent(tx *bolt.Tx, ns string, e *driver.Event, limit int) error {
	seq, err := tx.Bucket(bEvents).NextSequence()
	if err != nil {
		return err
	}
	if err := putEvent(tx, ns, e, seq, nil); err != nil {
		return err
	}
	if err := tx.Bucket(bEventOrder).Put(orderKey(ns, seq), []byte(e.Key)); err != nil {
		return err
	}
	n, err := addCount(tx, ns, 1)
	if err != nil || limit <= 0 || n <= uint64(limit) {
		return err
	}
	return evictOldest(tx, ns, int(n-uint64(limit)))
}

// evictOldest deletes the n oldest keys of the namespace by insertion.
func evictOldest(tx *bolt.Tx, ns string, n int) error {
	p := prefix(ns)
	var victims []string
	c := tx.Bucket(bEventOrder).Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && len(victims) < n; k, v = c.Next() {
		victims = append(victims, string(v))
	}
	for _, k := range victims {
		e, seq, ok, err := getEvent(tx, ns, k)
		if err != nil {
			return err
		}
		if ok {
			if err := deleteEvent(tx, ns, &e, seq); err != nil {
				return err
			}
		}
	}
	return nil
}

// deleteEvent removes a stored event and every index entry it has.
func deleteEvent(tx *bolt.Tx, ns string, e *driver.Event, seq uint64) error {
	k := key(ns, e.Key)
	if err := tx.Bucket(bEvents).Delete(k); err != nil {
		return err
	}
	if idx := eventIndex(e.Status); idx != nil {
		if err := tx.Bucket(idx).Delete(pendingKey(ns, e.CreatedAt, e.Key)); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bEventOrder).Delete(orderKey(ns, seq)); err != nil {
		return err
	}
	if err := setExpiry(tx, kEvent, k, e.ExpiresAt, time.Time{}); err != nil {
		return err
	}
	_, err := addCount(tx, ns, -1)
	return err
}

// addCount adds delta to the namespace's key count and returns the new count.
func addCount(tx *bolt.Tx, ns string, delta int) (uint64, error) {
	b := tx.Bucket(bEventCount)
	k := []byte(ns)
	var n uint64
	if v := b.Get(k); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	if delta < 0 && n < uint64(-delta) {
		n = 0
	} else {
		n += uint64(delta)
	}
	if n == 0 {
		return 0, b.Delete(k)
	}
	return n, b.Put(k, binary.BigEndian.AppendUint64(nil, n))
}

// liveEvent loads the event and says whether it exists at now; stored
// reports a record that is there but expired (to be replaced).
func liveEvent(tx *bolt.Tx, ns, k string, now time.Time) (e driver.Event, seq uint64, live, stored bool, err error) {
	e, seq, stored, err = getEvent(tx, ns, k)
	if err != nil || !stored {
		return driver.Event{}, 0, false, false, err
	}
	if !driver.Live(e.ExpiresAt, now) {
		return e, seq, false, true, nil
	}
	return e, seq, true, true, nil
}

// RecordEvent implements driver.Events.
func (d *Driver) RecordEvent(ctx context.Context, ns string, w driver.EventWrite) (bool, error) {
	var inserted bool
	err := d.write(ctx, func(tx *bolt.Tx) error {
		inserted = false
		cur, seq, live, stored, err := liveEvent(tx, ns, w.Key, w.Now)
		if err != nil || live {
			return err
		}
		if stored {
			if err := deleteEvent(tx, ns, &cur, seq); err != nil {
				return err
			}
		}
		e := driver.Event{Key: w.Key, Status: driver.EventRecorded, Payload: w.Payload,
			CreatedAt: w.Now, ExpiresAt: w.ExpiresAt}
		if err := insertEvent(tx, ns, &e, w.Limit); err != nil {
			return err
		}
		inserted = true
		return nil
	})
	return inserted && err == nil, err
}

// LookupEvent implements driver.Events.
func (d *Driver) LookupEvent(ctx context.Context, ns, k string, now time.Time) (driver.Event, bool, error) {
	var (
		e    driver.Event
		live bool
	)
	err := d.read(ctx, func(tx *bolt.Tx) error {
		var err error
		e, _, live, _, err = liveEvent(tx, ns, k, now)
		return err
	})
	if err != nil || !live {
		return driver.Event{}, false, err
	}
	return e, true, nil
}

// ForgetEvent implements driver.Events.
func (d *Driver) ForgetEvent(ctx context.Context, ns, k string) error {
	return d.write(ctx, func(tx *bolt.Tx) error {
		e, seq, ok, err := getEvent(tx, ns, k)
		if err != nil || !ok {
			return err
		}
		return deleteEvent(tx, ns, &e, seq)
	})
}

// ClaimEvent implements driver.Events.
func (d *Driver) ClaimEvent(ctx context.Context, ns string, r driver.ClaimRequest) (driver.ClaimReply, error) {
	var (
		rep     driver.ClaimReply
		outcome error
	)
	err := d.write(ctx, func(tx *bolt.Tx) error {
		rep, outcome = driver.ClaimReply{}, nil
		cur, seq, live, stored, err := liveEvent(tx, ns, r.Key, r.Now)
		if err != nil {
			return err
		}
		reply, next, write, err := driver.ApplyClaim(cur, live, r)
		if err != nil {
			outcome = err
			return nil
		}
		rep = reply
		if !write {
			return nil
		}
		if live {
			return putEvent(tx, ns, &next, seq, &cur)
		}
		if stored {
			if err := deleteEvent(tx, ns, &cur, seq); err != nil {
				return err
			}
		}
		return insertEvent(tx, ns, &next, r.Limit)
	})
	if err != nil {
		return driver.ClaimReply{}, err
	}
	return rep, outcome
}

// update applies fn to the live event (found false when absent or expired)
// in one transaction and stores what it returns; an error from fn is the
// call's outcome and nothing is written.
func (d *Driver) update(ctx context.Context, ns, k string, now time.Time, fn func(cur driver.Event, found bool) (driver.Event, error)) error {
	var outcome error
	err := d.write(ctx, func(tx *bolt.Tx) error {
		outcome = nil
		cur, seq, live, _, err := liveEvent(tx, ns, k, now)
		if err != nil {
			return err
		}
		next, err := fn(cur, live)
		if err != nil {
			outcome = err
			return nil
		}
		if !live {
			// Every rule refuses an absent event; never reached.
			outcome = driver.ErrNotFound
			return nil
		}
		return putEvent(tx, ns, &next, seq, &cur)
	})
	if err != nil {
		return err
	}
	return outcome
}

// CompleteEvent implements driver.Events.
func (d *Driver) CompleteEvent(ctx context.Context, ns, k, token string, result []byte, now, expiresAt time.Time) error {
	return d.update(ctx, ns, k, now, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyComplete(cur, found, token, result, expiresAt)
	})
}

// ExtendEvent implements driver.Events.
func (d *Driver) ExtendEvent(ctx context.Context, ns, k, token string, now, leaseUntil, expiresAt time.Time) error {
	return d.update(ctx, ns, k, now, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyExtendEvent(cur, found, token, leaseUntil, expiresAt)
	})
}

// ReleaseEvent implements driver.Events.
func (d *Driver) ReleaseEvent(ctx context.Context, ns string, r driver.ReleaseRequest) error {
	return d.update(ctx, ns, r.Key, r.Now, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyReleaseEvent(cur, found, r)
	})
}

// RetryEvent implements driver.Events.
func (d *Driver) RetryEvent(ctx context.Context, ns, k string, now, expiresAt time.Time) error {
	return d.update(ctx, ns, k, now, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyRetryEvent(cur, found, expiresAt)
	})
}

// listIndexed returns, oldest first, up to limit (all when limit <= 0) live
// events of ns indexed in bucket idx (event_pending or event_failed) that
// keep accepts, judged from the index entry alone (status, lease, expiry
// and retry time); only the events returned are read.
func (d *Driver) listIndexed(ctx context.Context, idx []byte, ns string, now time.Time, limit int, keep func(e *driver.Event) bool) ([]driver.Event, error) {
	var out []driver.Event
	err := d.read(ctx, func(tx *bolt.Tx) error {
		out = nil
		p := prefix(ns)
		var keys []string
		c := tx.Bucket(idx).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if limit > 0 && len(keys) >= limit {
				break
			}
			e, err := decodeIndexValue(v)
			if err != nil {
				return err
			}
			if !driver.Live(e.ExpiresAt, now) || !keep(&e) || len(k) < len(p)+sortTimeLen {
				continue
			}
			keys = append(keys, string(k[len(p)+sortTimeLen:]))
		}
		for _, k := range keys {
			e, _, ok, err := getEvent(tx, ns, k)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}

// ExpiredEvents implements driver.Events by walking event_pending.
func (d *Driver) ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listIndexed(ctx, bPending, ns, now, limit, func(e *driver.Event) bool {
		return e.Status == driver.EventClaimed && !e.LeaseUntil.After(now)
	})
}

// DueEvents implements driver.Events by walking event_pending.
func (d *Driver) DueEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listIndexed(ctx, bPending, ns, now, limit, func(e *driver.Event) bool { return driver.EventDue(e, now) })
}

// FailedEvents implements driver.Events by walking event_failed.
func (d *Driver) FailedEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listIndexed(ctx, bFailed, ns, now, limit, func(*driver.Event) bool { return true })
}

// PendingEvents implements driver.Events by walking event_pending.
func (d *Driver) PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listIndexed(ctx, bPending, ns, now, limit, driver.EventPending)
}
