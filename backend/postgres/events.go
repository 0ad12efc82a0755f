package postgres

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/botstate/botstate/driver"
)

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
       last_error = NULL, created_at = excluded.created_at, lease_until = NULL, retry_at = NULL,
       expires_at = excluded.expires_at, insert_seq = excluded.insert_seq
 WHERE e.expires_at <= excluded.created_at`

// maxAttemptsReason is driver.MaxAttemptsReason as an SQL literal.
const maxAttemptsReason = `'` + driver.MaxAttemptsReason + `'`

// claimEventSQL claims the key in one statement: it inserts it, or takes
// over a row that expired, was released and is due (retry_at passed), or
// whose lease ended — the ON CONFLICT ... WHERE decides on the latest
// committed row, under its lock, so two concurrent claims can never both
// win. A live row taken over that already used $9 (MaxAttempts, 0: no
// limit) attempts is parked as failed instead, with its last error or
// driver.MaxAttemptsReason. A row comes back only when the call changed it;
// it carries what the caller cannot know already (the status, token and
// times are the request's): whether it parked the row, attempts, created_at,
// result, last_error, and the stored payload only when it is not the one
// given (a takeover keeps the first payload). An expired row taken over
// starts afresh (payload, attempts, created_at, last error, insertion
// order), as a new key would.
const claimEventSQL = `
INSERT INTO events AS e (namespace, key, status, payload, token, attempts, created_at, lease_until, expires_at, insert_seq)
VALUES ($1, $2, 'claimed', $3, $4, 1, $5, $6, $7, CASE WHEN $8 THEN nextval('event_insert_seq') END)
ON CONFLICT (namespace, key) DO UPDATE
   SET status      = CASE WHEN ` + claimParks + ` THEN 'failed' ELSE 'claimed' END,
       token       = CASE WHEN ` + claimParks + ` THEN NULL ELSE excluded.token END,
       lease_until = CASE WHEN ` + claimParks + ` THEN NULL ELSE excluded.lease_until END,
       retry_at    = NULL,
       last_error  = CASE WHEN ` + claimParks + ` THEN coalesce(nullif(e.last_error, ''), ` + maxAttemptsReason + `)
                          WHEN ` + claimLive + ` THEN e.last_error END,
       expires_at  = excluded.expires_at,
       attempts    = CASE WHEN ` + claimParks + ` THEN e.attempts WHEN ` + claimLive + ` THEN e.attempts + 1 ELSE 1 END,
       payload     = CASE WHEN ` + claimLive + ` THEN e.payload ELSE excluded.payload END,
       created_at  = CASE WHEN ` + claimLive + ` THEN e.created_at ELSE excluded.created_at END,
       result      = CASE WHEN ` + claimLive + ` THEN e.result END,
       insert_seq  = CASE WHEN ` + claimLive + ` THEN e.insert_seq ELSE excluded.insert_seq END
 WHERE e.expires_at <= excluded.created_at
    OR (e.status = 'released' AND (e.retry_at IS NULL OR e.retry_at <= excluded.created_at))
    OR (e.status = 'claimed' AND e.lease_until <= excluded.created_at)
