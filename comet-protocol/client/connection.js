// connection.js: one tab's connection. Opens the transport the policy
// picks, resumes from the last cursor every time (after a drop, a switch of
// transport, a server restart, an expired token), and reports what happens
// as messages:
//   { t: "item", item }            a message or a gap, with its cursor; a
//                                  presence list, join or leave, without; an
//                                  end or a channel added, with (already
//                                  applied to the connection: see #access)
//   { t: "cursor", cursor }        the position moved without an item
//   { t: "state", state, transport }
//   { t: "event", name, value }    error, transport, reconnect (comet.d.ts)
//   { t: "fatal", info }           a refusal no retry can mend; stopped
//
// Tokens (PROTOCOL.md, "Access"): the `token` option, a string or a
// function, goes as `token=` on every request. A function is called before
// the first connect, when the channels grow (it is told them), after an
// `end` for `expired`, after a 401 (or a 403 `forbidden`: a new token may
// grant more), and after a transport that cannot see a status (EventSource,
// script tags) failed to open, since that may have been a 401. Refusals of
// fresh tokens are retried with back-off; the MAX_REFUSALS-th in a row is
// fatal.

import { fromEnvelope, rawPayloads } from "./protocol.js";
import { TransportPolicy } from "./policy.js";
import { RUNNERS, supported } from "./transports.js";
import { bootstrap } from "./transport-fetch.js";

/**
 * Refusals in a row, each after getting a new token, that stop the client:
 * a token endpoint that keeps handing out tokens the server refuses must
 * not make it retry for ever.
 */
const MAX_REFUSALS = 3;

/**
 * A wake this soon after one that reconnected is the same return (every
 * tab hears `online`; a follower's wake may cross the leader's own): the
 * connection just made is not torn down again.
 */
const WAKE_QUIET_MS = 1000;

/** Transports that cannot tell a refusal (a 401) from a network failure. */
const BLIND = new Set(["sse", "jsonp", "iframe"]);

/** Those of `transports` that can work here (at least the first). */
function workable(url, transports) {
  const crossOrigin = Boolean(globalThis.location) && url.origin !== globalThis.location.origin;
  const order = transports.filter((t) => supported(t, crossOrigin));
  return order.length ? order : transports.slice(0, 1);
}

export class Connection {
  #url;
  #options;
  #report;
  #policy;
  #channels = new Set();
  #names = new Set();
  #presence = false;
  #since;
  #current = null;
  #currentOpened = false;
  #generation = 0;
  #timer = null;
  #upgradeTimer = null;
  #stopped = false;
  #token = null; // what goes as token=
  #tokenStale = false; // the token function is to be called before the next connect
  #tokenRequest = null; // its answer, while it is being called
  #refusals = 0; // 401s (and forbidden) in a row, with a token function
  #paused = false; // closed by pause() until wake()
  #waiting = null; // why the pending retry waits: see #retry
  #wokeAt = -Infinity; // when a wake last reconnected
  /** The resume position, shared with the transports. */
  cursor = null;

  /**
   * @param {URL} url the comet route
   * @param {object} options the client's options (comet.d.ts)
   * @param {(message: object) => void} report told what happens (see above)
   * @param {() => number} [random] for the jitter
   */
  constructor(url, options, report, random = Math.random) {
    this.#url = url;
    this.#options = options;
    this.#report = report;
    this.#policy = new TransportPolicy(workable(url, options.transports), options, random);
    if (typeof options.token === "string") this.#token = options.token;
    this.#tokenStale = this.#refreshes();
  }

