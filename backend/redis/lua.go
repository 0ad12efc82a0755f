package redis

import (
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/botstate/botstate/driver"
)

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
const luaPack = `
local function unpk(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = string.find(s, ':', i, true)
    local l = tonumber(string.sub(s, i, c - 1))
    out[#out + 1] = string.sub(s, c + 1, c + l)
    i = c + l + 1
  end
  return out
end
local function pk(t)
  local parts = {}
  for k = 1, #t do
    local v = t[k]
    parts[k] = #v .. ':' .. v
  end
  return table.concat(parts)
end
`

const luaLive = `
local function live(x, now)
  return x == 0 or x > now
end
`

// luaCore is the prelude of every script but the event ones.
const luaCore = luaPack + luaLive + `
local function fmt(n)
  return string.format('%d', n)
end
local function msat(us)
  return fmt(math.ceil(us / 1000))
end
-- set_expiry gives key the absolute expiry us (0: none).
local function set_expiry(key, us)
  if us == 0 then
    redis.call('PERSIST', key)
  else
    redis.call('PEXPIREAT', key, msat(us))
  end
end
local function score(us)
  if us == '0' then return '+inf' end
  return us
end
local function set_value(key, v, us)
  if us == '0' then
    redis.call('SET', key, v)
  else
    redis.call('SET', key, v, 'PXAT', msat(tonumber(us)))
  end
end
`

// luaChunks sends long argument lists in slices: Lua's unpack has a limit.
const luaChunks = `
local function push_chunks(cmd, key, list)
  local i = 1
  while i <= #list do
    local j = math.min(i + 999, #list)
    redis.call(cmd, key, unpack(list, i, j))
    i = j + 1
  end
end
`

// luaBless is bytewise less-than: Lua's own string order follows the
// server's locale.
const luaBless = `
local function bless(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
`

// luaLex holds the helpers of lex-ordered indexes and server-clock
// collection.
const luaLex = luaBless + `
local function lp(s)
  return #s .. ':' .. s
end
-- server_now is the server's clock in microseconds: garbage collection
-- for calls that carry no now follows Redis's clock, as native expiry does.
local function server_now()
  local t = redis.call('TIME')
  return fmt(tonumber(t[1]) * 1000000 + tonumber(t[2]))
end
-- succ is the least string above every string that starts with p (p is
-- UTF-8 text, so its last byte is never 0xff).
local function succ(p)
  return string.sub(p, 1, -2) .. string.char(string.byte(p, -1) + 1)
end
`

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
const evSet = `
local cur
if ARGV[2] == '' then
  cur = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET')
else
  cur = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'PXAT', ARGV[2])
end
if not cur then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[5]) then redis.call('PEXPIREAT', KEYS[2], ARGV[5]) end
  if not KEYS[3] and ARGV[6] == '' then return 1 end
end
`

// evBase is what every event script needs: the index keys (derived from
// KEYS[2], which is always one of them), record packing, and the helpers
// that store a value and keep an index alive. The scripts on the paths that
// must stay lean (Complete, Extend) define nothing more.
const evBase = `
local B = string.sub(KEYS[2], 1, -2)
local P, R, N, F, O = B .. 'p', B .. 'r', B .. 'n', B .. 'f', B .. 'o'
local MAX_REASON = '` + driver.MaxAttemptsReason + `'
` + luaPack + luaLive + `-- ev_store writes value v to key k with PXAT ms ("" for never).
local function ev_store(k, v, ms)
  if ms == '' then
    redis.call('SET', k, v)
  else
    redis.call('SET', k, v, 'PXAT', ms)
  end
end
-- ev_keep makes index key k live at least until ms (a missing k stays
-- missing: PEXPIRETIME says -2 and PEXPIREAT does nothing).
local function ev_keep(k, ms)
  if redis.call('PEXPIRETIME', k) < tonumber(ms) then redis.call('PEXPIREAT', k, ms) end
end
-- ev_counted keeps o alive until ms when event m counts toward a limit.
local function ev_counted(m, ms)
  if redis.call('ZSCORE', O, m) then ev_keep(O, ms) end
end
-- ev_ext gives an unpacked value the fields older values lack.
local function ev_ext(r)
  if not r[9] then r[9], r[10] = '', '0' end
end
-- ev_owned returns the value of k unpacked when it is claimed with token
-- (its lease lapsed or not) and live at now: the fence of Complete, Extend
-- and Release (driver.Owns).
local function ev_owned(k, token, now)
  local cur = redis.call('GET', k)
  if not cur then return nil end
  local r = unpk(cur)
  if not live(tonumber(r[5]), now) or r[1] ~= '2' or r[6] ~= token then return nil end
  return r
end
`

