-- Extends the life of a channel's keys that expire, for channels that
-- subscribers on this node still use; keys kept for good stay so.
-- KEYS: meta, log. ARGV: 1 the TTL in ms.

local want = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local left = redis.call('PTTL', key)
  if left >= 0 and left < want then redis.call('PEXPIRE', key, want) end
end
return 0
