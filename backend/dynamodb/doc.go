// Package dynamodb is the DynamoDB botstate backend, registered as
// "dynamodb://". It keeps every domain of every namespace in one table.
//
// # URL
//
//	dynamodb://TABLE?region=eu-west-1
//	dynamodb://botstate-test?endpoint=http://127.0.0.1:8000&region=us-east-1&create=1
//
// The host is the table. region picks the region (else AWS_REGION or the
// shared config); endpoint replaces the service endpoint (DynamoDB Local, a
// VPC endpoint); create=1 makes Open create the table, its two indexes and
// its TTL setting when missing (see EnsureSchema). Credentials come from the
// AWS default chain; with an endpoint and no credentials configured in the
// environment or the shared files, static dummy ones are used, which
// DynamoDB Local accepts. Incidents.Init validates the table (see
// ValidateSchema) and says exactly what is wrong.
//
// # Table
//
// Keys pk (partition) and sk (sort), both strings, on-demand billing. The
// namespace, which never holds '#', leads every partition key. Ids are
// written between '#' delimiters by part: '%', '#' and '~' are
// percent-escaped, and an id whose escaped form is over 200 bytes becomes
// "~" + base64url(SHA-256(id)), so keys stay under DynamoDB's limits (1024
// bytes for a sort key) for 1 KiB keys and 4 KiB correlation ids. Every
// item also holds its full ids in attributes, which reads compare, and
// every prefix a query matches ends with '#': channel C1 never matches
// C12, correlation id abc never matches abcd.
//
//	item               pk                          sk
//	event              <ns>#EV#<key>               EVENT#
//	event order        <ns>#EVORDER#               <time>#<key>#     (only under an event limit)
//	event count        <ns>#EVCOUNT#               COUNT#            (only under an event limit)
//	conversation       <ns>#CV#<key>               CONV#
//	subscription       <ns>#SUB#                   <thread, unescaped: bytewise order>
//	thread state       <ns>#TS#<id>                DOC#
//	channel state      <ns>#CS#<id>                DOC#
//	cache value        <ns>#CA#<key>               VALUE#
//	cache list         <ns>#CA#<key>               LIST#
//	lock               <ns>#LK#<key>               LOCK#
//	alert              <ns>#CH#<channel>           ALERT#<unique id>#
//	issue              <ns>#CH#<channel>           ISSUE#<unique id>#
//	move mapping       <ns>#CH#<channel>           MOVEMAPPING#<correlation id>#
//	processing state   <ns>#CH#<channel>           PROCESSINGSTATE#
//
// Incidents keep the single-table design of Slack Manager's DynamoDB store
// (partition = channel, typed sort keys, GSIPostID, GSIIsOpen, a ttl
// attribute), with two changes: the namespace in the partition key and a
// delimiter after every id, and an issue's sort key holding only its unique
// id, since an issue is identified by (channel, unique id): the correlation
// id moves to the GSIIsOpen sort key, so re-saving an issue can never leave
// a second copy under an old correlation id.
//
// Two global secondary indexes, every attribute projected:
//
//   - GSIPostID (pk, post_id): an issue of a channel by its Slack post id.
//   - GSIIsOpen (is_open, open_sk): open work of a namespace. Open issues
//     sit in partition "<ns>#ISSUE#" sorted by "<channel>#<correlation
//     id>#<unique id>#" (FindActiveChannels reads the partition,
//     LoadOpenIssuesInChannel and FindOpenIssueByCorrelationID a prefix of
//     it). Events sit in one partition per status, sorted by
//     "<creation time>#<key>#": "<ns>#EVR#" recorded, "<ns>#EVC#" claimed,
//     "<ns>#EVP#" released, "<ns>#EVF#" failed; a completed event leaves
//     the index. (Before failed events, recorded events shared "<ns>#EVP#"
//     with released ones; those written then stay there until they are
//     written again or expire, and Due skips them.) Locks with an entry,
//     queued or held, that outlives their holders sit in "<ns>#LKL#",
//     sorted by "<time the last holder lapses>#<key>#" (the zero time when
//     none holds them); others stay out of the index.
//
// Reads through an index are eventually consistent on DynamoDB (a write
// shows there within a second, usually far less); every other read is
// strongly consistent.
//
// # Atomicity
//
// Every driver call is one conditional write or one transaction, or a
// strongly consistent read followed by a write conditioned on the item's
// revision (a random number every write replaces), retried with capped,
// jittered backoff that honours the context when another writer won:
//
//   - Record and Claim of a new key: a PutItem conditioned on absence.
//     Claim of a stored key (Reclaim, TakeOver, a released or lapsed
//     claim, parking as failed past MaxAttempts): read, driver.ApplyClaim,
//     write conditioned on the revision.
//   - Complete and Extend: one UpdateItem whose condition is the fencing
//     rule of driver.Owns (claimed, this token, not expired); a failed
//     condition is ErrNotOwner. Release: one UpdateItem fenced the same way
//     and conditioned on the attempts that give the outcome it writes
//     (below MaxAttempts: released; with Defer, at least one to take back);
//     when that fails, driver.ApplyReleaseEvent decides from a consistent
//     read (ErrNotOwner, parking as failed, attempts kept at zero) and the
//     result is written conditioned on the revision. Retry: one UpdateItem
//     conditioned on a live failed event, else driver.ApplyRetryEvent on a
//     read (ErrNotFound, ErrConflict, or a write conditioned on the
//     revision). A caller whose UpdateItem's answer was lost (the SDK's
//     resend then fails the condition) finds its revision stored and
//     succeeds.
//   - Event limit: an insertion is a TransactWriteItems of the event, its
//     order item and the count; evictions delete the oldest order item, its
//     event (conditioned on still being that insertion) and decrement the
//     count in one transaction, so the count always equals the order items.
//   - Conversations: updates of a live conversation are one UpdateItem
//     (version = version + 1 on the server); a missing or expired one is
//     created by a PutItem conditioned on there being none. UpdateData
//     SETs each top-level member of the patch as its own path in the data
//     map (#d.#member = its JSON text), so concurrent merges of different
//     members never lose one; the canonical JSON object is assembled on
//     read. The merged data's size limit: an item keeps dsz, a bound on
//     its data's driver.DataSize, exact after a write of whole data; a
//     merge's UpdateItem adds the patch's member sizes to it on condition
//     that the sum stays within the limit, so the result does too. When
//     that condition (or the put of a fresh item) fails, the merge reads,
//     measures the result exactly, and writes it with an exact dsz on
//     condition that the revision read is still stored, or refuses it
//     (ErrTooLarge) having written nothing. CAS (Update) is an UpdateItem
//     conditioned on the version. Thread and channel state merge the same
//     way.
//   - Locks: read the record, apply driver.ApplyAcquire (Extend, Release,
//     Handover...) in Go, write back conditioned on the revision: the pop
//     and the release of a Handover are one write, and so are a lapsed
//     holder's entry going back to the front, entries moving to Skipped
//     and Skipped being handed over. A decision that changes nothing
//     (Busy) writes nothing. The record is one item: holders as JSON
//     (h), their entries (he, one per holder, NULL for none), the queue
//     (q) and the skipped entries (skip) as lists of maps whose payloads
//     stay binary, so an entry that fits the queue fits its holder.
//   - Cache lists: list_append conditioned on the length while there is
//     room, else read, trim and write conditioned on the revision.
//     CacheDelete deletes value and list in one transaction.
//   - MoveIssue: one TransactWriteItems (delete from the source, put in the
//     target). SaveIssues: BatchWriteItem in groups of 25, resending
//     unprocessed items with capped exponential backoff (not atomic, as in
//     the seed). Import: one transaction up to 100 items and 4 MB, else
//     batches.
//
// # Expiry and size
//
// Items with an expiry carry exp (the exact time, compared by every read and
// condition against the call's now) and ttl (epoch seconds, one past exp)
// for DynamoDB's TTL, which deletes lazily and is only garbage collection.
// DynamoDB caps an item at 400 KB: a write that would exceed it (a big
// payload, a long list, a large merge) fails with an error wrapping
// driver.ErrTooLarge and changes nothing, although the portable layer
// accepts values up to 1 MiB by default. A lock's item holds its holders'
// entries, its queue and up to driver.MaxSkipped skipped entries, so a
// queue bounded by QueueMax no longer bounds the item: once the entries in
// it pass 400 KB, every call that would add one (Acquire that queues,
// debounces or is refused by drop-newest, a grant that queues the caller's
// entry) fails with ErrTooLarge and changes nothing, until a holder is
// handed the skipped entries (a grant or Handover with entries waiting)
// or entries leave.
//
// # Cost
//
// Export and DropAllData scan the whole table (filtered to the namespace).
// An event limit costs a transaction per insertion plus one per eviction.
//
// The listings query GSIIsOpen (eventually consistent) and never scan:
// Expired reads the claimed events' partition and Failed the failed
// ones', in creation order, until they hold limit matches; Due reads the
// claimed and the released partitions, Pending the recorded, claimed and
// released ones, the same way, and merges them. A partition is read past
// the entries the listing skips (live claims for Expired and Due, released
// events whose retry time has not come for Due), so a listing costs the
// items it returns plus those it skips before them. Lapsed reads the
// locks whose last holder lapsed at or before now, all of them (they
// come sorted by that time, not by key), prunes each and returns the
// first limit in key order: its cost follows the lapsed locks, plus those
// whose entries lapsed too and that nobody wrote since, until TTL deletes
// them (an hour after their last entry lapsed, or later: TTL is lazy). A
// lock record written by an older version is not in the index until its
// next write. Every write of a lock in the index also writes its index
// copy (the whole item, every attribute projected), twice when the time
// its last holder lapses moved (Acquire, Extend, Handover).
//
// All subscriptions of a namespace share one partition, as do its open
// issues, its events of each status and its locks with entries in
// GSIIsOpen: adaptive capacity splits hot partitions, but a single
// namespace past about 1000 writes a second to one of them is throttled
// (ErrUnavailable).
package dynamodb