// evLib is the rest of the event helpers, defined after the new-key path.
const evLib = evBase + `
local IDX = {['1'] = N, ['2'] = P, ['3'] = R, ['5'] = F}
local WANT_P = {['2'] = true}
local WANT_R = {['1'] = true, ['3'] = true}
local WANT_N = {['1'] = true}
local WANT_F = {['5'] = true}
-- ev_drop forgets an event: its value and every index entry.
local function ev_drop(m)
  redis.call('DEL', B .. 'k:' .. m)
  redis.call('ZREM', P, m)
  redis.call('ZREM', R, m)
  redis.call('ZREM', N, m)
  redis.call('ZREM', F, m)
  redis.call('ZREM', O, m)
end
-- ev_check reads the value behind entry m (scored score) of index idx,
-- which holds the statuses in want. It returns the value and its fields
-- when the entry is current; otherwise it collects what is stale (at once,
-- or into later when the caller walks the index by rank and must not shift
-- it).
local function ev_check(idx, m, score, now, want, later)
  local v = redis.call('GET', B .. 'k:' .. m)
  local act
  local r
  if not v then
    act = 'gone'
  else
    r = unpk(v)
    if not live(tonumber(r[5]), now) then
      act = 'dead'
    elseif not want[r[1]] or tonumber(r[3]) ~= tonumber(score) then
      act = 'stale'
    else
      return v, r
    end
  end
  if later then
    later[#later + 1] = {act, idx, m}
  elseif act == 'dead' then
    ev_drop(m)
  else
    redis.call('ZREM', idx, m)
    if act == 'gone' then redis.call('ZREM', O, m) end
  end
  return nil
end
local function ev_apply(later)
  for _, a in ipairs(later) do
    if a[1] == 'dead' then
      ev_drop(a[3])
    else
      redis.call('ZREM', a[2], a[3])
      if a[1] == 'gone' then redis.call('ZREM', O, a[3]) end
    end
  end
end
-- ev_limit counts a new event toward the namespace's limit and evicts the
-- oldest while over it. An o entry whose value is gone, lapsed, or was
-- inserted again later without a limit (its createdAt differs) no longer
-- counts and leaves without evicting anything.
local function ev_limit(m, now, limit, ms)
  redis.call('ZADD', O, now, m)
  ev_keep(O, ms)
  local n = redis.call('ZCARD', O)
  while n > limit do
    -- The new key itself is never the one evicted, even when another
    -- writer's clock ran ahead of this call's.
    local v = redis.call('ZRANGE', O, 0, 1, 'WITHSCORES')
    local vm, vs = v[1], v[2]
    if vm == m then vm, vs = v[3], v[4] end
    redis.call('ZREM', O, vm)
    local cur = redis.call('GET', B .. 'k:' .. vm)
    if cur and tonumber(unpk(cur)[3]) == tonumber(vs) then ev_drop(vm) end
    n = n - 1
  end
end
-- ev_gc collects stale entries among the oldest of idx: those created
-- before bound (a string, so that Lua's number formatting never rounds
-- it), which lapsed by now if they had this call's window and
-- lease. Entries that outlive it (a longer window, a claim taken over
-- again and again) are skipped; when many hold the head, a second probe
-- looks at a spot further in, so they never shield what lapsed behind them.
local function ev_gc(idx, want, bound, now)
  local held = 0
  local ms = redis.call('ZRANGE', idx, '-inf', bound, 'BYSCORE', 'LIMIT', 0, 32, 'WITHSCORES')
  for i = 1, #ms, 2 do
    if ev_check(idx, ms[i], ms[i + 1], now, want) then held = held + 1 end
  end
  if held >= 8 then
    local n = redis.call('ZCOUNT', idx, '-inf', bound)
    if n > 32 then
      local off = 32 + math.fmod(now, n - 32)
      ms = redis.call('ZRANGE', idx, off, off + 15, 'WITHSCORES')
      for i = 1, #ms, 2 do
        ev_check(idx, ms[i], ms[i + 1], now, want)
      end
    end
  end
end
-- ev_inserted finishes an insert of key m into idx at now (as given): the
-- limit (given when KEYS[3] is), then the sampled collection.
local function ev_inserted(idx, want, m, now, limit)
  if KEYS[3] then ev_limit(m, now, tonumber(limit), ARGV[5]) end
  if ARGV[6] ~= '' then ev_gc(idx, want, ARGV[6], tonumber(now)) end
end
-- ev_replace stores ARGV[1] over a lapsed event of status old.
local function ev_replace(idx, m, now, old)
  ev_store(KEYS[1], ARGV[1], ARGV[2])
  local was = IDX[old]
  if was and was ~= idx then redis.call('ZREM', was, m) end
  if not KEYS[3] then redis.call('ZREM', O, m) end
  redis.call('ZADD', idx, now, m)
  ev_keep(idx, ARGV[5])
end
`

// evTakeover decides a claim of the live event cur (unpacked in r) as
// driver.ApplyClaim does, for the claim packed in ARGV[1] (leaseUntil,
// expiresAt and token are read from it), with the script's locals now,
// EXISTING (a Reclaim), HOLDER (a TakeOver's token, "" otherwise) and
// MAXATT. Reply {3, value} completed, {4, value} failed (before the call or
// parked by it), {2, value} held, recorded or waiting for its retry time,
// {1, value} taken.
const evTakeover = `
local st = r[1]
if st == '4' then return {3, cur} end
if st == '5' then return {4, cur} end
if st == '1' then return {2, cur} end
local a = unpk(ARGV[1])
local m = ARGV[4]
if st == '2' then
  if HOLDER ~= '' and r[6] == HOLDER and tonumber(r[4]) > now then
    -- The live holder hands its claim over: not a new attempt.
    r[4], r[5], r[6] = a[4], a[5], a[6]
    local v = pk(r)
    ev_store(KEYS[1], v, ARGV[2])
    ev_keep(P, ARGV[5])
    ev_counted(m, ARGV[5])
    return {1, v}
  end
  if tonumber(r[4]) > now then return {2, cur} end
elseif not EXISTING and r[10] and tonumber(r[10]) > now then
  return {2, cur}
end
local from, to, oc = IDX[st], P, 1
r[4], r[5], r[6] = '0', a[5], ''
if r[10] then r[10] = '0' end
if MAXATT > 0 and tonumber(r[2]) >= MAXATT then
  ev_ext(r)
  r[1] = '5'
  if r[9] == '' then r[9] = MAX_REASON end
  to, oc = F, 4
else
  r[1], r[2], r[4], r[6] = '2', string.format('%d', tonumber(r[2]) + 1), a[4], a[6]
end
local v = pk(r)
ev_store(KEYS[1], v, ARGV[2])
if from and from ~= to then redis.call('ZREM', from, m) end
redis.call('ZADD', to, r[3], m)
ev_keep(to, ARGV[5])
ev_counted(m, ARGV[5])
return {oc, v}
`

// Record: KEYS [1] value, [2] n, [3] o (limited); ARGV [7] the event
// limit. Reply 1 inserted, 0 a live event was there.
var recordScript = rueidis.NewLuaScript(evSet + evLib + `
local now = tonumber(ARGV[3])
if cur then
  local r = unpk(cur)
  if live(tonumber(r[5]), now) then return 0 end
  ev_replace(N, ARGV[4], ARGV[3], r[1])
end
ev_inserted(N, WANT_N, ARGV[4], ARGV[3], ARGV[7])
return 1
`)

// Claim: KEYS [1] value, [2] p, [3] o (limited); ARGV [7] the attempt
// limit, [8] the event limit. Reply 1 when the packed claim was stored as
// new (Go built it, so nothing comes back), else as evTakeover.
var claimScript = rueidis.NewLuaScript(evSet + evLib + `
local now = tonumber(ARGV[3])
local EXISTING, HOLDER, MAXATT = false, '', tonumber(ARGV[7])
if cur then
  local r = unpk(cur)
  if live(tonumber(r[5]), now) then
` + evTakeover + `
  end
  ev_replace(P, ARGV[4], ARGV[3], r[1])
end
ev_inserted(P, WANT_P, ARGV[4], ARGV[3], ARGV[8])
return 1
`)

// Reclaim and TakeOver: KEYS [1] value, [2] p; ARGV as the insert scripts'
// [1..5], then [6] the holder's token ("" for a Reclaim; a TakeOver of a
// lapsed claim is a Reclaim too), [7] the attempt
// limit. Reply {0} absent (never inserts), else as evTakeover.
var reclaimScript = rueidis.NewLuaScript(evLib + `
local now = tonumber(ARGV[3])
local EXISTING, HOLDER, MAXATT = true, ARGV[6], tonumber(ARGV[7])
local cur = redis.call('GET', KEYS[1])
if not cur then return {0} end
local r = unpk(cur)
if not live(tonumber(r[5]), now) then return {0} end
` + evTakeover)

