package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/driver"
)

// Every conversation write is one INSERT ... ON CONFLICT DO UPDATE whose
// SET keeps flow, state and data from the stored row only while it is live
// (an expired conversation is replaced as if absent: version 1, empty flow,
// state and data), and returns the row as written.

const convReturning = ` RETURNING flow, state, data, version, updated_at, expires_at`

// convLive is true when the stored row c is live at the write's time.
const convLive = `(c.expires_at > excluded.updated_at OR c.expires_at IS NULL)`

const setConvStateSQL = `
INSERT INTO conversations AS c (namespace, key, flow, state, data, data_jsonb_exact, version, updated_at, expires_at)
VALUES ($1, $2, $3, $4, '{}', true, 1, $5, $6)
ON CONFLICT (namespace, key) DO UPDATE
   SET flow = CASE WHEN $7 THEN excluded.flow WHEN ` + convLive + ` THEN c.flow ELSE '' END,
       state = excluded.state,
       data = CASE WHEN ` + convLive + ` THEN c.data ELSE '{}' END,
       data_jsonb_exact = CASE WHEN ` + convLive + ` THEN c.data_jsonb_exact ELSE true END,
       version = CASE WHEN ` + convLive + ` THEN c.version + 1 ELSE 1 END,
       updated_at = excluded.updated_at, expires_at = excluded.expires_at` + convReturning

const setConvDataSQL = `
INSERT INTO conversations AS c (namespace, key, flow, state, data, data_jsonb_exact, version, updated_at, expires_at)
VALUES ($1, $2, '', '', $3, $4, 1, $5, $6)
ON CONFLICT (namespace, key) DO UPDATE
   SET flow = CASE WHEN ` + convLive + ` THEN c.flow ELSE '' END,
       state = CASE WHEN ` + convLive + ` THEN c.state ELSE '' END,
       data = excluded.data, data_jsonb_exact = excluded.data_jsonb_exact,
       version = CASE WHEN ` + convLive + ` THEN c.version + 1 ELSE 1 END,
       updated_at = excluded.updated_at, expires_at = excluded.expires_at` + convReturning

// mergeConvSQL merges with jsonb ||, in one statement, when both the patch
// and the stored data survive jsonb exactly and the result fits in $6
// bytes (data_size; 0: no limit); it returns no row otherwise, and the
// caller merges under the row lock instead, which tells a result over the
// limit (ErrTooLarge) from data jsonb cannot keep. A new or expired
// conversation gets the patch, which the caller checked.
const mergeConvSQL = `
INSERT INTO conversations AS c (namespace, key, flow, state, data, data_jsonb_exact, version, updated_at, expires_at)
VALUES ($1, $2, '', '', $3, true, 1, $4, $5)
ON CONFLICT (namespace, key) DO UPDATE
   SET flow = CASE WHEN ` + convLive + ` THEN c.flow ELSE '' END,
       state = CASE WHEN ` + convLive + ` THEN c.state ELSE '' END,
       data = CASE WHEN ` + convLive + ` THEN (c.data::jsonb || excluded.data::jsonb)::text ELSE excluded.data END,
       data_jsonb_exact = true,
       version = CASE WHEN ` + convLive + ` THEN c.version + 1 ELSE 1 END,
       updated_at = excluded.updated_at, expires_at = excluded.expires_at
 WHERE CASE WHEN NOT ` + convLive + ` THEN true
            WHEN NOT c.data_jsonb_exact THEN false
            WHEN $6::bigint = 0 THEN true
            ELSE data_size(c.data::jsonb || excluded.data::jsonb) <= $6::bigint END` + convReturning

// createConvSQL is SwapConversation from version 0: it writes only when no
// live conversation exists.
const createConvSQL = `
INSERT INTO conversations AS c (namespace, key, flow, state, data, data_jsonb_exact, version, updated_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)
ON CONFLICT (namespace, key) DO UPDATE
   SET flow = excluded.flow, state = excluded.state, data = excluded.data,
       data_jsonb_exact = excluded.data_jsonb_exact, version = 1,
       updated_at = excluded.updated_at, expires_at = excluded.expires_at
 WHERE NOT ` + convLive + convReturning

// swapConvSQL is SwapConversation from a version: compare and set in one
// UPDATE.
const swapConvSQL = `
UPDATE conversations
   SET flow = $3, state = $4, data = $5, data_jsonb_exact = $6, version = version + 1,
       updated_at = $7, expires_at = $8
 WHERE namespace = $1 AND key = $2 AND version = $9 AND (expires_at > $7 OR expires_at IS NULL)` + convReturning

// scanConv reads flow, state, data, version, updated_at, expires_at.
func scanConv(row pgx.Row, key string) (driver.Conversation, error) {
	c := driver.Conversation{Key: key}
	var data string
	var exp *time.Time
	if err := row.Scan(&c.Flow, &c.State, &data, &c.Version, &c.UpdatedAt, &exp); err != nil {
		return c, err
	}
	var err error
	c.Data, err = canonical(data)
	c.UpdatedAt, c.ExpiresAt = c.UpdatedAt.UTC(), utc(exp)
	return c, err
}

// GetConversation implements driver.Conversations.
func (d *Driver) GetConversation(ctx context.Context, ns, key string, now time.Time) (driver.Conversation, bool, error) {
	var c driver.Conversation
	var found bool
	err := d.run(ctx, func() error {
		var err error
		c, err = scanConv(d.pool.QueryRow(ctx, `SELECT flow, state, data, version, updated_at, expires_at
			FROM conversations WHERE namespace = $1 AND key = $2 AND (expires_at > $3 OR expires_at IS NULL)`,
			ns, key, now), key)
		found = err == nil
		if err == pgx.ErrNoRows {
			return nil
		}
		return err
	})
	return c, found, err
}

