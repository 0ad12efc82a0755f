package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/driver"
)

// A lock operation is one transaction in two round trips: BEGIN, create the
// lock's row if missing (so FOR UPDATE always has a row to lock), lock it,
// read its entries; then the rules of package driver (ApplyAcquire and the
// others) decide in Go while the row lock is held, and the changes go back
// with COMMIT. Concurrent operations on the same key queue on the row lock;
// different keys never wait for each other.

// lockRowGone reports the row vanishing between its creation and FOR
// UPDATE (an operation that dropped the idle record committed in between);
// the operation then starts over.
var lockRowGone = errorString("lock row deleted concurrently")

const lockRetries = 10

const (
	lockCreateSQL  = `INSERT INTO locks (namespace, key) VALUES ($1, $2) ON CONFLICT DO NOTHING`
	lockSelectSQL  = `SELECT fence, holders, expires_at FROM locks WHERE namespace = $1 AND key = $2 FOR UPDATE`
	entriesSQL     = `SELECT seq, payload, enqueued_at, expires_at FROM lock_entries WHERE namespace = $1 AND key = $2 ORDER BY seq`
	lockUpdateSQL  = `UPDATE locks SET fence = $3, holders = $4, expires_at = $5 WHERE namespace = $1 AND key = $2`
	lockDeleteSQL  = `DELETE FROM locks WHERE namespace = $1 AND key = $2`
	entryDeleteSQL = `DELETE FROM lock_entries WHERE namespace = $1 AND key = $2 AND seq = ANY($3)`
	entryInsertSQL = `INSERT INTO lock_entries (namespace, key, payload, enqueued_at, expires_at) VALUES ($1, $2, $3, $4, $5)`
)

// withLock runs fn on the lock record of key (a fresh one when absent)
// inside one transaction holding the record's row lock, writes back what
// fn changed, and drops the record if it ends idle and expired. An error
// from fn rolls everything back.
func (d *Driver) withLock(ctx context.Context, ns, key string, now time.Time, fn func(st *driver.LockState) error) error {
	return d.run(ctx, func() error {
		for range lockRetries {
			err := d.lockTxn(ctx, ns, key, now, fn)
			if err != lockRowGone {
				return err
			}
		}
		return &sentinelError{sentinel: driver.ErrConflict, cause: errorString("lock record kept vanishing")}
	})
}

func (d *Driver) lockTxn(ctx context.Context, ns, key string, now time.Time, fn func(st *driver.LockState) error) error {
	var (
		st      driver.LockState
		seqs    []int64
		gotRow  bool
		fence   int64
		holders []byte
		exp     *time.Time
	)
	return d.txn(ctx, func(b *pgx.Batch) {
		b.Queue(lockCreateSQL, ns, key)
		b.Queue(lockSelectSQL, ns, key).QueryRow(func(r pgx.Row) error {
			err := r.Scan(&fence, &holders, &exp)
			if err == pgx.ErrNoRows {
				return nil
			}
			gotRow = err == nil
			return err
		})
		b.Queue(entriesSQL, ns, key).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var seq int64
				var e driver.Entry
				var eexp *time.Time
				if err := rows.Scan(&seq, &e.Payload, &e.EnqueuedAt, &eexp); err != nil {
					return err
				}
				e.EnqueuedAt, e.ExpiresAt = e.EnqueuedAt.UTC(), utc(eexp)
				seqs = append(seqs, seq)
				st.Pending = append(st.Pending, e)
			}
			return rows.Err()
		})
	}, func() (*pgx.Batch, error) {
		if !gotRow {
			return nil, lockRowGone
		}
		st.Key, st.Fence, st.ExpiresAt = key, uint64(fence), utc(exp)
		if err := unmarshalHolders(holders, &st); err != nil {
			return nil, err
		}
		// fn prunes st.Pending in place: keep the loaded entries apart.
		loaded := append([]driver.Entry(nil), st.Pending...)
		if err := fn(&st); err != nil {
			return nil, err
		}
		b := &pgx.Batch{}
		if driver.LockIdle(&st) && !driver.Live(st.ExpiresAt, now) {
			b.Queue(lockDeleteSQL, ns, key) // entries go with it (ON DELETE CASCADE)
			return b, nil
		}
		if err := queueLockWrite(b, ns, &st); err != nil {
			return nil, err
		}
		gone, added := diffEntries(loaded, seqs, st.Pending)
		if len(gone) > 0 {
			b.Queue(entryDeleteSQL, ns, key, gone)
		}
		for _, e := range added {
			b.Queue(entryInsertSQL, ns, key, e.Payload, e.EnqueuedAt, ts(e.ExpiresAt))
		}
		return b, nil
	})
}

// queueLockWrite queues the update of the lock row to st.
func queueLockWrite(b *pgx.Batch, ns string, st *driver.LockState) error {
	if st.Fence > math.MaxInt64 {
		return &sentinelError{sentinel: driver.ErrInvalidArgument, cause: errorString("fencing token over 2^63-1")}
	}
	hs := st.Holders
	if hs == nil {
		hs = []driver.Holder{}
	}
	holders, err := json.Marshal(hs)
	if err != nil {
		return err
	}
	b.Queue(lockUpdateSQL, ns, st.Key, int64(st.Fence), string(holders), ts(st.ExpiresAt))
	return nil
}

