-- botstate's Lua for events: the event scripts and the listings.
-- lua.go composes these fragments into scripts. A fragment runs from its
-- "--- fragment: NAME" line to the next one; {{NAME}} marks a Go value
-- filled in at load time.

--- fragment: evSet

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


--- fragment: evBase.head

local B = string.sub(KEYS[2], 1, -2)
local P, R, N, F, O = B .. 'p', B .. 'r', B .. 'n', B .. 'f', B .. 'o'
local MAX_REASON = '{{MAX_ATTEMPTS_REASON}}'


--- fragment: evOwn
-- ev_store writes value v to key k with PXAT ms ("" for never).
local function ev_store(k, v, ms)
  if ms == '' then
    redis.call('SET', k, v)
  else
    redis.call('SET', k, v, 'PXAT', ms)
  end
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


--- fragment: evBase.tail
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


--- fragment: evLib

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


--- fragment: evTakeover

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


--- fragment: recordScript

local now = tonumber(ARGV[3])
if cur then
  local r = unpk(cur)
  if live(tonumber(r[5]), now) then return 0 end
  ev_replace(N, ARGV[4], ARGV[3], r[1])
end
ev_inserted(N, WANT_N, ARGV[4], ARGV[3], ARGV[7])
return 1


--- fragment: claimScript.head

local now = tonumber(ARGV[3])
local EXISTING, HOLDER, MAXATT = false, '', tonumber(ARGV[7])
if cur then
  local r = unpk(cur)
  if live(tonumber(r[5]), now) then


--- fragment: claimScript.tail

  end
  ev_replace(P, ARGV[4], ARGV[3], r[1])
end
ev_inserted(P, WANT_P, ARGV[4], ARGV[3], ARGV[8])
return 1


--- fragment: reclaimScript

local now = tonumber(ARGV[3])
local EXISTING, HOLDER, MAXATT = true, ARGV[6], tonumber(ARGV[7])
local cur = redis.call('GET', KEYS[1])
if not cur then return {0} end
local r = unpk(cur)
if not live(tonumber(r[5]), now) then return {0} end


--- fragment: completeScript

local r = ev_owned(KEYS[1], ARGV[3], tonumber(ARGV[1]))
if not r then return 0 end
r[1], r[4], r[5], r[6], r[8] = '4', '0', ARGV[5], '', ARGV[4]
if r[10] then r[10] = '0' end
ev_store(KEYS[1], pk(r), ARGV[6])
redis.call('ZREM', P, ARGV[2])
ev_counted(ARGV[2], ARGV[7])
return 1


--- fragment: extendEventScript

local r = ev_owned(KEYS[1], ARGV[3], tonumber(ARGV[1]))
if not r then return 0 end
r[4], r[5] = ARGV[4], ARGV[5]
ev_store(KEYS[1], pk(r), ARGV[6])
ev_keep(P, ARGV[7])
ev_counted(ARGV[2], ARGV[7])
return 1


--- fragment: releaseEventScript

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


--- fragment: retryEventScript

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


--- fragment: forgetScript

ev_drop(ARGV[1])
return 1


--- fragment: evWalk

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


--- fragment: listScript.head

local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local later = {}
-- lapsed keeps the claims whose lease ended (driver.EventDue).
local function lapsed(r) return tonumber(r[4]) <= now end


--- fragment: listScript.tail

ev_apply(later)
return out


--- fragment: pendingScript

local out = ev_merge({walker(P, WANT_P, now, later), walker(R, WANT_R, now, later),
  walker(N, WANT_N, now, later)}, limit)


--- fragment: expiredScript

local out = ev_merge({walker(P, WANT_P, now, later, lapsed)}, limit)


--- fragment: dueScript

local out = ev_merge({walker(P, WANT_P, now, later, lapsed), walker(R, WANT_R, now, later, function(r)
  return r[1] == '3' and (not r[10] or tonumber(r[10]) <= now)
end)}, limit)


--- fragment: failedScript

local out = ev_merge({walker(F, WANT_F, now, later)}, limit)


--- fragment: importEventScript

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

