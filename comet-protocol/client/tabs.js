// tabs.js: one connection for every tab of an origin. The tabs that use
// one comet route elect a leader with a Web Lock; the leader opens the
// connection for the union of what every tab wants and hands what it
// receives to the others over a BroadcastChannel. A tab that joins late
// gets the recent items it asked for (`since`) from the leader; when the
// leader leaves, the next tab to get the lock resumes from the last cursor.
// Presence passes too: lists, joins and leaves as items, and to a tab that
// asks for a channel's presence, the leader's current list of it. So do the
// server's ends and added channels: every tab applies them (comet.js).
//
// Messages on the channel, leader to followers:
//   who                    tell me what you want (a new leader)
//   replay {to, items}     what a late tab asked for with `since`
//   lists {to, items}      the presence lists the leader holds of the
//                          channels a tab asks presence for
//   item, cursor, state, event, fatal   what the connection reports (connection.js);
//                          an end or added channel numbered (`access`)
// followers to leader:
//   hello {from, channels, names, presence, since, hidden, replay, access}
//                          what this tab wants, as of the leader's
//                          `access`-th end or added channel; whether
//                          it is hidden (pauseWhenHidden)
//   bye {from}             this tab leaves
//   control {op, ...}      act on the connection (drop, resume, transports,
//                          wake: this tab is back, see lifecycle.js)
//
// Tokens: the leader's goes with the shared connection. A token function is
// no part of the key, so tabs whose functions hand out different strings
// (each its own, fetched when it leads) share: the leader's function is
// told every tab's channels. A static token string is part of it: a leader
// could not get another tab's grants, so tabs share only the same string.

import { ACCESS_ITEMS } from "./protocol.js";

/** Items every tab remembers, so a leader can replay them to a late tab. */
const RECENT_ITEMS = 256;

/**
 * Part of the lock's and channel's name: tabs whose comet.js speaks another
 * version of these messages elect a leader of their own.
 */
const TABS_PROTOCOL = 4;

/** Whether `env` (a window) can share: Web Locks and BroadcastChannel. */
export function canShare(env = globalThis) {
  return typeof env.BroadcastChannel === "function" && Boolean(env.navigator?.locks);
}

/**
 * The name of the lock and the channel of the tabs that share `url`; with a
 * static `token` string, a fingerprint of it (see above).
 */
export function shareKey(url, withCredentials, token = null) {
  const tokenPart = typeof token === "string" ? `:t${fingerprint(token)}` : "";
  return `comet:${TABS_PROTOCOL}:${url.href}:${withCredentials ? "c" : "-"}${tokenPart}`;
}

/** 64-bit FNV-1a of `text`'s UTF-16 units, in base 36: no secret in a lock's name. */
function fingerprint(text) {
  let hash = 0xcbf29ce484222325n;
  for (let i = 0; i < text.length; i++) {
    hash = BigInt.asUintN(64, (hash ^ BigInt(text.charCodeAt(i))) * 0x100000001b3n);
  }
  return hash.toString(36);
}

/**
 * One tab's part. `host` is the tab's client:
 *   wants() -> { channels, names, presence, since, hidden }   what this tab
 *                        receives (presence: the channels it wants presence
 *                        of; hidden: its page is)
 *   lead()               this tab got the lock: open the connection
 *   changed(since)       (leader) a follower's wants changed
 *   left()               (leader) a follower left
 *   status() -> { state, transport }        (leader)
 *   lists(channels) -> items                (leader) presence lists it holds
 *   control(message)     (leader) a follower's control message
 *   follow(message)      (follower) item, cursor, state, event, fatal
 */
export class Tabs {
  #key;
  #host;
  #env;
  #bus = null;
  #id = Math.random().toString(36).slice(2);
  #abort = new AbortController();
  #release = null;
  #leading = false;
  #closed = false;
  #awaitingReplay;
  #peers = new Map();
  #recent = [];
  #accessSent = 0; // leading: ends and added channels sent
  #ended = new Map(); // leading: channel -> the #accessSent of the server's end of it
  #accessSeen = 0; // following: the number of the last one applied
  #onPageHide = () => this.#post({ t: "bye", from: this.#id });
  #onPageShow = () => this.hello();

  /** `replay`: ask the leader for recent items (the tab has a `since`). */
  constructor(key, host, { replay = false, env = globalThis } = {}) {
    this.#key = key;
    this.#host = host;
    this.#env = env;
    this.#awaitingReplay = replay;
  }

  /** True while this tab holds the lock (and the connection). */
  get leading() { return this.#leading; }

  start() {
    this.#bus = new this.#env.BroadcastChannel(this.#key);
    this.#bus.onmessage = (e) => this.#receive(e.data);
    this.#env.addEventListener?.("pagehide", this.#onPageHide);
    this.#env.addEventListener?.("pageshow", this.#onPageShow);
    this.#env.navigator.locks
      .request(this.#key, { signal: this.#abort.signal }, () => new Promise((release) => {
        if (this.#closed) return release();
        this.#release = release;
        this.#leading = true;
        this.#awaitingReplay = false;
        this.#post({ t: "who" });
        this.#host.lead();
      }))
      .catch(() => {}); // aborted by close()
    this.hello();
  }