// unmarshalHolders reads the holders column; no holder is a nil slice, as
// in a fresh record.
func unmarshalHolders(b []byte, st *driver.LockState) error {
	st.Holders = nil
	if err := json.Unmarshal(b, &st.Holders); err != nil {
		return err
	}
	if len(st.Holders) == 0 {
		st.Holders = nil
	}
	for i := range st.Holders {
		h := &st.Holders[i]
		h.AcquiredAt, h.ExpiresAt = h.AcquiredAt.UTC(), utc(&h.ExpiresAt)
	}
	return nil
}

// diffEntries compares the entries loaded (with their seqs) to the entries
// the rules left. Rules only ever remove entries and append new ones at the
// end, so the old entries that remain are a subsequence of loaded, in
// order: a greedy walk finds them. Entries that are equal in every field are
// interchangeable, so matching either of two equal ones is right.
func diffEntries(loaded []driver.Entry, seqs []int64, next []driver.Entry) (gone []int64, added []driver.Entry) {
	j := 0
	for i := range loaded {
		if j < len(next) && sameEntry(&loaded[i], &next[j]) {
			j++
			continue
		}
		gone = append(gone, seqs[i])
	}
	return gone, next[j:]
}

func sameEntry(a, b *driver.Entry) bool {
	return bytes.Equal(a.Payload, b.Payload) && a.EnqueuedAt.Equal(b.EnqueuedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

// Acquire implements driver.Locks.
func (d *Driver) Acquire(ctx context.Context, ns string, r driver.AcquireRequest) (rep driver.AcquireReply, err error) {
	err = d.withLock(ctx, ns, r.Key, r.Now, func(st *driver.LockState) error {
		rep = driver.ApplyAcquire(st, r)
		return nil
	})
	return rep, err
}

// ExtendLock implements driver.Locks.
func (d *Driver) ExtendLock(ctx context.Context, ns, key string, token uint64, now, expiresAt time.Time) (h driver.Holder, err error) {
	err = d.withLock(ctx, ns, key, now, func(st *driver.LockState) error {
		var err error
		h, err = driver.ApplyExtend(st, token, now, expiresAt)
		return err
	})
	return h, err
}

// ReleaseLock implements driver.Locks.
func (d *Driver) ReleaseLock(ctx context.Context, ns, key string, token uint64, now, idleExpiresAt time.Time) (es []driver.Entry, err error) {
	err = d.withLock(ctx, ns, key, now, func(st *driver.LockState) error {
		var err error
		es, err = driver.ApplyRelease(st, token, now, idleExpiresAt)
		return err
	})
	return es, err
}

// ForceReleaseLock implements driver.Locks.
func (d *Driver) ForceReleaseLock(ctx context.Context, ns, key string, now, idleExpiresAt time.Time) (es []driver.Entry, err error) {
	err = d.withLock(ctx, ns, key, now, func(st *driver.LockState) error {
		es = driver.ApplyForceRelease(st, now, idleExpiresAt)
		return nil
	})
	return es, err
}

// HandoverLock implements driver.Locks.
func (d *Driver) HandoverLock(ctx context.Context, ns, key string, token uint64, now, expiresAt, idleExpiresAt time.Time) (next *driver.Entry, h driver.Holder, held bool, err error) {
	err = d.withLock(ctx, ns, key, now, func(st *driver.LockState) error {
		var err error
		next, h, held, err = driver.ApplyHandover(st, token, now, expiresAt, idleExpiresAt)
		return err
	})
	return next, h, held, err
}

// inspectLockSQL reads a lock and its entries in one statement, so one
// snapshot.
const inspectLockSQL = `
SELECT l.fence, l.holders, l.expires_at, e.payload, e.enqueued_at, e.expires_at
  FROM locks l LEFT JOIN lock_entries e ON e.namespace = l.namespace AND e.key = l.key
 WHERE l.namespace = $1 AND l.key = $2
 ORDER BY e.seq`

// InspectLock implements driver.Locks.
func (d *Driver) InspectLock(ctx context.Context, ns, key string, now time.Time) (driver.LockState, bool, error) {
	var st driver.LockState
	var found bool
	err := d.run(ctx, func() error {
		st, found = driver.LockState{Key: key}, false
		rows, err := d.pool.Query(ctx, inspectLockSQL, ns, key)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				fence    int64
				holders  []byte
				exp      *time.Time
				payload  []byte
				enqueued *time.Time
				eexp     *time.Time
			)
			if err := rows.Scan(&fence, &holders, &exp, &payload, &enqueued, &eexp); err != nil {
				return err
			}
			if !found {
				found = true
				st.Fence, st.ExpiresAt = uint64(fence), utc(exp)
				if err := unmarshalHolders(holders, &st); err != nil {
					return err
				}
			}
			if enqueued != nil {
				st.Pending = append(st.Pending, driver.Entry{Payload: payload, EnqueuedAt: utc(enqueued), ExpiresAt: utc(eexp)})
			}
		}
		return rows.Err()
	})
	if err != nil || !found {
		return driver.LockState{}, false, err
	}
	driver.PruneLock(&st, now)
	if driver.LockIdle(&st) && !driver.Live(st.ExpiresAt, now) {
		return driver.LockState{}, false, nil
	}
	return st, true, nil
}
