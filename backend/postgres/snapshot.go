package postgres

import (
	"context"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/driver"
)

// Export implements driver.Snapshots. It reads every table in one
// REPEATABLE READ, read-only transaction, so the snapshot is consistent
// across domains even while the bot keeps writing.
func (d *Driver) Export(ctx context.Context, ns string, now time.Time, emit func(*driver.Record) error) error {
	var emitErr error
	err := d.run(ctx, func() error {
		tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only: nothing to lose
		for _, x := range exporters {
			if err := x(ctx, tx, ns, now, emit); err != nil {
				if ee, ok := err.(exportErr); ok {
					emitErr = ee.err
				}
				return err
			}
		}
		return tx.Commit(ctx)
	})
	if emitErr != nil {
		return emitErr // the caller's own error, as it gave it
	}
	return err
}

// exportErr marks an error of emit, which must come back to the caller
// unchanged and never be retried.
type exportErr struct{ err error }

func (e exportErr) Error() string { return e.err.Error() }
func (e exportErr) Unwrap() error { return e.err }

type exporter func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error

// each runs sql (whose $1 is the namespace filter, empty for all, and $2
// the time items must be live at)
// and calls fn for each row.
func each(ctx context.Context, tx pgx.Tx, sql, ns string, now time.Time, fn func(pgx.Rows) error) error {
	rows, err := tx.Query(ctx, sql, ns, now)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

const nsFilter = `($1 = '' OR namespace = $1)`
const liveFilter = `(expires_at > $2 OR expires_at IS NULL)`

var exporters = []exporter{
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, `+eventColumns+` FROM events WHERE `+nsFilter+` AND `+liveFilter, ns, now,
			func(rows pgx.Rows) error {
				var n string
				var e eventRow
				if err := rows.Scan(append([]any{&n}, e.dest()...)...); err != nil {
					return err
				}
				r := driver.EventRecord(n, e.event())
				return emitRecord(emit, &r)
			})
	},
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, key, flow, state, data, version, updated_at, expires_at FROM conversations
			WHERE `+nsFilter+` AND `+liveFilter, ns, now,
			func(rows pgx.Rows) error {
				var n, data string
				var exp *time.Time
				c := driver.Conversation{}
				if err := rows.Scan(&n, &c.Key, &c.Flow, &c.State, &data, &c.Version, &c.UpdatedAt, &exp); err != nil {
					return err
				}
				var err error
				if c.Data, err = canonical(data); err != nil {
					return err
				}
				c.UpdatedAt, c.ExpiresAt = c.UpdatedAt.UTC(), utc(exp)
				r := driver.ConversationRecord(n, c)
				return emitRecord(emit, &r)
			})
	},
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, thread, created_at, expires_at FROM subscriptions
			WHERE `+nsFilter+` AND `+liveFilter, ns, now,
			func(rows pgx.Rows) error {
				r := driver.Record{Kind: driver.KindSubscription}
				var exp *time.Time
				if err := rows.Scan(&r.NS, &r.Key, &r.CreatedAt, &exp); err != nil {
					return err
				}
				r.CreatedAt, r.ExpiresAt = r.CreatedAt.UTC(), utc(exp)
				return emitRecord(emit, &r)
			})
	},
	exportDocs(driver.ScopeThread, "thread_state"),
	exportDocs(driver.ScopeChannel, "channel_state"),
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, key, value, expires_at FROM cache_values
			WHERE `+nsFilter+` AND `+liveFilter, ns, now,
			func(rows pgx.Rows) error {
				r := driver.Record{Kind: driver.KindCacheValue}
				var exp *time.Time
				if err := rows.Scan(&r.NS, &r.Key, &r.Payload, &exp); err != nil {
					return err
				}
				r.ExpiresAt = utc(exp)
				return emitRecord(emit, &r)
			})
	},
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, key, items, expires_at FROM cache_lists
			WHERE `+nsFilter+` AND `+liveFilter, ns, now,
			func(rows pgx.Rows) error {
				r := driver.Record{Kind: driver.KindCacheList}
				var exp *time.Time
				if err := rows.Scan(&r.NS, &r.Key, &r.Values, &exp); err != nil {
					return err
				}
				r.ExpiresAt = utc(exp)
				return emitRecord(emit, &r)
			})
	},
	exportLocks,
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, channel, unique_id, ts, ts_nanos, body, expires_at FROM alerts
			WHERE `+nsFilter+` AND `+liveFilter, ns, now,
			func(rows pgx.Rows) error {
				var n string
				var a driver.AlertRecord
				var t, exp *time.Time
				var nanos int16
				if err := rows.Scan(&n, &a.Channel, &a.UniqueID, &t, &nanos, &a.Body, &exp); err != nil {
					return err
				}
				if t != nil {
					a.Timestamp = t.UTC().Add(time.Duration(nanos))
				}
				a.ExpiresAt = utc(exp)
				r := driver.AlertRecordOf(n, a)
				return emitRecord(emit, &r)
			})
	},
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, channel, `+issueColumns+` FROM issues
			WHERE `+nsFilter+` AND `+liveFilter, ns, now,
			func(rows pgx.Rows) error {
				var n string
				var is driver.IssueRecord
				var exp *time.Time
				if err := rows.Scan(&n, &is.Channel, &is.UniqueID, &is.CorrelationID, &is.PostID, &is.Open, &is.Body, &exp); err != nil {
					return err
				}
				is.ExpiresAt = utc(exp)
				r := driver.IssueRecordOf(n, is)
				return emitRecord(emit, &r)
			})
	},
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, channel, correlation_id, unique_id, body FROM move_mappings
			WHERE `+nsFilter+` AND $2::timestamptz IS NOT NULL`, ns, now,
			func(rows pgx.Rows) error {
				var n string
				var m driver.MoveMappingRecord
				if err := rows.Scan(&n, &m.Channel, &m.CorrelationID, &m.UniqueID, &m.Body); err != nil {
					return err
				}
				r := driver.MoveMappingRecordOf(n, m)
				return emitRecord(emit, &r)
			})
	},
	func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, channel, body FROM channel_processing_state
			WHERE `+nsFilter+` AND $2::timestamptz IS NOT NULL`, ns, now,
			func(rows pgx.Rows) error {
				r := driver.Record{Kind: driver.KindProcessingState}
				var body []byte
				if err := rows.Scan(&r.NS, &r.Channel, &body); err != nil {
					return err
				}
				r.Body = string(body)
				return emitRecord(emit, &r)
			})
	},
}

func emitRecord(emit func(*driver.Record) error, r *driver.Record) error {
	if err := emit(r); err != nil {
		return exportErr{err}
	}
	return nil
}

func exportDocs(scope driver.Scope, table string) exporter {
	return func(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
		return each(ctx, tx, `SELECT namespace, id, data, updated_at, expires_at FROM `+table+`
			WHERE `+nsFilter+` AND `+liveFilter, ns, now,
			func(rows pgx.Rows) error {
				r := driver.Record{Kind: driver.DocKind(scope)}
				var data string
				var exp *time.Time
				if err := rows.Scan(&r.NS, &r.Key, &data, &r.UpdatedAt, &exp); err != nil {
					return err
				}
				d, err := canonical(data)
				if err != nil {
					return err
				}
				r.Data, r.UpdatedAt, r.ExpiresAt = d, r.UpdatedAt.UTC(), utc(exp)
				return emitRecord(emit, &r)
			})
	}
}

// exportLocks reads locks with their entries (one row per entry, ordered),
// prunes what lapsed, and leaves out idle records past their expiry, as
// InspectLock does.
func exportLocks(ctx context.Context, tx pgx.Tx, ns string, now time.Time, emit func(*driver.Record) error) error {
	rows, err := tx.Query(ctx, `SELECT `+lockRecordColumns+`
		  FROM locks l LEFT JOIN `+lockItemsSQL+` i ON i.namespace = l.namespace AND i.key = l.key
		 WHERE ($1 = '' OR l.namespace = $1)
		 ORDER BY l.namespace, l.key, i.skipped, i.seq`, ns)
	if err != nil {
		return err
	}
	return readLocks(rows, func(n string, st *driver.LockState) error {
		driver.PruneLock(st, now)
		if driver.LockIdle(st) && !driver.Live(st.ExpiresAt, now) {
			return nil
		}
		r := driver.LockRecord(n, *st)
		return emitRecord(emit, &r)
	})
}

// importChunk is how many upserts go to the server in one batch.
const importChunk = 500

// Import implements driver.Snapshots: every record is upserted in one
// transaction, so an import is all or nothing.
func (d *Driver) Import(ctx context.Context, recs []driver.Record) error {
	for i := range recs {
		if recs[i].Kind == driver.KindLock && recs[i].Fence > math.MaxInt64 {
			return &sentinelError{sentinel: driver.ErrInvalidArgument, cause: errorString("lock fence over 2^63-1")}
		}
	}
	return d.run(ctx, func() error {
		return pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			for i := range recs {
				if err := queueImport(b, &recs[i]); err != nil {
					return err
				}
				if b.Len() >= importChunk {
					if err := tx.SendBatch(ctx, b).Close(); err != nil {
						return err
					}
					b = &pgx.Batch{}
				}
			}
			return tx.SendBatch(ctx, b).Close()
		})
	})
}

func queueImport(b *pgx.Batch, r *driver.Record) error {
	switch r.Kind {
	case driver.KindEvent:
		b.Queue(`
