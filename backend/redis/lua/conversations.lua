-- botstate's Lua for conversations and thread/channel docs.
-- lua.go composes these fragments into scripts. A fragment runs from its
-- "--- fragment: NAME" line to the next one; {{NAME}} marks a Go value
-- filled in at load time.

--- fragment: objLib

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


--- fragment: convWriteScript

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


--- fragment: docWriteScript

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


--- fragment: replaceHashScript

redis.call('DEL', KEYS[1])
obj_put_data(KEYS[1], 2)
set_expiry(KEYS[1], tonumber(ARGV[1]))
return {1}

