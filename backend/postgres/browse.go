package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/driver"
)

const browseConversationsSQL = `
SELECT key, flow, state, data, version, updated_at, expires_at FROM conversations
 WHERE namespace = $1 AND key > $2 AND (expires_at > $3 OR expires_at IS NULL)
 ORDER BY key LIMIT $4`

// browseLocksSQL walks the busy lock records (expires_at NULL: a holder or
// an entry) in key order, with their entries.
const browseLocksSQL = `
WITH page AS (
  SELECT namespace, key, fence, holders, expires_at FROM locks
   WHERE namespace = $1 AND key > $2 AND expires_at IS NULL
   ORDER BY key LIMIT $3)
SELECT ` + lockRecordColumns + `
  FROM page l ` + lockItemsOfSQL + `
 ORDER BY l.key, i.skipped, i.seq`

// Browse implements driver.Browser with the primary keys (namespace, key)
// of conversations and locks: a page costs an index range scan.
func (d *Driver) Browse(ctx context.Context, ns string, kind driver.Kind, after string, limit int, now time.Time) ([]driver.Record, error) {
	switch kind {
	case driver.KindConversation:
		return queryRows(ctx, d, func(row pgx.CollectableRow) (driver.Record, error) {
			var c driver.Conversation
			var data string
			var exp *time.Time
			if err := row.Scan(&c.Key, &c.Flow, &c.State, &data, &c.Version, &c.UpdatedAt, &exp); err != nil {
				return driver.Record{}, err
			}
			var err error
			c.Data, err = canonical(data)
			c.UpdatedAt, c.ExpiresAt = c.UpdatedAt.UTC(), utc(exp)
			return driver.ConversationRecord(ns, c), err
		}, browseConversationsSQL, ns, after, now, limit)
	case driver.KindLock:
		var out []driver.Record
		// A record can be idle once pruned (its holders lapsed, nothing
		// queued): read on until the page is full or the namespace ends.
		for len(out) < limit {
			var got []driver.LockState
			err := d.run(ctx, func() error {
				got = got[:0]
				rows, err := d.pool.Query(ctx, browseLocksSQL, ns, after, limit)
				if err != nil {
					return err
				}
				return readLocks(rows, func(_ string, st *driver.LockState) error {
					got = append(got, *st)
					return nil
				})
			})
			if err != nil {
				return nil, err
			}
			for i := range got {
				after = got[i].Key
				driver.PruneLock(&got[i], now)
				if !driver.LockIdle(&got[i]) && len(out) < limit {
					out = append(out, driver.LockRecord(ns, got[i]))
				}
			}
			if len(got) < limit {
				break
			}
		}
		return out, nil
	}
	return nil, driver.BrowseKindError(kind)
}
