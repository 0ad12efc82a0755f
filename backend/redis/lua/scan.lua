-- botstate's Lua for index-free events (the events=scan option): each
-- script touches the one key of one event, so a namespace's events spread
-- over every slot of a Cluster. lua.go composes these fragments into
-- scripts.

--- fragment: scSwap
-- Compare and set: ARGV [1] the value expected ("" for none), [2] the value
-- to store, [3] its PXAT in ms ("" for never). Reply {1} done, or
-- {0, value} / {0} with what is there instead.

local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then
  if cur then return {0, cur} end
  return {0}
end
ev_store(KEYS[1], ARGV[2], ARGV[3])
return {1}


--- fragment: scComplete
-- ARGV [1] now, [2] token, [3] result, [4] expiresAt, [5] its PXAT in ms.
-- Reply 1 done, 0 not the owner.

local r = ev_owned(KEYS[1], ARGV[2], tonumber(ARGV[1]))
if not r then return 0 end
r[1], r[4], r[5], r[6], r[8] = '4', '0', ARGV[4], '', ARGV[3]
if r[10] then r[10] = '0' end
ev_store(KEYS[1], pk(r), ARGV[5])
return 1


--- fragment: scExtend
-- ARGV [1] now, [2] token, [3] leaseUntil, [4] expiresAt, [5] its PXAT in
-- ms. Reply 1 done, 0 not the owner.

local r = ev_owned(KEYS[1], ARGV[2], tonumber(ARGV[1]))
if not r then return 0 end
r[4], r[5] = ARGV[3], ARGV[4]
ev_store(KEYS[1], pk(r), ARGV[5])
return 1


--- fragment: scOrder
-- The order of a namespace's events under an event limit: KEYS[1] the
-- zset; ARGV [1] the new event's createdAt, [2] its key, [3] the limit,
-- [4] the zset's expiry in ms. Reply the entries beyond the limit, oldest
-- first, taken out (member, score, ...).

redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PEXPIRETIME', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIREAT', KEYS[1], ARGV[4]) end
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over <= 0 then return {} end
return redis.call('ZPOPMIN', KEYS[1], over)


--- fragment: scEvict
-- Deletes the event in KEYS[1] if it is the one created at ARGV[1] (not a
-- later event under the same key).

local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if tonumber(unpk(cur)[3]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
