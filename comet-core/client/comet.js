// comet.js: the browser client for the comet wire protocol, version 1.1.
//
// A dependency-free ES module. One `Comet` receives many channels over one
// connection, picks the best transport that actually works here (SSE, fetch
// streaming, long polling, JSONP, forever frame), resumes from its last
// cursor after every reconnect, and shares one connection between the tabs
// of an origin. Types: comet.d.ts. Protocol: PROTOCOL.md.

/** Transports, best first. */
const TRANSPORTS = ["sse", "stream", "poll", "jsonp", "iframe"];

/** Names `on` reserves for the client's own events. */
const CLIENT_EVENTS = new Set([
  "message", "gap", "state", "error", "connecting", "open", "reconnecting", "closed",
]);

/** PROTOCOL.md: channel names (`error` and `open` would be EventSource's own events). */
const CHANNEL = /^[A-Za-z0-9_.:@/-]{1,128}$/;
const REFUSED_CHANNELS = new Set(["error", "open"]);

/** Refusals that no retry or other transport can mend. */
const FATAL_STATUS = new Set([400, 404, 405, 414, 431]);

/** Items every tab remembers, so a leader can replay them to a late tab. */
const RECENT_ITEMS = 256;

/** Cursors remembered to drop an item delivered twice across a leader change. */
const SEEN_CURSORS = 512;

/**
 * Where JSONP and forever-frame callbacks live: `__comet_cb.<name>`, the
 * only dotted callback a route accepts (PROTOCOL.md, "Callbacks").
 */
const REGISTRY = "__comet_cb";
let callbacks = 0;

function registry() {
  globalThis[REGISTRY] ??= Object.create(null);
  return globalThis[REGISTRY];
}

function checkChannel(name) {
  if (typeof name !== "string" || !CHANNEL.test(name) || name.startsWith("comet-") || REFUSED_CHANNELS.has(name)) {
    throw new TypeError(`comet: bad channel name ${JSON.stringify(name)}`);
  }
  return name;
}

/** A message as handlers see it, the same on every transport. */
export class CometMessage {
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
export class Comet {
  #url;
  #options;
  #channels;
  #listeners = new Map();
  #state = "connecting";
  #transport = null;
  #cursor;
  #closed = false;
  #connection = null; // ours when this tab leads (or does not share)
  #share = null; // { bus, id, release, abort, peers, awaitingReplay }
  #recent = [];
  #seen = new Set();
  #seenOrder = [];
  #onPageHide = () => this.#share?.bus.postMessage({ t: "bye", from: this.#share.id });
  #onPageShow = () => this.#hello(false);

  /**
   * @param {string|URL} url the comet route (`/comet`), relative or absolute
   * @param {object} [options] see comet.d.ts
   */
  constructor(url, options = {}) {
    this.#url = new URL(url, globalThis.location?.href);
    const transports = options.transports ?? TRANSPORTS;
    for (const t of transports) {
      if (!TRANSPORTS.includes(t)) throw new TypeError(`comet: unknown transport ${JSON.stringify(t)}`);
    }
    if (!transports.length) throw new TypeError("comet: no transports");
    this.#options = {
      transports: [...transports],
      since: options.since,
      withCredentials: Boolean(options.withCredentials),
      share: options.share ?? true,
      timeout: options.timeout ?? 25,
      minDelay: options.minDelay ?? 500,
      maxDelay: options.maxDelay ?? 15000,
      upgradeAfter: options.upgradeAfter ?? 30000,
      openTimeout: options.openTimeout ?? 10000,
      heartbeatTimeout: options.heartbeatTimeout ?? 45000,
    };
    this.#channels = new Set((options.channels ?? []).map(checkChannel));
    this.#cursor = options.cursor ?? null;
    // Start after the caller has had a chance to attach listeners.
    queueMicrotask(() => this.#start());
  }

