-- Writes one node's share of a channel (its subscriber count, whether it
-- holds the channel occupied, and its users' connections) and works out, in
-- the same atomic step, what that changed across every node: only the call
-- that changes something reports it, so each transition is reported once.
-- Shares that were not refreshed in time are swept first (their node
-- stopped writing: crashed, or cut off): what that ends is reported too,
-- marked as found by expiry.
--
-- KEYS: nodes (hash node -> '<expiry ms> <count> <occupied 0|1>'), users
-- (sorted set user -> the latest expiry of its shares), shares (hash user ->
-- '<node> <expiry ms> <connections>' triples, space-separated), info (hash
-- user -> info JSON). ARGV: 1 node id, 2 TTL of a share in ms, 3 pub/sub
-- channel, 4 occupied on this node ('1', '0', or '' unchanged), 5 this
-- node's subscriber count ('' unchanged), 6 '1' for a periodic refresh (a
-- user's info is then written only where there is none), 7 the command
-- that announces (`PUBLISH`, or `SPUBLISH` on a Redis Cluster), then per
-- user 4 arguments: 'p' (present) or 'g' (gone), user, connections on this node,
-- info JSON ('' for none).
--
-- Join and leave are announced on the channel's pub/sub channel, in one
-- message: 'p1', then per event '\n<join|leave>\n<user>\n<info>'.
--
-- Returns a flat list, three items per transition: code, user, info. Codes:
-- 'O' occupied, 'V' vacated, 'J' joined, 'L' left; 'v' and 'l' the same
-- found by expiry.

local node = ARGV[1]
local ttl = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expiry = now + ttl
local refresh = ARGV[6] == '1'
local out = {}
local events = {}

local function note(code, user, info)
  out[#out + 1] = code
  out[#out + 1] = user or ''
  out[#out + 1] = info or ''
  if code == 'J' then
    events[#events + 1] = '\njoin\n' .. user .. '\n' .. (info or '')
  elseif code == 'L' or code == 'l' then
    events[#events + 1] = '\nleave\n' .. user .. '\n' .. (info or '')
  end
end

-- A user's shares, one {node, expiry, connections} per node.
local function shares_of(user)
  local list = {}
  local text = redis.call('HGET', KEYS[3], user)
  if text then
    for n, e, c in string.gmatch(text, '(%S+) (%d+) (%d+)') do
      list[#list + 1] = {n, tonumber(e), tonumber(c)}
    end
  end
  return list
end

-- Keeps a user's live shares (at least one), scored by the latest expiry.
local function store(user, list)
  local parts = {}
  local latest = 0
  for _, share in ipairs(list) do
    if share[2] > now then
      parts[#parts + 1] = share[1] .. ' ' .. string.format('%d', share[2]) .. ' ' ..
        string.format('%d', share[3])
      if share[2] > latest then latest = share[2] end
    end
  end
  redis.call('HSET', KEYS[3], user, table.concat(parts, ' '))
  redis.call('ZADD', KEYS[2], string.format('%d', latest), user)
end

local function leave(user, code)
  local info = redis.call('HGET', KEYS[4], user)
  redis.call('HDEL', KEYS[3], user)
  redis.call('HDEL', KEYS[4], user)
  redis.call('ZREM', KEYS[2], user)
  note(code, user, info or '')
end

-- Users whose every share expired (a bounded number per call; the next
-- call takes the rest).
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now),
  'LIMIT', 0, 256)
for _, user in ipairs(expired) do leave(user, 'l') end

-- Nodes' shares of the channel: expired ones go, and if they held the
-- channel occupied and no live one does, it was vacated.
local recorded = false
local others = false
local mine = nil
local nodes = redis.call('HGETALL', KEYS[1])
for i = 1, #nodes, 2 do
  local e, c, o = string.match(nodes[i + 1], '^(%d+) (%d+) ([01])$')
  if not e then
    redis.call('HDEL', KEYS[1], nodes[i])
  else
    e = tonumber(e)
    if o == '1' then recorded = true end
    if e <= now then
      redis.call('HDEL', KEYS[1], nodes[i])
    elseif nodes[i] == node then
      mine = {tonumber(c), o == '1'}
    elseif o == '1' then
      others = true
    end
  end
end
local held = mine ~= nil and mine[2]
if recorded and not others and not held then note('v') end

local occupied = held
if ARGV[4] == '1' then occupied = true elseif ARGV[4] == '0' then occupied = false end
local count = 0
if mine then count = mine[1] end
if ARGV[5] ~= '' then count = tonumber(ARGV[5]) end
if not others then
  if occupied and not held then note('O') end
  if held and not occupied then note('V') end
end
if occupied or count > 0 then
  redis.call('HSET', KEYS[1], node, string.format('%d', expiry) .. ' ' ..
    string.format('%d', count) .. ' ' .. (occupied and '1' or '0'))
else
  redis.call('HDEL', KEYS[1], node)
end

for i = 8, #ARGV, 4 do
  local op, user, connections, info = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local score = redis.call('ZSCORE', KEYS[2], user)
  if score and tonumber(score) <= now then
    -- Past the sweep's bound: expired all the same.
    leave(user, 'l')
    score = false
  end
  local kept = {}
  if score then
    for _, share in ipairs(shares_of(user)) do
      if share[1] ~= node and share[2] > now then kept[#kept + 1] = share end
    end
  end
  if op == 'p' then
    kept[#kept + 1] = {node, expiry, connections}
    store(user, kept)
    if info ~= '' then
      if refresh then
        redis.call('HSETNX', KEYS[4], user, info)
      else
        redis.call('HSET', KEYS[4], user, info)
      end
    elseif not refresh then
      redis.call('HDEL', KEYS[4], user)
    end
    if not score then note('J', user, redis.call('HGET', KEYS[4], user) or '') end
  elseif score then
    if #kept > 0 then store(user, kept) else leave(user, 'L') end
  end
end

-- The keys outlive every share in them; every node's refresh extends them.
for _, key in ipairs(KEYS) do
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < 2 * ttl) then
    redis.call('PEXPIRE', key, 2 * ttl)
  end
end
if #events > 0 then redis.call(ARGV[7], ARGV[3], 'p1' .. table.concat(events)) end
return out
