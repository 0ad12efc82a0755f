-- botstate schema, version 2: event retries and failed events; lock holder
-- entries and skipped entries.
--
-- Runs like 0001, with search_path set to the store's schema, under the
-- migration advisory lock, in one transaction. Every change below is cheap
-- on a large table except the index build, which reads events once.

-- Events gain retry_at (when a released event becomes due again; NULL: at
-- once) and last_error (why it was last released or failed; NULL: none).
-- Nullable columns without a default change only the catalog: rows written
-- before read as NULL, the zero values.
ALTER TABLE events
    ADD COLUMN retry_at   timestamptz,
    ADD COLUMN last_error text;

-- status gains failed: parked after its last allowed attempt, or failed on
-- purpose; never claimed again until RetryEvent. Every stored row passed the
-- stricter check already, so the new one is added NOT VALID (it checks every
-- write from now on) rather than validated by a scan under this migration's
-- lock; ALTER TABLE events VALIDATE CONSTRAINT events_status_check can run
-- at any time later without blocking writes.
ALTER TABLE events
    DROP CONSTRAINT events_status_check,
    ADD CONSTRAINT events_status_check
        CHECK (status IN ('recorded', 'claimed', 'released', 'completed', 'failed')) NOT VALID;

-- FailedEvents walks this index in its order. Only rows parked as failed are
-- in it, so Record, Claim and Complete (whose rows are never failed) do not
-- write to it; only a Release or Claim that parks an event does.
CREATE INDEX events_failed ON events (namespace, created_at, key) WHERE status = 'failed';

-- Locks: the entry a holder is handling lives in its holder object in
-- locks.holders ("entry": {payload (base64), enqueued_at, expires_at}), so
-- it needs no column. Pending entries stay rows of lock_entries ordered by
-- seq; an entry that goes back to the front of the queue (its holder
-- lapsed) is inserted with a seq below the lowest (OVERRIDING SYSTEM VALUE).

-- Skipped entries: those that left a lock's queue without reaching a holder
-- (dropped by a full queue, refused by drop-newest, replaced by a debounce,
-- lapsed), oldest first by seq, at most driver.MaxSkipped per lock. The next
-- holder given an entry takes them. They have no expiry of their own: they
-- go with their lock record.
CREATE TABLE lock_skipped (
    namespace   text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    payload     bytea,
    enqueued_at timestamptz NOT NULL,
    expires_at  timestamptz,
    PRIMARY KEY (namespace, key, seq),
    FOREIGN KEY (namespace, key) REFERENCES locks (namespace, key) ON DELETE CASCADE
);

-- A lapsed pending entry is no longer deleted by the reaper: the next write
-- to its lock moves it to lock_skipped, and an abandoned lock goes whole.
-- The index served only that reaper statement.
DROP INDEX lock_entries_by_expiry;
