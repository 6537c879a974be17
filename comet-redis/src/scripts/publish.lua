-- Publishes one message: one round trip, atomic, so offsets are assigned in
-- one place and history, epoch and announcement never disagree.
--
-- KEYS: meta, log, and the idempotency key's own key when the publish has
-- one. ARGV: 1 a new epoch (used if the channel has none), 2 the message's
-- header, `<time ms>\n<identity>\n<kind>\n<event>` (made by the node: its
-- clock, the identity it drew for this publish, `j` or `t`, the event or
-- nothing), 3 data, 4 max messages, 5 max age in ms (0: none), 6 key TTL in
-- ms (0: keep), 7 pub/sub channel, 8 the identity alone, 9 how long the
-- idempotency key is remembered in ms, 10 '1' when this is the node's own
-- retry of a publish whose first attempt may have landed, 11 the time
-- alone, 12 '1' when the server numbers stream entries itself (`XADD
-- <ms>-*`, Redis 7), 13 the command that announces (`PUBLISH`, or
-- `SPUBLISH` on a Redis Cluster).
--
-- An entry holds the header (`h`) and the data (`d`): two fields, as few
-- arguments as a message needs, which Redis's Lua bridge copies one by
-- one. The announcement is `c2\n<epoch>\n<offset>\n` then the header and
-- the data on lines of their own (see wire.rs).
--
-- Returns {epoch, offset, time_ms, repeated, identity}: repeated is 1 when
-- nothing was stored because the publish had already landed, and identity is
-- then the stored message's ('0' if unknown).
--
-- The log's entry IDs are `0-<offset>`, so that on Redis 7 the stream
-- numbers each entry itself (`XADD 0-*`): the usual publish reads the meta
-- hash, appends and announces, and writes nothing else. The meta hash keeps
-- `last` only where the log is gone on purpose (a new epoch, whose offsets
-- go on from the old one's) and, on Redis 6, which cannot number entries,
-- always. A log that is gone otherwise (evicted, or expired apart from its
-- meta) cannot say where its offsets were: the channel starts a new epoch.
--
-- A message's time is the publishing node's clock: it bounds history by
-- age, nothing else, so clocks apart by a few milliseconds move a trim by
-- as much. Only an epoch's birth, which readers of the void compare with
-- Redis's own clock, is Redis's `TIME`.
--
-- Under maxmemory, the first write that grows memory fails and aborts the
-- script before anything is written (on Redis 7 the node sends it with a
-- `#!lua` line, and Redis refuses it before it starts): a publish Redis
-- refuses changes nothing. Only proof that the log cannot be continued
-- (another type, or entries that are not comet's) starts a new epoch.

local meta = redis.pcall('HMGET', KEYS[1], 'epoch', 'last', 'x', 'a')
local epoch, last, refreshed, aged = false, nil, nil, nil
if meta.err then epoch = meta
else epoch, last, refreshed, aged = meta[1], meta[2], meta[3], meta[4] end
local now = ARGV[11]
local max = tonumber(ARGV[4])
-- Exact trimming rewrites the stream's first node on every publish; above
-- a node's worth of entries, trim whole nodes (`~`) instead: Redis keeps up
-- to one node more, and readers still get exactly the bound (the read
-- script and every mirror cap it).
local trim = '='
if max > 100 then trim = '~' end
-- The offset, as text.
local offset = nil
if type(epoch) == 'string' and not last and ARGV[12] == '1' and not KEYS[3]
    and ARGV[10] ~= '1' then
  -- The usual publish, first and with nothing else made (each closure
  -- below costs every call that makes it): Redis numbers the entry. No
  -- log, or a refusal, wrote nothing, and the general path below decides.
  -- (ARGV[4], not `max`: a number would be formatted again for Redis.)
  local id = redis.pcall('XADD', KEYS[2], 'NOMKSTREAM', 'MAXLEN', trim, ARGV[4], '0-*',
    'h', ARGV[2], 'd', ARGV[3])
  if type(id) == 'string' then offset = string.sub(id, 3) end
end
if not offset then
  local function field(fields, name)
    for i = 1, #fields, 2 do
      if fields[i] == name then return fields[i + 1] end
    end
    return nil
  end
  if type(epoch) == 'table' and epoch.err then
    -- The meta key holds something else (written by another program):
    -- proof that the channel's state is unusable, so it starts over in a
    -- new epoch.
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
  if epoch and ARGV[10] == '1' then
    -- The node lost the answer to its first attempt: if it landed, it is
    -- among the newest entries, under this identity.
    local newest = redis.pcall('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 64)
    if not newest.err then
      for _, entry in ipairs(newest) do
        local time, identity = string.match(field(entry[2], 'h') or '', '^(%d+)\n(%d+)\n')
        if identity == ARGV[8] then
          local found = tonumber(string.match(entry[1], '^0%-(%d+)$'))
          return {epoch, found, tonumber(time), 1, ARGV[8]}
        end
      end
    end
  end
  local auto = ARGV[12] == '1'
  local function append(id, nomk)
    if nomk then
      return redis.pcall('XADD', KEYS[2], 'NOMKSTREAM', 'MAXLEN', trim, ARGV[4], id,
        'h', ARGV[2], 'd', ARGV[3])
    end
    return redis.pcall('XADD', KEYS[2], 'MAXLEN', trim, ARGV[4], id,
      'h', ARGV[2], 'd', ARGV[3])
  end
  -- After an entry appended under an ID of ours: where the next publish
  -- goes on from. Redis 7 numbers the next one itself; Redis 6 reads
  -- `last`.
  local function numbered(number)
    if auto then
      if last then redis.call('HDEL', KEYS[1], 'last') end
      refreshed = nil -- the log may be new: it needs its TTL now
    else
      redis.call('HSET', KEYS[1], 'last', number)
    end
    return string.format('%d', number)
  end
  local function refused(reply)
    return type(reply) == 'table' and reply.err
  end
  local function unusable(reply)
    return string.find(reply.err, 'WRONGTYPE', 1, true)
      or string.find(reply.err, 'equal or smaller', 1, true)
  end
  -- Starts the channel over in `ARGV[1]` at offset 1, with no history (its
  -- log held something that is not comet's, or is gone).
  local function renew()
    redis.call('DEL', KEYS[2])
    epoch = ARGV[1]
    redis.call('HSET', KEYS[1], 'epoch', epoch)
    redis.call('HDEL', KEYS[1], 'born')
    refreshed = nil
    local id = append('0-1', false)
    if refused(id) then return id end
    return numbered(1)
  end
  if not epoch then
    -- The channel's first epoch since the void: `born` lets readers who
    -- saw the void shortly before continue into it without a gap.
    local time = redis.call('TIME')
    local born = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    epoch = ARGV[1]
    -- HSET first: under maxmemory it is the write that fails, before the
    -- DEL.
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'born', born)
    redis.call('DEL', KEYS[2])
    refreshed = nil
    local id = append('0-1', false)
    if refused(id) then return id end
    offset = numbered(1)
  elseif auto and not last then
    local id = append('0-*', true)
    if not id then
      -- No log: gone without a new epoch to say so.
      offset = renew()
    elseif refused(id) then
      -- Out of memory, or any other refusal, wrote nothing.
      if not unusable(id) then return id end
      offset = renew()
    else
      offset = string.sub(id, 3)
    end
  else
    -- Where the log starts again after `last` (a new epoch's first
    -- publish), or on Redis 6 always; there, after Redis 7 (which keeps no
    -- `last`), on from the log's last ID.
    local lost = false
    if not last and not auto then
      local info = redis.pcall('XINFO', 'STREAM', KEYS[2])
      if info.err then
        -- No log and no `last` to go on from (a log Redis 7 kept, lost
        -- since): where its offsets were is unknown.
        lost = true
      else
        for i = 1, #info, 2 do
          if info[i] == 'last-generated-id' then
            last = string.match(info[i + 1], '^0%-(%d+)$')
            break
          end
        end
      end
    end
    local number = tonumber(last or '0') + 1
    if lost then
      offset = renew()
    else
    local id = append(string.format('0-%d', number), false)
    if refused(id) then
      if not unusable(id) then return id end
      offset = renew()
    else
      offset = numbered(number)
    end
    end
  end
  if refused(offset) then return offset end
end
-- Amortized, as neither need run at every publish: the keys' TTL is
-- refreshed when less than the TTL is left of it (to 5/4 of it, so that
-- they still outlive their last publish by the whole TTL; and always when
-- the log was made again, at an epoch's first publish, which
-- `shortest_life` counts from), and expired entries are dropped when an
-- eighth of the maximum age has gone by since the last time (readers never
-- see them anyway, every mirror drops them by age, and the count bounds
-- them). Measured with `bench/publish_cost.sh`.
-- `x` is when the keys expire as last refreshed: a TTL that grew since (a
-- node restarted with a longer one) refreshes at once, not a quarter of
-- the old one later. Neither field is trusted to be a number.
local clock = tonumber(now)
local ttl = tonumber(ARGV[6])
local expires = tonumber(refreshed)
local refresh = ttl == 0 or not expires or expires - clock < ttl
local max_age = tonumber(ARGV[5])
local trimmed = tonumber(aged)
local age_trim = max_age > 0 and (not trimmed or clock - trimmed >= max_age / 8)
if refresh or age_trim then
  local expiry = ttl + math.floor(ttl / 4)
  if refresh and age_trim then
    redis.call('HSET', KEYS[1], 'x', clock + expiry, 'a', now)
  elseif refresh then
    redis.call('HSET', KEYS[1], 'x', clock + expiry)
  else
    redis.call('HSET', KEYS[1], 'a', now)
  end
  -- Entries are in time order (to within the nodes' clocks): the first
  -- one still young bounds the trim.
  if age_trim then
    local cutoff = clock - max_age
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 128)
    local keep = nil
    for _, entry in ipairs(oldest) do
      local fields = entry[2]
      local published = nil
      for i = 1, #fields, 2 do
        if fields[i] == 'h' then published = tonumber(string.match(fields[i + 1], '^(%d+)\n')) end
      end
      if (published or 0) > cutoff then
        keep = entry[1]
        break
      end
    end
    if not keep and #oldest > 0 then
      local newest = tonumber(string.match(oldest[#oldest][1], '^0%-(%d+)$'))
      keep = string.format('0-%d', newest + 1)
    end
    -- Best effort (XTRIM MINID needs Redis 6.2): the message is stored
    -- and must still be announced; mirrors drop expired entries
    -- themselves.
    if keep then redis.pcall('XTRIM', KEYS[2], 'MINID', keep) end
  end
  if refresh then
    if ttl > 0 then
      redis.call('PEXPIRE', KEYS[1], expiry)
      redis.call('PEXPIRE', KEYS[2], expiry)
    else
      redis.call('PERSIST', KEYS[1])
      redis.call('PERSIST', KEYS[2])
    end
  end
end
if KEYS[3] then
  redis.call('SET', KEYS[3], epoch .. ' ' .. offset .. ' ' .. now .. ' ' .. ARGV[8],
    'PX', ARGV[9])
end
redis.call(ARGV[13], ARGV[7], 'c2\n' .. epoch .. '\n' .. offset .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return {epoch, tonumber(offset), clock, 0, ARGV[8]}
