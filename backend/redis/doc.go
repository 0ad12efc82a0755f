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
// atomic" and none reads in Go to write back later. The lock scripts
// implement driver/logic.go's rules statement for statement (prune lapsed
// holders and entries, NextFence = max(fence+1, now in microseconds),
// Queue with a maximum and drop-oldest or drop-newest, Debounce replacing
// the pending entries, Concurrent up to MaxHolders, Handover that pops or
// releases in one step, an idle record keeping its fence until its idle
// expiry).
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
// starts with the namespace and a domain letter; namespaces are
// [A-Za-z0-9._-], so no namespace can reach into another's keys, and user
// keys only ever follow the tag, after a role letter, so no user key (which
// may hold braces, colons, anything but NUL) can collide with another key
// or with an index. Domains spread over the cluster by key use a tag that
// ends in a 32-bit FNV-1a hash of the key; domains with namespace-wide
// indexes keep the namespace in one slot:
//
//	events         {ns:e}k:<key>      value pk{status, attempts, createdAt,
//	                                  leaseUntil, expiresAt, token, payload, result}
//	               {ns:e}p            zset key -> createdAt   (claimed: Expired)
//	               {ns:e}r            zset key -> createdAt   (recorded, released)
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
//	locks          {ns:l:<h>}m<key>   hash: f fence, x idle expiry,
//	                                  h<token> pk{owner, acquiredAt, expiresAt}
//	               {ns:l:<h>}q<key>   list of pk{enqueuedAt, expiresAt, payload}
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
// # Cluster spread
//
// Conversations, docs, cache values and lists, and locks spread over every
// slot by key. Events, subscriptions and incidents keep one namespace in one
// slot, because their operations need a namespace-wide index atomically:
// Pending and Expired in order, the count-limited event window (evict the
// oldest key of the namespace in the same step as the insert), listing
// subscriptions in order, and moving an issue between two channels. The
// cost: one namespace's events (and subscriptions, and incidents) live on
// one primary, so a single very hot namespace is bounded by one node's
// throughput. Different namespaces (tenants, bots) spread over the cluster.
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
// natively; its pending entry (p or r) goes stale and is dropped by whichever
// script meets it: Pending and Expired, and the collection that one insert
// in eight runs over the oldest entries of its index (those created more
// than one of its own window and lease ago, up to 32, plus a probe further
// in when long-lived entries hold the head). Completed events leave p at
// once. Every event index key expires (rounded up to the minute) no earlier
// than its last event, so an idle namespace's indexes vanish with its last
// event. What never expires by contract (open issues, move mappings,
// processing states, items written without a TTL) is kept until deleted.
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
