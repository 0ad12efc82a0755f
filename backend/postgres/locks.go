package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/driver"
)

// A lock is stored as its row in locks — the fence, the idle expiry, and the
// holders as a JSON array of driver.Holder, each with the entry it handles —
// plus its pending entries, rows of lock_entries in seq order, and its
// skipped entries, rows of lock_skipped in seq order.
//
// A lock operation is one transaction in two round trips: BEGIN, create the
// lock's row if missing (so FOR UPDATE always has a row to lock), lock it,
// read its pending and skipped entries; then the rules of package driver
// (ApplyAcquire and the others) decide in Go while the row lock is held, and
// the changes go back with COMMIT: the row only when its fence, expiry or
// holders changed (the holders column only when a holder did), and only the
// entry rows that come or go. Concurrent operations on the same key queue on
// the row lock; different keys never wait for each other.

// lockRowGone reports the row vanishing between its creation and FOR
// UPDATE (an operation that dropped the idle record committed in between);
// the operation then starts over.
var lockRowGone = errorString("lock row deleted concurrently")

const lockRetries = 10

const (
	lockCreateSQL = `INSERT INTO locks (namespace, key) VALUES ($1, $2) ON CONFLICT DO NOTHING`
	lockSelectSQL = `SELECT fence, holders, expires_at FROM locks WHERE namespace = $1 AND key = $2 FOR UPDATE`
	entriesSQL    = `SELECT seq, payload, enqueued_at, expires_at FROM lock_entries WHERE namespace = $1 AND key = $2 ORDER BY seq`
	skippedSQL    = `SELECT seq, payload, enqueued_at, expires_at FROM lock_skipped WHERE namespace = $1 AND key = $2 ORDER BY seq`
	// lockUpdateSQL keeps the stored holders when $4 is NULL.
	lockUpdateSQL  = `UPDATE locks SET fence = $3, holders = coalesce($4, holders), expires_at = $5 WHERE namespace = $1 AND key = $2`
	lockDeleteSQL  = `DELETE FROM locks WHERE namespace = $1 AND key = $2`
	entryDeleteSQL = `DELETE FROM lock_entries WHERE namespace = $1 AND key = $2 AND seq = ANY($3)`
	entryInsertSQL = `INSERT INTO lock_entries (namespace, key, payload, enqueued_at, expires_at) VALUES ($1, $2, $3, $4, $5)`
	// entryInsertAtSQL puts an entry back at the front of the queue: its
	// seq, below every stored one, is given.
	entryInsertAtSQL = `INSERT INTO lock_entries (namespace, key, seq, payload, enqueued_at, expires_at)
		OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)`
	skippedDeleteSQL = `DELETE FROM lock_skipped WHERE namespace = $1 AND key = $2 AND seq = ANY($3)`
	skippedInsertSQL = `INSERT INTO lock_skipped (namespace, key, payload, enqueued_at, expires_at) VALUES ($1, $2, $3, $4, $5)`
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
		pending, skipped storedEntries
		gotRow           bool
		fence            int64
		holders          []byte
		exp              *time.Time
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
		b.Queue(entriesSQL, ns, key).Query(pending.scan)
		b.Queue(skippedSQL, ns, key).Query(skipped.scan)
	}, func() (*pgx.Batch, error) {
		if !gotRow {
			return nil, lockRowGone
		}
		// The rules change the slices in place: keep the loaded ones apart.
		st := driver.LockState{Key: key, Fence: uint64(fence), ExpiresAt: utc(exp),
			Pending: slices.Clone(pending.entries), Skipped: slices.Clone(skipped.entries)}
		if err := unmarshalHolders(holders, &st); err != nil {
			return nil, err
		}
		was := st
		was.Holders = slices.Clone(st.Holders)
		if err := fn(&st); err != nil {
			return nil, err
		}
		b := &pgx.Batch{}
		if driver.LockIdle(&st) && !driver.Live(st.ExpiresAt, now) {
			b.Queue(lockDeleteSQL, ns, key) // entries go with it (ON DELETE CASCADE)
			return b, nil
		}
		holdersChanged := !slices.EqualFunc(was.Holders, st.Holders, sameHolder)
		if holdersChanged || st.Fence != was.Fence || !st.ExpiresAt.Equal(was.ExpiresAt) {
			if err := queueLockWrite(b, ns, &st, holdersChanged); err != nil {
				return nil, err
			}
		}
		// Entries come back to the front only from holders that left.
		q := diffEntries(&pending, st.Pending, len(was.Holders))
		queueDeletes(b, entryDeleteSQL, ns, key, q.gone)
		for i, e := range q.front {
			if len(pending.seqs) == 0 {
				b.Queue(entryInsertSQL, ns, key, e.Payload, e.EnqueuedAt, ts(e.ExpiresAt))
			} else {
				b.Queue(entryInsertAtSQL, ns, key, pending.seqs[0]-int64(len(q.front)-i), e.Payload, e.EnqueuedAt, ts(e.ExpiresAt))
			}
		}
		for _, e := range q.back {
			b.Queue(entryInsertSQL, ns, key, e.Payload, e.EnqueuedAt, ts(e.ExpiresAt))
		}
		sk := diffEntries(&skipped, st.Skipped, 0)
		queueDeletes(b, skippedDeleteSQL, ns, key, sk.gone)
		for _, e := range sk.back {
			b.Queue(skippedInsertSQL, ns, key, e.Payload, e.EnqueuedAt, ts(e.ExpiresAt))
		}
		return b, nil
	})
}