// writeConv runs one conversation statement that returns the row written;
// no row means the statement's condition refused the write (miss).
func (d *Driver) writeConv(ctx context.Context, key string, miss error, sql string, args ...any) (driver.Conversation, error) {
	var c driver.Conversation
	err := d.run(ctx, func() error {
		var err error
		c, err = scanConv(d.pool.QueryRow(ctx, sql, args...), key)
		if err == pgx.ErrNoRows && miss != nil {
			return miss
		}
		return err
	})
	return c, err
}

// SetConversationState implements driver.Conversations.
func (d *Driver) SetConversationState(ctx context.Context, ns string, w driver.ConversationWrite, flow string, setFlow bool, state string) (driver.Conversation, error) {
	if !setFlow {
		flow = ""
	}
	return d.writeConv(ctx, w.Key, nil, setConvStateSQL, ns, w.Key, flow, state, w.Now, ts(w.ExpiresAt), setFlow)
}

// SetConversationData implements driver.Conversations.
func (d *Driver) SetConversationData(ctx context.Context, ns string, w driver.ConversationWrite, data []byte) (driver.Conversation, error) {
	return d.writeConv(ctx, w.Key, nil, setConvDataSQL, ns, w.Key, string(data), jsonbExact(data), w.Now, ts(w.ExpiresAt))
}

// errNotExact is the miss of mergeConvSQL: the stored data needs the
// locked merge, or the result may be over the limit.
var errNotExact = errorString("stored data does not survive jsonb, or the merge would be too large")

// MergeConversationData implements driver.Conversations: one statement with
// jsonb || (its result measured by data_size) in the usual case, else one
// transaction under the row lock that merges with driver.MergeObjects and
// measures the result with driver.DataSize. A patch over the limit makes a
// result over it: it is refused before any round trip.
func (d *Driver) MergeConversationData(ctx context.Context, ns string, w driver.ConversationWrite, patch []byte, maxSize int) (driver.Conversation, error) {
	if err := driver.CheckMergedSize(driver.DataSize(patch), maxSize); err != nil {
		return driver.Conversation{}, err
	}
	if jsonbExact(patch) {
		c, err := d.writeConv(ctx, w.Key, errNotExact, mergeConvSQL, ns, w.Key, string(patch), w.Now, ts(w.ExpiresAt), int64(max(maxSize, 0)))
		if !errors.Is(err, errNotExact) {
			return c, err
		}
	}
	var c driver.Conversation
	err := d.run(ctx, func() error {
		var (
			flow, state, data string
			version           int64
			exp               *time.Time
		)
		return d.txn(ctx, func(b *pgx.Batch) {
			// A placeholder that is already expired, so that FOR UPDATE
			// always has a row to lock, even for a new conversation.
			b.Queue(`INSERT INTO conversations (namespace, key, data, data_jsonb_exact, version, updated_at, expires_at)
				VALUES ($1, $2, '{}', true, 0, $3, $3) ON CONFLICT DO NOTHING`, ns, w.Key, w.Now)
			b.Queue(`SELECT flow, state, data, version, expires_at FROM conversations
				WHERE namespace = $1 AND key = $2 FOR UPDATE`, ns, w.Key).QueryRow(func(r pgx.Row) error {
				return r.Scan(&flow, &state, &data, &version, &exp)
			})
		}, func() (*pgx.Batch, error) {
			base := driver.EmptyObject
			if driver.Live(utc(exp), w.Now) {
				base = []byte(data)
			} else {
				flow, state, version = "", "", 0
			}
			merged, err := driver.MergeObjects(base, patch)
			if err != nil {
				return nil, &sentinelError{sentinel: driver.ErrInvalidArgument, cause: err}
			}
			if err := driver.CheckMergedSize(driver.DataSize(merged), maxSize); err != nil {
				return nil, err // rolled back: the placeholder goes too
			}
			b := &pgx.Batch{}
			b.Queue(`UPDATE conversations SET flow = $3, state = $4, data = $5, data_jsonb_exact = $6,
				version = $7, updated_at = $8, expires_at = $9 WHERE namespace = $1 AND key = $2`+convReturning,
				ns, w.Key, flow, state, string(merged), jsonbExact(merged), version+1, w.Now, ts(w.ExpiresAt)).QueryRow(func(r pgx.Row) error {
				var err error
				c, err = scanConv(r, w.Key)
				return err
			})
			return b, nil
		})
	})
	return c, err
}

// SwapConversation implements driver.Conversations.
func (d *Driver) SwapConversation(ctx context.Context, ns string, w driver.ConversationWrite, version int64, next driver.Conversation) (driver.Conversation, error) {
	data := next.Data
	if len(data) == 0 {
		data = driver.EmptyObject
	}
	if version == 0 {
		return d.writeConv(ctx, w.Key, driver.ErrConflict, createConvSQL,
			ns, w.Key, next.Flow, next.State, string(data), jsonbExact(data), w.Now, ts(w.ExpiresAt))
	}
	return d.writeConv(ctx, w.Key, driver.ErrConflict, swapConvSQL,
		ns, w.Key, next.Flow, next.State, string(data), jsonbExact(data), w.Now, ts(w.ExpiresAt), version)
}

// DeleteConversation implements driver.Conversations.
func (d *Driver) DeleteConversation(ctx context.Context, ns, key string) error {
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, `DELETE FROM conversations WHERE namespace = $1 AND key = $2`, ns, key)
		return err
	})
}
