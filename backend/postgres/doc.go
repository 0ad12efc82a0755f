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
// cache_lists, locks, lock_entries, lock_skipped, alerts, issues,
// move_mappings, channel_processing_state — and every primary key starts
// with namespace, so namespaces never see each other's rows. Keys use the
// "C" collation (bytewise order, as every backend orders them). Times are
// timestamptz (microseconds; botstate hands backends microsecond times),
// NULL for "never expires". Event payloads, results and cache values are
// bytea; incident bodies are bytea too, kept byte for byte (read them with
// convert_from(body, 'UTF8')); conversation and thread/channel data are
// JSON objects stored as text.
//
// An event row keeps its status (recorded, claimed, released, completed,
// failed), the claim's token and lease end, attempts, last_error and
// retry_at (NULL: none, due at once). A lock is its row in locks (fence,
// idle expiry, holders as a JSON array of driver.Holder, each with the
// entry it handles), its pending entries (lock_entries, in seq order; an
// entry put back at the front gets a seq below the lowest) and its skipped
// entries (lock_skipped, in seq order, at most driver.MaxSkipped).
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
//     The inserts of new keys that concurrent Record and Claim calls make
//     go to the server in groups (inserts.go): one INSERT ... SELECT FROM
//     unnest(...) ON CONFLICT DO NOTHING RETURNING the keys it inserted,
//     one statement and one commit for the group, each row still decided
//     alone; a lone call goes out at once, alone.
//   - Claim: the same plain insert for a new key; on conflict, an upsert
//     whose WHERE takes over a row that expired, was released and is due
//     (retry_at passed), or whose lease ended — judged by PostgreSQL on the
//     latest committed row, under its row lock, so two claims never both
//     win — and whose SET parks the row as failed instead when it used
//     MaxAttempts attempts, RETURNING what changed. When that takes
//     nothing, the row is read and driver.ApplyClaim gives the answer
//     (InProgress, Completed, Failed); if the rules would take the row read
//     (it changed in between), the claim runs again. Reclaim and TakeOver
//     are one UPDATE ... WHERE claimable (released whatever its retry_at,
//     lapsed, or for TakeOver live with the holder's token) with a UNION
//     ALL branch returning the row it did not take.
//   - Complete, Extend and Release: UPDATE ... WHERE status = 'claimed' AND
//     token = $token; no row updated is ErrNotOwner. Release decides in the
//     SET, with driver.ApplyReleaseEvent's rules, between released (due at
//     retry_at) and failed (Fail, or attempts used up), and keeps the reason
//     as last_error.
//   - Retry: one statement: an UPDATE ... WHERE status = 'failed' and, from
//     the same snapshot, the status it saw, which tells ErrNotFound from
//     ErrConflict when nothing was updated.
//   - Listings walk partial indexes in (created_at, key) order and stop at
//     the limit: ExpiredEvents and DueEvents events_waiting (claimed and
//     released rows), PendingEvents that and events_recorded merged,
//     FailedEvents events_failed. No completed row is in any of them, so a
//     listing costs the same however many completed events a namespace
//     holds; the price is one index entry per Claim or Record of a new key.
//   - Event limit: the insert, and the DELETE of the oldest keys beyond the
//     limit (by an insertion sequence), run in one batch — one implicit
//     transaction — after pg_advisory_xact_lock on the namespace, so the
//     count is exact under concurrency. Only namespaces with a limit pay.
//   - Conversations and thread/channel state: one upsert per write whose
//     SET keeps the stored values only while the row is live. A merge is
//     jsonb concatenation (data::jsonb || patch::jsonb) in the same upsert;
//     data jsonb cannot keep exactly (a \u0000 escape, exponent numbers,
//     -0; flagged per row in data_jsonb_exact) is merged instead in one
//     transaction holding the row lock, with driver.MergeObjects. The
//     upsert merges only when data_size (migration 0004: driver.DataSize
//     of a jsonb value, exact for data jsonb keeps) shows the result within
//     the size limit; otherwise the locked transaction measures it in Go
//     and refuses it (ErrTooLarge), rolled back. Reads
//     return data re-encoded by driver.CanonicalObject, so both paths give
//     the bytes every backend gives. Compare-and-swap is an UPDATE ...
//     WHERE version = $v (or, for a new conversation, an upsert whose WHERE
//     requires the stored row to be expired).
//   - Cache: set-if-absent is an upsert whose WHERE only replaces an
//     expired value; a list append, its trim to the newest entries and its
//     new expiry are one upsert on a bytea[] row.
//   - Locks: one transaction in two round trips: BEGIN, INSERT the lock's
//     row ON CONFLICT DO NOTHING (so FOR UPDATE always has a row to lock),
//     SELECT ... FOR UPDATE, read the pending and skipped entries; the rules
//     of package driver (ApplyAcquire, ApplyRelease, ApplyHandover, ...)
//     decide in Go while the row lock is held; what changed (the row, the
//     entry rows that come or go) goes back with COMMIT. Operations on one
//     key queue on its row lock; different keys never wait for each other.
//     InspectLock and LapsedLocks are one statement each, pruned in Go;
//     LapsedLocks walks the namespace's lock rows in key order (the primary
//     key), testing the holders' JSON and probing the entries, and stops at
//     the limit.
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
// once idle past their expiry, or once every holder, holder's entry and
// pending entry lapsed without a release; their entries go with them. A
// lapsed pending entry of a live lock is not reaped: the lock's next write
// moves it to the skipped entries.
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