// Complete: KEYS [1] value, [2] p. ARGV: [1] now, [2] key, [3] token,
// [4] result, [5] expiresAt, [6] its PXAT in ms ("" never), [7] index
// expiry in ms. Reply 1 done, 0 not the owner.
var completeScript = rueidis.NewLuaScript(evBase + `
local r = ev_owned(KEYS[1], ARGV[3], tonumber(ARGV[1]))
if not r then return 0 end
r[1], r[4], r[5], r[6], r[8] = '4', '0', ARGV[5], '', ARGV[4]
if r[10] then r[10] = '0' end
ev_store(KEYS[1], pk(r), ARGV[6])
redis.call('ZREM', P, ARGV[2])
ev_counted(ARGV[2], ARGV[7])
return 1
`)

// Extend: KEYS [1] value, [2] p. ARGV: [1] now, [2] key, [3] token,
// [4] leaseUntil, [5] expiresAt, [6] its PXAT in ms ("" never), [7] index
// expiry in ms. Reply 1 done, 0 not the owner.
var extendEventScript = rueidis.NewLuaScript(evBase + `
local r = ev_owned(KEYS[1], ARGV[3], tonumber(ARGV[1]))
if not r then return 0 end
r[4], r[5] = ARGV[4], ARGV[5]
ev_store(KEYS[1], pk(r), ARGV[6])
ev_keep(P, ARGV[7])
ev_counted(ARGV[2], ARGV[7])
return 1
`)

// Release (driver.ApplyReleaseEvent): KEYS [1] value, [2] p. ARGV: [1] now,
// [2] key, [3] token, [4] retryAt, [5] expiresAt, [6] its PXAT in ms (""
// never), [7] index expiry in ms, [8] reason, [9] "1" fail, [10] the
// attempt limit ("0" none), [11] "1" defer, [12] the collection bound.
// Reply 1 released or parked, 0 not the owner.
var releaseEventScript = rueidis.NewLuaScript(evLib + `
local now = tonumber(ARGV[1])
local r = ev_owned(KEYS[1], ARGV[3], now)
if not r then return 0 end
local m, att, max, defer = ARGV[2], tonumber(r[2]), tonumber(ARGV[10]), ARGV[11] == '1'
ev_ext(r)
r[4], r[5], r[6], r[9] = '0', ARGV[5], '', ARGV[8]
if defer then r[2] = string.format('%d', math.max(att - 1, 0)) end
local to, want = R, WANT_R
if ARGV[9] == '1' or (not defer and max > 0 and att >= max) then
  r[1], r[10] = '5', '0'
  if r[9] == '' then r[9] = MAX_REASON end
  to, want = F, WANT_F
else
  r[1], r[10] = '3', ARGV[4]
end
ev_store(KEYS[1], pk(r), ARGV[6])
redis.call('ZREM', P, m)
redis.call('ZADD', to, r[3], m)
ev_keep(to, ARGV[7])
ev_counted(m, ARGV[7])
if ARGV[12] ~= '' then ev_gc(to, want, ARGV[12], now) end
return 1
`)

// Retry (driver.ApplyRetryEvent): KEYS [1] value, [2] p. ARGV: [1] now,
// [2] key, [3] expiresAt, [4] its PXAT in ms ("" never), [5] index expiry
// in ms. Reply 1 released, 0 absent, 2 not failed.
var retryEventScript = rueidis.NewLuaScript(evBase + `
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local r = unpk(cur)
if not live(tonumber(r[5]), tonumber(ARGV[1])) then return 0 end
if r[1] ~= '5' then return 2 end
ev_ext(r)
r[1], r[2], r[5], r[10] = '3', '0', ARGV[3], '0'
ev_store(KEYS[1], pk(r), ARGV[4])
redis.call('ZREM', F, ARGV[2])
redis.call('ZADD', R, r[3], ARGV[2])
ev_keep(R, ARGV[5])
ev_counted(ARGV[2], ARGV[5])
return 1
`)

// Forget: KEYS [1] value, [2] p. ARGV [1] key.
var forgetScript = rueidis.NewLuaScript(evLib + `
ev_drop(ARGV[1])
return 1
`)

// evWalk reads an index by rank in batches, passing over stale entries
// (collected by the caller at the end, so ranks never shift under the walk)
// and, when keep is given, current ones it refuses; ev_merge merges walkers
// in createdAt order, ties by key bytewise (each zset's own order).
const evWalk = luaBless + `
local function walker(idx, want, now, later, keep)
  local w = {buf = {}, i = 1, start = 0, done = false}
  -- peek returns the current entry's member, score and value, or nil at
  -- the end.
  function w.peek()
    while true do
      if w.i > #w.buf then
        if w.done then return nil end
        w.buf = redis.call('ZRANGE', idx, w.start, w.start + 127, 'WITHSCORES')
        w.i = 1
        w.start = w.start + #w.buf / 2
        if #w.buf < 256 then w.done = true end
        if #w.buf == 0 then return nil end
      end
      local m = w.buf[w.i]
      if w.v == nil then
        local v, r = ev_check(idx, m, w.buf[w.i + 1], now, want, later)
        if v and (not keep or keep(r)) then w.v, w.r = v, r end
      end
      if w.v then return m, tonumber(w.buf[w.i + 1]), w.v end
      w.i = w.i + 2
    end
  end
  function w.advance()
    w.i = w.i + 2
    w.v, w.r = nil, nil
  end
  return w
end
-- ev_merge returns key, value pairs, up to limit, of the walkers merged.
local function ev_merge(ws, limit)
  local out = {}
  while #out < 2 * limit do
    local best, bm, bs, bv
    for _, w in ipairs(ws) do
      local m, s, v = w.peek()
      if m and (not best or s < bs or (s == bs and bless(m, bm))) then
        best, bm, bs, bv = w, m, s, v
      end
    end
    if not best then break end
    out[#out + 1] = bm
    out[#out + 1] = bv
    best.advance()
  end
  return out
end
`

// The listings: KEYS [1] p, [2] r, [3] n, [4] f; ARGV [1] now, [2] limit.
// Reply: key, value pairs, oldest createdAt first, ties by key bytewise.
func listScript(body string) *rueidis.Lua {
	return rueidis.NewLuaScript(evLib + evWalk + `
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local later = {}
-- lapsed keeps the claims whose lease ended (driver.EventDue).
local function lapsed(r) return tonumber(r[4]) <= now end
` + body + `
ev_apply(later)
return out
`)
}