RETURNING status = 'failed', attempts, created_at, result, last_error,
          payload IS DISTINCT FROM $3, CASE WHEN payload IS DISTINCT FROM $3 THEN payload END`

// claimLive and claimParks are conditions of claimEventSQL's update: the
// stored row is live (a takeover, not a fresh start), and the takeover
// parks it for MaxAttempts.
const (
	claimLive  = `(e.expires_at > excluded.created_at OR e.expires_at IS NULL)`
	claimParks = `(` + claimLive + ` AND $9::integer > 0 AND e.attempts >= $9::integer)`
)

// reclaimEventSQL claims for Reclaim and TakeOver: it never inserts. It is
// one UPDATE ... WHERE claimable — released (whatever retry_at), lapsed, or
// for a TakeOver ($7, the holder's token; NULL for Reclaim) claimed with the
// holder's token and a live lease, which passes the claim on without
// counting an attempt — and a UNION ALL branch of the same statement
// returns the row it did not take, from the statement's snapshot. A
// takeover that is not such a handover parks the row as failed when it
// used $8 (MaxAttempts) attempts.
const reclaimEventSQL = `
WITH won AS (
  UPDATE events e
     SET status      = CASE WHEN ` + reclaimParks + ` THEN 'failed' ELSE 'claimed' END,
         token       = CASE WHEN ` + reclaimParks + ` THEN NULL ELSE $3::text END,
         lease_until = CASE WHEN ` + reclaimParks + ` THEN NULL ELSE $5::timestamptz END,
         retry_at    = NULL,
         last_error  = CASE WHEN ` + reclaimParks + ` THEN coalesce(nullif(e.last_error, ''), ` + maxAttemptsReason + `)
                            ELSE e.last_error END,
         expires_at  = $6,
         attempts    = CASE WHEN ` + reclaimParks + ` OR ` + reclaimHandover + ` THEN e.attempts ELSE e.attempts + 1 END
   WHERE namespace = $1 AND key = $2
     AND (e.expires_at > $4 OR e.expires_at IS NULL)
     AND (e.status = 'released' OR (e.status = 'claimed' AND (e.lease_until <= $4 OR e.token = $7::text)))
  RETURNING true, ` + eventColumns + `
)
SELECT * FROM won
UNION ALL
SELECT false, ` + eventColumns + `
  FROM events WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM won)`

// reclaimHandover and reclaimParks are conditions of reclaimEventSQL's
// update: the call is a TakeOver of a live claim by its holder, and the
// takeover parks the row for MaxAttempts. Both are true or false, never
// NULL.
const (
	reclaimHandover = `(e.status = 'claimed' AND e.token = $7::text AND e.lease_until > $4) IS TRUE`
	reclaimParks    = `(NOT ` + reclaimHandover + ` AND $8::integer > 0 AND e.attempts >= $8::integer)`
)

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
// one plain INSERT ... ON CONFLICT DO NOTHING, grouped with concurrent
// calls' (inserts.go); only when that finds the key
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
		ok, err := d.ins.insert(&newEvent{ctx: ctx, ns: ns, key: w.Key, payload: w.Payload, now: w.Now, exp: w.ExpiresAt})
		if err != nil || ok {
			inserted = ok
			return err
		}
		tag, err := d.pool.Exec(ctx, recordEventSQL, ns, w.Key, w.Payload, w.Now, ts(w.ExpiresAt), false)
		inserted = err == nil && tag.RowsAffected() == 1
		return err
	})
	return inserted, err
}

const eventColumns = `key, status, payload, result, token, attempts, last_error, created_at, lease_until, retry_at, expires_at`

// eventRow receives the columns of eventColumns; NULL times and texts are
// the zero values.
type eventRow struct {
	e                 driver.Event
	status            string
	token, lastError  *string
	lease, retry, exp *time.Time
}

// dest returns the scan destinations of eventColumns.
func (r *eventRow) dest() []any {
	return []any{&r.e.Key, &r.status, &r.e.Payload, &r.e.Result, &r.token, &r.e.Attempts, &r.lastError,
		&r.e.CreatedAt, &r.lease, &r.retry, &r.exp}
}

// event returns the event scanned.
func (r *eventRow) event() driver.Event {
	e := r.e
	e.Status, e.Token, e.LastError = parseStatus(r.status), deref(r.token), deref(r.lastError)
	e.CreatedAt, e.LeaseUntil, e.RetryAt, e.ExpiresAt = e.CreatedAt.UTC(), utc(r.lease), utc(r.retry), utc(r.exp)
	return e
}

// scanEvent reads the columns of eventColumns.
func scanEvent(row pgx.Row) (driver.Event, error) {
	var r eventRow
	err := row.Scan(r.dest()...)
	return r.event(), err
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
// (claimEventSQL, or reclaimEventSQL for Reclaim and TakeOver), which
// either takes the row or parks it as failed. When it changes nothing, the
// row is read and driver.ApplyClaim gives the answer (InProgress, Completed,
// Failed; ErrNotFound for Reclaim): that read is the moment the answer
// holds, and if the rules would take the row it read (it changed in
// between), the claim runs again.
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
				if ev.Status == driver.EventFailed {
					rep.Outcome = driver.ClaimFailed
				}
				return nil
			}
			read, _, write, err := driver.ApplyClaim(ev, found, r)
			if err != nil {
				return err
			}
			if !write {
				rep = read
				return nil
			}
		}
		return errClaimContended
	})
	return rep, err
}

// claim claims a key: a plain insert when the key is new (the common case,
// grouped with concurrent calls' by inserts.go),
// else claimEventSQL, which takes the row over (or parks it) if it is
// claimable. Each statement decides alone and atomically, and the insert
// changes nothing when it does not insert. When it changed the row, it
// returns the event as stored. Nothing the new-key path needs escapes to the
// heap: what claimEventSQL returns is declared after it.
func (d *Driver) claim(ctx context.Context, ns string, r driver.ClaimRequest) (bool, driver.Event, error) {
	ev := driver.Event{Key: r.Key, Status: driver.EventClaimed, Payload: driver.Clone(r.Payload), Token: r.Token,
		Attempts: 1, CreatedAt: r.Now, LeaseUntil: r.LeaseUntil, ExpiresAt: r.ExpiresAt}
	if r.Limit == 0 {
		ok, err := d.ins.insert(&newEvent{ctx: ctx, ns: ns, key: r.Key, claimed: true, payload: r.Payload, token: r.Token,
			now: r.Now, lease: r.LeaseUntil, exp: r.ExpiresAt})
		if err != nil || ok {
			return ok, ev, err
		}
	}
	var t takeover
	var err error
	if r.Limit > 0 {
		err = d.limited(ctx, ns, r.Limit, func(b *pgx.Batch) {
			b.Queue(claimEventSQL, ns, r.Key, r.Payload, r.Token, r.Now, r.LeaseUntil, ts(r.ExpiresAt), true, r.MaxAttempts).QueryRow(t.scan)
		})
	} else {
		err = t.scan(d.pool.QueryRow(ctx, claimEventSQL, ns, r.Key, r.Payload, r.Token, r.Now, r.LeaseUntil, ts(r.ExpiresAt), false, r.MaxAttempts))
	}
	if err != nil || !t.won {
		return false, driver.Event{}, err
	}
	ev.Attempts, ev.CreatedAt, ev.Result, ev.LastError = t.attempts, t.createdAt.UTC(), t.result, deref(t.lastError)
	if t.differs {
		ev.Payload = t.stored
	}
	if t.parked {
		ev.Status, ev.Token, ev.LeaseUntil = driver.EventFailed, "", time.Time{}
	}
	return true, ev, nil
}

// takeover receives what claimEventSQL returns when it changed the row.
type takeover struct {
	won, parked, differs bool
	attempts             int
	createdAt            time.Time
	result, stored       []byte
	lastError            *string
}

// scan reads claimEventSQL's row; no row means the statement changed
// nothing.
func (t *takeover) scan(row pgx.Row) error {
	err := row.Scan(&t.parked, &t.attempts, &t.createdAt, &t.result, &t.lastError, &t.differs, &t.stored)
	t.won = err == nil
	if err == pgx.ErrNoRows {
		return nil
	}
	return err
}

// reclaim runs reclaimEventSQL: it returns whether it changed the row, and
// the event (as stored after the change, or as the statement's snapshot
// saw it).
func (d *Driver) reclaim(ctx context.Context, ns string, r driver.ClaimRequest) (won, found bool, ev driver.Event, err error) {
	var row eventRow
	err = d.pool.QueryRow(ctx, reclaimEventSQL, ns, r.Key, r.Token, r.Now, r.LeaseUntil, ts(r.ExpiresAt),
		nullString(r.Holder), r.MaxAttempts).Scan(append([]any{&won}, row.dest()...)...)
	if err == pgx.ErrNoRows {
		return false, false, ev, nil
	}
	if err != nil {
		return false, false, ev, err
	}
	ev = row.event()
	return won, won || driver.Live(ev.ExpiresAt, r.Now), ev, nil
}

// errClaimContended reports a key changing under ClaimEvent on every try.
var errClaimContended = &sentinelError{sentinel: driver.ErrConflict, cause: errorString("the event changed under every attempt to claim it")}

type errorString string

func (e errorString) Error() string { return string(e) }

// finish runs one UPDATE fenced by the token (CompleteEvent, ExtendEvent,
// ReleaseEvent); no row updated means the caller no longer holds the claim.
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

// ExtendEvent implements driver.Events: one UPDATE fenced by the token.
func (d *Driver) ExtendEvent(ctx context.Context, ns, key, token string, now, leaseUntil, expiresAt time.Time) error {
	return d.finish(ctx, `UPDATE events
		   SET lease_until = $5, expires_at = $6
		 WHERE namespace = $1 AND key = $2 AND status = 'claimed' AND token = $3
		   AND (expires_at > $4 OR expires_at IS NULL)`, ns, key, token, now, leaseUntil, ts(expiresAt))
}

// releaseEventSQL is ReleaseEvent, driver.ApplyReleaseEvent in one UPDATE
// fenced by the token: $8 (Fail), or a used-up attempt count ($9,
// MaxAttempts, unless $10, Defer), parks the event as failed, else it is
// released, due at $5.
const releaseEventSQL = `
UPDATE events e
   SET status      = CASE WHEN ` + releaseParks + ` THEN 'failed' ELSE 'released' END,
       token       = NULL,
       lease_until = NULL,
       retry_at    = CASE WHEN ` + releaseParks + ` THEN NULL ELSE $5::timestamptz END,
       last_error  = CASE WHEN ` + releaseParks + ` THEN coalesce(nullif($7::text, ''), ` + maxAttemptsReason + `)
                          ELSE nullif($7::text, '') END,
       attempts    = CASE WHEN $10::boolean THEN greatest(e.attempts - 1, 0) ELSE e.attempts END,
       expires_at  = $6
 WHERE namespace = $1 AND key = $2 AND status = 'claimed' AND token = $3
   AND (expires_at > $4 OR expires_at IS NULL)`

// releaseParks is releaseEventSQL's condition for parking the event.
const releaseParks = `($8::boolean OR (NOT $10::boolean AND $9::integer > 0 AND e.attempts >= $9::integer))`

// ReleaseEvent implements driver.Events.
func (d *Driver) ReleaseEvent(ctx context.Context, ns string, r driver.ReleaseRequest) error {
	return d.finish(ctx, releaseEventSQL, ns, r.Key, r.Token, r.Now, ts(r.RetryAt), ts(r.ExpiresAt),
		r.Reason, r.Fail, r.MaxAttempts, r.Defer)
}

// retryEventSQL is RetryEvent in one statement: it updates the row if it is
// failed, and reports whether it did and the status the statement's
// snapshot saw (NULL: absent or expired).
const retryEventSQL = `
WITH retried AS (
  UPDATE events SET status = 'released', attempts = 0, retry_at = NULL, expires_at = $4
   WHERE namespace = $1 AND key = $2 AND status = 'failed' AND (expires_at > $3 OR expires_at IS NULL)
  RETURNING true
)
SELECT EXISTS (SELECT FROM retried),
       (SELECT status FROM events WHERE namespace = $1 AND key = $2 AND (expires_at > $3 OR expires_at IS NULL))`

// RetryEvent implements driver.Events with retryEventSQL. When the update
// found nothing to change, the status the statement saw gives the error:
// absent is ErrNotFound, not failed ErrConflict; failed means the row
// changed between the snapshot and the update, and the statement runs
// again.
func (d *Driver) RetryEvent(ctx context.Context, ns, key string, now, expiresAt time.Time) error {
	return d.run(ctx, func() error {
		for range claimRetries {
			var retried bool
			var status *string
			if err := d.pool.QueryRow(ctx, retryEventSQL, ns, key, now, ts(expiresAt)).Scan(&retried, &status); err != nil {
				return err
			}
			switch {
			case retried:
				return nil
			case status == nil:
				return driver.ErrNotFound
			case *status != "failed":
				return driver.ErrConflict
			}
		}
		return &sentinelError{sentinel: driver.ErrConflict, cause: errorString("the event changed under every attempt to retry it")}
	})
}

// ExpiredEvents implements driver.Events. It walks the partial index
// events_waiting (claimed and released rows, migration 0003) in its order,
// keeping the lapsed claims, so it reads no completed, failed or recorded
// row. Each listing's WHERE repeats its index's predicate, so the planner
// takes the index whatever it guesses of the other conditions.
func (d *Driver) ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return queryRows(ctx, d, scanCollected, `SELECT `+eventColumns+` FROM events
		WHERE namespace = $1 AND status IN ('claimed', 'released') AND status = 'claimed' AND lease_until <= $2
		  AND (expires_at > $2 OR expires_at IS NULL)
		ORDER BY created_at, key LIMIT $3`, ns, now, limit)
}

// DueEvents implements driver.Events: lapsed claims and released events
// whose retry_at came (driver.EventDue), by a walk of events_waiting as
// ExpiredEvents.
func (d *Driver) DueEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return queryRows(ctx, d, scanCollected, `SELECT `+eventColumns+` FROM events
		WHERE namespace = $1 AND status IN ('claimed', 'released') AND (expires_at > $2 OR expires_at IS NULL)
		  AND (status = 'claimed' AND lease_until <= $2
		       OR status = 'released' AND (retry_at IS NULL OR retry_at <= $2))
		ORDER BY created_at, key LIMIT $3`, ns, now, limit)
}

// FailedEvents implements driver.Events. It walks the partial index
// events_failed in its order, so it reads little more than limit rows.
func (d *Driver) FailedEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return queryRows(ctx, d, scanCollected, `SELECT `+eventColumns+` FROM events
		WHERE namespace = $1 AND status = 'failed' AND (expires_at > $2 OR expires_at IS NULL)
		ORDER BY created_at, key LIMIT $3`, ns, now, limit)
}

// PendingEvents implements driver.Events: the first limit rows of two
// walks, of events_waiting and of events_recorded (migration 0003), merged
// in order.
func (d *Driver) PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return queryRows(ctx, d, scanCollected, `SELECT `+eventColumns+` FROM (
		(SELECT `+eventColumns+` FROM events
		  WHERE namespace = $1 AND status IN ('claimed', 'released') AND (expires_at > $2 OR expires_at IS NULL)
		  ORDER BY created_at, key LIMIT $3)
		UNION ALL
		(SELECT `+eventColumns+` FROM events
		  WHERE namespace = $1 AND status = 'recorded' AND (expires_at > $2 OR expires_at IS NULL)
		  ORDER BY created_at, key LIMIT $3)) pending
		ORDER BY created_at, key LIMIT $3`, ns, now, limit)
}
