-- botstate's Lua for subscriptions.
-- lua.go composes these fragments into scripts. A fragment runs from its
-- "--- fragment: NAME" line to the next one; {{NAME}} marks a Go value
-- filled in at load time.

--- fragment: subLib

local function sub_drop(m)
  redis.call('HDEL', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZREM', KEYS[3], m)
end


--- fragment: subscribeScript

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


--- fragment: unsubscribeScript

sub_drop(ARGV[1])
return {1}


--- fragment: listSubsScript

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