// Pending: the events neither completed nor failed (driver.EventPending).
var pendingScript = listScript(`
local out = ev_merge({walker(P, WANT_P, now, later), walker(R, WANT_R, now, later),
  walker(N, WANT_N, now, later)}, limit)
`)

// Expired: the claims whose lease ended.
var expiredScript = listScript(`
local out = ev_merge({walker(P, WANT_P, now, later, lapsed)}, limit)
`)

// Due: the claims whose lease ended and the released events whose retry
// time came (driver.EventDue); r's recorded events (older code's) are
// passed over.
var dueScript = listScript(`
local out = ev_merge({walker(P, WANT_P, now, later, lapsed), walker(R, WANT_R, now, later, function(r)
  return r[1] == '3' and (not r[10] or tonumber(r[10]) <= now)
end)}, limit)
`)

// Failed: the failed events.
var failedScript = listScript(`
local out = ev_merge({walker(F, WANT_F, now, later)}, limit)
`)

// Import: KEYS [1] value, [2] p. ARGV: [1] packed event, [2] its PXAT in
// ms ("" never), [3] createdAt, [4] key, [5] index expiry in ms,
// [6] status. Snapshot import replaces the event; it does not count
// toward the event limit (as in every backend).
var importEventScript = rueidis.NewLuaScript(evLib + `
local m = ARGV[4]
ev_store(KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', O, m)
local idx = IDX[ARGV[6]]
for _, k in ipairs({P, R, N, F}) do
  if k ~= idx then redis.call('ZREM', k, m) end
end
if idx then
  redis.call('ZADD', idx, ARGV[3], m)
  ev_keep(idx, ARGV[5])
end
return 1
`)

// ---- conversations and docs ---------------------------------------------------
//
// A conversation or doc is a hash: meta fields start with '!' (!f flow,
// !s state, !v version, !u updatedAt, !x expiresAt) and every top-level data
// member is a field "." + name holding the member's raw JSON text. Merging
// is then an HSET; Go assembles the sorted object on read.

const objLib = `
local function obj_live(k, now)
  local x = redis.call('HGET', k, '!x')
  if not x then return false end
  if live(tonumber(x), now) then return true end
  redis.call('DEL', k)
  return false
end
local function obj_clear_data(k)
  local fs = redis.call('HKEYS', k)
  local del = {}
  for _, f in ipairs(fs) do
    if string.sub(f, 1, 1) == '.' then del[#del + 1] = f end
  end
  push_chunks('HDEL', k, del)
end
local function obj_put_data(k, from)
  local kv = {}
  for i = from, #ARGV do kv[#kv + 1] = ARGV[i] end
  push_chunks('HSET', k, kv)
end
`

// KEYS[1] the conversation. ARGV: [1] now, [2] expiresAt, [3] mode
// ("state", "data", "merge", "swap"), [4] setFlow / version, [5] flow,
// [6] state, [7..] data as "."-field, raw JSON pairs.
// Reply: {0} conflict, or {1, field, value, ...} the conversation after.
var convWriteScript = script(luaChunks, objLib, `
local k = KEYS[1]
local now = tonumber(ARGV[1])
local mode = ARGV[3]
local exists = obj_live(k, now)
local version = 0
if exists then version = tonumber(redis.call('HGET', k, '!v')) end
if mode == 'swap' then
  if version ~= tonumber(ARGV[4]) then return {0} end
  redis.call('DEL', k)
  redis.call('HSET', k, '!f', ARGV[5], '!s', ARGV[6])
  obj_put_data(k, 7)
elseif mode == 'state' then
  if ARGV[4] == '1' then redis.call('HSET', k, '!f', ARGV[5]) end
  redis.call('HSET', k, '!s', ARGV[6])
elseif mode == 'data' then
  obj_clear_data(k)
  obj_put_data(k, 7)
else
  obj_put_data(k, 7)
end
redis.call('HSET', k, '!v', fmt(version + 1), '!u', ARGV[1], '!x', ARGV[2])
set_expiry(k, tonumber(ARGV[2]))
local out = redis.call('HGETALL', k)
table.insert(out, 1, 1)
return out
`)

// KEYS[1] the doc. ARGV: [1] now, [2] expiresAt, [3] "put" or "merge",
// [4..] data pairs. Reply: {1, field, value, ...} the doc after.
var docWriteScript = script(luaChunks, objLib, `
local k = KEYS[1]
local now = tonumber(ARGV[1])
local exists = obj_live(k, now)
if ARGV[3] == 'put' and exists then redis.call('DEL', k) end
obj_put_data(k, 4)
redis.call('HSET', k, '!u', ARGV[1], '!x', ARGV[2])
set_expiry(k, tonumber(ARGV[2]))
if ARGV[3] == 'put' then return {1} end
local out = redis.call('HGETALL', k)
table.insert(out, 1, 1)
return out
`)

// KEYS[1] a hash. ARGV: [1] expiresAt, [2..] field, value pairs. Replaces
// the hash whole (snapshot import of conversations and docs).
var replaceHashScript = script(luaChunks, objLib, `
redis.call('DEL', KEYS[1])
obj_put_data(KEYS[1], 2)
set_expiry(KEYS[1], tonumber(ARGV[1]))
return {1}
`)

// ---- subscriptions --------------------------------------------------------------
//
// KEYS: [1] hash thread -> pk{createdAt, expiresAt}, [2] zset of threads
// (score 0, bytewise order), [3] zset thread -> expiresAt.

const subLib = `
local function sub_drop(m)
  redis.call('HDEL', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZREM', KEYS[3], m)
end
`

// ARGV: [1] now, [2] thread, [3] expiresAt, [4] createdAt to force ("" to
// keep a live subscription's). Garbage-collects lapsed subscriptions and
// sets the three keys to expire with the last subscription.
var subscribeScript = script(subLib, `
local now = tonumber(ARGV[1])
local created = ARGV[4]
if created == '' then
  created = ARGV[1]
  local cur = redis.call('HGET', KEYS[1], ARGV[2])
  if cur then
    local r = unpk(cur)
    if live(tonumber(r[2]), now) then created = r[1] end
  end
end
redis.call('HSET', KEYS[1], ARGV[2], pk({created, ARGV[3]}))
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('ZADD', KEYS[3], score(ARGV[3]), ARGV[2])
local dead = redis.call('ZRANGE', KEYS[3], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, 32)
for _, m in ipairs(dead) do sub_drop(m) end
local top = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if #top > 0 then
  local s = top[2]
  for i = 1, 3 do
    if s == 'inf' then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIREAT', KEYS[i], msat(tonumber(s))) end
  end
end
return {1}
`)

