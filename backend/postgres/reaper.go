package postgres

import (
	"context"
	"strconv"
	"time"

	"github.com/botstate/botstate/driver"
)

// reapedTables lists every table whose rows expire on their own. Locks are
// reaped only when idle (busy records have no expires_at); lock entries are
// not reaped on their own: a lapsed pending entry moves to the lock's
// skipped entries at the lock's next write (driver.PruneLock), and entries
// go with their lock record.
var reapedTables = []string{"events", "conversations", "subscriptions", "thread_state", "channel_state",
	"cache_values", "cache_lists", "locks", "alerts", "issues"}

// reapSQL deletes up to reapBatch expired rows of a table. The rows are
// found by ctid and locked with SKIP LOCKED, so the statement is short,
// never waits for a row someone is writing, and several replicas reaping at
// once do not queue behind each other. The outer condition is checked again
// on the latest row version, so a row renewed meanwhile stays.
func reapSQL(table string) string {
	return `DELETE FROM ` + table + ` WHERE ctid = ANY (ARRAY(
		SELECT ctid FROM ` + table + ` WHERE expires_at <= $1 LIMIT ` + strconv.Itoa(reapBatch) + ` FOR UPDATE SKIP LOCKED))
		AND expires_at <= $1`
}

// reapAbandonedLocksSQL deletes lock records whose holders and entries all
// lapsed without a release, as the in-memory sweeper drops a record that
// PruneLock leaves idle: such a record still has the NULL expiry of a busy
// one. A lapsed holder's live entry would go back to the queue, so it keeps
// the record. As with an idle record, its fence and skipped entries may go:
// driver.NextFence's clock floor keeps later tokens growing. A holder's or
// entry's expires_at is absent from its JSON when it never expires.
var reapAbandonedLocksSQL = `DELETE FROM locks WHERE ctid = ANY (ARRAY(
	SELECT ctid FROM locks l
	 WHERE l.expires_at IS NULL
	   AND NOT EXISTS (SELECT FROM jsonb_array_elements(l.holders) h
	                    WHERE h->>'expires_at' IS NULL OR (h->>'expires_at')::timestamptz > $1
	                       OR jsonb_typeof(h->'entry') = 'object'
	                          AND (h->'entry'->>'expires_at' IS NULL OR (h->'entry'->>'expires_at')::timestamptz > $1))
	   AND NOT EXISTS (SELECT FROM lock_entries e
	                    WHERE e.namespace = l.namespace AND e.key = l.key
	                      AND (e.expires_at IS NULL OR e.expires_at > $1))
	 LIMIT ` + strconv.Itoa(reapBatch) + ` FOR UPDATE SKIP LOCKED))`

var reapStatements = func() []string {
	out := make([]string, 0, len(reapedTables)+1)
	for _, t := range reapedTables {
		out = append(out, reapSQL(t))
	}
	return append(out, reapAbandonedLocksSQL)
}()

// reaper deletes expired rows every interval until ctx ends. Errors (the
// server restarting, say) are left for the next round: reads never depend
// on the reaper.
func (d *Driver) reaper(ctx context.Context, every time.Duration) {
	defer close(d.reapDone)
	driver.Every(ctx.Done(), every, func() { d.Reap(ctx, d.reapTime()) }) //nolint:errcheck
}

// reapTime is the instant the reaper deletes up to: the store's clock, but
// never later than the real time. Other stores share these tables, and a
// store whose clock runs ahead (a test's fake clock) must not delete rows
// that another store's clock still sees as live.
func (d *Driver) reapTime() time.Time {
	now, real := d.clock(), time.Now()
	if now.After(real) {
		return real
	}
	return now
}

// Reap deletes every row that expired at or before now, in batches of at
// most reapBatch rows per statement, and returns how many it deleted. The
// background reaper calls it; reads never depend on it.
func (d *Driver) Reap(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	for _, sql := range reapStatements {
		for {
			var n int64
			err := d.run(ctx, func() error {
				tag, err := d.pool.Exec(ctx, sql, now)
				n = tag.RowsAffected()
				return err
			})
			if err != nil {
				return total, err
			}
			total += n
			if n < reapBatch {
				break
			}
		}
	}
	return total, nil
}
