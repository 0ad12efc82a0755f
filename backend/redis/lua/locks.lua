-- botstate's Lua for locks.
-- lua.go composes these fragments into scripts. A fragment runs from its
-- "--- fragment: NAME" line to the next one; {{NAME}} marks a Go value
-- filled in at load time.

--- fragment: lockLib

local MAX_SKIPPED = {{MAX_SKIPPED}}
local NEVER_MS = '{{NEVER_MS}}'

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


--- fragment: acquireScript

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


--- fragment: extendScript

local now = tonumber(ARGV[1])
local st = lk_load(KEYS[1], KEYS[2])
local i = lk_find(st, tonumber(ARGV[2]), now)
if not i then return {0} end
st.holders[i].exp = tonumber(ARGV[3])
local rep = lk_holder(st.holders[i])
lk_store(st, now, 0)
table.insert(rep, 1, 1)
return rep


--- fragment: releaseScript

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


--- fragment: handoverScript

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


--- fragment: inspectScript

local now = tonumber(ARGV[1])
local st = lk_load(KEYS[1], KEYS[2])
if not st.exists then return {0} end
lk_prune(st, now)
if lk_idle(st) and not live(st.x, now) then return {0} end
return lk_state({1}, st)


--- fragment: lapsedScript

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


--- fragment: importLockScript

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