// queueLockWrite queues the update of the lock row to st, its holders too
// when withHolders is set.
func queueLockWrite(b *pgx.Batch, ns string, st *driver.LockState, withHolders bool) error {
	if st.Fence > math.MaxInt64 {
		return &sentinelError{sentinel: driver.ErrInvalidArgument, cause: errorString("fencing token over 2^63-1")}
	}
	var holders any // NULL keeps the stored holders
	if withHolders {
		hs := st.Holders
		if hs == nil {
			hs = []driver.Holder{}
		}
		j, err := json.Marshal(hs)
		if err != nil {
			return err
		}
		holders = string(j)
	}
	b.Queue(lockUpdateSQL, ns, st.Key, int64(st.Fence), holders, ts(st.ExpiresAt))
	return nil
}

// unmarshalHolders reads the holders column; no holder is a nil slice, as
// in a fresh record. Holders written before entries were kept have none.
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
		if e := h.Entry; e != nil {
			e.EnqueuedAt, e.ExpiresAt = e.EnqueuedAt.UTC(), utc(&e.ExpiresAt)
		}
	}
	return nil
}

// storedEntries are a lock's entry rows (pending or skipped) as read, in
// seq order.
type storedEntries struct {
	seqs    []int64
	entries []driver.Entry
}

// scan reads rows of seq, payload, enqueued_at, expires_at.
func (s *storedEntries) scan(rows pgx.Rows) error {
	for rows.Next() {
		var seq int64
		var e driver.Entry
		var exp *time.Time
		if err := rows.Scan(&seq, &e.Payload, &e.EnqueuedAt, &exp); err != nil {
			return err
		}
		e.EnqueuedAt, e.ExpiresAt = e.EnqueuedAt.UTC(), utc(exp)
		s.seqs = append(s.seqs, seq)
		s.entries = append(s.entries, e)
	}
	return rows.Err()
}

// entryDiff turns stored entry rows into the entries the rules left: delete
// the rows gone, insert front before every kept row and back after them.
type entryDiff struct {
	gone        []int64
	front, back []driver.Entry
}

// diffEntries compares the stored rows to next, the entries the rules left.
// The rules remove entries anywhere, append new ones at the end, and put at
// most maxFront entries (those of holders that left) at the front, so next
// is front ++ (a subsequence of the stored entries, in order) ++ back. For
// each possible front length a greedy walk finds the longest run of next
// the stored rows can keep, and the split keeping the most rows wins.
// Entries equal in every field are interchangeable, so keeping either of
// two equal ones is right.
func diffEntries(stored *storedEntries, next []driver.Entry, maxFront int) entryDiff {
	front, kept := 0, -1
	for p := 0; p <= maxFront && p <= len(next) && kept < len(next)-p; p++ {
		if k := keepable(stored.entries, next[p:]); k > kept {
			front, kept = p, k
		}
	}
	d := entryDiff{front: next[:front]}
	rest := next[front:]
	j := 0
	for i := range stored.entries {
		if j < len(rest) && sameEntry(&stored.entries[i], &rest[j]) {
			j++
			continue
		}
		d.gone = append(d.gone, stored.seqs[i])
	}
	d.back = rest[j:]
	return d
}