  /** The connection's state: connecting, open, reconnecting or closed. */
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
   * `name`, or for a client event: message, gap, state, error, connecting,
   * open, reconnecting, closed. Returns a function that removes it.
   */
  on(name, listener) {
    if (typeof listener !== "function") throw new TypeError("comet: listener must be a function");
    let set = this.#listeners.get(name);
    if (!set) {
      set = new Set();
      this.#listeners.set(name, set);
      if (!CLIENT_EVENTS.has(name)) {
        this.#connection?.listen(name);
        if (this.#share && !this.#connection) this.#hello(false);
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

  /** Removes channels. */
  unsubscribe(...channels) {
    let changed = false;
    for (const c of channels.flat()) changed = this.#channels.delete(c) || changed;
    if (changed) this.#changed();
  }

  /** Closes the connection for good (another tab takes over a shared one). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#connection?.stop();
    this.#connection = null;
    if (this.#share) {
      const { bus, id, release, abort } = this.#share;
      bus.postMessage({ t: "bye", from: id });
      bus.close();
      abort.abort();
      release?.();
      removeEventListener("pagehide", this.#onPageHide);
      removeEventListener("pageshow", this.#onPageShow);
    }
    this.#setState("closed", null);
  }

  // ---- starting: alone, or leader or follower of the tabs of this origin

  #start() {
    if (this.#closed) return;
    this.#emitState();
    const canShare = this.#options.share && globalThis.BroadcastChannel && globalThis.navigator?.locks;
    if (!canShare) {
      this.#lead();
      return;
    }
    const key = `comet:${this.#url.href}:${this.#options.withCredentials ? "c" : "-"}`;
    const bus = new BroadcastChannel(key);
    this.#share = {
      bus, id: Math.random().toString(36).slice(2), release: null, abort: new AbortController(),
      peers: new Map(), awaitingReplay: this.#options.since !== undefined,
    };
    bus.onmessage = (e) => this.#receive(e.data);
    addEventListener("pagehide", this.#onPageHide);
    addEventListener("pageshow", this.#onPageShow);
    navigator.locks
      .request(key, { signal: this.#share.abort.signal }, () => new Promise((release) => {
        if (this.#closed) return release();
        this.#share.release = release;
        this.#lead();
      }))
      .catch(() => {}); // aborted by close()
    this.#hello(this.#share.awaitingReplay);
  }

  /** This tab opens the connection: for itself and for every tab that said hello. */
  #lead() {
    if (this.#share) {
      this.#share.awaitingReplay = false;
      this.#share.bus.postMessage({ t: "who" });
      // Taking over from a tab that left: our own connection starts now.
      if (this.#state === "open") this.#setState("reconnecting", this.#transport);
    }
    this.#connection = new Connection(this.#url, this.#options, {
      item: (item) => {
        this.#broadcast({ t: "item", item });
        this.#item(item);
      },
      cursor: (cursor) => {
        this.#cursor = cursor;
        this.#broadcast({ t: "cursor", cursor });
      },
      state: (state, transport) => {
        this.#broadcast({ t: "state", state, transport });
        this.#setState(state, transport);
      },
      error: (info) => {
        this.#broadcast({ t: "error", info });
        this.#emit("error", info);
      },
      fatal: (info) => {
        this.#broadcast({ t: "fatal", info });
        this.#emit("error", info);
        this.close();
      },
    });
    this.#connection.cursor = this.#cursor;
    this.#update(this.#options.since);
  }

  #broadcast(message) {
    this.#share?.bus.postMessage(message);
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
    for (const peer of this.#share?.peers.values() ?? []) {
      peer.channels.forEach((c) => channels.add(c));
      peer.names.forEach((n) => names.add(n));
    }
    this.#connection.update(channels, names, since);
  }

  #changed() {
    if (this.#connection) this.#update(this.#options.since);
    else if (this.#share) this.#hello(false);
  }

  #hello(replay) {
    if (!this.#share || this.#closed) return;
    this.#share.bus.postMessage({
      t: "hello", from: this.#share.id, channels: [...this.#channels], names: this.#names(),
      since: this.#options.since, replay,
    });
  }

