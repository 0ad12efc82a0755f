// Package redis is the botstate backend on Redis 7 (standalone or Cluster),
// registered as "redis://", "rediss://" (TLS), "redis+cluster://" and
// "rediss+cluster://":
//
//	redis://[user:password@]host[:port][/db][?prefix=botstate:]
//	redis+cluster://[user:password@]host1:port,host2:port[?prefix=...]
//
// It talks to Redis through rueidis with auto-pipelining: concurrent calls
// share connections and are written in batches, so many goroutines cost
// few round trips. Under load a connection's writer waits up to
// flush_delay (default 20µs) after each write to gather the next batch,
// which cuts system calls on both ends; a lone caller never waits.
// Client-side caching is off: every read is judged by the time its call
// carries. Redis 7.0 or later is needed (SET NX GET,
// PEXPIRETIME, ZRANGE BYSCORE/BYLEX).
//
// # Atomicity
//
// Every driver method is one command (GET, HGETALL, HSET, HDEL, DEL, SET)
// or one Lua script run with EVALSHA, falling back to EVAL when the server
// has not seen the script (rueidis.NewLuaScript). Redis runs a script
// without interleaving any other command, so no operation is "almost
// atomic" and none reads in Go to write back later. The exceptions span
// slots, where no one script can reach: Export (SCAN, then one read per
// item, each atomic on its item), Import (one script or command per
// record) and, on Cluster, LapsedLocks (a read script per primary, see
// Cluster spread). The event and lock
// scripts implement driver/logic.go's rules statement for statement. Events
// (ApplyClaim and the rest): a plain Claim waits for a released event's
// RetryAt while Reclaim does not, a TakeOver by the live holder's token
// passes the claim on without counting an attempt, a takeover past
// MaxAttempts parks the event as failed, and Release, Fail, Defer, Extend
// and Retry are each one script fenced by the token (or the status). Locks
// (PruneLock and the Apply functions): a lapsed holder's live entry goes
// back to the front of the queue and lapsed entries to the skipped ones
// (the newest driver.MaxSkipped), NextFence = max(fence+1, now in
// microseconds), a grant while entries wait hands the oldest as Next (the
// caller's entry joins the back, or under Debounce replaces them), TakeOver
// brings no entry, Queue with a maximum and drop-oldest or drop-newest,
// Debounce replacing the pending entries, Concurrent up to MaxHolders
// (queueing when full if asked), Handover and Next that pop, release or
// keep in one step, Abandon leaving as a lapse does, an idle record keeping
// its fence until its idle expiry. A merge into a conversation or a doc
// measures its result inside its script before it writes (the length of
// the object Go assembles from the members, as driver.DataSize counts it:
// each member's name as Go quotes it, its raw JSON, the separators) and
// refuses one over the limit having written nothing.
//
// Records are packed as length-prefixed fields ("3:abc0:"), in Go and in
// Lua alike, so payloads, results and bodies are binary-safe and never pass
// through cjson. Times are microseconds since the epoch ("0" is the zero
// time: never).
//
// # Key layout
//
// Every key is prefix + "{" + tag + "}" + rest. Redis Cluster hashes only
// the tag, so the keys one operation touches always share a slot. The tag
// starts with the namespace and a domain letter (save the Cluster lapse
// buckets', see Cluster spread); namespaces are
// [A-Za-z0-9._-], so no namespace can reach into another's keys, and user
// keys only ever follow the tag, after a role letter, so no user key (which
// may hold braces, colons, anything but NUL) can collide with another key
// or with an index. Domains spread over the cluster by key use a tag that
// ends in a 32-bit FNV-1a hash of the key; domains with namespace-wide
// indexes keep the namespace in one slot:
//
//	events         {ns:e}k:<key>      value pk{status, attempts, createdAt,
//	                                  leaseUntil, expiresAt, token, payload, result
//	                                  [, lastError, retryAt]}
//	               {ns:e}p            zset key -> createdAt   (claimed: Expired, Due)
//	               {ns:e}r            zset key -> createdAt   (released: Due)
//	               {ns:e}n            zset key -> createdAt   (recorded)
//	               {ns:e}f            zset key -> createdAt   (failed: Failed)
//	               {ns:e}o            zset key -> createdAt   (inserted under a limit)
//	conversations  {ns:c:<h>}<key>    hash: !f flow, !s state, !v version,
//	                                  !u updatedAt, !x expiresAt, .<member> raw JSON
//	thread state   {ns:t:<h>}<id>     hash: !u, !x, .<member>
//	channel state  {ns:n:<h>}<id>     hash: !u, !x, .<member>
//	cache          {ns:v:<h>}v<key>   value pk{expiresAt, bytes}
//	               {ns:v:<h>}l<key>   list of values, oldest first
//	               {ns:v:<h>}m<key>   the list's expiresAt
//	subscriptions  {ns:s}h            hash thread -> pk{createdAt, expiresAt}
//	               {ns:s}o            zset thread (score 0: bytewise order)
//	               {ns:s}x            zset thread -> expiresAt
//	locks          {ns:l:<h>}m<key>   hash: f fence, x idle expiry, s pk{skipped
//	                                  entry...}, h<token> pk{owner, acquiredAt,
//	                                  expiresAt[, entry it handles]}
//	               {ns:l:<h>}q<key>   list of entries pk{enqueuedAt, expiresAt,
//	                                  payload}, oldest first
//	               {ns:l}i            lapse bucket (standalone): zset <h><key> ->
//	                                  when its last holder lapses
//	               {l<n>}ns           lapse bucket (Cluster), one per slot: the
//	                                  same, for the locks of that slot
//	incidents      {ns:i}is, ix       hash lp(channel)+uid -> pk{open, expiresAt,
//	                                  correlation, post, body}; zset by expiry
//	               {ns:i}op, co, po   lex indexes: open issues by channel, by
//	                                  channel+correlation, by channel+post id
//	               {ns:i}al, ax       alerts hash and its expiry zset
//	               {ns:i}mm, ps       move mappings, processing states
//
// lp(s) is len(s)+":"+s, so channel "C1" never matches "C12" and
// correlation "abc" never "abcd": a lex range over lp(channel)+lp(id) holds
// exactly that pair's entries.
//
// Fields in brackets are written only when set; a value or holder without
// them (as older code wrote every one) reads as their zero values. Older
// code also kept recorded events in r: r still accepts them, so they stay
// listed by Pending (and passed over by Due) until they lapse.
//
// # Cluster spread
//
// Conversations, docs, cache values and lists, and locks spread over every
// slot by key. Events, subscriptions and incidents keep one namespace in one
// slot, because their operations need a namespace-wide index atomically:
// Pending, Expired, Due and Failed in order, the count-limited event window
// (evict the oldest key of the namespace in the same step as the insert),
// listing subscriptions in order, and moving an issue between two channels.
// The cost: one namespace's events (and subscriptions, and incidents) live
// on one primary, so a single very hot namespace is bounded by one node's
// throughput. Different namespaces (tenants, bots) spread over the cluster.
//
// Locks have no namespace-wide index: on Cluster it would live in another
// slot than the lock, and no script could update both. They have lapse
// buckets instead, which every lock script keeps in the same step as the
// record: a zset of the locks that may lapse with entries waiting (a
// pending entry, or a holder's), scored by when their last holder lapses.
// On a standalone server there is one bucket per namespace. On Cluster
// there is one per namespace and slot, in that slot: its tag, {l<n>}, is the
// first of l0, l1, ... that hashes to the slot (the only tags that do not
// start with a namespace; they hold no ':', so no other tag equals one).
// LapsedLocks reads, on every primary, the buckets of the slots it serves
// (a script flagged allow-cross-slot-keys, which touches one slot per
// command, 1024 buckets per script, the primaries in parallel), and of each
// bucket only the locks whose holders all lapsed, so its cost is a probe
// per slot (16384 on Cluster, about 1-2µs each, spread over the primaries;
// one on a standalone server) plus those locks, whatever the size of the
// keyspace; a SCAN would read every key of every primary on every call.
// What the buckets cost the lock writes is a ZADD or ZREM and a
// PEXPIRETIME. Lock records written by older code join their bucket at
// their first write by this code; until then LapsedLocks does not see them.
//
// # Expiry and memory
//
// Each call's absolute ExpiresAt becomes the key's PEXPIREAT (or SET PXAT),
// rounded up to the millisecond, and every script also judges expiry by the
// call's now, so native expiry is only garbage collection and never hides an
// item earlier than the caller's clock would (as long as clocks are roughly
// in step with the server's). Index members are collected as their items
// lapse: each subscription write and incident save sweeps lapsed ones, and
// listings drop what they find dead.
//
// Events keep no expiry index, so that Record and Claim cost the server one
// SET NX GET, one ZADD and one PEXPIRETIME. An event's value expires
// natively; its index entry (p, r, n or f) goes stale and is dropped by
// whichever script meets it: the listings, and the collection that one
// insert or release in eight runs over the oldest entries of the index it
// writes (those created more than one of its own window and lease ago, up
// to 32, plus a probe further in when long-lived entries hold the head).
// Completed events leave p at once. Every event index key expires (rounded
// up to the minute) no earlier than its last event, so an idle namespace's
// indexes vanish with its last event. A lock leaves its lapse bucket at the
// write that leaves nothing waiting on it, or, when its record lapses on
// its own, at the next LapsedLocks that meets it; a bucket expires (rounded
// up to the minute) no earlier than its locks' records. What never expires
// by contract (open issues, move mappings, processing states, items written
// without a TTL) is kept until deleted.
//
// The event limit counts a namespace's keys inserted under a limit, oldest
// createdAt first (the caller's clock; the key being inserted is never the
// one evicted); an entry whose event lapsed or was inserted again without a
// limit leaves the count without evicting anything.
//
// # Iteration
//
// Nothing uses KEYS. Export runs SCAN with a MATCH on the prefix and
// namespace on every primary (rueidis gives a client per node; replicas are
// skipped), and reads the items back in pipelined batches. Import sends one
// script or command per record, pipelined in batches of 512; Redis has no
// transaction across slots, so an import cut short by a lost connection
// leaves the records before the failure written.
//
// # Errors
//
// A server that cannot be reached, is loading, busy, failing over or out of
// memory gives errors matching driver.ErrUnavailable (and the context's
// error when the context ended the call); rueidis reconnects on its own, so
// the same store works again once the server is back.
package redis