  /** A follower says what it wants (again, after a change). */
  hello() {
    if (this.#closed || this.#leading) return;
    this.#post({ t: "hello", from: this.#id, ...this.#host.wants(), replay: this.#awaitingReplay, access: this.#accessSeen });
  }

  /** What the followers want, for the leader's connection. */
  peers() {
    return [...this.#peers.values()];
  }

  /**
   * Leader: hands a connection's report to the followers. Ends and added
   * channels are numbered: the server ended a channel for every tab, and a
   * hello sent before its tab applied the end must not ask for it again.
   */
  send(message) {
    if (!this.#leading) return;
    const { item } = message;
    if (message.t === "item" && ACCESS_ITEMS.has(item.type) && item.channel !== null) {
      message = { ...message, access: ++this.#accessSent };
      if (item.type === "subscribed") {
        this.#ended.delete(item.channel);
      } else {
        this.#ended.set(item.channel, this.#accessSent);
        for (const peer of this.#peers.values()) this.#unwant(peer);
      }
    }
    this.#post(message);
  }

  /** Drops from `peer` (a hello as of the `access`-th change) what the server ended after it. */
  #unwant(peer) {
    const ended = (c) => (this.#ended.get(c) ?? 0) > peer.access;
    peer.channels = peer.channels.filter((c) => !ended(c));
    peer.presence = peer.presence.filter((c) => !ended(c));
    return peer;
  }

  /** Follower: asks the leader to act on the connection. */
  control(message) {
    if (!this.#leading) this.#post({ t: "control", ...message });
  }

  /** Keeps `item` for a tab that joins later. */
  remember(item) {
    this.#recent.push(item);
    if (this.#recent.length > RECENT_ITEMS) this.#recent.shift();
  }

  close() {
    if (this.#closed) return;
    this.#post({ t: "bye", from: this.#id });
    this.#closed = true;
    this.#bus?.close();
    this.#abort.abort();
    this.#release?.();
    this.#env.removeEventListener?.("pagehide", this.#onPageHide);
    this.#env.removeEventListener?.("pageshow", this.#onPageShow);
  }

  #post(message) {
    if (!this.#closed) this.#bus?.postMessage(message);
  }

  #receive(m) {
    if (this.#closed) return;
    if (this.#leading) {
      switch (m.t) {
        case "hello": {
          const presence = m.presence ?? [];
          const peer = { channels: m.channels, names: m.names, presence, access: m.access ?? 0, hidden: Boolean(m.hidden) };
          this.#peers.set(m.from, this.#unwant(peer));
          if (m.replay) this.#post({ t: "replay", to: m.from, items: this.#replay(m.channels, m.since) });
          if (presence.length) this.#post({ t: "lists", to: m.from, items: this.#host.lists(presence) });
          this.#host.changed(m.since);
          this.#post({ t: "state", ...this.#host.status() });
          break;
        }
        case "bye":
          this.#peers.delete(m.from);
          this.#host.left?.();
          break;
        case "control": this.#host.control(m); break;
        // The last words of the leader before: it posted them and then let
        // the lock go, and the lock came first. An end that stopped it must
        // stop this tab too; items already delivered are dropped as seen.
        case "item": case "fatal": this.#host.follow(m); break;
      }
      return;
    }
    switch (m.t) {
      case "who":
        this.#accessSeen = 0; // a new leader numbers from 1
        this.hello();
        break;
      case "replay":
        if (m.to === this.#id && this.#awaitingReplay) {
          this.#awaitingReplay = false;
          m.items.forEach((item) => this.#host.follow({ t: "item", item }));
        }
        break;
      case "lists":
        if (m.to === this.#id) m.items.forEach((item) => this.#host.follow({ t: "item", item }));
        break;
      case "item":
        // Sent before the leader read our hello, so it is in the replay too
        // (or, presence, in the lists that come with it); ends and added
        // channels are in neither.
        if (m.access) this.#accessSeen = m.access;
        if (!this.#awaitingReplay || ACCESS_ITEMS.has(m.item.type)) this.#host.follow(m);
        break;
      case "cursor": case "state": case "event": case "fatal": this.#host.follow(m); break;
    }
  }

  /** What a late tab missed, from what this tab has seen. */
  #replay(channels, since) {
    if (since === undefined || since === "head") return [];
    const wanted = new Set(channels);
    const items = this.#recent.filter((i) => i.channel === null || wanted.has(i.channel));
    if (since === "oldest") return items;
    const counts = new Map();
    const kept = [];
    for (let i = items.length - 1; i >= 0; i--) {
      const n = counts.get(items[i].channel) ?? 0;
      if (n < Number(since)) kept.push(items[i]);
      counts.set(items[i].channel, n + 1);
    }
    return kept.reverse();
  }
}