  /** Messages between the tabs of one origin. */
  #receive(m) {
    if (this.#closed) return;
    const share = this.#share;
    if (this.#connection) {
      // Leading: followers tell us what they want.
      if (m.t === "hello") {
        share.peers.set(m.from, { channels: m.channels, names: m.names });
        if (m.replay) share.bus.postMessage({ t: "replay", to: m.from, items: this.#replay(m.channels, m.since) });
        this.#update(m.since);
        share.bus.postMessage({ t: "state", state: this.#state, transport: this.#transport });
      } else if (m.t === "bye") {
        share.peers.delete(m.from);
      }
      return;
    }
    switch (m.t) {
      case "who": this.#hello(share.awaitingReplay); break;
      case "replay":
        if (m.to === share.id && share.awaitingReplay) {
          share.awaitingReplay = false;
          m.items.forEach((item) => this.#item(item));
        }
        break;
      case "item": if (!share.awaitingReplay) this.#item(m.item); else this.#remember(m.item); break;
      case "cursor": this.#cursor = m.cursor; break;
      case "state": this.#setState(m.state, m.transport); break;
      case "error": this.#emit("error", m.info); break;
      case "fatal": this.#emit("error", m.info); this.close(); break;
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

  #remember(item) {
    this.#recent.push(item);
    if (this.#recent.length > RECENT_ITEMS) this.#recent.shift();
  }

  // ---- delivering

  #item(item) {
    this.#remember(item);
    if (item.cursor) {
      this.#cursor = item.cursor;
      if (this.#seen.has(item.cursor)) return;
      this.#seen.add(item.cursor);
      this.#seenOrder.push(item.cursor);
      if (this.#seenOrder.length > SEEN_CURSORS) this.#seen.delete(this.#seenOrder.shift());
    }
    if (item.channel !== null && !this.#channels.has(item.channel)) return; // another tab's
    if (item.type === "gap") {
      this.#emit("gap", { channel: item.channel, missed: item.missed, cursor: item.cursor });
      return;
    }
    const message = new CometMessage(item);
    const name = item.event ?? item.channel;
    if (name !== null && !CLIENT_EVENTS.has(name)) this.#emit(name, message);
    this.#emit("message", message);
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
    for (const listener of [...(this.#listeners.get(name) ?? [])]) {
      try {
        listener(value);
      } catch (error) {
        // One faulty handler must not cost the others their messages.
        (globalThis.reportError ?? console.error)(error);
      }
    }
  }
}

/**
 * One tab's connection: the transport state machine. Falls back on failures
 * that happened, returns to a better transport when it works again, backs
 * off with jitter, and resumes from the last cursor every time.
 */
class Connection {
  #url;
  #options;
  #sink;
  #order;
  #index = 0;
  #failures = 0;
  #attempt = 0;
  #worked = new Set();
  #unavailable = new Set();
  #channels = new Set();
  #names = new Set();
  #since;
  #current = null;
  #generation = 0;
  #timer = null;
  #upgradeTimer = null;
  #upgradeDelay;
  #probeFrom = null;
  #opened = false;
  #stopped = false;
  /** The resume position, shared with the transports. */
  cursor = null;

  constructor(url, options, sink) {
    this.#url = url;
    this.#options = options;
    this.#sink = sink;
    this.#upgradeDelay = options.upgradeAfter;
    const crossOrigin = globalThis.location && url.origin !== location.origin;
    this.#order = options.transports.filter((t) => supported(t, crossOrigin));
    if (!this.#order.length) this.#order = options.transports.slice(0, 1);
  }

  update(channels, names, since) {
    const same = channels.size === this.#channels.size && [...channels].every((c) => this.#channels.has(c));
    names.forEach((n) => this.listen(n));
    this.#since = since ?? this.#since;
    if (same && this.#current) return;
    this.#channels = channels;
    this.#connect();
  }

  /** SSE delivers only the event types it listens for. */
  listen(name) {
    if (this.#names.has(name)) return;
    this.#names.add(name);
    this.#current?.listen?.(name);
  }

  stop() {
    this.#stopped = true;
    this.#generation++;
    this.#current?.close();
    this.#current = null;
    clearTimeout(this.#timer);
    clearTimeout(this.#upgradeTimer);
  }

  #connect() {
    clearTimeout(this.#timer);
    clearTimeout(this.#upgradeTimer);
    this.#current?.close();
    this.#current = null;
    if (this.#stopped || !this.#channels.size) return;
    const generation = ++this.#generation;
    const transport = this.#order[this.#index];
    const live = () => generation === this.#generation;
    const ctx = {
      channels: this.#channels,
      names: () => [...this.#names, ...this.#channels],
      credentials: this.#options.withCredentials,
      timeout: this.#options.timeout,
      openTimeout: this.#options.openTimeout,
      heartbeatTimeout: this.#options.heartbeatTimeout,
      url: (name, extra) => this.#urlFor(name, extra),
      opened: () => live() && this.#onOpened(transport),
      item: (item) => {
        if (!live()) return;
        this.cursor = item.cursor || this.cursor;
        this.#sink.item(item);
      },
      /** `raw`: the payload's JSON text as sent, when the transport has it. */
      envelope: (envelope, raw) => {
        const item = fromEnvelope(envelope, raw); // null for a heartbeat
        if (item) ctx.item(item);
      },
      cursor: (cursor) => {
        if (!live() || !cursor || cursor === this.cursor) return;
        this.cursor = cursor;
        this.#sink.cursor(cursor);
      },
      /** A long-poll answer (fetch, JSONP or the bootstrap poll), with its text when fetched. */
      answer: (body, text) => {
        const raws = text === undefined ? [] : rawPayloads(text, 3);
        let next = 0;
        for (const envelope of body.messages) {
          ctx.envelope(envelope, envelope.type === "message" ? raws[next++] : undefined);
        }
        ctx.cursor(body.cursor);
      },
      ended: () => live() && this.#onEnded(),
      failed: (info) => live() && this.#onFailed(transport, info ?? {}),
    };
    // Streams name no cursor until their first item; without one, a drop
    // before it would resume at the head and lose what came between. A
    // poll that answers at once gives the position to stream from.
    if (this.cursor === null && transport !== "poll" && transport !== "jsonp" && !this.#unavailable.has("poll")) {
      this.#current = bootstrap(ctx, () => {
        if (live()) this.#current = RUNNERS[transport](ctx);
      }, () => this.#unavailable.add("poll"));
    } else {
      this.#current = RUNNERS[transport](ctx);
    }
  }

  #urlFor(transport, extra = {}) {
    const url = new URL(this.#url);
    for (const c of this.#channels) url.searchParams.append("channel", c);
    if (this.cursor) url.searchParams.set("cursor", this.cursor);
    if (this.#since !== undefined) url.searchParams.set("since", String(this.#since));
    url.searchParams.set("transport", transport);
    for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, String(v));
    return url.href;
  }

  #onOpened(transport) {
    this.#opened = true;
    this.#worked.add(transport);
    this.#failures = 0;
    this.#attempt = 0;
    this.#probeFrom = null;
    this.#sink.state("open", transport);
    const best = this.#order.findIndex((t) => !this.#unavailable.has(t));
    if (best >= 0 && best < this.#index) {
      this.#upgradeTimer = setTimeout(() => this.#upgrade(best), this.#upgradeDelay);
    } else {
      this.#upgradeDelay = this.#options.upgradeAfter;
    }
  }

  /** Tries the better transport again; the cursor makes the switch lossless. */
  #upgrade(best) {
    this.#probeFrom = this.#index;
    this.#index = best;
    this.#failures = 0;
    this.#connect();
  }

  /** A clean end (byte budget, server shutdown): resume at once. */
  #onEnded() {
    this.#current = null;
    this.#sink.state("reconnecting", this.#order[this.#index]);
    this.#schedule(Math.random() * Math.min(250, this.#options.minDelay));
  }

  #onFailed(transport, info) {
    this.#current = null;
    if (info.fatal) {
      this.stop();
      this.#sink.fatal(info);
      return;
    }
    if (info.status) this.#sink.error(info);
    if (this.#probeFrom !== null) {
      // The better transport still fails: back to the one that worked.
      this.#index = this.#probeFrom;
      this.#probeFrom = null;
      this.#upgradeDelay = Math.min(this.#upgradeDelay * 2, 300000);
      this.#sink.state("reconnecting", this.#order[this.#index]);
      this.#schedule(0);
      return;
    }
    if (info.unsupported) {
      this.#unavailable.add(transport);
      this.#next();
      this.#sink.state("reconnecting", this.#order[this.#index]);
      this.#schedule(0);
      return;
    }
    if (!info.opened) {
      // Failures before opening decide fallback; one that worked before
      // gets more tries (a restarting server looks the same for a while).
      this.#failures++;
      if (this.#failures >= (this.#worked.has(transport) ? 4 : 2)) this.#next();
    }
    const delay = info.opened ? Math.random() * this.#options.minDelay : this.#backoff();
    this.#sink.state(this.#opened ? "reconnecting" : "connecting", this.#order[this.#index]);
    this.#schedule(delay);
  }

  #next() {
    this.#failures = 0;
    for (let i = 1; i <= this.#order.length; i++) {
      const candidate = (this.#index + i) % this.#order.length;
      if (!this.#unavailable.has(this.#order[candidate])) {
        this.#index = candidate;
        return;
      }
    }
  }

  #backoff() {
    const ceiling = Math.min(this.#options.maxDelay, this.#options.minDelay * 2 ** this.#attempt++);
    return ceiling / 2 + Math.random() * ceiling / 2;
  }

  #schedule(delay) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#connect(), delay);
  }
}

function supported(transport, crossOrigin) {
  switch (transport) {
    case "sse": return typeof EventSource === "function";
    case "stream": return typeof fetch === "function" && typeof TextDecoderStream === "function";
    case "poll": return typeof fetch === "function";
    case "jsonp": return typeof document === "object";
    // parent.<callback> cannot reach a page of another origin.
    case "iframe": return typeof document === "object" && !crossOrigin;
    default: return false;
  }
}

/**
 * A protocol envelope as the item every transport hands on. A JSON payload's
 * text is `raw`, as the server sent it, where the transport has it (fetch
 * streaming and polling); JSON.stringify of the parsed value would round
 * big numbers and drop duplicate keys. JSONP and the forever frame hand over
 * parsed values only.
 */
function fromEnvelope(envelope, raw) {
  if (envelope.type === "gap") {
    return { type: "gap", channel: envelope.channel, missed: envelope.missed ?? null, cursor: envelope.cursor, event: null, data: null };
  }
  if (envelope.type !== "message") return null;
  const data = typeof envelope.data === "string" ? envelope.data : (raw ?? JSON.stringify(envelope.data));
  return { type: "message", channel: envelope.channel, event: envelope.event ?? null, data, cursor: envelope.cursor };
}

/**
 * The JSON text of every `"data"` member at nesting `depth` of `text` (1:
 * the members of an envelope; 3: those of the envelopes in a poll answer),
 * in order. PROTOCOL.md, "Payloads": the server sends the publisher's bytes.
 */
function rawPayloads(text, depth) {
  const found = [];
  let level = 0;
  for (let i = 0; i < text.length;) {
    const c = text[i];
    if (c === '"') {
      const end = skipString(text, i);
      const colon = skipSpace(text, end);
      if (level === depth && text.slice(i, end) === '"data"' && text[colon] === ":") {
        const start = skipSpace(text, colon + 1);
        i = skipValue(text, start);
        found.push(text.slice(start, i));
      } else {
        i = end;
      }
      continue;
    }
    if (c === "{" || c === "[") level++;
    else if (c === "}" || c === "]") level--;
    i++;
  }
  return found;
}

const JSON_SPACE = " \t\r\n";

/** The index after the JSON string that starts at `i`. */
function skipString(text, i) {
  for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === "\\") i++;
  return i + 1;
}

function skipSpace(text, i) {
  while (i < text.length && JSON_SPACE.includes(text[i])) i++;
  return i;
}

/** The index after the JSON value that starts at `i`. */
function skipValue(text, i) {
  let level = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      i = skipString(text, i);
      if (level === 0) return i;
      continue;
    }
    if (c === "{" || c === "[") {
      level++;
    } else if (c === "}" || c === "]") {
      if (level === 0) return i;
      if (--level === 0) return i + 1;
    } else if (level === 0 && (c === "," || JSON_SPACE.includes(c))) {
      return i;
    }
    i++;
  }
  return i;
}

function fetchOptions(ctx, signal) {
  return { signal, cache: "no-store", credentials: ctx.credentials ? "include" : "same-origin" };
}

/** The protocol's JSON error, with what the client should do about it. */
async function refusal(response) {
  let code = `http_${response.status}`;
  let message = response.statusText;
  try {
    const body = await response.json();
    code = body.error ?? code;
    message = body.message ?? message;
  } catch { /* not the protocol's JSON */ }
  const unsupported = code === "bad_transport";
  return { status: response.status, code, message, unsupported, fatal: !unsupported && FATAL_STATUS.has(response.status) };
}

/** Runs `body` and reports a throw (not from our own abort) as a failure. */
function guarded(ctx, abort, state, body) {
  body().catch((error) => {
    if (!abort.signal.aborted || state.silent) ctx.failed({ opened: state.opened, message: String(error) });
  });
}

/**
 * Calls `dead` when `kick` has not been called for `ms`: a stream that is
 * silent past its heartbeats is gone, whatever the socket says.
 */
function watchdog(ms, dead) {
  let timer = setTimeout(dead, ms);
  return {
    kick() {
      clearTimeout(timer);
      timer = setTimeout(dead, ms);
    },
    stop() {
      clearTimeout(timer);
    },
  };
}

/** One poll answered at once, for the cursor to stream from. */
function bootstrap(ctx, then, noPoll) {
  const abort = new AbortController();
  guarded(ctx, abort, {}, async () => {
    const response = await fetch(ctx.url("poll", { timeout: 0 }), fetchOptions(ctx, abort.signal));
    if (!response.ok) {
      const info = await refusal(response);
      if (!info.unsupported) return ctx.failed(info);
      noPoll();
      return then();
    }
    const text = await response.text();
    ctx.answer(JSON.parse(text), text);
    then();
  });
  return { close: () => abort.abort() };
}

const RUNNERS = {
  sse(ctx) {
    const source = new EventSource(ctx.url("sse"), { withCredentials: ctx.credentials });
    const state = { opened: false };
    const onMessage = (e) => ctx.item(fromSse(ctx.channels, e));
    const listening = new Set();
    const listen = (name) => {
      if (listening.has(name) || CLIENT_EVENTS.has(name)) return;
      listening.add(name);
      source.addEventListener(name, onMessage);
    };
    source.addEventListener("message", onMessage);
    ctx.names().forEach(listen);
    source.addEventListener("comet-gap", (e) => {
      const gap = fromEnvelope(JSON.parse(e.data));
      ctx.item({ ...gap, cursor: e.lastEventId || gap.cursor });
    });
    source.onopen = () => {
      state.opened = true;
      ctx.opened();
    };
    source.onerror = () => {
      // EventSource would retry by itself, without backoff or fallback.
      source.close();
      ctx.failed({ opened: state.opened });
    };
    return { close: () => source.close(), listen };
  },

  stream(ctx) {
    const abort = new AbortController();
    const state = { opened: false };
    guarded(ctx, abort, state, async () => {
      const response = await fetch(ctx.url("stream"), fetchOptions(ctx, abort.signal));
      if (!response.ok) return ctx.failed(await refusal(response));
      if (!response.body) return ctx.failed({ unsupported: true });
      state.opened = true;
      ctx.opened();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const watch = (state.watch = watchdog(ctx.heartbeatTimeout, () => {
        state.silent = true;
        abort.abort();
      }));
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read().finally(() => watch.kick());
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 1);
          if (line.trim()) ctx.envelope(JSON.parse(line), rawPayloads(line, 1)[0]);
        }
      }
      watch.stop();
      ctx.ended();
    });
    return {
      close: () => {
        state.watch?.stop();
        abort.abort();
      },
    };
  },

  poll(ctx) {
    const abort = new AbortController();
    const state = { opened: false };
    guarded(ctx, abort, state, async () => {
      while (!abort.signal.aborted) {
        // The first poll answers at once: the route works, and the cursor
        // to hold from is known even when nothing comes for a while.
        const timeout = state.opened ? ctx.timeout : 0;
        const response = await fetch(ctx.url("poll", { timeout }), fetchOptions(ctx, abort.signal));
        if (!response.ok) return ctx.failed({ ...(await refusal(response)), opened: state.opened });
        const text = await response.text();
        const body = JSON.parse(text);
        if (!state.opened) {
          state.opened = true;
          ctx.opened();
        }
        ctx.answer(body, text);
      }
    });
    return { close: () => abort.abort() };
  },

  jsonp(ctx) {
    const callbacksOf = registry();
    const state = { opened: false, closed: false, script: null, timer: null, name: null };
    const finish = () => {
      clearTimeout(state.timer);
      state.script?.remove();
      state.script = null;
      if (state.name) callbacksOf[state.name] = () => {}; // a late answer is ignored
    };
    const next = () => {
      if (state.closed) return;
      const name = `p${++callbacks}`;
      let answered = false;
      state.name = name;
      callbacksOf[name] = (body) => {
        answered = true;
        if (!state.opened) {
          state.opened = true;
          ctx.opened();
        }
        ctx.answer(body);
      };
      const script = document.createElement("script");
      script.async = true;
      // As with fetch polls, the first answers at once.
      const timeout = state.opened ? ctx.timeout : 0;
      script.src = ctx.url("jsonp", { timeout, callback: `${REGISTRY}.${name}` });
      // A script's status is invisible: a refusal is an error event, a
      // missing answer is a load without a call.
      const fail = () => {
        finish();
        delete callbacksOf[name];
        if (!state.closed) ctx.failed({ opened: state.opened });
      };
      script.onerror = fail;
      script.onload = () => {
        if (!answered) return fail();
        finish();
        delete callbacksOf[name];
        next();
      };
      state.timer = setTimeout(fail, (ctx.timeout + 15) * 1000);
      state.script = script;
      document.head.appendChild(script);
    };
    next();
    return { close: () => { state.closed = true; finish(); } };
  },

  iframe(ctx) {
    const callbacksOf = registry();
    const name = `f${++callbacks}`;
    const state = { opened: false };
    const frame = document.createElement("iframe");
    // A cut frame can stay "loading" for good: heartbeats tell it is alive.
    let watch = null;
    const finish = () => {
      clearTimeout(timer);
      watch?.stop();
      frame.onload = null;
      frame.remove();
      delete callbacksOf[name];
    };
    callbacksOf[name] = (envelope) => {
      if (!state.opened) {
        state.opened = true;
        clearTimeout(timer);
        watch = watchdog(ctx.heartbeatTimeout, () => {
          finish();
          ctx.failed({ opened: true });
        });
        ctx.opened();
      }
      watch.kick();
      ctx.envelope(envelope);
    };
    // The stream's document ends at its byte budget or at server shutdown.
    frame.onload = () => {
      finish();
      if (state.opened) ctx.ended();
      else ctx.failed({});
    };
    const timer = setTimeout(() => {
      finish();
      ctx.failed({});
    }, ctx.openTimeout);
    frame.hidden = true;
    frame.title = "comet";
    frame.src = ctx.url("iframe", { callback: `${REGISTRY}.${name}` });
    (document.body ?? document.documentElement).appendChild(frame);
    return { close: finish };
  },
};

/**
 * An SSE event as an item. SSE names the event type only: the event name,
 * or the channel when there is none, so with several channels a message
 * that has an event name cannot say its channel (null).
 */
function fromSse(channels, e) {
  let channel = null;
  let event = null;
  if (channels.size === 1) {
    [channel] = channels;
    event = e.type === channel || e.type === "message" ? null : e.type;
  } else if (channels.has(e.type)) {
    channel = e.type;
  } else {
    event = e.type;
  }
  return { type: "message", channel, event, data: e.data, cursor: e.lastEventId };
}
