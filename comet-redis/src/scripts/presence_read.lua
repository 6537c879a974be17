-- Reads a channel's subscribers and presence across every node, leaving
-- out shares that expired (their node stopped refreshing them; a write
-- sweeps them). Writes nothing.
--
-- KEYS: nodes, users, shares, info (see presence.lua). ARGV: 1 the most
-- users to list, or -1 for the subscriber count alone.
--
-- Returns {subscribers} or {subscribers, users, connections, members}:
-- members a flat list of user, connections, info ('' for none).

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local max = tonumber(ARGV[1])

local subscribers = 0
local nodes = redis.call('HGETALL', KEYS[1])
for i = 2, #nodes, 2 do
  local e, c = string.match(nodes[i], '^(%d+) (%d+) [01]$')
  if e and tonumber(e) > now then subscribers = subscribers + tonumber(c) end
end
if max < 0 then return {subscribers} end

local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. string.format('%d', now), '+inf')
local connections = 0
local members = {}
for i, user in ipairs(live) do
  local mine = 0
  local text = redis.call('HGET', KEYS[3], user) or ''
  for _, e, c in string.gmatch(text, '(%S+) (%d+) (%d+)') do
    if tonumber(e) > now then mine = mine + tonumber(c) end
  end
  connections = connections + mine
  if i <= max then
    members[#members + 1] = user
    members[#members + 1] = mine
    members[#members + 1] = redis.call('HGET', KEYS[4], user) or ''
  end
end
return {subscribers, #live, connections, members}
