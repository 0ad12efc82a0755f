// Package postgres is the PostgreSQL botstate backend, registered as
// "postgres://" and "postgresql://". It needs PostgreSQL 15 or later and
// talks to it through a pgx v5 connection pool (pgxpool).
//
// # URL
//
//	postgres://user:password@host:5432/dbname?sslmode=disable&schema=botstate&pool_max_conns=20
//
// Everything libpq and pgxpool.ParseConfig understand is passed on
// (sslmode, connect_timeout, application_name, pool_max_conns,
// pool_min_conns, pool_max_conn_lifetime, pool_max_conn_idle_time,
// pool_health_check_period, ...). botstate's own options are removed first:
//
//   - schema: the schema holding the tables (default botstate), created
//     when missing; a plain identifier. The connections' search_path is
//     set to it, so every statement names its tables unqualified.
//   - migrate: true (the default) applies the embedded migrations at Open;
//     false only checks that the schema is current, for deployments that
//     migrate separately (Migrate, `botstate migrate-schema`).
//
// # Schema
//
// The tables are created by versioned migrations embedded in the binary
// (migrations/NNNN_name.sql), applied by Open or Migrate while holding a
// PostgreSQL advisory lock on a connection of their own, so any number of
// replicas starting at once migrate safely; schema_migrations records each
// version applied. Tables are named for what they hold — events,
// conversations, subscriptions, thread_state, channel_state, cache_values,
// cache_lists, locks, lock_entries, alerts, issues, move_mappings,
// channel_processing_state — and every primary key starts with namespace,
// so namespaces never see each other's rows. Keys use the "C" collation
// (bytewise order, as every backend orders them). Times are timestamptz
// (microseconds; botstate hands backends microsecond times), NULL for
// "never expires". Event payloads, results and cache values are bytea;
// incident bodies are bytea too, kept byte for byte (read them with
// convert_from(body, 'UTF8')); conversation and thread/channel data are
// JSON objects stored as text.
//
// # Atomicity, operation by operation
//
// Every method is one statement or one transaction:
//
//   - Record: a new key is one INSERT ... ON CONFLICT DO NOTHING. Only when
//     the key is taken does a second statement run: INSERT ... ON CONFLICT
//     DO UPDATE ... WHERE the stored row expired, which takes an expired
//     row over and leaves a live one untouched. Each statement decides alone
//     and atomically; the first changes nothing when it does not insert.
//   - Claim: the same plain insert for a new key; on conflict, an upsert
//     whose WHERE takes over a row that expired, was released, or whose
//     lease ended — judged by PostgreSQL on the latest committed row, under
//     its row lock, so two claims never both win — RETURNING the stored
//     row's attempts, created_at, result and (when not the one given)
//     payload. When that takes nothing, the row is read to report
//     InProgress or Completed; if the read finds it absent or claimable
//     after all (it changed in between), the claim runs again. Reclaim is
//     one UPDATE ... WHERE claimable with a UNION ALL branch returning the
//     row it did not take.
//   - Complete and Release: UPDATE ... WHERE status = 'claimed' AND token =
//     $token; no row updated is ErrNotOwner.
//   - Event limit: the insert, and the DELETE of the oldest keys beyond the
//     limit (by an insertion sequence), run in one batch — one implicit
//     transaction — after pg_advisory_xact_lock on the namespace, so the
//     count is exact under concurrency. Only namespaces with a limit pay.
//   - Conversations and thread/channel state: one upsert per write whose
//     SET keeps the stored values only while the row is live. A merge is
//     jsonb concatenation (data::jsonb || patch::jsonb) in the same upsert;
//     data jsonb cannot keep exactly (a \u0000 escape, exponent numbers,
//     -0; flagged per row in data_jsonb_exact) is merged instead in one
//     transaction holding the row lock, with driver.MergeObjects. Reads
//     return data re-encoded by driver.CanonicalObject, so both paths give
//     the bytes every backend gives. Compare-and-swap is an UPDATE ...
//     WHERE version = $v (or, for a new conversation, an upsert whose WHERE
//     requires the stored row to be expired).
//   - Cache: set-if-absent is an upsert whose WHERE only replaces an
//     expired value; a list append, its trim to the newest entries and its
//     new expiry are one upsert on a bytea[] row.
//   - Locks: one transaction in two round trips: BEGIN, INSERT the lock's
//     row ON CONFLICT DO NOTHING (so FOR UPDATE always has a row to lock),
//     SELECT ... FOR UPDATE, read the pending entries; the rules of package
//     driver (ApplyAcquire, ApplyRelease, ApplyHandover, ...) decide in Go
//     while the row lock is held; the changed row and entries go back with
//     COMMIT. Operations on one key queue on its row lock; different keys
//     never wait for each other.
//   - Incidents: upserts; SaveIssues, MoveIssue (delete from the source,
//     save in the target) and DropAllData are one batch each, which
//     PostgreSQL runs as one implicit transaction. Correlation ids (up to
//     4 KiB) are indexed by their SHA-256, and lookups compare the id too.
//   - Snapshots: Export reads every table in one REPEATABLE READ, read-only
//     transaction; Import upserts every record in one transaction.
//
// A serialization failure or a deadlock rolls the transaction back, and the
// method runs it again, a few times.
//
// # Expiry
//
// Reads compare expires_at with the time the call carries, never with the
// server's clock, so an expired row is never returned. A background reaper
// deletes expired rows on the store's sweep interval (default one minute)
// in batches of at most 1000 rows per statement (DELETE ... WHERE ctid =
// ANY(ARRAY(SELECT ctid ... FOR UPDATE SKIP LOCKED))), up to the store's
// clock but never past the real time, and stops on Close. Lock records go
// once idle past their expiry, or once every holder and entry lapsed
// without a release.
//
// # Errors
//
// A server that cannot be reached — connection refused or reset, the
// server shutting down or starting up, a context deadline passing while it
// does not answer — gives an error matching driver.ErrUnavailable, the
// original error, and the context's error when the context ended. The pool
// replaces broken connections by itself, so the same Store works again as
// soon as the server is back.
package postgres
