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
//     it). Unfinished events sit in "<ns>#EVP#" (recorded, released) or
//     "<ns>#EVC#" (claimed), sorted by creation time, which is what Pending
//     and Expired read; a completed event leaves the index.
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
//     Claim takeover (released, or lease lapsed): read, driver.ApplyClaim,
//     write conditioned on the revision. Complete and Release: one
//     UpdateItem whose condition is the fencing rule (claimed, this token,
//     not expired); a failed condition is ErrNotOwner.
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
//     read. CAS (Update) is an UpdateItem conditioned on the version.
//     Thread and channel state merge the same way.
//   - Locks: read the record, apply driver.ApplyAcquire (Extend, Release,
//     Handover...) in Go, write back conditioned on the revision: the pop
//     and the release of a Handover are one write. A decision that changes
//     nothing (Busy) writes nothing.
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
// accepts values up to 1 MiB by default.
//
// # Cost
//
// Export and DropAllData scan the whole table (filtered to the namespace).
// An event limit costs a transaction per insertion plus one per eviction.
// All subscriptions of a namespace share one partition, as do its open
// issues and its unfinished events in GSIIsOpen: adaptive capacity splits
// hot partitions, but a single namespace past about 1000 writes a second to
// one of them is throttled (ErrUnavailable).
package dynamodb
