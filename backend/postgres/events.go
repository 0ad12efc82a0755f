package postgres

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/botstate/botstate/driver"
)

var statusNames = [...]string{
	driver.EventRecorded:  "recorded",
	driver.EventClaimed:   "claimed",
	driver.EventReleased:  "released",
	driver.EventCompleted: "completed",
}

func parseStatus(s string) driver.EventStatus {
	st, _ := driver.ParseEventStatus(s)
	return st
}

// A row counts as live when it never expires or expires after the caller's
// now; every statement below spells that out against its own parameter.

// recordEventSQL inserts the key as recorded, or takes over a row that
// expired (a new key in all but name), and otherwise leaves the row alone:
// one statement, so two concurrent Records can never both report new.
const recordEventSQL = `
INSERT INTO events AS e (namespace, key, status, payload, attempts, created_at, expires_at, insert_seq)
VALUES ($1, $2, 'recorded', $3, 0, $4, $5, CASE WHEN $6 THEN nextval('event_insert_seq') END)
ON CONFLICT (namespace, key) DO UPDATE
   SET status = 'recorded', payload = excluded.payload, result = NULL, token = NULL, attempts = 0,
       created_at = excluded.created_at, lease_until = NULL, expires_at = excluded.expires_at,
       insert_seq = excluded.insert_seq
 WHERE e.expires_at <= excluded.created_at`

// insertRecordedSQL and insertClaimedSQL insert a new key, and nothing
// else: the fast path, the statement pgbench is measured against.
const (
	insertRecordedSQL = `
INSERT INTO events (namespace, key, status, payload, attempts, created_at, expires_at)
VALUES ($1, $2, 'recorded', $3, 0, $4, $5)
ON CONFLICT DO NOTHING`
	insertClaimedSQL = `
INSERT INTO events (namespace, key, status, payload, token, attempts, created_at, lease_until, expires_at)
VALUES ($1, $2, 'claimed', $3, $4, 1, $5, $6, $7)
ON CONFLICT DO NOTHING`
)

// claimEventSQL claims the key in one statement: it inserts it, or takes
// over a row that expired, was released, or whose lease ended — the ON
// CONFLICT ... WHERE decides on the latest committed row, under its lock,
// so two concurrent claims can never both win. A row comes back only when
// the call won; it carries what the caller cannot know already (the status,
// token and times are the request's): attempts, created_at and result, and
// the stored payload only when it is not the one given (a takeover keeps
// the first payload). An expired row taken over starts afresh (payload,
// attempts, created_at, insertion order), as a new key would.
const claimEventSQL = `
INSERT INTO events AS e (namespace, key, status, payload, token, attempts, created_at, lease_until, expires_at, insert_seq)
VALUES ($1, $2, 'claimed', $3, $4, 1, $5, $6, $7, CASE WHEN $8 THEN nextval('event_insert_seq') END)
ON CONFLICT (namespace, key) DO UPDATE
   SET status = 'claimed', token = excluded.token, lease_until = excluded.lease_until,
       expires_at = excluded.expires_at,
       attempts   = CASE WHEN e.expires_at > excluded.created_at OR e.expires_at IS NULL THEN e.attempts + 1 ELSE 1 END,
       payload    = CASE WHEN e.expires_at > excluded.created_at OR e.expires_at IS NULL THEN e.payload ELSE excluded.payload END,
       created_at = CASE WHEN e.expires_at > excluded.created_at OR e.expires_at IS NULL THEN e.created_at ELSE excluded.created_at END,
       result     = CASE WHEN e.expires_at > excluded.created_at OR e.expires_at IS NULL THEN e.result END,
       insert_seq = CASE WHEN e.expires_at > excluded.created_at OR e.expires_at IS NULL THEN e.insert_seq ELSE excluded.insert_seq END
 WHERE e.expires_at <= excluded.created_at
    OR e.status = 'released'
    OR (e.status = 'claimed' AND e.lease_until <= excluded.created_at)
RETURNING attempts, created_at, result, payload IS DISTINCT FROM $3, CASE WHEN payload IS DISTINCT FROM $3 THEN payload END`