// ARGV: [1] thread.
var unsubscribeScript = script(subLib, `
sub_drop(ARGV[1])
return {1}
`)

// ARGV: [1] now, [2] after ("" for the start), [3] limit.
// Reply: thread, createdAt, expiresAt triples in bytewise thread order.
var listSubsScript = script(subLib, `
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local min = '-'
if ARGV[2] ~= '' then min = '(' .. ARGV[2] end
local out = {}
while #out < 3 * limit do
  local ms = redis.call('ZRANGE', KEYS[2], min, '+', 'BYLEX', 'LIMIT', 0, 100)
  if #ms == 0 then break end
  for _, m in ipairs(ms) do
    local v = redis.call('HGET', KEYS[1], m)
    local r
    if v then r = unpk(v) end
    if r and live(tonumber(r[2]), now) then
      out[#out + 1] = m
      out[#out + 1] = r[1]
      out[#out + 1] = r[2]
      if #out >= 3 * limit then break end
    elseif not r then
      sub_drop(m)
    end
  end
  min = '(' .. ms[#ms]
end
return out
`)

// ---- cache ------------------------------------------------------------------------
//
// KEYS: [1] value (pk{expiresAt, bytes}), [2] list, [3] list meta
// (expiresAt of the list).

// ARGV: [1] now, [2] packed value, [3] expiresAt. Reply {1} written, {0} a
// live value was there.
var cacheSetNXScript = script(`
local now = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur then
  local r = unpk(cur)
  if live(tonumber(r[1]), now) then return {0} end
end
set_value(KEYS[1], ARGV[2], ARGV[3])
return {1}
`)

// ARGV: [1] now, [2] value, [3] maxLen, [4] expiresAt. Reply {length}.
var listAppendScript = script(`
local now = tonumber(ARGV[1])
local meta = redis.call('GET', KEYS[3])
if not meta or not live(tonumber(meta), now) then redis.call('DEL', KEYS[2]) end
local n = redis.call('RPUSH', KEYS[2], ARGV[2])
local max = tonumber(ARGV[3])
if n > max then
  redis.call('LTRIM', KEYS[2], -max, -1)
  n = max
end
set_value(KEYS[3], ARGV[4], ARGV[4])
set_expiry(KEYS[2], tonumber(ARGV[4]))
return {n}
`)

// ARGV: [1] now. Reply: {} when absent, else {expiresAt, values...}.
var listRangeScript = script(`
local now = tonumber(ARGV[1])
local meta = redis.call('GET', KEYS[3])
if not meta or not live(tonumber(meta), now) then return {} end
local vs = redis.call('LRANGE', KEYS[2], 0, -1)
table.insert(vs, 1, meta)
return vs
`)

// ARGV: [1] expiresAt, [2..] values. Snapshot import of a list.
var importListScript = script(luaChunks, `
redis.call('DEL', KEYS[2])
local vs = {}
for i = 2, #ARGV do vs[#vs + 1] = ARGV[i] end
push_chunks('RPUSH', KEYS[2], vs)
set_value(KEYS[3], ARGV[1], ARGV[1])
set_expiry(KEYS[2], tonumber(ARGV[1]))
return {1}
`)

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