  /**
   * Follows `channels` (reconnecting if they changed) and listens for
   * `names`; with `presence`, asks for presence too (`presence=1`,
   * reconnecting if it did not). Once asked, presence stays until the next
   * reconnect: dropping it is worth no reconnect of its own.
   */
  update(channels, names, since, presence = false) {
    const same = channels.size === this.#channels.size && [...channels].every((c) => this.#channels.has(c));
    names.forEach((n) => this.listen(n));
    this.#since = since ?? this.#since;
    const morePresence = presence && !this.#presence;
    this.#presence = presence;
    // Nothing new to ask: an open connection goes on, a retry keeps its wait.
    if (same && !morePresence && (this.#current || this.#waiting !== null)) return;
    // The token function is told the channels: more of them, a new token.
    if ([...channels].some((c) => !this.#channels.has(c))) this.#tokenStale ||= this.#refreshes();
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

  /** Closes the transport as a network failure would; what follows is the usual retry. */
  drop() {
    if (this.#stopped || !this.#current) return;
    const opened = this.#currentOpened;
    this.#generation++; // the dropped transport's late reports are ignored
    this.#current.close();
    this.#onFailed(this.#policy.transport, { opened });
  }

  /**
   * The page is back (shown, online, resumed, restored from the
   * back-forward cache) after `away` ms hidden, frozen or offline. A paused
   * connection reconnects; a retry waiting out its back-off starts now
   * (not one spreading a server's shutdown: that wait is the point); an
   * open connection reconnects from its cursor when it may have died in
   * silence: away `staleAfter` ms or more, or `force` (the network came
   * back, the page left the back-forward cache). Returns true if it
   * reconnects.
   */
  wake({ away = 0, force = false } = {}) {
    if (this.#stopped || !this.#channels.size) return false;
    if (this.#paused) {
      this.#paused = false;
      this.#retry(0, "wake");
      return true;
    }
    if (this.#waiting === "shutdown" || this.#waiting === "wake") return false;
    if (Date.now() - this.#wokeAt < WAKE_QUIET_MS) return false;
    if (this.#waiting !== null) {
      this.#wokeAt = Date.now();
      this.#retry(0, "wake");
      return true;
    }
    if (!force && away < this.#options.staleAfter) return false;
    this.#wokeAt = Date.now();
    // This transport's late reports are ignored; the cursor resumes it.
    this.#generation++;
    this.#current?.close();
    this.#current = null;
    this.#retry(0, "wake");
    return true;
  }

  /**
   * Closes the connection until `wake` (`pauseWhenHidden`: no tab shows
   * it). The cursor stays: the reconnect loses nothing history holds.
   */
  pause() {
    if (this.#stopped || this.#paused) return;
    this.#paused = true;
    this.#generation++;
    this.#current?.close();
    this.#current = null;
    this.#waiting = null;
    clearTimeout(this.#timer);
    clearTimeout(this.#upgradeTimer);
    this.#report({ t: "state", state: "paused", transport: this.#policy.transport });
  }

  /** True between `pause` and `wake`. */
  get paused() { return this.#paused; }

  /** Reconnects at once from `cursor`. */
  resume(cursor) {
    this.cursor = cursor;
    this.#connect();
  }

  /** Uses `transports` from now on, best first, reconnecting at once. */
  setTransports(transports) {
    const from = this.#policy.transport;
    this.#policy.reset(workable(this.#url, transports));
    if (this.#policy.transport !== from) {
      this.#event("transport", { from, to: this.#policy.transport, reason: "forced" });
    }
    this.#connect();
  }

  #connect() {
    clearTimeout(this.#timer);
    clearTimeout(this.#upgradeTimer);
    this.#current?.close();
    this.#current = null;
    this.#currentOpened = false;
    this.#waiting = null;
    if (this.#stopped || this.#paused || !this.#channels.size) return;
    const generation = ++this.#generation;
    if (this.#tokenStale) this.#withToken(generation);
    else this.#open(generation);
  }

  /** True when the client gets its tokens from a function. */
  #refreshes() {
    return typeof this.#options.token === "function";
  }

  /**
   * Calls the token function (once for any number of connects waiting on
   * it), then opens connection `generation` unless another replaced it.
   * A throw, a rejection or no token is an error event and a retry with
   * back-off, as a network failure is (the token endpoint may be offline).
   */
  #withToken(generation) {
    this.#tokenRequest ??= Promise.resolve()
      .then(() => this.#options.token({ channels: [...this.#channels] }))
      .then((token) => {
        if (typeof token !== "string" || !token) throw new TypeError("comet: the token function gave no token");
        this.#token = token;
        this.#tokenStale = false;
      })
      .finally(() => { this.#tokenRequest = null; });
    this.#tokenRequest.then(() => {
      if (generation === this.#generation && !this.#stopped) this.#open(generation);
    }, (error) => {
      if (generation !== this.#generation || this.#stopped) return;
      this.#event("error", { code: "token_failed", message: String(error?.message ?? error), fatal: false });
      this.#retry(this.#policy.backoff(), "failed");
    });
  }

  #open(generation) {
    const transport = this.#policy.transport;
    const live = () => generation === this.#generation;
    const ctx = {
      channels: this.#channels,
      names: () => [...this.#names, ...this.#channels],
      credentials: this.#options.withCredentials,
      timeout: this.#options.timeout,
      openTimeout: this.#options.openTimeout,
      heartbeatTimeout: this.#options.heartbeatTimeout,
      url: (name, extra) => this.#urlFor(name, extra),
      opened: () => {
        if (!live()) return;
        this.#currentOpened = true;
        this.#onOpened(transport);
      },
      item: (item) => {
        if (!live()) return;
        this.cursor = item.cursor || this.cursor;
        const then = this.#access(item);
        this.#report({ t: "item", item });
        then?.();
      },
      /** `raw`: the payload's JSON text as sent, when the transport has it. */
      envelope: (envelope, raw) => {
        const item = fromEnvelope(envelope, raw); // null for a heartbeat
        if (item) ctx.item(item);
      },
      cursor: (cursor) => {
        if (!live() || !cursor || cursor === this.cursor) return;
        this.cursor = cursor;
        this.#report({ t: "cursor", cursor });
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
    if (this.cursor === null && transport !== "poll" && transport !== "jsonp" && !this.#policy.isUnavailable("poll")) {
      this.#current = bootstrap(ctx, () => {
        if (live()) this.#current = RUNNERS[transport](ctx);
      }, () => this.#policy.setUnavailable("poll"));
    } else {
      this.#current = RUNNERS[transport](ctx);
    }
  }

  #urlFor(transport, extra = {}) {
    const url = new URL(this.#url);
    for (const c of this.#channels) url.searchParams.append("channel", c);
    if (this.cursor) url.searchParams.set("cursor", this.cursor);
    if (this.#since !== undefined) url.searchParams.set("since", String(this.#since));
    if (this.#presence) url.searchParams.set("presence", "1");
    if (this.#token !== null) url.searchParams.set("token", this.#token);
    url.searchParams.set("transport", transport);
    for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, String(v));
    return url.href;
  }

  #event(name, value) {
    this.#report({ t: "event", name, value });
  }

  /**
   * Applies an end or a channel added (PROTOCOL.md, "Access") to this
   * connection before it is reported; returns what to do after the report.
   * An end of one channel: it is no longer asked for (the stream goes on).
   * A channel added: asked for at every reconnect, and listened for over
   * SSE. An end of everything for `expired`: a new token, then the resume
   * from the end's cursor; for `shutdown`: the resume, after a random part
   * of the window the server suggests; for any other reason: stop, for
   * good.
   */
  #access(item) {
    if (item.type === "subscribed") {
      this.#channels.add(item.channel);
      this.listen(item.channel);
      return null;
    }
    if (item.type !== "end") return null;
    if (item.channel !== null) {
      this.#channels.delete(item.channel);
      return null;
    }
    if (item.reason !== "expired" && item.reason !== "shutdown") {
      this.stop();
      return null;
    }
    // This transport's late reports (the stream's close) are ignored.
    this.#generation++;
    this.#current?.close();
    this.#current = null;
    if (item.reason === "shutdown") {
      return () => {
        if (!this.#stopped) this.#retry(this.#policy.spread(item.reconnectWithin), "shutdown");
      };
    }
    return () => {
      if (this.#stopped) return;
      this.#tokenStale = this.#refreshes();
      this.#retry(this.#policy.ended(), "expired");
    };
  }

  #onOpened(transport) {
    this.#refusals = 0;
    const upgradeAfter = this.#policy.opened(transport);
    this.#report({ t: "state", state: "open", transport });
    if (upgradeAfter !== null) this.#upgradeTimer = setTimeout(() => this.#upgrade(), upgradeAfter);
  }

  /** Tries the better transport again; the cursor makes the switch lossless. */
  #upgrade() {
    this.#event("transport", this.#policy.upgrade());
    this.#connect();
  }

  #onEnded() {
    this.#current = null;
    this.#retry(this.#policy.ended(), "ended");
  }

  #onFailed(transport, info) {
    this.#current = null;
    if (info.code === "bad_cursor" && this.cursor) {
      // The server no longer takes a cursor it wrote (its nodes' shared key
      // changed: Redis lost it while every node restarted): start again at
      // the head, and say so with a gap of unknown size in every channel,
      // rather than stop for good.
      this.cursor = null;
      this.#event("error", { ...info, fatal: false });
      this.#report({ t: "item", item: { type: "gap", channel: null, missed: null, cursor: null } });
      this.#retry(0, "failed");
      return;
    }
    if ((info.status === 401 || info.code === "forbidden") && this.#refreshes()) {
      // A new token may mend it: get one, after the back-off, a few times.
      if (++this.#refusals < MAX_REFUSALS) {
        this.#tokenStale = true;
        this.#event("error", { ...info, fatal: false });
        this.#retry(this.#policy.backoff(), "failed");
        return;
      }
      info = { ...info, fatal: true };
    }
    if (!info.opened && info.status === undefined && BLIND.has(transport) && this.#refreshes()) {
      this.#tokenStale = true; // it may have been a 401
    }
    if (info.fatal) {
      this.stop();
      this.#report({ t: "fatal", info });
      return;
    }
    if (info.status) this.#event("error", info);
    const { delay, change } = this.#policy.failed(transport, info);
    if (change) this.#event("transport", change);
    this.#retry(delay, info.opened ? "dropped" : "failed");
  }

  /** Connects after `delay` ms; `reason` is told, and kept until then (see `wake`). */
  #retry(delay, reason) {
    if (this.#paused) return;
    const transport = this.#policy.transport;
    this.#report({ t: "state", state: this.#policy.everOpened ? "reconnecting" : "connecting", transport });
    this.#event("reconnect", { transport, delay, reason });
    clearTimeout(this.#timer);
    this.#waiting = reason;
    this.#timer = setTimeout(() => this.#connect(), delay);
  }
}