// reclaimEventSQL claims for Reclaim: it never inserts. It is one UPDATE
// ... WHERE claimable, and a UNION ALL branch of the same statement returns
// the row it did not take, from the statement's snapshot.
const reclaimEventSQL = `
WITH won AS (
  UPDATE events e
     SET status = 'claimed', token = $3, lease_until = $5, expires_at = $6, attempts = e.attempts + 1
   WHERE namespace = $1 AND key = $2
     AND (e.expires_at > $4 OR e.expires_at IS NULL)
     AND (e.status = 'released' OR (e.status = 'claimed' AND e.lease_until <= $4))
  RETURNING true, status, payload, result, token, attempts, created_at, lease_until, expires_at
)
SELECT * FROM won
UNION ALL
SELECT false, status, payload, result, token, attempts, created_at, lease_until, expires_at
  FROM events WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM won)`

// trimEventsSQL evicts the oldest keys of a limited namespace beyond the
// limit. It runs in the inserting call's transaction, after the insert,
// under the namespace's advisory lock, so the count is exact.
const trimEventsSQL = `
DELETE FROM events
 WHERE namespace = $1 AND insert_seq <= (
   SELECT insert_seq FROM events
    WHERE namespace = $1 AND insert_seq IS NOT NULL
    ORDER BY insert_seq DESC OFFSET $2 LIMIT 1)`

// eventLimitLockClass is the first key of the advisory lock that serializes
// inserts into a namespace with an event limit: "bsev".
const eventLimitLockClass int32 = 0x62736576

func (d *Driver) limitLockKey(ns string) int32 {
	h := fnv.New32a()
	h.Write([]byte(d.schema))
	h.Write([]byte{0})
	h.Write([]byte(ns))
	return int32(h.Sum32())
}

// limited runs the inserting statement queued by queue in one transaction
// (one round trip: a batch runs as one implicit transaction) with the
// namespace's advisory lock before it and the eviction after it.
func (d *Driver) limited(ctx context.Context, ns string, limit int, queue func(b *pgx.Batch)) error {
	b := &pgx.Batch{}
	b.Queue("SELECT pg_advisory_xact_lock($1, $2)", eventLimitLockClass, d.limitLockKey(ns))
	queue(b)
	b.Queue(trimEventsSQL, ns, limit)
	return d.pool.SendBatch(ctx, b).Close()
}

// RecordEvent implements driver.Events. A new key (the common case) is
// one plain INSERT ... ON CONFLICT DO NOTHING; only when that finds the key
// taken does recordEventSQL run, to take the row over if it expired.
// Either statement decides alone and atomically; the first changes nothing
// when it does not insert, so no decision rests on a stale read.
func (d *Driver) RecordEvent(ctx context.Context, ns string, w driver.EventWrite) (bool, error) {
	var inserted bool
	err := d.run(ctx, func() error {
		if w.Limit > 0 {
			return d.limited(ctx, ns, w.Limit, func(b *pgx.Batch) {
				b.Queue(recordEventSQL, ns, w.Key, w.Payload, w.Now, ts(w.ExpiresAt), true).Exec(func(tag pgconn.CommandTag) error {
					inserted = tag.RowsAffected() == 1
					return nil
				})
			})
		}
		tag, err := d.pool.Exec(ctx, insertRecordedSQL, ns, w.Key, w.Payload, w.Now, ts(w.ExpiresAt))
		if err != nil || tag.RowsAffected() == 1 {
			inserted = err == nil
			return err
		}
		tag, err = d.pool.Exec(ctx, recordEventSQL, ns, w.Key, w.Payload, w.Now, ts(w.ExpiresAt), false)
		inserted = err == nil && tag.RowsAffected() == 1
		return err
	})
	return inserted, err
}

const eventColumns = `key, status, payload, result, token, attempts, created_at, lease_until, expires_at`

// scanEvent reads the columns of eventColumns.
func scanEvent(row pgx.Row) (driver.Event, error) {
	var e driver.Event
	var status string
	var token *string
	var lease, exp *time.Time
	err := row.Scan(&e.Key, &status, &e.Payload, &e.Result, &token, &e.Attempts, &e.CreatedAt, &lease, &exp)
	e.Status, e.Token, e.CreatedAt, e.LeaseUntil, e.ExpiresAt = parseStatus(status), deref(token), e.CreatedAt.UTC(), utc(lease), utc(exp)
	return e, err
}

// scanCollected is scanEvent for pgx.AppendRows.
func scanCollected(row pgx.CollectableRow) (driver.Event, error) { return scanEvent(row) }

