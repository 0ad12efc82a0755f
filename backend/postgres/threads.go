package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/driver"
)

// ---- subscriptions ----------------------------------------------------------

// Subscribe implements driver.Threads: one upsert that keeps created_at of
// a live subscription.
func (d *Driver) Subscribe(ctx context.Context, ns, thread string, now, expiresAt time.Time) error {
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, `
INSERT INTO subscriptions AS s (namespace, thread, created_at, expires_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (namespace, thread) DO UPDATE
   SET created_at = CASE WHEN s.expires_at > excluded.created_at OR s.expires_at IS NULL
                         THEN s.created_at ELSE excluded.created_at END,
       expires_at = excluded.expires_at`, ns, thread, now, ts(expiresAt))
		return err
	})
}

// Unsubscribe implements driver.Threads.
func (d *Driver) Unsubscribe(ctx context.Context, ns, thread string) error {
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, `DELETE FROM subscriptions WHERE namespace = $1 AND thread = $2`, ns, thread)
		return err
	})
}

// IsSubscribed implements driver.Threads.
func (d *Driver) IsSubscribed(ctx context.Context, ns, thread string, now time.Time) (bool, error) {
	var ok bool
	err := d.run(ctx, func() error {
		return d.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM subscriptions
			WHERE namespace = $1 AND thread = $2 AND (expires_at > $3 OR expires_at IS NULL))`, ns, thread, now).Scan(&ok)
	})
	return ok, err
}

// ListSubscriptions implements driver.Threads.
func (d *Driver) ListSubscriptions(ctx context.Context, ns, after string, limit int, now time.Time) ([]driver.Subscription, error) {
	return queryRows(ctx, d, func(row pgx.CollectableRow) (driver.Subscription, error) {
		var s driver.Subscription
		var exp *time.Time
		err := row.Scan(&s.Thread, &s.CreatedAt, &exp)
		s.CreatedAt, s.ExpiresAt = s.CreatedAt.UTC(), utc(exp)
		return s, err
	}, `SELECT thread, created_at, expires_at FROM subscriptions
		WHERE namespace = $1 AND thread > $2 AND (expires_at > $3 OR expires_at IS NULL)
		ORDER BY thread LIMIT $4`, ns, after, now, limit)
}

// ---- thread and channel state -----------------------------------------------

// docSQL holds the statements of one doc table (thread_state or
// channel_state).
type docSQL struct {
	get, put, merge, lockPlaceholder, lockSelect, update, del string
}

func newDocSQL(table string) docSQL {
	live := `(t.expires_at > excluded.updated_at OR t.expires_at IS NULL)`
	return docSQL{
		get: `SELECT data, updated_at, expires_at FROM ` + table + `
			WHERE namespace = $1 AND id = $2 AND (expires_at > $3 OR expires_at IS NULL)`,
		put: `INSERT INTO ` + table + ` AS t (namespace, id, data, data_jsonb_exact, updated_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (namespace, id) DO UPDATE
			   SET data = excluded.data, data_jsonb_exact = excluded.data_jsonb_exact,
			       updated_at = excluded.updated_at, expires_at = excluded.expires_at`,
		// merge is jsonb || in one statement, like mergeConvSQL; no row
		// back means the stored data does not survive jsonb, or the result
		// may be over $6 bytes (data_size), and the merge runs under the row
		// lock.
		merge: `INSERT INTO ` + table + ` AS t (namespace, id, data, data_jsonb_exact, updated_at, expires_at)
			VALUES ($1, $2, $3, true, $4, $5)
			ON CONFLICT (namespace, id) DO UPDATE
			   SET data = CASE WHEN ` + live + ` THEN (t.data::jsonb || excluded.data::jsonb)::text ELSE excluded.data END,
			       data_jsonb_exact = true, updated_at = excluded.updated_at, expires_at = excluded.expires_at
			 WHERE CASE WHEN NOT ` + live + ` THEN true
			            WHEN NOT t.data_jsonb_exact THEN false
			            WHEN $6::bigint = 0 THEN true
			            ELSE data_size(t.data::jsonb || excluded.data::jsonb) <= $6::bigint END
			RETURNING data, updated_at, expires_at`,
		lockPlaceholder: `INSERT INTO ` + table + ` (namespace, id, data, data_jsonb_exact, updated_at, expires_at)
			VALUES ($1, $2, '{}', true, $3, $3) ON CONFLICT DO NOTHING`,
		lockSelect: `SELECT data, expires_at FROM ` + table + ` WHERE namespace = $1 AND id = $2 FOR UPDATE`,
		update: `UPDATE ` + table + ` SET data = $3, data_jsonb_exact = $4, updated_at = $5, expires_at = $6
			WHERE namespace = $1 AND id = $2 RETURNING data, updated_at, expires_at`,
		del: `DELETE FROM ` + table + ` WHERE namespace = $1 AND id = $2`,
	}
}

var docs = map[driver.Scope]docSQL{
	driver.ScopeThread:  newDocSQL("thread_state"),
	driver.ScopeChannel: newDocSQL("channel_state"),
}

func docStatements(scope driver.Scope) (docSQL, error) {
	q, ok := docs[scope]
	if !ok {
		return q, &sentinelError{sentinel: driver.ErrInvalidArgument, cause: errorString("unknown doc scope")}
	}
	return q, nil
}

// scanDoc reads data, updated_at, expires_at.
func scanDoc(row pgx.Row, id string) (driver.Doc, error) {
	doc := driver.Doc{ID: id}
	var data string
	var exp *time.Time
	if err := row.Scan(&data, &doc.UpdatedAt, &exp); err != nil {
		return doc, err
	}
	var err error
	doc.Data, err = canonical(data)
	doc.UpdatedAt, doc.ExpiresAt = doc.UpdatedAt.UTC(), utc(exp)
	return doc, err
}

// GetDoc implements driver.Threads.
func (d *Driver) GetDoc(ctx context.Context, ns string, scope driver.Scope, id string, now time.Time) (driver.Doc, bool, error) {
	q, err := docStatements(scope)
	if err != nil {
		return driver.Doc{}, false, err
	}
	var doc driver.Doc
	var found bool
	err = d.run(ctx, func() error {
		var err error
		doc, err = scanDoc(d.pool.QueryRow(ctx, q.get, ns, id, now), id)
		found = err == nil
		if err == pgx.ErrNoRows {
			return nil
		}
		return err
	})
	return doc, found, err
}

// PutDoc implements driver.Threads.
func (d *Driver) PutDoc(ctx context.Context, ns string, scope driver.Scope, id string, data []byte, now, expiresAt time.Time) error {
	q, err := docStatements(scope)
	if err != nil {
		return err
	}
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, q.put, ns, id, string(data), jsonbExact(data), now, ts(expiresAt))
		return err
	})
}

// MergeDoc implements driver.Threads like MergeConversationData: one
// statement with jsonb || in the usual case, else one transaction under the
// row lock that merges with driver.MergeObjects; the result measured inside
// either.
func (d *Driver) MergeDoc(ctx context.Context, ns string, scope driver.Scope, id string, patch []byte, maxSize int, now, expiresAt time.Time) (driver.Doc, error) {
	q, err := docStatements(scope)
	if err != nil {
		return driver.Doc{}, err
	}
	if err := driver.CheckMergedSize(driver.DataSize(patch), maxSize); err != nil {
		return driver.Doc{}, err
	}
	var doc driver.Doc
	if jsonbExact(patch) {
		var merged bool
		err := d.run(ctx, func() error {
			var err error
			doc, err = scanDoc(d.pool.QueryRow(ctx, q.merge, ns, id, string(patch), now, ts(expiresAt), int64(max(maxSize, 0))), id)
			merged = err == nil
			if err == pgx.ErrNoRows {
				return nil
			}
			return err
		})
		if err != nil || merged {
			return doc, err
		}
	}
	err = d.run(ctx, func() error {
		var data string
		var exp *time.Time
		return d.txn(ctx, func(b *pgx.Batch) {
			b.Queue(q.lockPlaceholder, ns, id, now)
			b.Queue(q.lockSelect, ns, id).QueryRow(func(r pgx.Row) error { return r.Scan(&data, &exp) })
		}, func() (*pgx.Batch, error) {
			base := driver.EmptyObject
			if driver.Live(utc(exp), now) {
				base = []byte(data)
			}
			merged, err := driver.MergeObjects(base, patch)
			if err != nil {
				return nil, &sentinelError{sentinel: driver.ErrInvalidArgument, cause: err}
			}
			if err := driver.CheckMergedSize(driver.DataSize(merged), maxSize); err != nil {
				return nil, err // rolled back: the placeholder goes too
			}
			b := &pgx.Batch{}
			b.Queue(q.update, ns, id, string(merged), jsonbExact(merged), now, ts(expiresAt)).QueryRow(func(r pgx.Row) error {
				var err error
				doc, err = scanDoc(r, id)
				return err
			})
			return b, nil
		})
	})
	return doc, err
}

// DeleteDoc implements driver.Threads.
func (d *Driver) DeleteDoc(ctx context.Context, ns string, scope driver.Scope, id string) error {
	q, err := docStatements(scope)
	if err != nil {
		return err
	}
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, q.del, ns, id)
		return err
	})
}

// ---- cache --------------------------------------------------------------------

// CacheGet implements driver.Threads.
func (d *Driver) CacheGet(ctx context.Context, ns, key string, now time.Time) ([]byte, bool, error) {
	var v []byte
	var found bool
	err := d.run(ctx, func() error {
		err := d.pool.QueryRow(ctx, `SELECT value FROM cache_values
			WHERE namespace = $1 AND key = $2 AND (expires_at > $3 OR expires_at IS NULL)`, ns, key, now).Scan(&v)
		found = err == nil
		if err == pgx.ErrNoRows {
			return nil
		}
		return err
	})
	return v, found, err
}

// CacheSet implements driver.Threads. With onlyIfAbsent the upsert's WHERE
// lets it replace only an expired value, so set-if-not-exists is one
// statement.
func (d *Driver) CacheSet(ctx context.Context, ns, key string, value []byte, now, expiresAt time.Time, onlyIfAbsent bool) (bool, error) {
	sql := `INSERT INTO cache_values AS v (namespace, key, value, expires_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`
	args := []any{ns, key, value, ts(expiresAt)}
	if onlyIfAbsent {
		sql += ` WHERE v.expires_at <= $5`
		args = append(args, now)
	}
	var wrote bool
	err := d.run(ctx, func() error {
		tag, err := d.pool.Exec(ctx, sql, args...)
		wrote = tag.RowsAffected() == 1
		return err
	})
	return wrote, err
}

// CacheDelete implements driver.Threads: both keyspaces in one statement.
func (d *Driver) CacheDelete(ctx context.Context, ns, key string) error {
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, `WITH v AS (DELETE FROM cache_values WHERE namespace = $1 AND key = $2)
			DELETE FROM cache_lists WHERE namespace = $1 AND key = $2`, ns, key)
		return err
	})
}

// ListAppend implements driver.Threads: the append, the trim to the newest
// maxLen items and the new expiry are one upsert on the list's row.
func (d *Driver) ListAppend(ctx context.Context, ns, key string, value []byte, maxLen int, now, expiresAt time.Time) (int, error) {
	var n int
	err := d.run(ctx, func() error {
		return d.pool.QueryRow(ctx, `
INSERT INTO cache_lists AS l (namespace, key, items, expires_at) VALUES ($1, $2, ARRAY[$3::bytea], $6)
ON CONFLICT (namespace, key) DO UPDATE
   SET items = CASE WHEN l.expires_at > $5 OR l.expires_at IS NULL
                    THEN (l.items || excluded.items)[greatest(1, cardinality(l.items) + 2 - $4::integer):]
                    ELSE excluded.items END,
       expires_at = excluded.expires_at
RETURNING cardinality(items)`, ns, key, value, maxLen, now, ts(expiresAt)).Scan(&n)
	})
	return n, err
}

// ListRange implements driver.Threads.
func (d *Driver) ListRange(ctx context.Context, ns, key string, now time.Time) ([][]byte, error) {
	var items [][]byte
	err := d.run(ctx, func() error {
		err := d.pool.QueryRow(ctx, `SELECT items FROM cache_lists
			WHERE namespace = $1 AND key = $2 AND (expires_at > $3 OR expires_at IS NULL)`, ns, key, now).Scan(&items)
		if err == pgx.ErrNoRows {
			items = nil
			return nil
		}
		return err
	})
	return items, err
}
