// presence.js: who is on a channel, as `comet.presence(channel)` shows it: a
// live, read-only set of users, filled from the server's presence lists and
// kept by joins and leaves (`presence=1`; PROTOCOL.md, "Presence").
//
// Lists and events have set semantics: a join of a user already listed (a
// client's own join after the list it got first) changes nothing, and so
// does a leave of one not listed. Each list after the first (a reconnect,
// every long poll, another node) replaces the set; the differences are
// told as joins and leaves, since the events between two long polls are
// never sent again.

import { callEach } from "./listeners.js";

/** The set's one door for what the client receives; not public API. */
const APPLY = Symbol("comet.presence.apply");
const RESET = Symbol("comet.presence.reset");
const LIST = Symbol("comet.presence.list");

/** The names a presence set's `on` takes. */
const PRESENCE_EVENTS = new Set(["change", "join", "leave"]);

/** The same member as far as a page can tell: connections and info. */
function sameMember(a, b) {
  return a.connections === b.connections && JSON.stringify(a.info) === JSON.stringify(b.info);
}

function member(user, info, connections) {
  return Object.freeze({ user, info, connections });
}

/**
 * Who is on one channel: user ids to `{ user, info, connections }`, read
 * like a `Map` (`size`, `has`, `get`, `keys`, `values`, iteration), with
 * `connections` the channel's count across every node, and `on` for
 * `change`, `join` and `leave`.
 */
export class CometPresence {
  #channel;
  #members = new Map();
  #users = 0;
  #connections = 0;
  #ready = false;
  #listeners = new Map();

  constructor(channel) {
    this.#channel = channel;
  }

  /** The channel. */
  get channel() { return this.#channel; }
  /** How many users the set holds. */
  get size() { return this.#members.size; }
  /**
   * How many users are present on every node: `size`, unless the server
   * lists fewer than are there (past its `max_presence_listed`).
   */
  get users() { return this.#users; }
  /**
   * Their connections, on every node: the last list's count, plus one a
   * join and minus a leaving user's. (A user's second connection is no
   * event: the next list counts it.)
   */
  get connections() { return this.#connections; }
  /** True once a list has arrived (before it, the set is empty, not known). */
  get ready() { return this.#ready; }

  /** Whether `user` is present. */
  has(user) { return this.#members.has(user); }
  /** `{ user, info, connections }` of `user`, or undefined. */
  get(user) { return this.#members.get(user); }
  /** The users present. */
  keys() { return this.#members.keys(); }
  /** Each present user's `{ user, info, connections }`. */
  values() { return this.#members.values(); }
  /** `[user, { user, info, connections }]` pairs, as a Map iterates. */
  [Symbol.iterator]() { return this.#members.entries(); }

  /**
   * `change` (the set, after any change: a list, a join, a leave), `join`
   * and `leave` (`{ channel, user, info }`, only when the set changes).
   * Returns a function that removes the listener.
   */
  on(name, listener) {
    if (!PRESENCE_EVENTS.has(name)) throw new TypeError(`comet: presence has no event ${JSON.stringify(name)}`);
    if (typeof listener !== "function") throw new TypeError("comet: listener must be a function");
    if (!this.#listeners.has(name)) this.#listeners.set(name, new Set());
    this.#listeners.get(name).add(listener);
    return () => this.off(name, listener);
  }

  /** Removes a listener added with `on`. */
  off(name, listener) {
    this.#listeners.get(name)?.delete(listener);
  }

  /**
   * Takes a presence item (a list, a join, a leave) of this channel and
   * returns the joins and leaves it made, as `{ type, channel, user, info }`.
   */
  [APPLY](item) {
    const changes = [];
    const tell = (type, m) => changes.push({ type, channel: this.#channel, user: m.user, info: m.info });
    let changed = false;
    if (item.type === "presence") {
      const next = new Map(item.presence.map((m) => [m.user, member(m.user, m.info, m.connections)]));
      // The first list fills the set: those it names were there already.
      if (this.#ready) {
        for (const [user, m] of this.#members) if (!next.has(user)) tell("leave", m);
        for (const [user, m] of next) if (!this.#members.has(user)) tell("join", m);
      }
      changed = !this.#ready || changes.length > 0 || item.connections !== this.#connections
        || [...next].some(([user, m]) => !sameMember(m, this.#members.get(user)));
      changed ||= item.users !== this.#users;
      this.#members = next;
      this.#users = item.users;
      this.#connections = item.connections;
      this.#ready = true;
    } else if (item.type === "join" && !this.#members.has(item.user)) {
      const m = member(item.user, item.info, 1);
      this.#members.set(item.user, m);
      this.#users += 1;
      this.#connections += 1;
      tell("join", m);
      changed = true;
    } else if (item.type === "leave" && this.#members.has(item.user)) {
      const m = this.#members.get(item.user);
      this.#members.delete(item.user);
      this.#users = Math.max(this.#members.size, this.#users - 1);
      this.#connections = Math.max(this.#users, this.#connections - m.connections);
      tell("leave", { user: m.user, info: item.info ?? m.info });
      changed = true;
    }
    for (const change of changes) {
      const { type, ...detail } = change;
      this.#emit(type, detail);
    }
    if (changed) this.#emit("change", this);
    return changes;
  }

  /** Forgets everyone: the client no longer receives this channel's presence. */
  [RESET]() {
    const had = this.#ready || this.#members.size > 0;
    this.#members = new Map();
    this.#users = 0;
    this.#connections = 0;
    this.#ready = false;
    if (had) this.#emit("change", this);
  }

  /** The set as a list item, for a tab that starts to follow it. */
  [LIST]() {
    return {
      type: "presence",
      channel: this.#channel,
      users: this.#users,
      connections: this.#connections,
      presence: [...this.#members.values()].map((m) => ({ ...m })),
      cursor: null,
    };
  }

  #emit(name, value) {
    callEach(this.#listeners.get(name), value);
  }
}

/** `set` takes `item`; returns the joins and leaves it made. */
export function applyPresence(set, item) {
  return set[APPLY](item);
}

/** `set` forgets everyone. */
export function resetPresence(set) {
  set[RESET]();
}

/** `set` as a list item, or null before its first list. */
export function presenceList(set) {
  return set.ready ? set[LIST]() : null;
}
