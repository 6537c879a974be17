-- The key that tags cursors, shared by every node: the one Redis has, or
-- else the caller's (a node that already knows one restores it after Redis
-- lost its data, so that the cursors out there still verify), or else a
-- fresh one. A node whose key Redis no longer holds records it as the
-- previous key, so that every node still honours the cursors tagged under
-- it.
-- KEYS: the key's key, the previous key's key. ARGV: 1 the caller's key
-- (32 hex digits, '' if it knows none), 2 a fresh key (used if neither
-- Redis nor the caller has one).
-- Returns {key, previous key or ''}.

local key = redis.call('GET', KEYS[1])
if not key then
  key = ARGV[1]
  if key == '' then key = ARGV[2] end
  redis.call('SET', KEYS[1], key)
elseif ARGV[1] ~= '' and key ~= ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1])
end
local previous = redis.call('GET', KEYS[2])
if not previous or previous == key then previous = '' end
return {key, previous}
