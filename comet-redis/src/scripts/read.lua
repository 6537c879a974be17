-- Reads a page of a channel's state. Creates nothing: a channel Redis has
-- no keys for (never published to, or expired) is in epoch 0, the void,
-- and costs Redis nothing however many readers ask for it.
--
-- KEYS: meta, log. ARGV: 1 the epoch the caller knows ('' for none), 2 the
-- offset it has, 3 the most entries the history holds (0: return none), 4
-- the most entries in this page, 5 the most payload bytes in this page (at
-- least one entry is returned), 6 the least TTL in ms the channel's expiring
-- keys are left with (a channel being read is in use).
--
-- Returns {epoch, last, entries, at, born, now, identity}: entries from just after
-- the caller's offset when it knows this epoch and is at most a history
-- behind, else from the oldest one a history holds (the caller gets a gap),
-- oldest first, as `XRANGE` gives them, at most one page; the entry at the
-- caller's own offset, if Redis still has it, for the caller to check that
-- it is the message it has (Redis may have lost it and assigned the offset
-- again); when the epoch began, if it was the channel's first (ms, else
-- 0); Redis's clock (ms); and, for a caller that asks for no history (the
-- head alone), the identity of the newest entry ('0' if unknown).

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.pcall('HGET', KEYS[1], 'epoch')
if type(epoch) == 'table' and epoch.err then
  -- The meta key holds something else (written by another program): no
  -- state of comet's, as if none (the next publish starts the channel over).
  if not string.find(epoch.err, 'WRONGTYPE', 1, true) then
    return redis.error_reply(epoch.err)
  end
  epoch = false
end
if not epoch then
  return {'0', 0, {}, {}, 0, now, '0'}
end
local want = tonumber(ARGV[6])
for _, key in ipairs(KEYS) do
  local left = redis.call('PTTL', key)
  if left >= 0 and left < want then redis.call('PEXPIRE', key, want) end
end
local kept = redis.call('HMGET', KEYS[1], 'born', 'last')
local born = tonumber(kept[1] or '0')
-- The newest offset: the log's last ID (`0-<offset>`; it outlives trimmed
-- entries), or where the log will start again (`last`) when it is gone.
local last = tonumber(kept[2] or '0')
local info = redis.pcall('XINFO', 'STREAM', KEYS[2])
if info.err then
  -- A log of another type fails the read, as an XRANGE of it would.
  if not string.find(info.err, 'no such key', 1, true) then
    return redis.error_reply(info.err)
  end
else
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last = tonumber(string.match(info[i + 1], '^0%-(%d+)$') or '0')
      break
    end
  end
end
local max = tonumber(ARGV[3])
local after = tonumber(ARGV[2])
local start = last + 1
if epoch == ARGV[1] and after >= last then
  start = last + 1
elseif epoch == ARGV[1] and last - after <= max then
  start = after + 1
else
  start = math.max(last - max, 0) + 1
end
local entries = {}
if max > 0 and start <= last then
  local bytes = 0
  local limit = tonumber(ARGV[5])
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], string.format('0-%d', start), '+',
      'COUNT', tonumber(ARGV[4]))) do
    entries[#entries + 1] = entry
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'd' then bytes = bytes + #entry[2][i + 1] end
    end
    if bytes >= limit then break end
  end
end
local at = {}
if epoch == ARGV[1] and after > 0 and after <= last then
  local id = string.format('0-%d', after)
  at = redis.call('XRANGE', KEYS[2], id, id)
end
local identity = '0'
if max == 0 and last > 0 then
  local id = string.format('0-%d', last)
  local newest = redis.call('XRANGE', KEYS[2], id, id)
  if #newest > 0 then
    for i = 1, #newest[1][2], 2 do
      if newest[1][2][i] == 'h' then
        identity = string.match(newest[1][2][i + 1], '^%d+\n(%d+)\n') or '0'
      end
    end
  end
end
return {epoch, last, entries, at, born, now, identity}
