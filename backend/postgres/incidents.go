package postgres

import (
	"context"
	"crypto/sha256"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/driver"
)

// correlationKey is what indexes hold for a correlation id: its SHA-256,
// because an id may be longer than a B-tree entry may be. Lookups compare
// the id itself too.
func correlationKey(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}

// alertTime splits a timestamp into what timestamptz keeps (microseconds)
// and the nanoseconds below, so alerts keep their timestamps exactly.
func alertTime(t time.Time) (any, int16) {
	if t.IsZero() {
		return nil, 0
	}
	return t.Truncate(time.Microsecond), int16(t.Nanosecond() % 1000)
}

const saveAlertSQL = `
INSERT INTO alerts (namespace, channel, unique_id, ts, ts_nanos, body, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (namespace, channel, unique_id) DO UPDATE
   SET ts = excluded.ts, ts_nanos = excluded.ts_nanos, body = excluded.body, expires_at = excluded.expires_at`

// SaveAlert implements driver.Incidents.
func (d *Driver) SaveAlert(ctx context.Context, ns string, a driver.AlertRecord) error {
	t, nanos := alertTime(a.Timestamp)
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, saveAlertSQL, ns, a.Channel, a.UniqueID, t, nanos, a.Body, ts(a.ExpiresAt))
		return err
	})
}

const saveIssueSQL = `
INSERT INTO issues (namespace, channel, unique_id, correlation_id, correlation_sha256, post_id, is_open, body, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (namespace, channel, unique_id) DO UPDATE
   SET correlation_id = excluded.correlation_id, correlation_sha256 = excluded.correlation_sha256,
       post_id = excluded.post_id, is_open = excluded.is_open, body = excluded.body, expires_at = excluded.expires_at`

func queueIssue(b *pgx.Batch, ns string, r *driver.IssueRecord) {
	b.Queue(saveIssueSQL, ns, r.Channel, r.UniqueID, r.CorrelationID, correlationKey(r.CorrelationID),
		r.PostID, r.Open, r.Body, ts(r.ExpiresAt))
}

// SaveIssues implements driver.Incidents: every upsert in one batch, which
// PostgreSQL runs as one implicit transaction — all or nothing, one round
// trip. A later issue with the same identity wins, as it would one by one.
func (d *Driver) SaveIssues(ctx context.Context, ns string, issues []driver.IssueRecord) error {
	if len(issues) == 0 {
		return d.run(ctx, func() error { return nil })
	}
	return d.run(ctx, func() error {
		b := &pgx.Batch{}
		for i := range issues {
			queueIssue(b, ns, &issues[i])
		}
		return d.pool.SendBatch(ctx, b).Close()
	})
}

// MoveIssue implements driver.Incidents: the delete from the source and the
// save in the target run in one batch, hence one implicit transaction; no
// reader ever sees the issue in both channels or in none.
func (d *Driver) MoveIssue(ctx context.Context, ns string, issue driver.IssueRecord, source string) error {
	return d.run(ctx, func() error {
		b := &pgx.Batch{}
		b.Queue(`DELETE FROM issues WHERE namespace = $1 AND channel = $2 AND unique_id = $3`, ns, source, issue.UniqueID)
		queueIssue(b, ns, &issue)
		return d.pool.SendBatch(ctx, b).Close()
	})
}

const issueColumns = `unique_id, correlation_id, post_id, is_open, body, expires_at`

// findIssues runs an issue query of one channel, ordered by unique id.
func (d *Driver) findIssues(ctx context.Context, channel, sql string, args ...any) ([]driver.IssueRecord, error) {
	return queryRows(ctx, d, func(row pgx.CollectableRow) (driver.IssueRecord, error) {
		r := driver.IssueRecord{Channel: channel}
		var exp *time.Time
		err := row.Scan(&r.UniqueID, &r.CorrelationID, &r.PostID, &r.Open, &r.Body, &exp)
		r.ExpiresAt = utc(exp)
		return r, err
	}, sql, args...)
}

// FindOpenIssues implements driver.Incidents.
func (d *Driver) FindOpenIssues(ctx context.Context, ns, channel, correlationID string, now time.Time) ([]driver.IssueRecord, error) {
	return d.findIssues(ctx, channel, `SELECT `+issueColumns+` FROM issues
		WHERE namespace = $1 AND channel = $2 AND is_open AND correlation_sha256 = $3 AND correlation_id = $4
		  AND (expires_at > $5 OR expires_at IS NULL)
		ORDER BY unique_id`, ns, channel, correlationKey(correlationID), correlationID, now)
}

