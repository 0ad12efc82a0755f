// Package file is the embedded durable botstate backend: the whole state in
// one file, on go.etcd.io/bbolt, registered as "file".
//
//	import _ "github.com/botstate/botstate/backend/file"
//
//	st, err := botstate.Open(ctx, "file:///var/lib/mybot/state.db")
//
// URLs: file:///abs/path.db, file://localhost/abs/path.db, and relative
// forms file:rel/path.db and file://./rel/path.db (also file://../x.db).
// Percent escapes in the path are decoded. Options in the query:
// timeout=<duration> is how long Open waits for the file's lock (default
// 1s); nosync=1 skips fsync, which is fast but lets an OS crash or power
// loss lose or corrupt the file: for tests only. The file is created (mode 0600) when absent; its
// directory must exist. DefaultPath is the file the command line uses when
// given no URL.
//
// # One process
//
// bbolt locks the file (flock) for the process that opened it. A second
// process, or a second Open in the same process, waits up to the timeout
// and then fails with a *LockedError that names the file and matches
// driver.ErrUnavailable. Share a file between processes through one of them
// (botstate serve), or use a server backend.
//
// # Durability and group commit
//
// Every driver method is one bbolt transaction: reads a read-only one
// (DB.View, which runs beside the writer), writes a read-write one that is
// committed, and fsynced, before the method returns.
// A method that returned success has its effect on disk and survives
// kill -9 or power loss; one that did not return may or may not have
// happened, never half.
//
// Writers do not each pay an fsync. A committer goroutine takes every write
// waiting when the previous commit finishes and applies them in one
// transaction (up to 1000), so 64 concurrent writers share one commit while
// a lone writer is committed at once, with no batching delay. This is
// bbolt's DB.Batch without its timer: DB.Batch waits up to 10 ms to gather a
// batch. As with DB.Batch, if one function of a group fails, the
// transaction is rolled back, that function is retried alone and the rest
// together; so every transaction function computes its results afresh on
// each run and has no effect outside the transaction. Outcomes such as
// ErrNotOwner or ErrConflict are results, not transaction failures: they
// never roll back the group.
//
// A call checks its context before it starts. A write whose context ends
// while it waits for its group is dropped unrun, with an error matching both
// ErrUnavailable and the context's error; once in a transaction it runs to
// the commit, which is local and short.
//
// The rules of each domain are the pure functions of package driver
// (ApplyClaim, ApplyComplete, ApplyExtendEvent, ApplyReleaseEvent,
// ApplyRetryEvent, ApplyAcquire, ApplyRelease, ApplyHandover, PruneLock, ...
// and MergeObjects), applied inside the transaction, exactly as the
// in-memory backend applies them under its mutexes: each method loads the
// record, decides, and writes the record and its index entries back in the
// one transaction. The listings (Due, Failed, Pending, Expired, Lapsed) are
// one read transaction each.
//
// # Layout
//
// One top-level bucket per domain; every key starts with the namespace and
// a NUL byte. Namespaces, keys, ids, channels and correlation ids never hold
// NUL, so composite keys (ns\0channel\0uid) are unambiguous, a namespace's
// items form one contiguous key range, and "C1" is never a prefix of "C12".
//
//	events             ns\0key -> event
//	event_order        ns\0seq -> key              insertion order (event limit)
//	event_count        ns -> count                 keys per namespace (event limit)
//	event_pending      ns\0 created key -> status  neither completed nor failed, oldest first
//	event_failed       ns\0 created key -> status  failed, oldest first
//	conversations      ns\0key
//	subscriptions      ns\0thread                  thread order: listing is a range scan
//	thread_state       ns\0id
//	channel_state      ns\0id
//	cache_values       ns\0key
//	cache_lists        ns\0key
//	locks              ns\0key
//	lock_lapse         ns\0 lapse key -> until     locks lapsed from lapse until until
//	alerts             ns\0channel\0uid
//	issues             ns\0channel\0uid
//	issue_open         ns\0channel\0correlation\0uid   open issues
//	issue_post         ns\0channel\0post\0uid          issues by post id
//	move_mappings      ns\0channel\0correlation
//	processing_states  ns\0channel
//	expiry             expires kind bucket-key     every item with a TTL
//	meta               format -> layout version (2)
//
// (In event_pending, event_failed, lock_lapse and expiry the time is 12
// bytes that sort in time order, and the kind is one byte, so they need no
// separator.) Values are a compact binary encoding: varints, times as
// seconds and nanoseconds, nil kept apart from empty; every value with a
// TTL starts with its expiry time.
//
// Event limit: an insert that takes a namespace over its limit deletes the
// oldest keys by insertion (the first entries of event_order) in the same
// transaction.
//
// Event listings: Pending, Expired and Due walk event_pending, which holds
// only unfinished events (recorded, claimed, released) in CreatedAt order
// and carries each one's status, lease, expiry and retry time, so they
// decide from the index entry, read only the events they return, and stop
// at the limit: their cost is the unfinished events of the namespace older
// than the last one returned, never the completed or failed ones. Failed
// walks event_failed the same way.
//
// Lapsed locks: a lock record changes between writes only by the passage
// of time, so every write computes when the record will be lapsed (no live
// holder, a live entry waiting): from the end of its last holder's lease
// until the end of its last entry, if that is later. lock_lapse holds that
// window for every record that has one, by start time. LapsedLocks reads
// the index entries of the namespace that started at or before now, keeps
// those whose window is still open (exactly the lapsed locks, decided from
// the index alone), sorts their keys and reads only the first limit
// records: its cost is the number of lapsed locks of the namespace (plus
// those whose window closed, until the reaper drops them), never the locks
// held or idle.
//
// # Format versions
//
// The file records its layout version in meta. This build writes format 2
// and reads format 1: Open upgrades a format-1 file in its first
// transaction, building lock_lapse from the lock records (one pass over
// them) and creating event_failed. Format 2 put every new field (an
// event's LastError and RetryAt, a holder's Entry, a lock's Skipped, the
// retry time in event_pending) in an optional tail at the end of the
// value, written only when set, so format-1 values read with those fields
// zero, and values without them are stored byte for byte as format 1 did.
// A format-1 build refuses a format-2 file rather than misread it.
//
// # Expiry
//
// Reads compare an item's expiry with the now each call carries and never
// return an expired item. Removal is garbage collection: the expiry index
// holds one key per item that has an expiry, big-endian time first, so the
// expired items are a prefix of it. A background reaper, every
// Config.SweepInterval (default 10s) by Config.Clock, deletes them from
// that prefix in transactions of at most 1000 items, and stops on Close.
// Lock records are reaped once idle past their idle expiry, or an hour after
// their last holder and entry (holders' entries included) lapsed, with
// their lock_lapse entry. bbolt reuses the pages freed this way,
// so under a steady TTL workload the file stops growing (see
// TestFileSizeBounded); it never shrinks by itself (bbolt compact does that
// offline).
package file
