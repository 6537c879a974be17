//! The Lua scripts: each is one round trip and atomic, so offsets are
//! assigned in one place and history, epoch and announcement never disagree.
//! `redis::Script` sends them by SHA (`EVALSHA`) and loads them again when
//! Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).

use redis::Script;

/// The channel's epoch (KEYS[1] is its meta hash), or a new one from
/// `ARGV[1]` for a channel without: its history (KEYS[2]) starts empty.
macro_rules! epoch_or_new {
    () => {
        r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local created = false
if not epoch then
  epoch = ARGV[1]
  created = true
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', 0)
end
"#
    };
}

/// Raises the TTL of the channel's keys (KEYS[1], KEYS[2]) that expire to at
/// least `want` ms; keys kept for good stay so.
macro_rules! extend_ttl {
    () => {
        r#"
for _, key in ipairs(KEYS) do
  local left = redis.call('PTTL', key)
  if left >= 0 and left < want then redis.call('PEXPIRE', key, want) end
end
"#
    };
}

/// Publishes one message.
///
/// KEYS: meta, log. ARGV: a new epoch (used if the channel has none), kind,
/// event, data, max messages, max age in ms (0: none), key TTL in ms (0:
/// keep), pub/sub channel.
///
/// Appends the message at the next offset (the entry ID carries it) and only
/// then counts it, so a failed append leaves nothing behind; trims by count
/// (exactly up to 100 entries, by whole stream nodes above) and, every 32nd
/// publish, by age; refreshes the keys' TTL and announces the message on the
/// channel's pub/sub channel. A log that cannot be continued (another type,
/// or entries ahead of the offsets, which only something else writing there
/// makes) starts over in a new epoch. Returns `{epoch, offset, time_ms}`.
const PUBLISH: &str = concat!(
    epoch_or_new!(),
    r#"
local offset = tonumber(redis.call('HGET', KEYS[1], 'last') or '0') + 1
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local id = string.format('%d-0', offset)
-- Exact trimming rewrites the stream's first node on every publish; above
-- a node's worth of entries, trim whole nodes (`~`) instead: Redis keeps up
-- to one node more, and readers still get exactly the bound (the read
-- script and every mirror cap it).
local max = tonumber(ARGV[5])
local trim = '='
if max > 100 then trim = '~' end
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', trim, max, id,
  'k', ARGV[2], 'e', ARGV[3], 'd', ARGV[4], 't', now)
if type(added) == 'table' and added.err then
  redis.call('DEL', KEYS[2])
  epoch = ARGV[1]
  offset = 1
  id = '1-0'
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('XADD', KEYS[2], 'MAXLEN', trim, max, id,
    'k', ARGV[2], 'e', ARGV[3], 'd', ARGV[4], 't', now)
end
redis.call('HSET', KEYS[1], 'last', offset)
-- Expired entries are dropped every 32nd publish (and when the keys
-- expire): readers never see them anyway, every mirror drops them by age.
local max_age = tonumber(ARGV[6])
if max_age > 0 and offset % 32 == 1 then
  local cutoff = now - max_age
  for _ = 1, 1000 do
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if not first or first[1] == id then break end
    local t = 0
    for i = 1, #first[2], 2 do
      if first[2][i] == 't' then t = tonumber(first[2][i + 1]) end
    end
    if t > cutoff then break end
    redis.call('XDEL', KEYS[2], first[1])
  end
end
local ttl = tonumber(ARGV[7])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
redis.call('PUBLISH', ARGV[8], 'c1\n' .. epoch .. '\n' .. string.format('%d', offset) ..
  '\n' .. string.format('%d', now) .. '\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
return {epoch, offset, now}
"#
);

/// Reads a channel's state, giving it an epoch if it has none.
///
/// KEYS: meta, log. ARGV: a new epoch (used if the channel has none), the
/// epoch the caller knows ('' for none), the offset it has, the most entries
/// to return (0: none), the TTL in ms of a channel created here (and the
/// least its expiring keys are left with: a channel being read is in use).
///
/// Returns `{epoch, last, entries, at}`: the entries after the caller's
/// offset when it knows this epoch and is at most that many behind, else the
/// newest ones (the caller gets a gap), oldest first, as `XRANGE` gives them;
/// and the entry at the caller's offset, if Redis still has it.
const READ: &str = concat!(
    epoch_or_new!(),
    r#"
local want = tonumber(ARGV[5])
if created and want > 0 then redis.call('PEXPIRE', KEYS[1], want) end
"#,
    extend_ttl!(),
    r#"
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
local max = tonumber(ARGV[4])
local after = tonumber(ARGV[3])
local entries = {}
if max > 0 and last > 0 then
  if epoch == ARGV[2] and after >= last then
    entries = {}
  elseif epoch == ARGV[2] and last - after <= max then
    entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', after + 1), '+')
  else
    local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', max)
    for i = #newest, 1, -1 do entries[#entries + 1] = newest[i] end
  end
end
-- The entry at the caller's own offset, for it to check that it is the
-- message it has (Redis may have lost it and assigned the offset again).
local at = {}
if epoch == ARGV[2] and after > 0 and after <= last then
  local id = string.format('%d-0', after)
  at = redis.call('XRANGE', KEYS[2], id, id)
end
return {epoch, last, entries, at}
"#
);

/// Moves a channel to a new epoch if it still has `ARGV[1]`: its offsets went
/// back (a restored snapshot, a promoted replica), so the old ones must never
/// be served again, and neither must the history kept under them (clients
/// may have it already): the new epoch starts with none. KEYS: meta, log.
/// ARGV: the old epoch, the new one. Returns the epoch the channel has now.
const NEW_EPOCH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
  redis.call('DEL', KEYS[2])
  return ARGV[2]
end
return epoch
"#;

/// Extends the life of a channel's keys that expire, for channels that
/// subscribers on this node still use. KEYS: meta, log. ARGV: TTL in ms.
const TOUCH: &str = concat!(
    "local want = tonumber(ARGV[1])\n",
    extend_ttl!(),
    "return 0\n"
);

/// The scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) read: Script,
    pub(crate) new_epoch: Script,
    pub(crate) touch: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            new_epoch: Script::new(NEW_EPOCH),
            touch: Script::new(TOUCH),
        }
    }
}
