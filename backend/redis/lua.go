package redis

import (
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/botstate/botstate/driver"
)

// The Lua lives in lua/*.lua, one file per domain, as named fragments: a
// fragment runs from its "--- fragment: NAME" line to the next one. This
// file composes them into scripts (library fragments first, then a
// script's body) and fills in the Go values a fragment names as {{NAME}}.
//
//go:embed lua/*.lua
var luaFiles embed.FS

// fragments holds every fragment by name, Go values filled in.
var fragments = loadFragments()

var fragmentLine = regexp.MustCompile(`\n--- fragment: ([\w.]+)\n`)

func loadFragments() map[string]string {
	fill := strings.NewReplacer(
		"{{MAX_SKIPPED}}", strconv.Itoa(driver.MaxSkipped),
		"{{NEVER_MS}}", neverMS,
		"{{MAX_ATTEMPTS_REASON}}", driver.MaxAttemptsReason,
	)
	out := map[string]string{}
	names, _ := fs.Glob(luaFiles, "lua/*.lua")
	for _, n := range names {
		b, err := luaFiles.ReadFile(n)
		if err != nil {
			panic(err) // embedded: cannot fail
		}
		text := string(b)
		marks := fragmentLine.FindAllStringSubmatchIndex(text, -1)
		for i, m := range marks {
			end := len(text)
			if i+1 < len(marks) {
				end = marks[i+1][0]
			}
			// The writer ends every fragment with one newline of its own.
			body := strings.TrimSuffix(text[m[1]:end], "\n")
			name := text[m[2]:m[3]]
			if _, dup := out[name]; dup {
				panic(fmt.Sprintf("redis: Lua fragment %s defined twice", name))
			}
			out[name] = fill.Replace(body)
		}
	}
	return out
}

// lua returns the fragment named name.
func lua(name string) string {
	f, ok := fragments[name]
	if !ok {
		panic("redis: no Lua fragment " + name)
	}
	return f
}

// The Lua scripts. Each driver method that takes more than one command is
// exactly one of these, run with EVALSHA (falling back to EVAL once per
// server after a restart or SCRIPT FLUSH), so Redis runs it atomically.
//
// Conventions shared with Go:
//   - times are microseconds since the epoch as decimal strings, "0" for
//     the zero time (never); a thing is live at now when its expiry is 0 or
//     after now (driver.Live);
//   - records are packed as length-prefixed fields ("3:abc0:") by pack in
//     Go and pk/unpk here, so payloads never pass through cjson;
//   - expiries given to Redis (PEXPIREAT, SET PXAT) are the call's absolute
//     ExpiresAt rounded up to the millisecond: native expiry is garbage
//     collection only, never earlier than what the call's clock decides;
//   - keys built inside a script (an index member's item key) share the
//     declared keys' hash tag, so they are in the same slot.
//
// luaPack packs and unpacks length-prefixed records ("3:abc0:"), and luaLive
// says whether an expiry (0: never) is still ahead of now; the event
// scripts and luaCore share them.
var luaPack = lua("luaPack")

var luaLive = lua("luaLive")

// luaCore is the prelude of every script but the event ones.
var luaCore = luaPack + luaLive + lua("luaCore")

// luaChunks sends long argument lists in slices: Lua's unpack has a limit.
var luaChunks = lua("luaChunks")

// luaBless is bytewise less-than: Lua's own string order follows the
// server's locale.
var luaBless = lua("luaBless")

// luaLex holds the helpers of lex-ordered indexes and server-clock
// collection.
var luaLex = luaBless + lua("luaLex")

// script builds a script from library parts and a body.
func script(parts ...string) *rueidis.Lua {
	return rueidis.NewLuaScript(luaCore + strings.Join(parts, ""))
}

