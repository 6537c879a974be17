-- Moves a channel to a new epoch if it still has `ARGV[1]`: its offsets went
-- back (a restored snapshot, a promoted replica that lagged), so the old ones
-- must never be served again, and neither must the history kept under them
-- (clients may have it already): the new epoch starts with none, its offsets
-- continuing from the channel's last one. Announced, so that every node
-- learns at once rather than at the next publish.
--
-- With `ARGV[1]` empty, whatever epoch the channel has (`Engine::clear`: the
-- app deletes its history): the same move, so that readers from before get
-- a gap, and idempotency keys remembered for the old epoch answer no publish
-- (the publish script honours one only in the epoch it names). A channel
-- with no keys (the void) has no history to clear: nothing happens.
--
-- KEYS: meta, log. ARGV: 1 the old epoch ('' for any), 2 the new one, 3 the
-- pub/sub channel, 4 the command that announces (`PUBLISH`, or `SPUBLISH`
-- on a Redis Cluster). Returns the epoch the channel has now (nil in the void).

local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch and (epoch == ARGV[1] or ARGV[1] == '') then
  -- Where the offsets go on from: the log's last ID (`0-<offset>`), or
  -- `last` if the log is gone already.
  local last = redis.call('HGET', KEYS[1], 'last') or '0'
  local info = redis.pcall('XINFO', 'STREAM', KEYS[2])
  if not info.err then
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        last = string.match(info[i + 1], '^0%-(%d+)$') or last
        break
      end
    end
  end
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'last', last)
  -- Not the channel's first: readers of the void get a gap. The log goes:
  -- the next publish makes it again, and must set its TTL (`x`: when the
  -- publish script last did).
  redis.call('HDEL', KEYS[1], 'born', 'x')
  redis.call('DEL', KEYS[2])
  redis.call(ARGV[4], ARGV[3], 'n1\n' .. ARGV[2])
  return ARGV[2]
end
return epoch
