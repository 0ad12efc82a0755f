-- botstate's Lua for shared by every script: packing records, expiry, chunked commands, key order.
-- lua.go composes these fragments into scripts. A fragment runs from its
-- "--- fragment: NAME" line to the next one; {{NAME}} marks a Go value
-- filled in at load time.

--- fragment: luaPack

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


--- fragment: luaLive

local function live(x, now)
  return x == 0 or x > now
end


--- fragment: luaCore

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


--- fragment: luaChunks

local function push_chunks(cmd, key, list)
  local i = 1
  while i <= #list do
    local j = math.min(i + 999, #list)
    redis.call(cmd, key, unpack(list, i, j))
    i = j + 1
  end
end


--- fragment: luaBless

local function bless(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end


--- fragment: luaLex

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