// ---- events --------------------------------------------------------------------
//
// An event is one value, B.."k:"..key, packed as pk{status, attempts,
// createdAt, leaseUntil, expiresAt, token, payload, result, lastError,
// retryAt}, where B is the namespace's event base (prefix.."{ns:e}"). The
// last two fields are written only once a script sets them (a release, a
// failure, a takeover after one): a value without them, as every new event
// is stored and as older code wrote every event, reads as lastError "" and
// retryAt 0. Five zsets index them:
//
//	B.."p"  claimed events (status 2)                 -> createdAt
//	B.."r"  released events (status 3)                -> createdAt
//	B.."n"  recorded events (status 1)                -> createdAt
//	B.."f"  failed events (status 5)                  -> createdAt
//	B.."o"  events inserted under an event limit      -> createdAt
//
// Older code kept recorded events in r too; r still accepts them (Pending
// lists them from there, Due passes over them) until they lapse.
//
// Each listing walks the indexes it needs in zset order (createdAt, then
// key bytewise) and merges them: Pending p, r and n; Expired p, keeping the
// claims whose lease ended; Due p (the same) and r, keeping the released
// events whose retry time came; Failed f. p holds only work in flight and
// lapsed claims, so Expired and Due pass over as many live claims as the
// workers hold, plus, for Due, the released events still waiting for their
// retry time that are older than what it returns; neither reads the backlog
// of recorded, completed or failed events. Completed events sit in no index
// but o.
//
// The values expire natively at their ExpiresAt. An index entry is current
// when its value exists, is live by the call's now, has a status the index
// holds and the createdAt the entry is scored by; any other entry (the value
// lapsed, or the key lapsed and came back as another event) is stale, and is
// dropped by whichever script meets it: the listings, and the collection
// that one insert or release in gcEvery runs over the oldest entries of the
// index it writes. Each index key expires (rounded up to the minute, so most
// calls only read PEXPIRETIME) no earlier than the last of its events, so an
// idle namespace's indexes vanish with its last event.
//
// The insert scripts (record, claim) put the new-key path first and return
// before any helper is defined, so the common call costs SET NX GET, ZADD
// and PEXPIRETIME and nothing else. Their KEYS are [1] the value, [2] the
// index the new event joins (n or p) and, only when the call carries an
// event limit, [3] o; the other index keys are derived from KEYS[2] (same
// hash tag). Their ARGV: [1] the packed new value, [2] its PXAT in ms (""
// for never), [3] now, [4] the key, [5] the index expiry in ms, [6] the
// collection bound ("" on most calls: see Driver.gcBound), then for a claim
// [7] the attempt limit ("0" for none), and last the event limit (with
// KEYS[3] only).

// evSet stores ARGV[1] in KEYS[1] unless the key exists (the new-key path
// of the insert scripts), leaving what was there in cur.
var evSet = lua("evSet")

// evBase is what every event script needs: the index keys (derived from
// KEYS[2], which is always one of them), record packing, and the helpers
// that store a value and keep an index alive. The scripts on the paths that
// must stay lean (Complete, Extend) define nothing more.
var evBase = lua("evBase.head") + luaPack + luaLive + lua("evOwn") + lua("evBase.tail")

// evLib is the rest of the event helpers, defined after the new-key path.
var evLib = evBase + lua("evLib")

// evTakeover decides a claim of the live event cur (unpacked in r) as
// driver.ApplyClaim does, for the claim packed in ARGV[1] (leaseUntil,
// expiresAt and token are read from it), with the script's locals now,
// EXISTING (a Reclaim), HOLDER (a TakeOver's token, "" otherwise) and
// MAXATT. Reply {3, value} completed, {4, value} failed (before the call or
// parked by it), {2, value} held, recorded or waiting for its retry time,
// {1, value} taken.
var evTakeover = lua("evTakeover")

// Record: KEYS [1] value, [2] n, [3] o (limited); ARGV [7] the event
// limit. Reply 1 inserted, 0 a live event was there.
var recordScript = rueidis.NewLuaScript(evSet + evLib + lua("recordScript"))

// Claim: KEYS [1] value, [2] p, [3] o (limited); ARGV [7] the attempt
// limit, [8] the event limit. Reply 1 when the packed claim was stored as
// new (Go built it, so nothing comes back), else as evTakeover.
var claimScript = rueidis.NewLuaScript(evSet + evLib + lua("claimScript.head") + evTakeover + lua("claimScript.tail"))

// Reclaim and TakeOver: KEYS [1] value, [2] p; ARGV as the insert scripts'
// [1..5], then [6] the holder's token ("" for a Reclaim; a TakeOver of a
// lapsed claim is a Reclaim too), [7] the attempt
// limit. Reply {0} absent (never inserts), else as evTakeover.
var reclaimScript = rueidis.NewLuaScript(evLib + lua("reclaimScript") + evTakeover)