// LookupEvent implements driver.Events.
func (d *Driver) LookupEvent(ctx context.Context, ns, key string, now time.Time) (driver.Event, bool, error) {
	var ev driver.Event
	var found bool
	err := d.run(ctx, func() error {
		var err error
		ev, found, err = d.lookupEvent(ctx, ns, key, now)
		return err
	})
	return ev, found, err
}

// lookupEvent reads a live event.
func (d *Driver) lookupEvent(ctx context.Context, ns, key string, now time.Time) (driver.Event, bool, error) {
	ev, err := scanEvent(d.pool.QueryRow(ctx, `SELECT `+eventColumns+` FROM events
		WHERE namespace = $1 AND key = $2 AND (expires_at > $3 OR expires_at IS NULL)`, ns, key, now))
	if err == pgx.ErrNoRows {
		return driver.Event{}, false, nil
	}
	return ev, err == nil, err
}

// ForgetEvent implements driver.Events.
func (d *Driver) ForgetEvent(ctx context.Context, ns, key string) error {
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, `DELETE FROM events WHERE namespace = $1 AND key = $2`, ns, key)
		return err
	})
}

// claimRetries bounds how often ClaimEvent tries again when the row it
// read after losing disagrees with the row ON CONFLICT judged (a concurrent
// change committed in between); each try sees newer data, so a few suffice.
const claimRetries = 20

// ClaimEvent implements driver.Events. The claim itself is one statement
// (claimEventSQL, or reclaimEventSQL for Reclaim). When it does not win,
// the row is read to report InProgress or Completed: that read is the
// moment the answer holds, and if the row it finds is absent or claimable
// after all (it changed in between), the claim runs again.
func (d *Driver) ClaimEvent(ctx context.Context, ns string, r driver.ClaimRequest) (driver.ClaimReply, error) {
	var rep driver.ClaimReply
	err := d.run(ctx, func() error {
		for range claimRetries {
			var (
				won   bool
				ev    driver.Event
				found bool
				err   error
			)
			if r.Existing {
				won, found, ev, err = d.reclaim(ctx, ns, r)
			} else {
				won, ev, err = d.claim(ctx, ns, r)
				if err == nil && !won {
					ev, found, err = d.lookupEvent(ctx, ns, r.Key, r.Now)
				}
			}
			if err != nil {
				return err
			}
			if won {
				rep = driver.ClaimReply{Outcome: driver.ClaimAcquired, Event: ev}
				return nil
			}
			// Not taken: decide from the row read, with the rules of
			// driver.ApplyClaim.
			if !found && r.Existing {
				return driver.ErrNotFound
			}
			switch {
			case !found:
				// Gone since the claim saw it: try again.
			case ev.Status == driver.EventCompleted:
				rep = driver.ClaimReply{Outcome: driver.ClaimCompleted, Event: ev}
				return nil
			case ev.Status == driver.EventRecorded,
				ev.Status == driver.EventClaimed && ev.LeaseUntil.After(r.Now):
				rep = driver.ClaimReply{Outcome: driver.ClaimInProgress, Event: ev}
				return nil
			}
		}
		return errClaimContended
	})
	return rep, err
}

// claim claims a key: a plain insert when the key is new (the common case),
// else claimEventSQL, which takes the row over if it is claimable. Each
// statement decides alone and atomically, and the insert changes nothing
// when it does not insert. When it won, it returns the event as stored.
func (d *Driver) claim(ctx context.Context, ns string, r driver.ClaimRequest) (won bool, ev driver.Event, err error) {
	ev = driver.Event{Key: r.Key, Status: driver.EventClaimed, Payload: driver.Clone(r.Payload), Token: r.Token,
		Attempts: 1, CreatedAt: r.Now, LeaseUntil: r.LeaseUntil, ExpiresAt: r.ExpiresAt}
	var differs bool
	var stored []byte
	scan := func(row pgx.Row) error {
		err := row.Scan(&ev.Attempts, &ev.CreatedAt, &ev.Result, &differs, &stored)
		won = err == nil
		if err == pgx.ErrNoRows {
			return nil
		}
		return err
	}
	if r.Limit > 0 {
		err = d.limited(ctx, ns, r.Limit, func(b *pgx.Batch) {
			b.Queue(claimEventSQL, ns, r.Key, r.Payload, r.Token, r.Now, r.LeaseUntil, ts(r.ExpiresAt), true).QueryRow(scan)
		})
	} else {
		var tag pgconn.CommandTag
		tag, err = d.pool.Exec(ctx, insertClaimedSQL, ns, r.Key, r.Payload, r.Token, r.Now, r.LeaseUntil, ts(r.ExpiresAt))
		if err == nil && tag.RowsAffected() == 1 {
			return true, ev, nil
		}
		if err == nil {
			err = scan(d.pool.QueryRow(ctx, claimEventSQL, ns, r.Key, r.Payload, r.Token, r.Now, r.LeaseUntil, ts(r.ExpiresAt), false))
		}
	}
	if err != nil || !won {
		return false, driver.Event{}, err
	}
	ev.CreatedAt = ev.CreatedAt.UTC()
	if differs {
		ev.Payload = stored
	}
	return true, ev, nil
}

