-- The key that tags cursors, shared by every node: the one Redis has, or
-- else the caller's (a node that already knows one restores it after Redis
-- lost its data, so that the cursors out there still verify).
-- KEYS: the key's key. ARGV: 1 the caller's key (32 hex digits).

local key = redis.call('GET', KEYS[1])
if key then return key end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