var lockLib = `
local MAX_SKIPPED = ` + strconv.Itoa(driver.MaxSkipped) + `
local NEVER_MS = '` + neverMS + `'

local function lk_entry(raw)
  local r = unpk(raw)
  return {raw = raw, enq = tonumber(r[1]), exp = tonumber(r[2])}
end
local function lk_load(km, kq)
  local h = redis.call('HGETALL', km)
  local st = {fence = 0, x = 0, holders = {}, pending = {}, skipped = {}}
  for i = 1, #h, 2 do
    local f, v = h[i], h[i + 1]
    if f == 'f' then st.fence = tonumber(v)
    elseif f == 'x' then st.x = tonumber(v)
    elseif f == 's' then
      for _, raw in ipairs(unpk(v)) do st.skipped[#st.skipped + 1] = {raw = raw} end
    else
      local r = unpk(v)
      local hd = {tok = string.sub(f, 2), token = tonumber(string.sub(f, 2)), owner = r[1], acq = r[2], exp = tonumber(r[3])}
      if r[4] then hd.entry = lk_entry(r[4]) end
      st.holders[#st.holders + 1] = hd
    end
  end
  table.sort(st.holders, function(a, b) return a.token < b.token end)
  local q = redis.call('LRANGE', kq, 0, -1)
  for _, v in ipairs(q) do st.pending[#st.pending + 1] = lk_entry(v) end
  st.exists = #h > 0 or #q > 0
  return st
end
-- lk_trim keeps the newest MAX_SKIPPED skipped entries.
local function lk_trim(st)
  local n = #st.skipped - MAX_SKIPPED
  if n > 0 then
    local keep = {}
    for i = n + 1, #st.skipped do keep[#keep + 1] = st.skipped[i] end
    st.skipped = keep
  end
end
local function lk_skip(st, es)
  for _, e in ipairs(es) do st.skipped[#st.skipped + 1] = e end
  lk_trim(st)
end
local function lk_take(st)
  local out = st.skipped
  st.skipped = {}
  return out
end
-- lk_prune: lapsed holders leave, a lapsed holder's live entry goes back
-- to the front of the queue (oldest first, in a stable order), lapsed
-- entries move to the skipped ones.
local function lk_prune(st, now)
  local back, hs = {}, {}
  for _, h in ipairs(st.holders) do
    if live(h.exp, now) then
      hs[#hs + 1] = h
    elseif h.entry then
      if live(h.entry.exp, now) then
        back[#back + 1] = h.entry
      else
        st.skipped[#st.skipped + 1] = h.entry
      end
    end
  end
  st.holders = hs
  for i = 2, #back do
    local e, j = back[i], i - 1
    while j >= 1 and back[j].enq > e.enq do
      back[j + 1] = back[j]
      j = j - 1
    end
    back[j + 1] = e
  end
  for _, e in ipairs(st.pending) do
    if live(e.exp, now) then back[#back + 1] = e else st.skipped[#st.skipped + 1] = e end
  end
  st.pending = back
  lk_trim(st)
end
local function lk_idle(st)
  return #st.holders == 0 and #st.pending == 0
end
local function lk_settle(st, idle)
  if lk_idle(st) then st.x = idle else st.x = 0 end
end
local function lk_find(st, token, now)
  for i, h in ipairs(st.holders) do
    if h.token == token and live(h.exp, now) then return i end
  end
  return nil
end
-- lk_holder is a holder as replies carry it; mark stands for its entry.
local function lk_holder(h, mark)
  local e = mark
  if not e then
    e = ''
    if h.entry then e = h.entry.raw end
  end
  return {h.tok, h.owner, h.acq, fmt(h.exp), e}
end
local function lk_raws(out, es)
  for _, e in ipairs(es) do out[#out + 1] = e.raw end
  return out
end
-- lk_state appends the record to out as replies carry it: fence, idle
-- expiry, the counts of holders and pending entries, the holders, the
-- pending entries, the skipped entries.
local function lk_state(out, st)
  for _, v in ipairs({fmt(st.fence), fmt(st.x), fmt(#st.holders), fmt(#st.pending)}) do out[#out + 1] = v end
  for _, h in ipairs(st.holders) do
    for _, v in ipairs(lk_holder(h)) do out[#out + 1] = v end
  end
  lk_raws(out, st.pending)
  return lk_raws(out, st.skipped)
end
-- lk_waits reports a record that may lapse with entries waiting: it holds
-- a pending entry or a holder with an entry.
local function lk_waits(st)
  if #st.pending > 0 then return true end
  for _, h in ipairs(st.holders) do
    if h.entry then return true end
  end
  return false
end
-- lk_index puts the lock in its lapse bucket (KEYS[3]), scored by when its
-- last holder lapses, when it may lapse with entries waiting, and takes it
-- out otherwise; the bucket lives at least until ms (the record's native
-- expiry, "" for none), rounded up to the minute.
local function lk_index(st, ms)
  local c = string.find(KEYS[1], '}', 1, true)
  local m = string.sub(KEYS[1], c - 8, c - 1) .. string.sub(KEYS[1], c + 2)
  if not lk_waits(st) then
    redis.call('ZREM', KEYS[3], m)
    return
  end
  local top = 0
  for _, h in ipairs(st.holders) do
    if h.exp == 0 then top = '+inf' break end
    if h.exp > top then top = h.exp end
  end
  if top ~= '+inf' then top = fmt(top) end
  redis.call('ZADD', KEYS[3], top, m)
  local keep = NEVER_MS
  if ms ~= '' then keep = fmt(math.ceil(tonumber(ms) / 60000) * 60000) end
  if redis.call('PEXPIRETIME', KEYS[3]) < tonumber(keep) then redis.call('PEXPIREAT', KEYS[3], keep) end
end
-- lk_store writes the record back as it stands (pruned or not, as the
-- rule that ran left it), dropping it when it is idle and its idle expiry
-- passed, and lets Redis drop it once every holder, every entry (a
-- holder's too) and the idle expiry (and extra, the call's idle horizon)
-- lapsed. Skipped entries ride along with the record.
local function lk_store(st, now, extra)
  redis.call('DEL', KEYS[1], KEYS[2])
  if lk_idle(st) and not live(st.x, now) then
    lk_index(st, '')
    return
  end
  local kv = {'f', fmt(st.fence), 'x', fmt(st.x)}
  local top, never = extra, false
  local function reach(x)
    if x == 0 then never = true elseif x > top then top = x end
  end
  for _, h in ipairs(st.holders) do
    kv[#kv + 1] = 'h' .. h.tok
    if h.entry then
      kv[#kv + 1] = pk({h.owner, h.acq, fmt(h.exp), h.entry.raw})
      reach(h.entry.exp)
    else
      kv[#kv + 1] = pk({h.owner, h.acq, fmt(h.exp)})
    end
    reach(h.exp)
  end
  if #st.skipped > 0 then
    kv[#kv + 1] = 's'
    kv[#kv + 1] = pk(lk_raws({}, st.skipped))
  end
  push_chunks('HSET', KEYS[1], kv)
  local raws = {}
  for _, e in ipairs(st.pending) do
    raws[#raws + 1] = e.raw
    reach(e.exp)
  end
  push_chunks('RPUSH', KEYS[2], raws)
  if lk_idle(st) and st.x == 0 then never = true end
  if st.x > top then top = st.x end
  if never or top == 0 then
    lk_index(st, '')
    return
  end
  redis.call('PEXPIREAT', KEYS[1], msat(top))
  if #raws > 0 then redis.call('PEXPIREAT', KEYS[2], msat(top)) end
  lk_index(st, msat(top))
end
`

// Acquire (driver.ApplyAcquire). ARGV: [1] now, [2] owner, [3] strategy,
// [4] packed entry, [5] entry expiresAt, [6] expiresAt, [7] maxHolders,
// [8] queueMax, [9] "1" dropNewest, [10] idleExpiresAt, [11] "1" NoEntry,
// [12] "1" when the entry is not empty, [13] "1" QueueWhenFull. Reply:
// {outcome, holder (5 fields, "" unless acquired), next entry or "",
// ndropped, dropped entries..., skipped entries...}.
var acquireScript = script(luaChunks, lockLib, `
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[10])
local strategy, noentry = ARGV[3], ARGV[11] == '1'
local maxh = tonumber(ARGV[7])
local st = lk_load(KEYS[1], KEYS[2])
lk_prune(st, now)
local queued = {raw = ARGV[4], enq = now, exp = tonumber(ARGV[5])}
local entry
if not noentry and ARGV[12] == '1' then entry = queued end
local rep
if #st.holders == 0 or (strategy == '4' and not noentry and (maxh == 0 or #st.holders < maxh)) then
  if st.fence + 1 > now then st.fence = st.fence + 1 else st.fence = now end
  local h = {tok = fmt(st.fence), token = st.fence, owner = ARGV[2], acq = ARGV[1], exp = tonumber(ARGV[6])}
  local mark, nxt, dropped = '', '', {}
  if #st.pending == 0 then
    if entry then h.entry, mark = entry, 'o' end
  elseif strategy == '3' and entry then
    dropped = st.pending
    lk_skip(st, st.pending)
    st.pending = {}
    h.entry, mark = entry, 'o'
  else
    local n = table.remove(st.pending, 1)
    if entry then st.pending[#st.pending + 1] = entry end
    h.entry, mark, nxt = n, 'n', n.raw
  end
  st.holders[#st.holders + 1] = h
  rep = lk_holder(h, mark)
  table.insert(rep, 1, 1)
  rep[#rep + 1] = nxt
  rep[#rep + 1] = #dropped
  lk_raws(rep, dropped)
  lk_raws(rep, lk_take(st))
else
  local oc, dropped = 4, {}
  if noentry then
    oc = 4
  elseif strategy == '2' or (strategy == '4' and ARGV[13] == '1') then
    local qmax = tonumber(ARGV[8])
    if qmax > 0 and #st.pending >= qmax and ARGV[9] == '1' then
      lk_skip(st, {queued})
    else
      if qmax > 0 and #st.pending >= qmax then
        local n = #st.pending - qmax + 1
        local keep = {}
        for i, e in ipairs(st.pending) do
          if i <= n then dropped[#dropped + 1] = e else keep[#keep + 1] = e end
        end
        st.pending = keep
        lk_skip(st, dropped)
      end
      st.pending[#st.pending + 1] = queued
      oc = 2
    end
  elseif strategy == '3' then
    oc, dropped = 3, st.pending
    lk_skip(st, st.pending)
    st.pending = {queued}
  end
  rep = {oc, '', '', '', '', '', '', #dropped}
  lk_raws(rep, dropped)
end
lk_settle(st, idle)
lk_store(st, now, idle)
return rep
`)

