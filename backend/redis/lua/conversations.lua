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
-- json_name_size is the length of member name s as a JSON string written
-- by Go (driver.MemberSize): the quotes, two bytes for each of " \ \b \f
-- \n \r \t, six (\u00XX) for any other control character, six (\u2028)
-- for U+2028 and U+2029, and every other byte as itself. Names come from
-- Go's JSON decoder, which leaves no invalid UTF-8 in them.
local function json_name_size(s)
  local _, short = string.gsub(s, '[\8\9\10\12\13"\\]', '')
  local _, ctl = string.gsub(s, '[%z\1-\7\11\14-\31]', '')
  local _, sep = string.gsub(s, '\226\128[\168\169]', '')
  return #s + 2 + short + 5 * ctl + 3 * sep
end
-- obj_merged_size is driver.DataSize of k's data once the "."-field, raw
-- JSON pairs ARGV[from..] are set in it: the members set and the members
-- that stay, each counted as driver.MemberSize counts it from its name and
-- its raw value (canonical JSON, as Go wrote it), then driver.ObjectSize.
-- Exact: it is the length of the object Go assembles on the way out.
local function obj_merged_size(k, from)
  local set = {}
  local n, sum = 0, 0
  for i = from, #ARGV, 2 do
    set[ARGV[i]] = true
    n = n + 1
    sum = sum + json_name_size(string.sub(ARGV[i], 2)) + #ARGV[i + 1] + 2
  end
  local fv = redis.call('HGETALL', k)
  for i = 1, #fv, 2 do
    local f = fv[i]
    if string.sub(f, 1, 1) == '.' and not set[f] then
      n = n + 1
      sum = sum + json_name_size(string.sub(f, 2)) + #fv[i + 1] + 2
    end
  end
  if n == 0 then return 2 end
  return sum + 1
end
-- obj_over_limit reports whether merging ARGV[from..] into k would leave
-- data over limit bytes (0: no limit), and the size it would be.
local function obj_over_limit(k, from, limit)
  if limit == 0 then return false, 0 end
  local size = obj_merged_size(k, from)
  return size > limit, size
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
  local over, size = obj_over_limit(k, 7, tonumber(ARGV[4]))
  if over then return {2, size} end
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
if ARGV[3] == 'merge' then
  local over, size = obj_over_limit(k, 5, tonumber(ARGV[4]))
  if over then return {2, size} end
end
if ARGV[3] == 'put' and exists then redis.call('DEL', k) end
obj_put_data(k, 5)
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

