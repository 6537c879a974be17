//! The Lua scripts (`src/scripts/*.lua`, each documented at its top): each is
//! one round trip and atomic, so offsets are assigned in one place and
//! history, epoch and announcement never disagree, and presence decides
//! each join and leave once across nodes. `redis::Script` sends them
//! by SHA (`EVALSHA`) and loads them again when Redis answers `NOSCRIPT`
//! (after a restart or `SCRIPT FLUSH`).

use redis::Script;

const PUBLISH: &str = include_str!("scripts/publish.lua");
const READ: &str = include_str!("scripts/read.lua");
const NEW_EPOCH: &str = include_str!("scripts/new_epoch.lua");
const TOUCH: &str = include_str!("scripts/touch.lua");
const CURSOR_KEY: &str = include_str!("scripts/cursor_key.lua");
const PRESENCE: &str = include_str!("scripts/presence.lua");
const PRESENCE_READ: &str = include_str!("scripts/presence_read.lua");

/// A script that writes, in two forms: under maxmemory, Redis must refuse
/// it before it starts rather than fail it halfway (a publish would change
/// nothing; a presence write, which sweeps first, would leave its sweep
/// unreported).
pub(crate) struct Writing {
    /// For Redis 6, which does not know script flags: the script itself
    /// makes its first write the one Redis refuses, where it can.
    plain: Script,
    /// For Redis 7 and later: the same script after a `#!lua` line, which
    /// declares it a writing script, so that Redis refuses it under
    /// maxmemory (and on a replica) before it starts.
    flagged: Script,
}

impl Writing {
    fn new(source: &str) -> Self {
        Self {
            plain: Script::new(source),
            flagged: Script::new(&format!("#!lua\n{source}")),
        }
    }

    /// The form for a server that knows script flags, or not.
    pub(crate) fn for_server(&self, flags: bool) -> &Script {
        if flags {
            &self.flagged
        } else {
            &self.plain
        }
    }
}

/// The scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) publish: Writing,
    pub(crate) read: Script,
    pub(crate) new_epoch: Script,
    pub(crate) touch: Script,
    pub(crate) cursor_key: Script,
    /// Writes a node's share of a channel's presence and occupancy.
    pub(crate) presence: Writing,
    /// Reads every node's shares of a channel.
    pub(crate) presence_read: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Writing::new(PUBLISH),
            read: Script::new(READ),
            new_epoch: Script::new(NEW_EPOCH),
            touch: Script::new(TOUCH),
            cursor_key: Script::new(CURSOR_KEY),
            presence: Writing::new(PRESENCE),
            presence_read: Script::new(PRESENCE_READ),
        }
    }
}
