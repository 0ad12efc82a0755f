package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/botstate/botstate/driver"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded file, migrations/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "migrations/"), ".sql")
		num, rest, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("postgres: migration file %s is not named NNNN_name.sql", n)
		}
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: rest, sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("postgres: two migrations with version %d", out[i].version)
		}
	}
	return out, nil
}

// SchemaVersion is the schema version this build creates and expects: the
// highest embedded migration.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrationLockClass is the first key of the advisory lock migrations take
// (the second is a hash of the schema name): "bsmg".
const migrationLockClass int32 = 0x62736d67

// Migrate applies the embedded migrations that the database named by
// rawURL lacks, in the schema its schema= option names (default botstate),
// creating the schema when missing. It is what Open does unless the URL says
// migrate=false, and what `botstate migrate-schema` runs.
//
// It holds a PostgreSQL advisory lock for the schema on a connection of its
// own while it works, so any number of replicas starting at once migrate
// safely: the first applies the migrations, the others wait and then find
// nothing to do. Each migration runs in its own transaction together with
// the schema_migrations row that records it.
func Migrate(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return &urlError{u: "(unparsable)", msg: err.Error()}
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return invalidURL(u, "scheme must be postgres or postgresql")
	}
	c, err := parseURL(u)
	if err != nil {
		return err
	}
	return migrate(ctx, c.pool.ConnConfig, c.schema)
}

func migrate(ctx context.Context, cc *pgx.ConnConfig, schema string) (err error) {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cc.Copy())
	if err != nil {
		return mapError(ctx, err)
	}
	// Closing the connection also drops the advisory lock, whatever happens.
	defer conn.Close(context.WithoutCancel(ctx))
	defer func() { err = mapError(ctx, err) }()

	h := fnv.New32a()
	h.Write([]byte(schema))
	lockKey := int32(h.Sum32())
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", migrationLockClass, lockKey); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1, $2)", migrationLockClass, lockKey) //nolint:errcheck // closing drops it anyway

	q := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+q); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+q+`.schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM "+q+".schema_migrations")
	if err != nil {
		return err
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+q); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+q+".schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// schemaError reports a schema that is missing or older than this build.
type schemaError struct{ msg string }

func (e *schemaError) Error() string { return "postgres: schema: " + e.msg }
func (e *schemaError) Unwrap() error { return driver.ErrUnavailable }

// tables lists every table the current schema has.
var tables = []string{"events", "conversations", "subscriptions", "thread_state", "channel_state",
	"cache_values", "cache_lists", "locks", "lock_entries", "lock_skipped", "alerts", "issues", "move_mappings",
	"channel_processing_state"}

// ValidateSchema implements driver.SchemaValidator: it checks that the
// store's schema has every migration of this build applied and every table
// present. A schema migrated by a newer build passes as long as this
// build's tables are there.
func (d *Driver) ValidateSchema(ctx context.Context) error {
	var applied []int32
	var present []string
	err := d.run(ctx, func() error {
		b := &pgx.Batch{}
		b.Queue(`SELECT coalesce(array_agg(version ORDER BY version), '{}') FROM schema_migrations`).QueryRow(func(r pgx.Row) error {
			return r.Scan(&applied)
		})
		b.Queue(`SELECT coalesce(array_agg(table_name::text), '{}') FROM information_schema.tables WHERE table_schema = $1`, d.schema).QueryRow(func(r pgx.Row) error {
			return r.Scan(&present)
		})
		return d.pool.SendBatch(ctx, b).Close()
	})
	if err != nil {
		var ue *unavailableError
		if errors.As(err, &ue) {
			return err
		}
		return &schemaError{msg: fmt.Sprintf("schema %q is not migrated (%v); open the store without migrate=false or run `botstate migrate-schema`", d.schema, err)}
	}
	ms, _ := migrations()
	for _, m := range ms {
		if !slices.Contains(applied, int32(m.version)) {
			return &schemaError{msg: fmt.Sprintf("schema %q lacks migration %04d_%s; run `botstate migrate-schema`", d.schema, m.version, m.name)}
		}
	}
	for _, t := range tables {
		if !slices.Contains(present, t) {
			return &schemaError{msg: fmt.Sprintf("schema %q has no table %s", d.schema, t)}
		}
	}
	return nil
}
