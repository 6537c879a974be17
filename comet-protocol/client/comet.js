// comet.js: the browser client for the comet wire protocol, version 1.4.
//
// A dependency-free ES module. One `Comet` receives many channels over one
// connection, picks the best transport that actually works here (SSE, fetch
// streaming, long polling, JSONP, forever frame), resumes from its last
// cursor after every reconnect, and shares one connection between the tabs
// of an origin. It sends a token where the route wants one, gets a new one
// when it expires, and follows the server's changes to its subscription
// (ends, channels added). Types: comet.d.ts. Protocol: PROTOCOL.md.
//
// This is the public API; the rest is in modules beside it: connection.js
// (resume and tokens, policy.js for fallback and back-off, transports.js
// and the transport-*.js for each family), tabs.js (one connection for all
// tabs), presence.js (who is on a channel), lifecycle.js (the page hidden,
// frozen, offline, and back), listeners.js, protocol.js (the wire format). Servers hand out one file built from them
// (comet-protocol/build.rs); tests/ holds their unit tests (`node --test`).

import { ACCESS_ITEMS, PRESENCE_ITEMS, PROTOCOL_PARAMS, TRANSPORTS, checkChannel, checkTransports } from "./protocol.js";
import { Connection } from "./connection.js";
import { Tabs, canShare, shareKey } from "./tabs.js";
import { CometPresence, applyPresence, presenceList, resetPresence } from "./presence.js";
import { callEach } from "./listeners.js";
import { Lifecycle } from "./lifecycle.js";

/** Names `on` reserves for the client's own events. */
const CLIENT_EVENTS = new Set([
  "message", "gap", "state", "error", "connecting", "open", "reconnecting", "paused", "closed",
  "cursor", "transport", "reconnect", "join", "leave", "end", "subscribed",
]);

/**
 * Cursors of messages remembered to drop one delivered twice across a
 * leader change. A gap of a channel forgets that channel's: its history
 * moved on (a new epoch) and may number new messages as it did old ones.
 */
const SEEN_CURSORS = 512;

/** A message as handlers see it, the same on every transport. */
class CometMessage {
  constructor(item) {
    /** The channel, or null where SSE cannot tell (see comet.d.ts). */
    this.channel = item.channel;
    /** The event name the publisher gave, or null. */
    this.event = item.event;
    /** The payload's text, as `MessageEvent.data` is. */
    this.data = item.data;
    /** The position right after this message. */
    this.cursor = item.cursor;
  }

  /** The payload parsed as JSON. */
  json() {
    return JSON.parse(this.data);
  }
}

/**
 * A comet subscription: `new Comet(url, { channels })`, then `on(name, fn)`.
 */
class Comet {
  #url;
  #options;
  #channels;
  #listeners = new Map();
  #state = "connecting";
  #transport = null;
  #cursor;
  #closed = false;
  #connection = null; // ours when this tab leads (or does not share)
  #tabs = null; // when sharing
  #seen = new Map(); // cursor -> channel (null: SSE could not tell), oldest first
  #wantsPresence = new Set(); // channels this tab called presence() on
  #presence = new Map(); // channel -> CometPresence: ours, and (leading) other tabs'
  #lifecycle = null; // the page's comings and goings, where there is a page