// Complete: KEYS [1] value, [2] p. ARGV: [1] now, [2] key, [3] token,
// [4] result, [5] expiresAt, [6] its PXAT in ms ("" never), [7] index
// expiry in ms. Reply 1 done, 0 not the owner.
var completeScript = rueidis.NewLuaScript(evBase + lua("completeScript"))

// Extend: KEYS [1] value, [2] p. ARGV: [1] now, [2] key, [3] token,
// [4] leaseUntil, [5] expiresAt, [6] its PXAT in ms ("" never), [7] index
// expiry in ms. Reply 1 done, 0 not the owner.
var extendEventScript = rueidis.NewLuaScript(evBase + lua("extendEventScript"))

// Release (driver.ApplyReleaseEvent): KEYS [1] value, [2] p. ARGV: [1] now,
// [2] key, [3] token, [4] retryAt, [5] expiresAt, [6] its PXAT in ms (""
// never), [7] index expiry in ms, [8] reason, [9] "1" fail, [10] the
// attempt limit ("0" none), [11] "1" defer, [12] the collection bound.
// Reply 1 released or parked, 0 not the owner.
var releaseEventScript = rueidis.NewLuaScript(evLib + lua("releaseEventScript"))

// Retry (driver.ApplyRetryEvent): KEYS [1] value, [2] p. ARGV: [1] now,
// [2] key, [3] expiresAt, [4] its PXAT in ms ("" never), [5] index expiry
// in ms. Reply 1 released, 0 absent, 2 not failed.
var retryEventScript = rueidis.NewLuaScript(evBase + lua("retryEventScript"))

// Forget: KEYS [1] value, [2] p. ARGV [1] key.
var forgetScript = rueidis.NewLuaScript(evLib + lua("forgetScript"))

// evWalk reads an index by rank in batches, passing over stale entries
// (collected by the caller at the end, so ranks never shift under the walk)
// and, when keep is given, current ones it refuses; ev_merge merges walkers
// in createdAt order, ties by key bytewise (each zset's own order).
var evWalk = luaBless + lua("evWalk")

// The listings: KEYS [1] p, [2] r, [3] n, [4] f; ARGV [1] now, [2] limit.
// Reply: key, value pairs, oldest createdAt first, ties by key bytewise.
func listScript(body string) *rueidis.Lua {
	return rueidis.NewLuaScript(evLib + evWalk + lua("listScript.head") + body + lua("listScript.tail"))
}

// Pending: the events neither completed nor failed (driver.EventPending).
var pendingScript = listScript(lua("pendingScript"))

// Expired: the claims whose lease ended.
var expiredScript = listScript(lua("expiredScript"))

// Due: the claims whose lease ended and the released events whose retry
// time came (driver.EventDue); r's recorded events (older code's) are
// passed over.
var dueScript = listScript(lua("dueScript"))

// Failed: the failed events.
var failedScript = listScript(lua("failedScript"))

// Import: KEYS [1] value, [2] p. ARGV: [1] packed event, [2] its PXAT in
// ms ("" never), [3] createdAt, [4] key, [5] index expiry in ms,
// [6] status. Snapshot import replaces the event; it does not count
// toward the event limit (as in every backend).
var importEventScript = rueidis.NewLuaScript(evLib + lua("importEventScript"))

// ---- conversations and docs ---------------------------------------------------
//
// A conversation or doc is a hash: meta fields start with '!' (!f flow,
// !s state, !v version, !u updatedAt, !x expiresAt) and every top-level data
// member is a field "." + name holding the member's raw JSON text. Merging
// is then an HSET; Go assembles the sorted object on read.

var objLib = lua("objLib")

// KEYS[1] the conversation. ARGV: [1] now, [2] expiresAt, [3] mode
// ("state", "data", "merge", "swap"), [4] setFlow / version / the merge's
// size limit ("0": none), [5] flow, [6] state, [7..] data as "."-field,
// raw JSON pairs.
// Reply: {0} conflict, {2, size} a merge whose data would be size bytes,
// over the limit (nothing written), or {1, field, value, ...} the
// conversation after.
var convWriteScript = script(luaChunks, objLib, lua("convWriteScript"))

// KEYS[1] the doc. ARGV: [1] now, [2] expiresAt, [3] "put" or "merge",
// [4] the merge's size limit ("0": none), [5..] data pairs. Reply: {2,
// size} as convWriteScript's, or {1, field, value, ...} the doc after.
var docWriteScript = script(luaChunks, objLib, lua("docWriteScript"))

