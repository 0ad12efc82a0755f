-- botstate's Lua for incidents.
-- lua.go composes these fragments into scripts. A fragment runs from its
-- "--- fragment: NAME" line to the next one; {{NAME}} marks a Go value
-- filled in at load time.

--- fragment: incidentLib

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


--- fragment: saveIssuesScript

for i = 2, #ARGV, 7 do is_put(ARGV, i) end
is_gc(server_now())
return {1}


--- fragment: moveIssueScript

is_remove(ARGV[2], ARGV[4])
is_put(ARGV, 3)
is_gc(server_now())
return {1}


--- fragment: findIssuesScript

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


--- fragment: activeChannelsScript

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


--- fragment: saveAlertScript

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