  /**
   * @param {string|URL} url the comet route (`/comet`), relative or absolute
   * @param {object} [options] see comet.d.ts
   */
  constructor(url, options = {}) {
    this.#url = new URL(url, globalThis.location?.href);
    // The URL's own query goes with every request (an app's parameters,
    // as the demo's `user=`); the protocol's are the client's to write.
    for (const name of PROTOCOL_PARAMS) {
      if (this.#url.searchParams.has(name)) throw new TypeError(`comet: the URL may not set ${name}=`);
    }
    this.#options = {
      transports: checkTransports(options.transports ?? TRANSPORTS),
      since: options.since,
      withCredentials: Boolean(options.withCredentials),
      share: options.share ?? true,
      timeout: options.timeout ?? 25,
      minDelay: options.minDelay ?? 500,
      maxDelay: options.maxDelay ?? 15000,
      upgradeAfter: options.upgradeAfter ?? 30000,
      openTimeout: options.openTimeout ?? 10000,
      heartbeatTimeout: options.heartbeatTimeout ?? 45000,
      staleAfter: checkMs("staleAfter", options.staleAfter ?? 20000),
      pauseWhenHidden: Boolean(options.pauseWhenHidden),
      token: checkToken(options.token),
    };
    this.#channels = new Set((options.channels ?? []).map(checkChannel));
    this.#cursor = options.cursor ?? null;
    // Start after the caller has had a chance to attach listeners.
    queueMicrotask(() => this.#start());
  }

  /** The connection's state: connecting, open, reconnecting, paused or closed. */
  get state() { return this.#state; }
  /** The transport in use (by the leading tab, when shared), or null. */
  get transport() { return this.#transport; }
  /** The last cursor seen: pass it as `cursor` to resume elsewhere. */
  get cursor() { return this.#cursor; }
  /** The channels this client receives. */
  get channels() { return [...this.#channels]; }
  /** True when this tab holds the shared connection (or does not share). */
  get leader() { return this.#connection !== null; }

  /**
   * Calls `listener` for messages whose event (or, without one, channel) is
   * `name`, or for a client event (see CLIENT_EVENTS and comet.d.ts).
   * Returns a function that removes it.
   */
  on(name, listener) {
    if (typeof listener !== "function") throw new TypeError("comet: listener must be a function");
    let set = this.#listeners.get(name);
    if (!set) {
      set = new Set();
      this.#listeners.set(name, set);
      if (!CLIENT_EVENTS.has(name)) {
        this.#connection?.listen(name);
        this.#tabs?.hello();
      }
    }
    set.add(listener);
    return () => this.off(name, listener);
  }

  /** Removes a listener added with `on`. */
  off(name, listener) {
    this.#listeners.get(name)?.delete(listener);
  }

  /** Adds channels; the connection resumes with its cursor to include them. */
  subscribe(...channels) {
    const before = this.#channels.size;
    for (const c of channels.flat()) this.#channels.add(checkChannel(c));
    if (this.#channels.size !== before) this.#changed();
  }

  /** Removes channels (and their presence: its set is emptied). */
  unsubscribe(...channels) {
    let changed = false;
    for (const c of channels.flat()) changed = this.#drop(c) || changed;
    if (changed) this.#changed();
  }

  /**
   * Who is on `channel`: a live set (see presence.js and comet.d.ts), the
   * same one at every call. The first call subscribes to the channel if
   * needed and asks for presence (`presence=1`), reconnecting from the
   * cursor if the connection did not have it. `join` and `leave` events of
   * the channel reach this client's listeners from then on.
   */
  presence(channel) {
    checkChannel(channel);
    let set = this.#presence.get(channel);
    if (!set) {
      set = new CometPresence(channel);
      this.#presence.set(channel, set);
    }
    if (!this.#wantsPresence.has(channel)) {
      this.#wantsPresence.add(channel);
      this.#channels.add(channel);
      this.#changed();
    }
    return set;
  }

  /**
   * Drops the connection as a network failure would: the client reconnects
   * by itself and resumes from its cursor (the shared one, when shared).
   */
  drop() {
    this.#act({ op: "drop" });
  }

  /**
   * Reconnects from `cursor`, one this client saw earlier: what came after
   * it is delivered again, or a gap where history no longer holds it.
   */
  resume(cursor) {
    if (typeof cursor !== "string" || !cursor) throw new TypeError("comet: resume needs a cursor");
    // What comes again is wanted again: forget having seen it.
    this.#seen.clear();
    this.#setCursor(cursor);
    this.#act({ op: "resume", cursor });
  }

  /** Uses these transports from now on, best first, reconnecting at once. */
  setTransports(transports) {
    this.#options.transports = checkTransports(transports);
    this.#act({ op: "transports", transports: this.#options.transports });
  }

  /** Closes the connection for good (another tab takes over a shared one). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#connection?.stop();
    this.#connection = null;
    this.#tabs?.close();
    this.#lifecycle?.stop();
    this.#setState("closed", null);
  }

  // ---- starting: alone, or leader or follower of the tabs of this origin

  #start() {
    if (this.#closed) return;
    this.#emitState();
    if (typeof globalThis.document === "object" && globalThis.document) {
      this.#lifecycle = new Lifecycle({ away: () => this.#away(), back: (b) => this.#back(b) });
      this.#lifecycle.start();
    }
    if (!this.#options.share || !canShare()) {
      this.#lead();
      return;
    }
    this.#tabs = new Tabs(shareKey(this.#url, this.#options.withCredentials, this.#options.token), {
      wants: () => ({
        channels: [...this.#channels],
        names: this.#names(),
        presence: [...this.#wantsPresence],
        since: this.#options.since,
        hidden: this.#hidden(),
      }),
      lead: () => this.#lead(),
      changed: (since) => this.#update(since),
      left: () => this.#repause(),
      status: () => ({ state: this.#state, transport: this.#transport }),
      lists: (channels) => channels.map((c) => this.#presence.get(c)).filter(Boolean).map(presenceList).filter(Boolean),
      control: (m) => this.#act(m),
      follow: (m) => this.#follow(m),
    }, { replay: this.#options.since !== undefined });
    this.#tabs.start();
  }

  /** This tab opens the connection: for itself and for every tab that said hello. */
  #lead() {
    // Taking over from a tab that left: our own connection starts now.
    if (this.#state === "open") this.#setState("reconnecting", this.#transport);
    this.#connection = new Connection(this.#url, this.#options, (m) => {
      this.#tabs?.send(m);
      this.#follow(m);
    });
    this.#connection.cursor = this.#cursor;
    this.#update(this.#options.since);
  }

  /** Listened names: SSE can only deliver event types it was asked for. */
  #names() {
    return [...this.#listeners.keys()].filter((n) => !CLIENT_EVENTS.has(n));
  }

  /** The leader's connection follows the union of every tab's channels. */
  #update(since) {
    if (!this.#connection) return;
    const channels = new Set(this.#channels);
    const names = new Set(this.#names());
    const presence = this.#presenceWanted();
    for (const peer of this.#tabs?.peers() ?? []) {
      peer.channels.forEach((c) => channels.add(c));
      peer.names.forEach((n) => names.add(n));
    }
    // Other tabs' sets this tab kept for them and no one wants now.
    for (const channel of this.#presence.keys()) {
      if (!presence.has(channel) && !this.#wantsPresence.has(channel)) this.#presence.delete(channel);
    }
    // Paused first: a connection no tab shows is not opened by the update.
    this.#repause();
    this.#connection.update(channels, names, since, presence.size > 0);
  }

  /** pauseWhenHidden: no tab shows the connection's messages. */
  #shouldPause() {
    return this.#options.pauseWhenHidden && this.#hidden()
      && (this.#tabs?.peers() ?? []).every((peer) => peer.hidden);
  }

  /** (Leader) pause, or resume, as the tabs now show the connection. */
  #repause() {
    if (!this.#connection) return;
    const pause = this.#shouldPause();
    if (pause) this.#connection.pause();
    else if (this.#connection.paused) this.#connection.wake();
  }

  // ---- the page hidden, frozen, offline, and back (lifecycle.js)

  #hidden() {
    return this.#lifecycle?.hidden ?? false;
  }

  /** The page went: the leader may pause (pauseWhenHidden); a follower tells it. */
  #away() {
    if (this.#connection) this.#update(this.#options.since);
    else this.#tabs?.hello();
  }

  /**
   * The page is back after `away` ms: the connection reconnects at once
   * if it was paused, is waiting to retry, or may have died meanwhile
   * (Connection.wake). A follower asks the leader's, which the same freeze
   * or network loss may have cut without its own tab noticing.
   */
  #back({ away, force }) {
    if (this.#closed) return;
    if (this.#connection) {
      this.#update(this.#options.since);
      // Still paused: hidden, and no tab shows it (resumed in the background).
      if (!this.#connection.paused) this.#connection.wake({ away, force });
      return;
    }
    this.#tabs?.hello();
    this.#act({ op: "wake", away, force });
  }

  /** The channels whose presence this tab keeps: its own, and (leading) every tab's. */
  #presenceWanted() {
    const wanted = new Set(this.#wantsPresence);
    if (this.#connection) {
      for (const peer of this.#tabs?.peers() ?? []) peer.presence.forEach((c) => wanted.add(c));
    }
    return wanted;
  }

  #changed() {
    if (this.#connection) this.#update(this.#options.since);
    else this.#tabs?.hello();
  }

  /** drop, resume, transports: on our connection, or asked of the leader's. */
  #act(m) {
    if (this.#closed) return;
    if (!this.#connection) {
      this.#tabs?.control(m);
      return;
    }
    if (m.op === "drop") this.#connection.drop();
    if (m.op === "resume") this.#connection.resume(m.cursor);
    if (m.op === "wake" && !this.#connection.paused) {
      // A follower was away: so was this connection, at most as long as
      // this tab was (a tab here all along has seen its connection work).
      const away = Math.min(Number(m.away) || 0, this.#lifecycle?.away ?? Infinity);
      this.#connection.wake({ away, force: Boolean(m.force) });
    }
    if (m.op === "transports") {
      this.#options.transports = checkTransports(m.transports);
      this.#connection.setTransports(this.#options.transports);
    }
  }

  /** What the connection reports, ours or the leading tab's. */
  #follow(m) {
    switch (m.t) {
      case "item": this.#item(m.item); break;
      case "cursor": this.#setCursor(m.cursor); break;
      case "state": this.#setState(m.state, m.transport); break;
      case "event": this.#emit(m.name, m.value); break;
      case "fatal":
        this.#emit("error", m.info);
        this.close();
        break;
    }
  }

  // ---- delivering

  #item(item) {
    if (PRESENCE_ITEMS.has(item.type)) {
      this.#presenceItem(item);
      return;
    }
    if (ACCESS_ITEMS.has(item.type)) {
      this.#access(item);
      return;
    }
    this.#tabs?.remember(item);
    if (item.cursor) this.#setCursor(item.cursor);
    // A gap before the check for duplicates: it is never dropped as one,
    // and what follows it is new even where its cursor was seen before.
    if (item.type === "gap") {
      this.#forget(item.channel);
      if (item.channel === null || this.#channels.has(item.channel)) {
        this.#emit("gap", { channel: item.channel, missed: item.missed, cursor: item.cursor });
      }
      return;
    }
    if (item.cursor) {
      if (this.#seen.has(item.cursor)) return;
      this.#seen.set(item.cursor, item.channel);
      if (this.#seen.size > SEEN_CURSORS) this.#seen.delete(this.#seen.keys().next().value);
    }
    if (item.channel !== null && !this.#channels.has(item.channel)) return; // another tab's
    const message = new CometMessage(item);
    const name = item.event ?? item.channel;
    if (name !== null && !CLIENT_EVENTS.has(name)) this.#emit(name, message);
    this.#emit("message", message);
  }

  /**
   * A presence list, join or leave: kept for this tab's sets (and, leading,
   * for the lists other tabs ask for); joins and leaves that change one of
   * this tab's sets are told to its listeners.
   */
  #presenceItem(item) {
    if (!this.#presenceWanted().has(item.channel)) return;
    let set = this.#presence.get(item.channel);
    if (!set) {
      set = new CometPresence(item.channel);
      this.#presence.set(item.channel, set);
    }
    const changes = applyPresence(set, item);
    if (!this.#wantsPresence.has(item.channel)) return;
    for (const { type, ...detail } of changes) this.#emit(type, detail);
  }

  /**
   * An end or a channel added (PROTOCOL.md, "Access"), which the leading
   * connection has already applied to itself, and every tab applies to its
   * channels: an added channel is this tab's too (the server added it to
   * the user's subscriptions, and without sharing each tab would get it),
   * an ended one is dropped where a tab had it. An expiry is the
   * connection's to mend (a new token, the resume): nothing to tell. Any
   * other end of everything closes this client, and no tab reconnects.
   */
  #access(item) {
    if (item.cursor) this.#setCursor(item.cursor);
    const { channel, cursor } = item;
    if (item.type === "subscribed") {
      if (!this.#channels.has(channel)) {
        this.#channels.add(channel);
        this.#changed();
      }
      this.#emit("subscribed", { channel, cursor });
      return;
    }
    // An expiry or a shutdown is the connection's to mend (a new token, a
    // resume elsewhere, spread over the server's window): nothing to tell.
    if (channel === null && (item.reason === "expired" || item.reason === "shutdown")) return;
    if (channel !== null) {
      if (!this.#drop(channel)) return; // another tab's
      this.#changed();
      this.#emit("end", { channel, reason: item.reason, cursor });
      return;
    }
    this.#emit("end", { channel: null, reason: item.reason, cursor });
    this.close();
  }

  /** Stops receiving `channel` and its presence; false if it was not received. */
  #drop(channel) {
    if (this.#wantsPresence.delete(channel)) resetPresence(this.#presence.get(channel));
    return this.#channels.delete(channel);
  }

  /**
   * Forgets the cursors seen of `channel` (all of them without one), and
   * those whose channel SSE could not tell (several channels, an event
   * name): a message delivered twice is better than one lost.
   */
  #forget(channel) {
    for (const [cursor, of] of this.#seen) {
      if (channel == null || of === channel || of === null) this.#seen.delete(cursor);
    }
  }

  #setCursor(cursor) {
    if (cursor === this.#cursor) return;
    this.#cursor = cursor;
    this.#emit("cursor", cursor);
  }

  #setState(state, transport) {
    if (this.#closed && state !== "closed") return;
    if (state === this.#state && transport === this.#transport) return;
    this.#state = state;
    this.#transport = transport;
    this.#emitState();
  }

  #emitState() {
    const detail = { state: this.#state, transport: this.#transport };
    this.#emit(this.#state, detail);
    this.#emit("state", detail);
  }

  #emit(name, value) {
    callEach(this.#listeners.get(name), value);
  }
}

/** An option in ms: a finite number, 0 or more. */
function checkMs(name, value) {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`comet: ${name} must be a number of ms, 0 or more`);
  }
  return value;
}

/** The `token` option: a string, a function, or none. */
function checkToken(token) {
  if (token === undefined || token === null) return null;
  if ((typeof token === "string" && token) || typeof token === "function") return token;
  throw new TypeError("comet: token must be a non-empty string or a function");
}

export { Comet, CometMessage, CometPresence };