// KEYS[1] a hash. ARGV: [1] expiresAt, [2..] field, value pairs. Replaces
// the hash whole (snapshot import of conversations and docs).
var replaceHashScript = script(luaChunks, objLib, lua("replaceHashScript"))

// ---- subscriptions --------------------------------------------------------------
//
// KEYS: [1] hash thread -> pk{createdAt, expiresAt}, [2] zset of threads
// (score 0, bytewise order), [3] zset thread -> expiresAt.

var subLib = lua("subLib")

// ARGV: [1] now, [2] thread, [3] expiresAt, [4] createdAt to force ("" to
// keep a live subscription's). Garbage-collects lapsed subscriptions and
// sets the three keys to expire with the last subscription.
var subscribeScript = script(subLib, lua("subscribeScript"))

// ARGV: [1] thread.
var unsubscribeScript = script(subLib, lua("unsubscribeScript"))

// ARGV: [1] now, [2] after ("" for the start), [3] limit.
// Reply: thread, createdAt, expiresAt triples in bytewise thread order.
var listSubsScript = script(subLib, lua("listSubsScript"))

// ---- cache ------------------------------------------------------------------------
//
// KEYS: [1] value (pk{expiresAt, bytes}), [2] list, [3] list meta
// (expiresAt of the list).

// ARGV: [1] now, [2] packed value, [3] expiresAt. Reply {1} written, {0} a
// live value was there.
var cacheSetNXScript = script(lua("cacheSetNXScript"))

// ARGV: [1] now, [2] value, [3] maxLen, [4] expiresAt. Reply {length}.
var listAppendScript = script(lua("listAppendScript"))

// ARGV: [1] now. Reply: {} when absent, else {expiresAt, values...}.
var listRangeScript = script(lua("listRangeScript"))

// ARGV: [1] expiresAt, [2..] values. Snapshot import of a list.
var importListScript = script(luaChunks, lua("importListScript"))

// ---- locks ----------------------------------------------------------------------
//
// KEYS: [1] the record hash (f: fence, x: idle expiry, s: the skipped
// entries as pk{entry...}, oldest first, absent when there are none,
// h<token>: pk{owner, acquiredAt, expiresAt[, entry]} per holder, the entry
// being the one it handles), [2] the pending list (pk{enqueuedAt,
// expiresAt, payload} per entry, oldest first), [3] the lapse bucket. A
// holder packed without an entry (as older code wrote every holder) holds
// none.
//
// The lapse bucket is a zset in the lock's own slot (see Driver.lockKeys)
// that holds every lock of the namespace in that slot which may lapse with
// entries waiting, that is whose record holds a pending entry or a holder
// with an entry: its member is the 8 hex digits of the lock's tag and its
// key, its score the time its last holder lapses (0 with no holder, +inf
// when one never does). lk_store updates it in the same step as the
// record, so no write can leave it behind, and LapsedLocks reads only the
// locks whose holders all lapsed.
//
// The functions mirror driver/logic.go line for line: lk_prune is
// PruneLock, lk_skip skip, lk_take takeSkipped, lk_settle settle, lk_find
// findHolder, and each script's body the Apply function it names.
//
// In replies a holder is {token, owner, acquiredAt, expiresAt, entry},
// where entry is "" for none, "n" for the reply's next entry, "o" for the
// caller's own entry (Acquire) or the packed entry: a packed entry always
// starts with a digit, and the marks spare sending a payload twice.

var lockLib = lua("lockLib")

// Acquire (driver.ApplyAcquire). ARGV: [1] now, [2] owner, [3] strategy,
// [4] packed entry, [5] entry expiresAt, [6] expiresAt, [7] maxHolders,
// [8] queueMax, [9] "1" dropNewest, [10] idleExpiresAt, [11] "1" NoEntry,
// [12] "1" when the entry is not empty, [13] "1" QueueWhenFull. Reply:
// {outcome, holder (5 fields, "" unless acquired), next entry or "",
// ndropped, dropped entries..., skipped entries...}.
var acquireScript = script(luaChunks, lockLib, lua("acquireScript"))