// ExtendLock (driver.ApplyExtend). ARGV: [1] now, [2] token, [3] expiresAt.
// Reply: {0} not the owner, or {1, holder}.
var extendScript = script(luaChunks, lockLib, `
local now = tonumber(ARGV[1])
local st = lk_load(KEYS[1], KEYS[2])
local i = lk_find(st, tonumber(ARGV[2]), now)
if not i then return {0} end
st.holders[i].exp = tonumber(ARGV[3])
local rep = lk_holder(st.holders[i])
lk_store(st, now, 0)
table.insert(rep, 1, 1)
return rep
`)

// ReleaseLock and ForceReleaseLock (driver.ApplyRelease,
// ApplyForceRelease). ARGV: [1] now, [2] token ("" for a forced release),
// [3] idleExpiresAt, [4] "1" keepPending. Reply: {0} not the owner, or
// {1, entries...}.
var releaseScript = script(luaChunks, lockLib, `
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[3])
local st = lk_load(KEYS[1], KEYS[2])
local out = {1}
if ARGV[2] == '' then
  lk_prune(st, now)
  lk_raws(out, st.pending)
  st.holders, st.pending = {}, {}
else
  local token = tonumber(ARGV[2])
  if not lk_find(st, token, now) then return {0} end
  lk_prune(st, now)
  local h = table.remove(st.holders, lk_find(st, token, now))
  if ARGV[4] == '1' and h.entry and live(h.entry.exp, now) then
    -- Abandoned: the holder leaves as if it lapsed, its entry in front.
    table.insert(st.pending, 1, h.entry)
  end
  if #st.holders == 0 and ARGV[4] ~= '1' then
    lk_raws(out, st.pending)
    st.pending = {}
  end
end
lk_settle(st, idle)
lk_store(st, now, idle)
return out
`)

// HandoverLock (driver.ApplyHandover). ARGV: [1] now, [2] token,
// [3] expiresAt, [4] idleExpiresAt, [5] "1" keep. Reply: {0} not the owner,
// {2} released, {1, next entry or "", holder, skipped entries...} still
// held.
var handoverScript = script(luaChunks, lockLib, `
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[4])
local token = tonumber(ARGV[2])
local st = lk_load(KEYS[1], KEYS[2])
if not lk_find(st, token, now) then return {0} end
lk_prune(st, now)
local i = lk_find(st, token, now)
local h = st.holders[i]
local nxt, mark = '', nil
if #st.pending > 0 then
  local n = table.remove(st.pending, 1)
  h.entry, nxt, mark = n, n.raw, 'n'
elseif ARGV[5] ~= '1' then
  table.remove(st.holders, i)
  lk_settle(st, idle)
  lk_store(st, now, idle)
  return {2}
end
h.exp = tonumber(ARGV[3])
local rep = lk_holder(h, mark)
table.insert(rep, 1, nxt)
table.insert(rep, 1, 1)
lk_raws(rep, lk_take(st))
lk_settle(st, idle)
lk_store(st, now, idle)
return rep
`)

// InspectLock. ARGV: [1] now. Reply: {0} no record, or {1, fence, x,
// nholders, npending, holders..., pending entries..., skipped entries...},
// pruned at now. Read only.
var inspectScript = script(luaChunks, lockLib, `
local now = tonumber(ARGV[1])
local st = lk_load(KEYS[1], KEYS[2])
if not st.exists then return {0} end
lk_prune(st, now)
if lk_idle(st) and not live(st.x, now) then return {0} end
return lk_state({1}, st)
`)

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
var lapsedScript = rueidis.NewLuaScript("#!lua flags=allow-cross-slot-keys\n" + luaCore + luaChunks + lockLib + luaBless + `
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local found = {}
for i = 6, #ARGV do
  local bucket = ARGV[4] .. ARGV[i] .. ARGV[5]
  -- Most buckets of a Cluster do not exist: EXISTS is the cheaper probe.
  local ms = {}
  if redis.call('EXISTS', bucket) == 1 then ms = redis.call('ZRANGE', bucket, '-inf', ARGV[1], 'BYSCORE') end
  for _, m in ipairs(ms) do
    local key = string.sub(m, 9)
    local base = ARGV[3] .. string.sub(m, 1, 8) .. '}'
    local st = lk_load(base .. 'm' .. key, base .. 'q' .. key)
    lk_prune(st, now)
    if #st.holders == 0 and #st.pending > 0 then
      found[#found + 1] = {key = key, st = st}
    elseif not lk_waits(st) then
      redis.call('ZREM', bucket, m)
    end
  end
end
table.sort(found, function(a, b) return bless(a.key, b.key) end)
local out = {}
for i = 1, math.min(limit, #found) do
  out[i] = pk(lk_state({found[i].key}, found[i].st))
end
return out
`)

// ARGV: [1] fence, [2] x, [3] nholders, [4] npending, (token, packed
// holder)..., pending entries..., skipped entries... Snapshot import: the
// record as given.
var importLockScript = script(luaChunks, lockLib, `
redis.call('DEL', KEYS[1], KEYS[2])
local st = {fence = tonumber(ARGV[1]), x = tonumber(ARGV[2]), holders = {}, pending = {}, skipped = {}}
local n, np = tonumber(ARGV[3]), tonumber(ARGV[4])
local i = 5
for _ = 1, n do
  local r = unpk(ARGV[i + 1])
  local h = {tok = ARGV[i], token = tonumber(ARGV[i]), owner = r[1], acq = r[2], exp = tonumber(r[3])}
  if r[4] then h.entry = lk_entry(r[4]) end
  st.holders[#st.holders + 1] = h
  i = i + 2
end
for _ = 1, np do
  st.pending[#st.pending + 1] = lk_entry(ARGV[i])
  i = i + 1
end
while i <= #ARGV do
  st.skipped[#st.skipped + 1] = {raw = ARGV[i]}
  i = i + 1
end
lk_store(st, 0, 0)
return {1}
`)

