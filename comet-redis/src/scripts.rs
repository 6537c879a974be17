//! The Lua scripts (`src/scripts/*.lua`, each documented at its top): each is
//! one round trip and atomic, so offsets are assigned in one place and
//! history, epoch and announcement never disagree. `redis::Script` sends them
//! by SHA (`EVALSHA`) and loads them again when Redis answers `NOSCRIPT`
//! (after a restart or `SCRIPT FLUSH`).

use redis::Script;

const PUBLISH: &str = include_str!("scripts/publish.lua");
const READ: &str = include_str!("scripts/read.lua");
const NEW_EPOCH: &str = include_str!("scripts/new_epoch.lua");
const TOUCH: &str = include_str!("scripts/touch.lua");
const CURSOR_KEY: &str = include_str!("scripts/cursor_key.lua");

/// The scripts, hashed once.
pub(crate) struct Scripts {
    /// For Redis 6, which does not know script flags: the script itself
    /// makes sure that its first write is the one Redis refuses under
    /// maxmemory.
    publish: Script,
    /// For Redis 7 and later: the same script after a `#!lua` line, which
    /// declares it a writing script, so that Redis refuses it under
    /// maxmemory (and on a replica) before it starts.
    publish_flagged: Script,
    pub(crate) read: Script,
    pub(crate) new_epoch: Script,
    pub(crate) touch: Script,
    pub(crate) cursor_key: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            publish_flagged: Script::new(&format!("#!lua\n{PUBLISH}")),
            read: Script::new(READ),
            new_epoch: Script::new(NEW_EPOCH),
            touch: Script::new(TOUCH),
            cursor_key: Script::new(CURSOR_KEY),
        }
    }

    /// The publish script for a server that knows script flags, or not.
    pub(crate) fn publish(&self, flags: bool) -> &Script {
        if flags {
            &self.publish_flagged
        } else {
            &self.publish
        }
    }
}