// ExtendLock (driver.ApplyExtend). ARGV: [1] now, [2] token, [3] expiresAt.
// Reply: {0} not the owner, or {1, holder}.
var extendScript = script(luaChunks, lockLib, lua("extendScript"))

// ReleaseLock and ForceReleaseLock (driver.ApplyRelease,
// ApplyForceRelease). ARGV: [1] now, [2] token ("" for a forced release),
// [3] idleExpiresAt, [4] "1" keepPending. Reply: {0} not the owner, or
// {1, entries...}.
var releaseScript = script(luaChunks, lockLib, lua("releaseScript"))

// HandoverLock (driver.ApplyHandover). ARGV: [1] now, [2] token,
// [3] expiresAt, [4] idleExpiresAt, [5] "1" keep. Reply: {0} not the owner,
// {2} released, {1, next entry or "", holder, skipped entries...} still
// held.
var handoverScript = script(luaChunks, lockLib, lua("handoverScript"))

// InspectLock. ARGV: [1] now. Reply: {0} no record, or {1, fence, x,
// nholders, npending, holders..., pending entries..., skipped entries...},
// pruned at now. Read only.
var inspectScript = script(luaChunks, lockLib, lua("inspectScript"))

// LapsedLocks, on one primary (standalone: the server). No KEYS: the
// script reads lapse buckets of slots the node serves (at most
// lapsedChunk of them, so that no node is held up long), which is why it
// may touch keys of several slots, one slot per command. ARGV: [1] now, [2] limit, [3] the
// start of a lock key up to its tag's hash (prefix.."{"..ns..":l:"), [4] and
// [5] what goes before and after each bucket's part, [6..] the buckets'
// parts. A candidate (its holders all lapsed by now) is loaded and pruned at
// now: it is answered when it has no live holder and an entry waits
// (driver.LockLapsed), and leaves its bucket when nothing can wait any more
// (only a write brings entries back, and that write puts it back). Reply:
// up to limit locks, lowest key first (bytewise), each packed as
// pk{key, lk_state...}.
var lapsedScript = rueidis.NewLuaScript("#!lua flags=allow-cross-slot-keys\n" + luaCore + luaChunks + lockLib + luaBless + lua("lapsedScript"))

// ARGV: [1] fence, [2] x, [3] nholders, [4] npending, (token, packed
// holder)..., pending entries..., skipped entries... Snapshot import: the
// record as given.
var importLockScript = script(luaChunks, lockLib, lua("importLockScript"))

// ---- incidents --------------------------------------------------------------------
//
// One slot per namespace. KEYS: [1] issues hash (lp(channel)..uid ->
// pk{open, expiresAt, correlation, post, body}), [2] issue expiry zset,
// [3] open index (lp(channel)..uid), [4] correlation index of open issues
// (lp(channel)..lp(correlation)..uid), [5] post index
// (lp(channel)..lp(post)..uid). lp is a length prefix, so no channel,
// correlation or post id is ever a prefix of another's entry ("C1" vs "C12",
// "abc" vs "abcd"). Index zsets have score 0 and are read by lex range.

var incidentLib = lua("incidentLib")

// ARGV: [1] unused, then 7 fields per issue: channel, uid, correlation,
// post, open, expiresAt, body. Lapsed closed issues are collected by the
// server's clock (the driver call carries no now).
var saveIssuesScript = script(luaLex, incidentLib, lua("saveIssuesScript"))

// ARGV: [1] unused, [2] source channel, [3..9] the issue.
var moveIssueScript = script(luaLex, incidentLib, lua("moveIssueScript"))

// ARGV: [1] now, [2] "corr" | "post" | "open", [3] channel, [4] correlation
// or post id. Reply: uid, record pairs, uid order.
var findIssuesScript = script(luaLex, incidentLib, lua("findIssuesScript"))

// ARGV: [1] now. Reply: the channels with a live open issue, once each.
var activeChannelsScript = script(luaLex, incidentLib, lua("activeChannelsScript"))

// KEYS: [1] alerts hash (lp(channel)..uid -> pk{expiresAt, timestamp,
// body}), [2] alert expiry zset. ARGV: [1] unused, [2] channel, [3] uid,
// [4] expiresAt, [5] timestamp, [6] body. Lapsed alerts are collected by the
// server's clock.
var saveAlertScript = script(luaLex, lua("saveAlertScript"))

// scriptRef names a script in signatures.
type scriptRef = *rueidis.Lua