// ---- incidents --------------------------------------------------------------------
//
// One slot per namespace. KEYS: [1] issues hash (lp(channel)..uid ->
// pk{open, expiresAt, correlation, post, body}), [2] issue expiry zset,
// [3] open index (lp(channel)..uid), [4] correlation index of open issues
// (lp(channel)..lp(correlation)..uid), [5] post index
// (lp(channel)..lp(post)..uid). lp is a length prefix, so no channel,
// correlation or post id is ever a prefix of another's entry ("C1" vs "C12",
// "abc" vs "abcd"). Index zsets have score 0 and are read by lex range.

const incidentLib = `
local function is_remove(ch, uid)
  local f = lp(ch) .. uid
  local v = redis.call('HGET', KEYS[1], f)
  if not v then return end
  local r = unpk(v)
  redis.call('HDEL', KEYS[1], f)
  redis.call('ZREM', KEYS[2], f)
  redis.call('ZREM', KEYS[3], f)
  redis.call('ZREM', KEYS[4], lp(ch) .. lp(r[3]) .. uid)
  if r[4] ~= '' then redis.call('ZREM', KEYS[5], lp(ch) .. lp(r[4]) .. uid) end
end
local function is_put(a, i)
  local ch, uid, corr, post, open, exp, body = a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6]
  is_remove(ch, uid)
  local f = lp(ch) .. uid
  redis.call('HSET', KEYS[1], f, pk({open, exp, corr, post, body}))
  if exp ~= '0' then redis.call('ZADD', KEYS[2], exp, f) end
  if open == '1' then
    redis.call('ZADD', KEYS[3], 0, f)
    redis.call('ZADD', KEYS[4], 0, lp(ch) .. lp(corr) .. uid)
  end
  if post ~= '' then redis.call('ZADD', KEYS[5], 0, lp(ch) .. lp(post) .. uid) end
end
local function split_lp(f)
  local c = string.find(f, ':', 1, true)
  local l = tonumber(string.sub(f, 1, c - 1))
  return string.sub(f, c + 1, c + l), string.sub(f, c + l + 1)
end
local function is_gc(now)
  local dead = redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, 32)
  for _, f in ipairs(dead) do
    local ch, uid = split_lp(f)
    is_remove(ch, uid)
  end
end
-- is_find returns uid, record pairs of the index members under prefix p
-- (uid is what follows p) whose record passes keep.
local function is_find(idx, ch, p, keep)
  local ms = redis.call('ZRANGE', idx, '[' .. p, '(' .. succ(p), 'BYLEX')
  local out = {}
  for _, m in ipairs(ms) do
    local uid = string.sub(m, #p + 1)
    local v = redis.call('HGET', KEYS[1], lp(ch) .. uid)
    if v then
      local r = unpk(v)
      if keep(r) then
        out[#out + 1] = uid
        out[#out + 1] = v
      end
    end
  end
  return out
end
`

// ARGV: [1] unused, then 7 fields per issue: channel, uid, correlation,
// post, open, expiresAt, body. Lapsed closed issues are collected by the
// server's clock (the driver call carries no now).
var saveIssuesScript = script(luaLex, incidentLib, `
for i = 2, #ARGV, 7 do is_put(ARGV, i) end
is_gc(server_now())
return {1}
`)

// ARGV: [1] unused, [2] source channel, [3..9] the issue.
var moveIssueScript = script(luaLex, incidentLib, `
is_remove(ARGV[2], ARGV[4])
is_put(ARGV, 3)
is_gc(server_now())
return {1}
`)

// ARGV: [1] now, [2] "corr" | "post" | "open", [3] channel, [4] correlation
// or post id. Reply: uid, record pairs, uid order.
var findIssuesScript = script(luaLex, incidentLib, `
local now = tonumber(ARGV[1])
local ch = ARGV[3]
local mode = ARGV[2]
if mode == 'corr' then
  return is_find(KEYS[4], ch, lp(ch) .. lp(ARGV[4]), function(r)
    return r[1] == '1' and r[3] == ARGV[4] and live(tonumber(r[2]), now)
  end)
elseif mode == 'post' then
  return is_find(KEYS[5], ch, lp(ch) .. lp(ARGV[4]), function(r)
    return r[4] == ARGV[4] and live(tonumber(r[2]), now)
  end)
end
return is_find(KEYS[3], ch, lp(ch), function(r)
  return r[1] == '1' and live(tonumber(r[2]), now)
end)
`)

// ARGV: [1] now. Reply: the channels with a live open issue, once each.
var activeChannelsScript = script(luaLex, incidentLib, `
local now = tonumber(ARGV[1])
local out = {}
local min = '-'
while true do
  local ms = redis.call('ZRANGE', KEYS[3], min, '+', 'BYLEX', 'LIMIT', 0, 1)
  if #ms == 0 then break end
  local ch = split_lp(ms[1])
  local p = lp(ch)
  local off = 0
  local found = false
  while not found do
    local batch = redis.call('ZRANGE', KEYS[3], '[' .. p, '(' .. succ(p), 'BYLEX', 'LIMIT', off, 16)
    if #batch == 0 then break end
    for _, f in ipairs(batch) do
      local v = redis.call('HGET', KEYS[1], f)
      if v then
        local r = unpk(v)
        if r[1] == '1' and live(tonumber(r[2]), now) then found = true break end
      end
    end
    off = off + #batch
  end
  if found then out[#out + 1] = ch end
  min = '[' .. succ(p)
end
return out
`)

// KEYS: [1] alerts hash (lp(channel)..uid -> pk{expiresAt, timestamp,
// body}), [2] alert expiry zset. ARGV: [1] unused, [2] channel, [3] uid,
// [4] expiresAt, [5] timestamp, [6] body. Lapsed alerts are collected by the
// server's clock.
var saveAlertScript = script(luaLex, `
local f = lp(ARGV[2]) .. ARGV[3]
redis.call('HSET', KEYS[1], f, pk({ARGV[4], ARGV[5], ARGV[6]}))
redis.call('ZADD', KEYS[2], score(ARGV[4]), f)
local dead = redis.call('ZRANGE', KEYS[2], '-inf', server_now(), 'BYSCORE', 'LIMIT', 0, 32)
for _, m in ipairs(dead) do
  redis.call('HDEL', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
end
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #top > 0 then
  for i = 1, 2 do
    if top[2] == 'inf' then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIREAT', KEYS[i], msat(tonumber(top[2]))) end
  end
end
return {1}
`)

// scriptRef names a script in signatures.
type scriptRef = *rueidis.Lua
