-- Publishes one message: one round trip, atomic, so offsets are assigned in
-- one place and history, epoch and announcement never disagree.
--
-- KEYS: meta, log, and the idempotency key's own key when the publish has
-- one. ARGV: 1 a new epoch (used if the channel has none), 2 kind, 3 event,
-- 4 data, 5 max messages, 6 max age in ms (0: none), 7 key TTL in ms (0:
-- keep), 8 pub/sub channel, 9 the message's identity (random, per publish),
-- 10 how long the idempotency key is remembered in ms, 11 '1' when this is
-- the node's own retry of a publish whose first attempt may have landed.
--
-- Returns {epoch, offset, time_ms, repeated, identity}: repeated is 1 when
-- nothing was stored because the publish had already landed, and identity is
-- then the stored message's ('0' if unknown).
--
-- Under maxmemory, the first write that grows memory fails and aborts the
-- script before anything is written (on Redis 7 the node sends it with a
-- `#!lua` line, and Redis refuses it before it starts): a publish Redis
-- refuses changes nothing. Only proof that the log cannot be continued
-- (another type, or entries ahead of the offsets, which only something else
-- writing there makes) starts a new epoch.

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

local meta = redis.pcall('HMGET', KEYS[1], 'epoch', 'last', 'x', 'a')
local epoch, last, refreshed, aged = false, nil, nil, nil
if type(meta) == 'table' and meta.err then epoch = meta
elseif meta then epoch, last, refreshed, aged = meta[1], meta[2], meta[3], meta[4] end
if type(epoch) == 'table' and epoch.err then
  -- The meta key holds something else (written by another program): proof
  -- that the channel's state is unusable, so it starts over in a new epoch.
  if not string.find(epoch.err, 'WRONGTYPE', 1, true) then
    return redis.error_reply(epoch.err)
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  epoch = false
end
if epoch and KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local e, o, t, i = string.match(seen, '^(%d+) (%d+) (%d+) ?(%d*)$')
    if i == nil or i == '' then i = '0' end
    if e == epoch then return {epoch, tonumber(o), tonumber(t), 1, i} end
  end
end
if epoch and ARGV[11] == '1' then
  -- The node lost the answer to its first attempt: if it landed, it is
  -- among the newest entries, under this identity.
  local newest = redis.pcall('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 64)
  if type(newest) == 'table' and not newest.err then
    for _, entry in ipairs(newest) do
      if field(entry[2], 'i') == ARGV[9] then
        local offset = tonumber(string.match(entry[1], '^(%d+)-'))
        return {epoch, offset, tonumber(field(entry[2], 't') or '0'), 1, ARGV[9]}
      end
    end
  end
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if not epoch then
  -- The channel's first epoch since the void: `born` lets readers who saw
  -- the void shortly before continue into it without a gap.
  epoch = ARGV[1]
  -- HSET first: under maxmemory it is the write that fails, before the DEL.
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', 0, 'born', now)
  redis.call('DEL', KEYS[2])
  last, refreshed = '0', nil
end
local offset = tonumber(last or '0') + 1
local id = string.format('%d-0', offset)
-- Exact trimming rewrites the stream's first node on every publish; above
-- a node's worth of entries, trim whole nodes (`~`) instead: Redis keeps up
-- to one node more, and readers still get exactly the bound (the read
-- script and every mirror cap it).
local max = tonumber(ARGV[5])
local trim = '='
if max > 100 then trim = '~' end
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', trim, max, id,
  'k', ARGV[2], 'e', ARGV[3], 'd', ARGV[4], 't', now, 'i', ARGV[9])
if type(added) == 'table' and added.err then
  local unusable = string.find(added.err, 'WRONGTYPE', 1, true)
    or string.find(added.err, 'equal or smaller', 1, true)
  if not unusable then
    -- Out of memory, or any other refusal: nothing was written.
    return redis.error_reply(added.err)
  end
  redis.call('DEL', KEYS[2])
  epoch = ARGV[1]
  offset = 1
  id = '1-0'
  refreshed = nil -- the new log key needs its TTL now
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('HDEL', KEYS[1], 'born')
  redis.call('XADD', KEYS[2], 'MAXLEN', trim, max, id,
    'k', ARGV[2], 'e', ARGV[3], 'd', ARGV[4], 't', now, 'i', ARGV[9])
end
-- Amortized, as neither need run at every publish: the keys' TTL is
-- refreshed when less than the TTL is left of it (to 5/4 of it, so that
-- they still outlive their last publish by the whole TTL; and always at an
-- epoch's first publish, which `shortest_life` counts from, and after
-- new_epoch.lua dropped the log), and expired entries are dropped when an
-- eighth of the maximum age has gone by since the last time (readers never
-- see them anyway, every mirror drops them by age, and the count bounds
-- them).
-- Measured on the chat demo (`bench/publish_cost.sh`): 26 to 30 µs of
-- Redis CPU a publish with the TTL refreshed at every publish and the age
-- trim at every 32nd, 16 µs so.
-- `x` is when the keys expire as last refreshed: a TTL that grew since (a
-- node restarted with a longer one) refreshes at once, not a quarter of
-- the old one later. Neither field is trusted to be a number.
local ttl = tonumber(ARGV[7])
local expires = tonumber(refreshed)
local refresh = ttl == 0 or not expires or expires - now < ttl
local max_age = tonumber(ARGV[6])
local trimmed = tonumber(aged)
local age_trim = max_age > 0 and (not trimmed or now - trimmed >= max_age / 8)
local expiry = ttl + math.floor(ttl / 4)
if refresh and age_trim then
  redis.call('HSET', KEYS[1], 'last', offset, 'x', now + expiry, 'a', now)
elseif refresh then
  redis.call('HSET', KEYS[1], 'last', offset, 'x', now + expiry)
elseif age_trim then
  redis.call('HSET', KEYS[1], 'last', offset, 'a', now)
else
  redis.call('HSET', KEYS[1], 'last', offset)
end
-- Entries are in time order: the first one still young bounds the trim.
if age_trim then
  local cutoff = now - max_age
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 128)
  local keep = nil
  for _, entry in ipairs(oldest) do
    if tonumber(field(entry[2], 't') or '0') > cutoff then
      keep = entry[1]
      break
    end
  end
  if not keep and #oldest > 0 then
    keep = string.format('%d-0', tonumber(string.match(oldest[#oldest][1], '^(%d+)-')) + 1)
  end
  -- Best effort (XTRIM MINID needs Redis 6.2): the message is stored and
  -- must still be announced; mirrors drop expired entries themselves.
  if keep then redis.pcall('XTRIM', KEYS[2], 'MINID', keep) end
end
if refresh then
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], expiry)
    redis.call('PEXPIRE', KEYS[2], expiry)
  else
    redis.call('PERSIST', KEYS[1])
  end
end
if KEYS[3] then
  redis.call('SET', KEYS[3], epoch .. ' ' .. string.format('%d', offset) .. ' ' ..
    string.format('%d', now) .. ' ' .. ARGV[9], 'PX', ARGV[10])
end
redis.call('PUBLISH', ARGV[8], 'c2\n' .. epoch .. '\n' .. string.format('%d', offset) ..
  '\n' .. string.format('%d', now) .. '\n' .. ARGV[9] .. '\n' .. ARGV[2] .. '\n' ..
  ARGV[3] .. '\n' .. ARGV[4])
return {epoch, offset, now, 0, ARGV[9]}
