-- botstate's Lua for cache values and lists.
-- lua.go composes these fragments into scripts. A fragment runs from its
-- "--- fragment: NAME" line to the next one; {{NAME}} marks a Go value
-- filled in at load time.

--- fragment: cacheSetNXScript

local now = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur then
  local r = unpk(cur)
  if live(tonumber(r[1]), now) then return {0} end
end
set_value(KEYS[1], ARGV[2], ARGV[3])
return {1}


--- fragment: listAppendScript

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


--- fragment: listRangeScript

local now = tonumber(ARGV[1])
local meta = redis.call('GET', KEYS[3])
if not meta or not live(tonumber(meta), now) then return {} end
local vs = redis.call('LRANGE', KEYS[2], 0, -1)
table.insert(vs, 1, meta)
return vs


--- fragment: importListScript

redis.call('DEL', KEYS[2])
local vs = {}
for i = 2, #ARGV do vs[#vs + 1] = ARGV[i] end
push_chunks('RPUSH', KEYS[2], vs)
set_value(KEYS[3], ARGV[1], ARGV[1])
set_expiry(KEYS[2], tonumber(ARGV[1]))
return {1}

