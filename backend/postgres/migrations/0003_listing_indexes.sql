-- botstate schema, version 3: recovery listings that read only the events
-- they can return.
--
-- Runs like 0001, with search_path set to the store's schema, under the
-- migration advisory lock, in one transaction. The index builds read events
-- once each.

-- ExpiredEvents and DueEvents walk events_waiting in its order and stop at
-- the limit; PendingEvents merges it with events_recorded. Completed and
-- failed events are in neither, so a namespace holding millions of
-- completed events lists as fast as an empty one (FailedEvents already
-- walks events_failed). Claim writes one entry to events_waiting for a new
-- key; Complete, whose update is never HOT (it changes expires_at), writes
-- none to either, since a completed row is in neither.
CREATE INDEX events_waiting ON events (namespace, created_at, key) WHERE status IN ('claimed', 'released');
CREATE INDEX events_recorded ON events (namespace, created_at, key) WHERE status = 'recorded';