INSERT INTO events (namespace, key, status, payload, result, token, attempts, last_error, created_at, lease_until, retry_at, expires_at, insert_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL)
ON CONFLICT (namespace, key) DO UPDATE
   SET status = excluded.status, payload = excluded.payload, result = excluded.result, token = excluded.token,
       attempts = excluded.attempts, last_error = excluded.last_error, created_at = excluded.created_at,
       lease_until = excluded.lease_until, retry_at = excluded.retry_at, expires_at = excluded.expires_at, insert_seq = NULL`,
			r.NS, r.Key, r.Status, r.Payload, r.Result, nullString(r.Token), r.Attempts, nullString(r.LastError),
			r.CreatedAt, ts(r.LeaseUntil), ts(r.RetryAt), ts(r.ExpiresAt))
	case driver.KindConversation:
		b.Queue(`
INSERT INTO conversations (namespace, key, flow, state, data, data_jsonb_exact, version, updated_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (namespace, key) DO UPDATE
   SET flow = excluded.flow, state = excluded.state, data = excluded.data, data_jsonb_exact = excluded.data_jsonb_exact,
       version = excluded.version, updated_at = excluded.updated_at, expires_at = excluded.expires_at`,
			r.NS, r.Key, r.Flow, r.State, string(r.Data), jsonbExact(r.Data), r.Version, r.UpdatedAt, ts(r.ExpiresAt))
	case driver.KindSubscription:
		b.Queue(`INSERT INTO subscriptions (namespace, thread, created_at, expires_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (namespace, thread) DO UPDATE SET created_at = excluded.created_at, expires_at = excluded.expires_at`,
			r.NS, r.Key, r.CreatedAt, ts(r.ExpiresAt))
	case driver.KindThreadState, driver.KindChannelState:
		scope := driver.ScopeThread
		if r.Kind == driver.KindChannelState {
			scope = driver.ScopeChannel
		}
		b.Queue(docs[scope].put, r.NS, r.Key, string(r.Data), jsonbExact(r.Data), r.UpdatedAt, ts(r.ExpiresAt))
	case driver.KindCacheValue:
		b.Queue(`INSERT INTO cache_values (namespace, key, value, expires_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
			r.NS, r.Key, r.Payload, ts(r.ExpiresAt))
	case driver.KindCacheList:
		b.Queue(`INSERT INTO cache_lists (namespace, key, items, expires_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (namespace, key) DO UPDATE SET items = excluded.items, expires_at = excluded.expires_at`,
			r.NS, r.Key, r.Values, ts(r.ExpiresAt))
	case driver.KindLock:
		b.Queue(lockCreateSQL, r.NS, r.Key)
		st := r.Lock()
		if err := queueLockWrite(b, r.NS, &st, true); err != nil {
			return err
		}
		b.Queue(`DELETE FROM lock_entries WHERE namespace = $1 AND key = $2`, r.NS, r.Key)
		b.Queue(`DELETE FROM lock_skipped WHERE namespace = $1 AND key = $2`, r.NS, r.Key)
		for _, e := range st.Pending {
			b.Queue(entryInsertSQL, r.NS, r.Key, e.Payload, e.EnqueuedAt, ts(e.ExpiresAt))
		}
		for _, e := range st.Skipped {
			b.Queue(skippedInsertSQL, r.NS, r.Key, e.Payload, e.EnqueuedAt, ts(e.ExpiresAt))
		}
	case driver.KindAlert:
		a := r.Alert()
		t, nanos := alertTime(a.Timestamp)
		b.Queue(saveAlertSQL, r.NS, a.Channel, a.UniqueID, t, nanos, a.Body, ts(a.ExpiresAt))
	case driver.KindIssue:
		is := r.Issue()
		queueIssue(b, r.NS, &is)
	case driver.KindMoveMapping:
		m := r.MoveMapping()
		b.Queue(saveMappingSQL, r.NS, m.Channel, m.CorrelationID, correlationKey(m.CorrelationID), m.UniqueID, m.Body)
	case driver.KindProcessingState:
		b.Queue(saveStateSQL, r.NS, r.Channel, []byte(r.Body))
	default:
		return &sentinelError{sentinel: driver.ErrInvalidArgument, cause: errorString("unknown record kind " + string(r.Kind))}
	}
	return nil
}

// nullString is a text argument that is NULL when empty.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
