package file

import (
	"bytes"
	"context"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// A lock is stored under ns\0key in the locks bucket, and indexed:
//
//   - expiry: when the reaper may drop the record (lockReapAt);
//   - lock_lapse: ns\0 lapse(12) key -> until, for every record that will
//     be lapsed (no live holder, a live entry waiting) from the time lapse
//     on until the time until (zero: for good), unless a write changes it
//     first; see lapseOf. LapsedLocks reads it up to now.

func encodeEntry(en *encoder, e *driver.Entry) {
	en.bytes(e.Payload)
	en.time(e.EnqueuedAt)
	en.time(e.ExpiresAt)
}

func decodeEntry(d *decoder) driver.Entry {
	var e driver.Entry
	e.Payload = d.bytes()
	e.EnqueuedAt = d.time()
	e.ExpiresAt = d.time()
	return e
}

func encodeLock(st *driver.LockState) []byte {
	en := encoder{b: make([]byte, 0, 64)}
	en.time(st.ExpiresAt)
	en.uint(st.Fence)
	en.uint(uint64(len(st.Holders)))
	tail := len(st.Skipped) > 0
	for _, h := range st.Holders {
		en.string(h.Owner)
		en.uint(h.Token)
		en.time(h.AcquiredAt)
		en.time(h.ExpiresAt)
		tail = tail || h.Entry != nil
	}
	en.uint(uint64(len(st.Pending)))
	for i := range st.Pending {
		encodeEntry(&en, &st.Pending[i])
	}
	if !tail {
		return en.b
	}
	// Tail (format 2): each holder's entry (0: none, 1: one follows), then
	// the skipped entries.
	for _, h := range st.Holders {
		if h.Entry == nil {
			en.byte(0)
			continue
		}
		en.byte(1)
		encodeEntry(&en, h.Entry)
	}
	en.uint(uint64(len(st.Skipped)))
	for i := range st.Skipped {
		encodeEntry(&en, &st.Skipped[i])
	}
	return en.b
}

func decodeLock(k string, v []byte) (driver.LockState, error) {
	d := decoder{b: v}
	st := driver.LockState{Key: k}
	st.ExpiresAt = d.time()
	st.Fence = d.uint()
	if n := d.count(); n > 0 {
		st.Holders = make([]driver.Holder, n)
		for i := range st.Holders {
			h := &st.Holders[i]
			h.Owner = d.string()
			h.Token = d.uint()
			h.AcquiredAt = d.time()
			h.ExpiresAt = d.time()
		}
	}
	if n := d.count(); n > 0 {
		st.Pending = make([]driver.Entry, n)
		for i := range st.Pending {
			st.Pending[i] = decodeEntry(&d)
		}
	}
	if d.more() {
		for i := range st.Holders {
			switch d.byte() {
			case 0:
			case 1:
				e := decodeEntry(&d)
				st.Holders[i].Entry = &e
			default:
				d.fail()
			}
		}
		if n := d.count(); n > 0 {
			st.Skipped = make([]driver.Entry, n)
			for i := range st.Skipped {
				st.Skipped[i] = decodeEntry(&d)
			}
		}
	}
	if d.err != nil {
		return driver.LockState{Key: k}, d.err
	}
	return st, nil
}

// lockReapAt is when the reaper may drop a lock record: its idle expiry
// when it is idle; when busy, lockGrace after the last of its holders and
// entries (the holders' own included) lapses (never, if one of them never
// does).
func lockReapAt(st *driver.LockState) time.Time {
	if driver.LockIdle(st) {
		return st.ExpiresAt
	}
	var last time.Time
	never := false
	later := func(t time.Time) {
		if t.IsZero() {
			never = true
		} else if t.After(last) {
			last = t
		}
	}
	for _, h := range st.Holders {
		later(h.ExpiresAt)
		if h.Entry != nil {
			later(h.Entry.ExpiresAt)
		}
	}
	for _, e := range st.Pending {
		later(e.ExpiresAt)
	}
	if never {
		return time.Time{}
	}
	return last.Add(lockGrace)
}

// lapseMark is a lock record's place in the lock_lapse index.
type lapseMark struct {
	indexed bool
	at      time.Time // when its last holder lapses; zero when it has none
	until   time.Time // when its last entry lapses; zero: never
}

// lapseOf says from when, and until when, the record as stored is lapsed
// (driver.LockLapsed after driver.PruneLock): from the time its last holder
// lapses, while one of its entries (pending, or a holder's, which goes back
// to the queue) is live. A record that never is, because a holder never
// lapses or every entry lapses first, is not indexed. Between writes a
// record changes only by the passage of time, so the mark stays exact until
// the next write, which moves it.
func lapseOf(st *driver.LockState) lapseMark {
	var m lapseMark
	for _, h := range st.Holders {
		if h.ExpiresAt.IsZero() {
			return lapseMark{}
		}
		if h.ExpiresAt.After(m.at) {
			m.at = h.ExpiresAt
		}
	}
	entry := func(e *driver.Entry) {
		switch {
		case m.indexed && m.until.IsZero():
		case e.ExpiresAt.IsZero():
			m.indexed, m.until = true, time.Time{}
		case e.ExpiresAt.After(m.at) && e.ExpiresAt.After(m.until):
			m.indexed, m.until = true, e.ExpiresAt
		}
	}
	for _, h := range st.Holders {
		if h.Entry != nil {
			entry(h.Entry)
		}
	}
	for i := range st.Pending {
		entry(&st.Pending[i])
	}
	return m
}

func lapseKey(ns string, at time.Time, k string) []byte {
	return append(sortTime(prefix(ns), at), k...)
}

func (m lapseMark) same(o lapseMark) bool {
	return m.indexed == o.indexed && m.at.Equal(o.at) && m.until.Equal(o.until)
}

// setLapse moves a lock record's entry in lock_lapse from old to next.
func setLapse(tx *bolt.Tx, ns, k string, old, next lapseMark) error {
	if old.same(next) {
		return nil
	}
	b := tx.Bucket(bLockLapse)
	if old.indexed {
		if err := b.Delete(lapseKey(ns, old.at, k)); err != nil {
			return err
		}
	}
	if !next.indexed {
		return nil
	}
	en := encoder{b: make([]byte, 0, 12)}
	en.time(next.until)
	return b.Put(lapseKey(ns, next.at, k), en.b)
}

// lockMarks is where a lock record stands in the indexes, taken before a
// change so the change can move it.
type lockMarks struct {
	reapAt time.Time
	lapse  lapseMark
}

func marksOf(st *driver.LockState) lockMarks {
	return lockMarks{reapAt: lockReapAt(st), lapse: lapseOf(st)}
}

// putLock stores st under bk (ns\0k) and moves its index entries from old
// (the zero lockMarks when there was no record).
func putLock(tx *bolt.Tx, ns, k string, bk []byte, old lockMarks, st *driver.LockState) error {
	if err := tx.Bucket(bLocks).Put(bk, encodeLock(st)); err != nil {
		return err
	}
	next := marksOf(st)
	if err := setExpiry(tx, kLock, bk, old.reapAt, next.reapAt); err != nil {
		return err
	}
	return setLapse(tx, ns, k, old.lapse, next.lapse)
}

// deleteLock removes the record under bk (ns\0k) and its index entries.
func deleteLock(tx *bolt.Tx, ns, k string, bk []byte, old lockMarks) error {
	if err := tx.Bucket(bLocks).Delete(bk); err != nil {
		return err
	}
	if err := setExpiry(tx, kLock, bk, old.reapAt, time.Time{}); err != nil {
		return err
	}
	return setLapse(tx, ns, k, old.lapse, lapseMark{})
}

// withLock runs fn on the lock record of k (a fresh one when absent) in one
// transaction, and stores the result, dropping the record when it ends idle
// and expired. An error from fn is the call's outcome and nothing is
// written; fn must set its own results afresh on every run.
func (d *Driver) withLock(ctx context.Context, ns, k string, now time.Time, fn func(st *driver.LockState) error) error {
	var outcome error
	err := d.write(ctx, func(tx *bolt.Tx) error {
		outcome = nil
		bk := key(ns, k)
		st := driver.LockState{Key: k}
		var old lockMarks
		stored := false
		if v := tx.Bucket(bLocks).Get(bk); v != nil {
			var err error
			if st, err = decodeLock(k, v); err != nil {
				return err
			}
			old, stored = marksOf(&st), true
		}
		if err := fn(&st); err != nil {
			outcome = err
			return nil
		}
		if driver.LockIdle(&st) && !driver.Live(st.ExpiresAt, now) {
			if !stored {
				return nil
			}
			return deleteLock(tx, ns, k, bk, old)
		}
		return putLock(tx, ns, k, bk, old, &st)
	})
	if err != nil {
		return err
	}
	return outcome
}

// reapLock drops the lock record under bk if nothing live is left in it at
// now; otherwise it stores the record pruned and indexes it again.
func reapLock(tx *bolt.Tx, bk []byte, now time.Time) error {
	ns, k, ok := splitNS(bk)
	if !ok {
		return nil
	}
	v := tx.Bucket(bLocks).Get(bk)
	if v == nil {
		return nil
	}
	st, err := decodeLock(k, v)
	if err != nil {
		return err
	}
	old := marksOf(&st)
	driver.PruneLock(&st, now)
	if driver.LockIdle(&st) && (st.ExpiresAt.IsZero() || !driver.Live(st.ExpiresAt, now)) {
		return deleteLock(tx, ns, k, bk, old)
	}
	return putLock(tx, ns, k, bk, old, &st)
}

// Acquire implements driver.Locks.
func (d *Driver) Acquire(ctx context.Context, ns string, r driver.AcquireRequest) (rep driver.AcquireReply, err error) {
	err = d.withLock(ctx, ns, r.Key, r.Now, func(st *driver.LockState) error {
		rep = driver.ApplyAcquire(st, r)
		return nil
	})
	if err != nil {
		return driver.AcquireReply{}, err
	}
	return rep, nil
}

// ExtendLock implements driver.Locks.
func (d *Driver) ExtendLock(ctx context.Context, ns, k string, token uint64, now, expiresAt time.Time) (h driver.Holder, err error) {
	err = d.withLock(ctx, ns, k, now, func(st *driver.LockState) error {
		var err error
		h, err = driver.ApplyExtend(st, token, now, expiresAt)
		return err
	})
	if err != nil {
		return driver.Holder{}, err
	}
	return h, nil
}

// ReleaseLock implements driver.Locks.
func (d *Driver) ReleaseLock(ctx context.Context, ns, k string, token uint64, now, idle time.Time, keepPending bool) (es []driver.Entry, err error) {
	err = d.withLock(ctx, ns, k, now, func(st *driver.LockState) error {
		var err error
		es, err = driver.ApplyRelease(st, token, now, idle, keepPending)
		return err
	})
	if err != nil {
		return nil, err
	}
	return es, nil
}

// ForceReleaseLock implements driver.Locks.
func (d *Driver) ForceReleaseLock(ctx context.Context, ns, k string, now, idle time.Time) (es []driver.Entry, err error) {
	err = d.withLock(ctx, ns, k, now, func(st *driver.LockState) error {
		es = driver.ApplyForceRelease(st, now, idle)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return es, nil
}

// HandoverLock implements driver.Locks.
func (d *Driver) HandoverLock(ctx context.Context, ns, k string, token uint64, now, expiresAt, idle time.Time, keep bool) (rep driver.HandoverReply, err error) {
	err = d.withLock(ctx, ns, k, now, func(st *driver.LockState) error {
		var err error
		rep, err = driver.ApplyHandover(st, token, now, expiresAt, idle, keep)
		return err
	})
	if err != nil {
		return driver.HandoverReply{}, err
	}
	return rep, nil
}

// InspectLock implements driver.Locks.
func (d *Driver) InspectLock(ctx context.Context, ns, k string, now time.Time) (driver.LockState, bool, error) {
	var (
		st driver.LockState
		ok bool
	)
	err := d.read(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bLocks).Get(key(ns, k))
		if v == nil {
			return nil
		}
		var err error
		if st, err = decodeLock(k, v); err != nil {
			return err
		}
		driver.PruneLock(&st, now)
		ok = !driver.LockIdle(&st) || driver.Live(st.ExpiresAt, now)
		return nil
	})
	if err != nil || !ok {
		return driver.LockState{}, false, err
	}
	return st, true, nil
}

// LapsedLocks implements driver.Locks from lock_lapse: the entries of ns
// whose lapse time is at or before now and whose until time is not are
// exactly the lapsed locks, decided from the index alone. Their keys are
// sorted, and only the first limit records are read (and pruned at now).
func (d *Driver) LapsedLocks(ctx context.Context, ns string, now time.Time, limit int) ([]driver.LockState, error) {
	var out []driver.LockState
	err := d.read(ctx, func(tx *bolt.Tx) error {
		out = nil
		p := prefix(ns)
		end := sortTime(nil, now)
		var keys []string
		c := tx.Bucket(bLockLapse).Cursor()
		for lk, v := c.Seek(p); lk != nil && bytes.HasPrefix(lk, p); lk, v = c.Next() {
			if len(lk) < len(p)+sortTimeLen {
				continue
			}
			if bytes.Compare(lk[len(p):len(p)+sortTimeLen], end) > 0 {
				break
			}
			dv := decoder{b: v}
			until := dv.time()
			if dv.err != nil {
				return dv.err
			}
			if driver.Live(until, now) {
				keys = append(keys, string(lk[len(p)+sortTimeLen:]))
			}
		}
		slices.Sort(keys)
		b := tx.Bucket(bLocks)
		for _, k := range keys {
			if limit > 0 && len(out) >= limit {
				break
			}
			v := b.Get(key(ns, k))
			if v == nil {
				continue
			}
			st, err := decodeLock(k, v)
			if err != nil {
				return err
			}
			driver.PruneLock(&st, now)
			if driver.LockLapsed(&st) {
				out = append(out, st)
			}
		}
		return nil
	})
	return out, err
}