// reclaim runs reclaimEventSQL: it returns whether it won, and the event
// (as stored after the claim, or as the statement's snapshot saw it).
func (d *Driver) reclaim(ctx context.Context, ns string, r driver.ClaimRequest) (won, found bool, ev driver.Event, err error) {
	var status string
	var token *string
	var lease, exp *time.Time
	err = d.pool.QueryRow(ctx, reclaimEventSQL, ns, r.Key, r.Token, r.Now, r.LeaseUntil, ts(r.ExpiresAt)).
		Scan(&won, &status, &ev.Payload, &ev.Result, &token, &ev.Attempts, &ev.CreatedAt, &lease, &exp)
	if err == pgx.ErrNoRows {
		return false, false, ev, nil
	}
	if err != nil {
		return false, false, ev, err
	}
	ev.Key, ev.Status, ev.Token = r.Key, parseStatus(status), deref(token)
	ev.CreatedAt, ev.LeaseUntil, ev.ExpiresAt = ev.CreatedAt.UTC(), utc(lease), utc(exp)
	return won, won || driver.Live(ev.ExpiresAt, r.Now), ev, nil
}

// errClaimContended reports a key changing under ClaimEvent on every try.
var errClaimContended = &sentinelError{sentinel: driver.ErrConflict, cause: errorString("the event changed under every attempt to claim it")}

type errorString string

func (e errorString) Error() string { return string(e) }

// finish is CompleteEvent and ReleaseEvent: one UPDATE fenced by the token;
// no row updated means the caller no longer holds the claim.
func (d *Driver) finish(ctx context.Context, sql string, args ...any) error {
	return d.run(ctx, func() error {
		tag, err := d.pool.Exec(ctx, sql, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return driver.ErrNotOwner
		}
		return nil
	})
}

// CompleteEvent implements driver.Events.
func (d *Driver) CompleteEvent(ctx context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error {
	return d.finish(ctx, `UPDATE events
		   SET status = 'completed', result = $4, token = NULL, lease_until = NULL, expires_at = $6
		 WHERE namespace = $1 AND key = $2 AND status = 'claimed' AND token = $3
		   AND (expires_at > $5 OR expires_at IS NULL)`, ns, key, token, result, now, ts(expiresAt))
}

// ReleaseEvent implements driver.Events.
func (d *Driver) ReleaseEvent(ctx context.Context, ns, key, token string, now time.Time) error {
	return d.finish(ctx, `UPDATE events
		   SET status = 'released', token = NULL, lease_until = NULL
		 WHERE namespace = $1 AND key = $2 AND status = 'claimed' AND token = $3
		   AND (expires_at > $4 OR expires_at IS NULL)`, ns, key, token, now)
}

// ExpiredEvents implements driver.Events.
func (d *Driver) ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return queryRows(ctx, d, scanCollected, `SELECT `+eventColumns+` FROM events
		WHERE namespace = $1 AND status = 'claimed' AND lease_until <= $2 AND (expires_at > $2 OR expires_at IS NULL)
		ORDER BY created_at, key LIMIT $3`, ns, now, limit)
}

// PendingEvents implements driver.Events.
func (d *Driver) PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return queryRows(ctx, d, scanCollected, `SELECT `+eventColumns+` FROM events
		WHERE namespace = $1 AND status <> 'completed' AND (expires_at > $2 OR expires_at IS NULL)
		ORDER BY created_at, key LIMIT $3`, ns, now, limit)
}
