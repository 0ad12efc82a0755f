-- botstate schema, version 1.
--
-- Runs with search_path set to the store's schema (URL option schema=,
-- default botstate), under the migration advisory lock.
--
-- Every table starts its primary key with namespace: a namespace (a tenant or
-- a bot) never sees another's rows. Keys and ids use the "C" collation so
-- that ordering is bytewise, as every backend orders them. Times are
-- timestamptz (microseconds, like every time botstate hands a backend); a
-- NULL expires_at means "never expires". A row whose expires_at is at or
-- before the caller's clock is invisible to every read and is deleted later,
-- in small batches, by the backend's reaper.

-- Events: exactly-once bookkeeping. status is one of recorded (one-shot
-- Record), claimed (token holds it until lease_until), released (a worker gave
-- it back) and completed (with result). insert_seq orders inserts for
-- namespaces opened with an event limit; it is NULL otherwise.
CREATE TABLE events (
    namespace   text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    status      text NOT NULL CHECK (status IN ('recorded', 'claimed', 'released', 'completed')),
    payload     bytea,
    result      bytea,
    token       text,
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    lease_until timestamptz,
    expires_at  timestamptz,
    insert_seq  bigint,
    PRIMARY KEY (namespace, key)
);
CREATE SEQUENCE event_insert_seq AS bigint;
CREATE INDEX events_by_insert_seq ON events (namespace, insert_seq) WHERE insert_seq IS NOT NULL;
CREATE INDEX events_by_expiry ON events (expires_at);

-- Conversations: FSM state. data is the JSON object as text, kept exactly;
-- data_jsonb_exact says whether jsonb would keep it exactly too (no \u0000,
-- no exponent numbers, no -0): when it would, merges run in one statement
-- with jsonb ||; when not, in a transaction under the row lock.
CREATE TABLE conversations (
    namespace        text COLLATE "C" NOT NULL,
    key              text COLLATE "C" NOT NULL,
    flow             text NOT NULL DEFAULT '',
    state            text NOT NULL DEFAULT '',
    data             text NOT NULL,
    data_jsonb_exact boolean NOT NULL,
    version          bigint NOT NULL,
    updated_at       timestamptz NOT NULL,
    expires_at       timestamptz,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX conversations_by_expiry ON conversations (expires_at) WHERE expires_at IS NOT NULL;

-- Followed threads.
CREATE TABLE subscriptions (
    namespace  text COLLATE "C" NOT NULL,
    thread     text COLLATE "C" NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (namespace, thread)
);
CREATE INDEX subscriptions_by_expiry ON subscriptions (expires_at) WHERE expires_at IS NOT NULL;

-- Per-thread and per-channel memory: a JSON object each, as conversations.
CREATE TABLE thread_state (
    namespace        text COLLATE "C" NOT NULL,
    id               text COLLATE "C" NOT NULL,
    data             text NOT NULL,
    data_jsonb_exact boolean NOT NULL,
    updated_at       timestamptz NOT NULL,
    expires_at       timestamptz,
    PRIMARY KEY (namespace, id)
);
CREATE INDEX thread_state_by_expiry ON thread_state (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE channel_state (
    namespace        text COLLATE "C" NOT NULL,
    id               text COLLATE "C" NOT NULL,
    data             text NOT NULL,
    data_jsonb_exact boolean NOT NULL,
    updated_at       timestamptz NOT NULL,
    expires_at       timestamptz,
    PRIMARY KEY (namespace, id)
);
CREATE INDEX channel_state_by_expiry ON channel_state (expires_at) WHERE expires_at IS NOT NULL;

-- The cache: single values, and bounded lists (oldest item first).
CREATE TABLE cache_values (
    namespace  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    value      bytea,
    expires_at timestamptz,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX cache_values_by_expiry ON cache_values (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE cache_lists (
    namespace  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    items      bytea[] NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX cache_lists_by_expiry ON cache_lists (expires_at) WHERE expires_at IS NOT NULL;

-- Locks: one row per lock key with its holders (a JSON array of
-- {owner, token, acquired_at, expires_at}) and the highest fencing token
-- issued; expires_at is set only while the record is idle (no holder, no
-- entry). Every lock operation runs in one transaction holding this row's
-- lock (SELECT ... FOR UPDATE).
CREATE TABLE locks (
    namespace  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    fence      bigint NOT NULL DEFAULT 0,
    holders    jsonb NOT NULL DEFAULT '[]',
    expires_at timestamptz,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX locks_by_expiry ON locks (expires_at) WHERE expires_at IS NOT NULL;

-- Entries waiting on a lock, in arrival order (seq).
CREATE TABLE lock_entries (
    namespace   text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    payload     bytea,
    enqueued_at timestamptz NOT NULL,
    expires_at  timestamptz,
    PRIMARY KEY (namespace, key, seq),
    FOREIGN KEY (namespace, key) REFERENCES locks (namespace, key) ON DELETE CASCADE
);
CREATE INDEX lock_entries_by_expiry ON lock_entries (expires_at) WHERE expires_at IS NOT NULL;

-- Incidents. Bodies are bytea: kept byte for byte, as the caller hashes them
-- (read them with convert_from(body, 'UTF8')). Correlation ids may be up to
-- 4 KiB, too long for an index entry, so indexes use correlation_sha256,
-- the SHA-256 of the id's UTF-8 bytes, and lookups compare both.
CREATE TABLE alerts (
    namespace  text COLLATE "C" NOT NULL,
    channel    text COLLATE "C" NOT NULL,
    unique_id  text COLLATE "C" NOT NULL,
    ts         timestamptz,
    ts_nanos   smallint NOT NULL DEFAULT 0, -- nanoseconds below ts's microsecond
    body       bytea NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (namespace, channel, unique_id)
);
CREATE INDEX alerts_by_expiry ON alerts (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE issues (
    namespace          text COLLATE "C" NOT NULL,
    channel            text COLLATE "C" NOT NULL,
    unique_id          text COLLATE "C" NOT NULL,
    correlation_id     text COLLATE "C" NOT NULL,
    correlation_sha256 bytea NOT NULL,
    post_id            text COLLATE "C" NOT NULL DEFAULT '',
    is_open            boolean NOT NULL,
    body               bytea NOT NULL,
    expires_at         timestamptz,
    PRIMARY KEY (namespace, channel, unique_id)
);
CREATE INDEX issues_open_by_correlation ON issues (namespace, channel, correlation_sha256) WHERE is_open;
CREATE INDEX issues_by_post_id ON issues (namespace, channel, post_id) WHERE post_id <> '';
CREATE INDEX issues_by_expiry ON issues (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE move_mappings (
    namespace          text COLLATE "C" NOT NULL,
    channel            text COLLATE "C" NOT NULL,
    correlation_id     text COLLATE "C" NOT NULL,
    correlation_sha256 bytea NOT NULL,
    unique_id          text COLLATE "C" NOT NULL DEFAULT '',
    body               bytea NOT NULL,
    PRIMARY KEY (namespace, channel, correlation_sha256)
);

CREATE TABLE channel_processing_state (
    namespace text COLLATE "C" NOT NULL,
    channel   text COLLATE "C" NOT NULL,
    body      bytea NOT NULL,
    PRIMARY KEY (namespace, channel)
);