// FindIssuesByPostID implements driver.Incidents.
func (d *Driver) FindIssuesByPostID(ctx context.Context, ns, channel, postID string, now time.Time) ([]driver.IssueRecord, error) {
	// post_id <> '' lets the planner use the partial index with a generic
	// plan too.
	return d.findIssues(ctx, channel, `SELECT `+issueColumns+` FROM issues
		WHERE namespace = $1 AND channel = $2 AND post_id = $3 AND post_id <> ''
		  AND (expires_at > $4 OR expires_at IS NULL)
		ORDER BY unique_id`, ns, channel, postID, now)
}

// OpenIssuesInChannel implements driver.Incidents.
func (d *Driver) OpenIssuesInChannel(ctx context.Context, ns, channel string, now time.Time) ([]driver.IssueRecord, error) {
	return d.findIssues(ctx, channel, `SELECT `+issueColumns+` FROM issues
		WHERE namespace = $1 AND channel = $2 AND is_open AND (expires_at > $3 OR expires_at IS NULL)
		ORDER BY unique_id`, ns, channel, now)
}

// ActiveChannels implements driver.Incidents.
func (d *Driver) ActiveChannels(ctx context.Context, ns string, now time.Time) ([]string, error) {
	return queryRows(ctx, d, pgx.RowTo[string], `SELECT DISTINCT channel FROM issues
		WHERE namespace = $1 AND is_open AND (expires_at > $2 OR expires_at IS NULL) ORDER BY channel`, ns, now)
}

const saveMappingSQL = `
INSERT INTO move_mappings (namespace, channel, correlation_id, correlation_sha256, unique_id, body)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (namespace, channel, correlation_sha256) DO UPDATE
   SET correlation_id = excluded.correlation_id, unique_id = excluded.unique_id, body = excluded.body`

// SaveMoveMapping implements driver.Incidents.
func (d *Driver) SaveMoveMapping(ctx context.Context, ns string, m driver.MoveMappingRecord) error {
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, saveMappingSQL, ns, m.Channel, m.CorrelationID, correlationKey(m.CorrelationID), m.UniqueID, m.Body)
		return err
	})
}

// FindMoveMapping implements driver.Incidents.
func (d *Driver) FindMoveMapping(ctx context.Context, ns, channel, correlationID string) ([]byte, bool, error) {
	var body []byte
	var found bool
	err := d.run(ctx, func() error {
		err := d.pool.QueryRow(ctx, `SELECT body FROM move_mappings
			WHERE namespace = $1 AND channel = $2 AND correlation_sha256 = $3 AND correlation_id = $4`,
			ns, channel, correlationKey(correlationID), correlationID).Scan(&body)
		found = err == nil
		if err == pgx.ErrNoRows {
			return nil
		}
		return err
	})
	return body, found, err
}

// DeleteMoveMapping implements driver.Incidents.
func (d *Driver) DeleteMoveMapping(ctx context.Context, ns, channel, correlationID string) error {
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, `DELETE FROM move_mappings
			WHERE namespace = $1 AND channel = $2 AND correlation_sha256 = $3 AND correlation_id = $4`,
			ns, channel, correlationKey(correlationID), correlationID)
		return err
	})
}

const saveStateSQL = `INSERT INTO channel_processing_state (namespace, channel, body) VALUES ($1, $2, $3)
	ON CONFLICT (namespace, channel) DO UPDATE SET body = excluded.body`

// SaveProcessingState implements driver.Incidents.
func (d *Driver) SaveProcessingState(ctx context.Context, ns, channel string, body []byte) error {
	return d.run(ctx, func() error {
		_, err := d.pool.Exec(ctx, saveStateSQL, ns, channel, body)
		return err
	})
}

// FindProcessingState implements driver.Incidents.
func (d *Driver) FindProcessingState(ctx context.Context, ns, channel string) ([]byte, bool, error) {
	var body []byte
	var found bool
	err := d.run(ctx, func() error {
		err := d.pool.QueryRow(ctx, `SELECT body FROM channel_processing_state WHERE namespace = $1 AND channel = $2`,
			ns, channel).Scan(&body)
		found = err == nil
		if err == pgx.ErrNoRows {
			return nil
		}
		return err
	})
	return body, found, err
}

// DropIncidents implements driver.Incidents: four deletes in one batch, one
// implicit transaction.
func (d *Driver) DropIncidents(ctx context.Context, ns string) error {
	return d.run(ctx, func() error {
		b := &pgx.Batch{}
		for _, t := range []string{"alerts", "issues", "move_mappings", "channel_processing_state"} {
			b.Queue(`DELETE FROM `+t+` WHERE namespace = $1`, ns)
		}
		return d.pool.SendBatch(ctx, b).Close()
	})
}
