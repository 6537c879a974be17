-- Reads a page of a channel's state, giving it an epoch if it has none.
--
-- KEYS: meta, log. ARGV: 1 a new epoch (used if the channel has none),
-- 2 the epoch the caller knows ('' for none), 3 the offset it has, 4 the
-- most entries the history holds (0: return none), 5 the most entries in
-- this page, 6 the most payload bytes in this page (at least one entry is
-- returned), 7 the TTL in ms of a channel created here (and the least its
-- expiring keys are left with: a channel being read is in use).
--
-- Returns {epoch, last, entries, at}: entries from just after the caller's
-- offset when it knows this epoch and is at most a history behind, else
-- from the oldest one a history holds (the caller gets a gap), oldest
-- first, as `XRANGE` gives them, at most one page; and the entry at the
-- caller's own offset, if Redis still has it, for the caller to check that
-- it is the message it has (Redis may have lost it and assigned the offset
-- again).

local epoch = redis.call('HGET', KEYS[1], 'epoch')
local want = tonumber(ARGV[7])
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', 0)
  redis.call('DEL', KEYS[2])
  if want > 0 then redis.call('PEXPIRE', KEYS[1], want) end
end
for _, key in ipairs(KEYS) do
  local left = redis.call('PTTL', key)
  if left >= 0 and left < want then redis.call('PEXPIRE', key, want) end
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
local max = tonumber(ARGV[4])
local after = tonumber(ARGV[3])
local start = last + 1
if epoch == ARGV[2] and after >= last then
  start = last + 1
elseif epoch == ARGV[2] and last - after <= max then
  start = after + 1
else
  start = math.max(last - max, 0) + 1
end
local entries = {}
if max > 0 and start <= last then
  local bytes = 0
  local limit = tonumber(ARGV[6])
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], string.format('%d-0', start), '+',
      'COUNT', tonumber(ARGV[5]))) do
    entries[#entries + 1] = entry
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'd' then bytes = bytes + #entry[2][i + 1] end
    end
    if bytes >= limit then break end
  end
end
local at = {}
if epoch == ARGV[2] and after > 0 and after <= last then
  local id = string.format('%d-0', after)
  at = redis.call('XRANGE', KEYS[2], id, id)
end
return {epoch, last, entries, at}