// keepable returns the length of the longest prefix of next that is a
// subsequence of stored.
func keepable(stored, next []driver.Entry) int {
	j := 0
	for i := range stored {
		if j < len(next) && sameEntry(&stored[i], &next[j]) {
			j++
		}
	}
	return j
}

// queueDeletes queues sql (a DELETE ... seq = ANY($3)) for the rows gone.
func queueDeletes(b *pgx.Batch, sql, ns, key string, gone []int64) {
	if len(gone) > 0 {
		b.Queue(sql, ns, key, gone)
	}
}

func sameEntry(a, b *driver.Entry) bool {
	return bytes.Equal(a.Payload, b.Payload) && a.EnqueuedAt.Equal(b.EnqueuedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func sameHolder(a, b driver.Holder) bool {
	return a.Owner == b.Owner && a.Token == b.Token && a.AcquiredAt.Equal(b.AcquiredAt) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		(a.Entry == nil) == (b.Entry == nil) && (a.Entry == nil || sameEntry(a.Entry, b.Entry))
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
func (d *Driver) ReleaseLock(ctx context.Context, ns, key string, token uint64, now, idleExpiresAt time.Time, keepPending bool) (es []driver.Entry, err error) {
	err = d.withLock(ctx, ns, key, now, func(st *driver.LockState) error {
		var err error
		es, err = driver.ApplyRelease(st, token, now, idleExpiresAt, keepPending)
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
func (d *Driver) HandoverLock(ctx context.Context, ns, key string, token uint64, now, expiresAt, idleExpiresAt time.Time, keep bool) (rep driver.HandoverReply, err error) {
	err = d.withLock(ctx, ns, key, now, func(st *driver.LockState) error {
		var err error
		rep, err = driver.ApplyHandover(st, token, now, expiresAt, idleExpiresAt, keep)
		return err
	})
	return rep, err
}

// lockItemsSQL is every lock entry as a row of namespace, key, skipped,
// seq, payload, enqueued_at, expires_at (pending entries with skipped
// false), for joining to locks l as a whole (Export).
const lockItemsSQL = `(
  SELECT namespace, key, false AS skipped, seq, payload, enqueued_at, expires_at FROM lock_entries
  UNION ALL
  SELECT namespace, key, true, seq, payload, enqueued_at, expires_at FROM lock_skipped)`

// lockItemsOfSQL joins to each lock l its entries as lockItemsSQL has
// them, by a lookup of each table's primary key per lock: for a few locks,
// whatever the planner would guess about the tables' sizes.
const lockItemsOfSQL = `LEFT JOIN LATERAL (
  SELECT false AS skipped, seq, payload, enqueued_at, expires_at FROM lock_entries e
   WHERE e.namespace = l.namespace AND e.key = l.key
  UNION ALL
  SELECT true, seq, payload, enqueued_at, expires_at FROM lock_skipped s
   WHERE s.namespace = l.namespace AND s.key = l.key) i ON true`

// lockRecordColumns are the columns readLocks reads, from locks l joined to
// its items i.
const lockRecordColumns = `l.namespace, l.key, l.fence, l.holders, l.expires_at, i.skipped, i.payload, i.enqueued_at, i.expires_at`

// readLocks reads rows of lockRecordColumns ordered by namespace, key,
// skipped, seq (one row per entry, or one with NULL entry columns for a
// lock without any), and calls fn with each lock as stored, not pruned.
func readLocks(rows pgx.Rows, fn func(ns string, st *driver.LockState) error) error {
	defer rows.Close()
	var (
		cur   *driver.LockState
		curNS string
	)
	for rows.Next() {
		var (
			ns, key          string
			fence            int64
			holders, payload []byte
			exp, enq, eexp   *time.Time
			skipped          *bool
		)
		if err := rows.Scan(&ns, &key, &fence, &holders, &exp, &skipped, &payload, &enq, &eexp); err != nil {
			return err
		}
		if cur == nil || curNS != ns || cur.Key != key {
			if cur != nil {
				if err := fn(curNS, cur); err != nil {
					return err
				}
			}
			cur, curNS = &driver.LockState{Key: key, Fence: uint64(fence), ExpiresAt: utc(exp)}, ns
			if err := unmarshalHolders(holders, cur); err != nil {
				return err
			}
		}
		if skipped != nil {
			e := driver.Entry{Payload: payload, EnqueuedAt: utc(enq), ExpiresAt: utc(eexp)}
			if *skipped {
				cur.Skipped = append(cur.Skipped, e)
			} else {
				cur.Pending = append(cur.Pending, e)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if cur != nil {
		return fn(curNS, cur)
	}
	return nil
}

// inspectLockSQL reads a lock and its entries in one statement, so one
// snapshot.
const inspectLockSQL = `
SELECT ` + lockRecordColumns + `
  FROM locks l ` + lockItemsOfSQL + `
 WHERE l.namespace = $1 AND l.key = $2
 ORDER BY i.skipped, i.seq`

// InspectLock implements driver.Locks.
func (d *Driver) InspectLock(ctx context.Context, ns, key string, now time.Time) (driver.LockState, bool, error) {
	var st *driver.LockState
	err := d.run(ctx, func() error {
		st = nil
		rows, err := d.pool.Query(ctx, inspectLockSQL, ns, key)
		if err != nil {
			return err
		}
		return readLocks(rows, func(_ string, l *driver.LockState) error {
			st = l
			return nil
		})
	})
	if err != nil || st == nil {
		return driver.LockState{}, false, err
	}
	driver.PruneLock(st, now)
	if driver.LockIdle(st) && !driver.Live(st.ExpiresAt, now) {
		return driver.LockState{}, false, nil
	}
	return *st, true, nil
}

// lapsedLocksSQL finds, in key order, up to $3 locks of namespace $1 that
// driver.LockLapsed would report once pruned at $2: no live holder, and a
// live pending entry or a lapsed holder's live entry (which goes back to
// the queue). Only busy records (expires_at NULL; driver settles every
// record with a holder or an entry so) are looked at, and only those
// without a live holder probe their entries (at most one row, by primary
// key). The matches come back with their entries, one row per entry.
const lapsedLocksSQL = `
WITH lapsed AS (
  SELECT l.namespace, l.key, l.fence, l.holders, l.expires_at
    FROM locks l
    LEFT JOIN LATERAL (SELECT true AS live FROM lock_entries e
                        WHERE e.namespace = l.namespace AND e.key = l.key AND (e.expires_at IS NULL OR e.expires_at > $2)
                        LIMIT 1) le ON true
   WHERE l.namespace = $1 AND l.expires_at IS NULL
     AND NOT EXISTS (SELECT FROM jsonb_array_elements(l.holders) h
                      WHERE h->>'expires_at' IS NULL OR (h->>'expires_at')::timestamptz > $2)
     AND (le.live
          OR EXISTS (SELECT FROM jsonb_array_elements(l.holders) h
                      WHERE jsonb_typeof(h->'entry') = 'object'
                        AND (h->'entry'->>'expires_at' IS NULL OR (h->'entry'->>'expires_at')::timestamptz > $2)))
   ORDER BY l.key LIMIT $3)
SELECT ` + lockRecordColumns + `
  FROM lapsed l ` + lockItemsOfSQL + `
 ORDER BY l.key, i.skipped, i.seq`

// LapsedLocks implements driver.Locks with lapsedLocksSQL, one statement:
// a walk of the namespace's lock rows in key order (the primary key) that
// stops after limit matches. Each match is pruned at now, as InspectLock
// returns it.
func (d *Driver) LapsedLocks(ctx context.Context, ns string, now time.Time, limit int) ([]driver.LockState, error) {
	var out []driver.LockState
	err := d.run(ctx, func() error {
		out = nil
		rows, err := d.pool.Query(ctx, lapsedLocksSQL, ns, now, limit)
		if err != nil {
			return err
		}
		return readLocks(rows, func(_ string, st *driver.LockState) error {
			driver.PruneLock(st, now)
			if driver.LockLapsed(st) {
				out = append(out, *st)
			}
			return nil
		})
	})
	return out, err
}
