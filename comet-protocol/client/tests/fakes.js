// Fakes of what a browser gives comet.js: timers, EventSource, fetch,
// BroadcastChannel and Web Locks. Each test installs what it needs on
// globalThis with `install` and gets the originals back after it.

import { REGISTRY } from "../protocol.js";

const realImmediate = globalThis.setImmediate;

/** Lets every pending promise, stream read and bus message run. */
export async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => realImmediate(resolve));
}

/** Resolves once `check()` is true, letting pending work run meanwhile. */
export async function until(check) {
  for (let i = 0; !check(); i++) {
    if (i > 1000) throw new Error(`never true: ${check}`);
    await new Promise((resolve) => realImmediate(resolve));
  }
}

/** Sets `globals` on globalThis for the rest of test `t`. */
export function install(t, globals) {
  const saved = Object.entries(globals).map(([key]) => [key, Object.getOwnPropertyDescriptor(globalThis, key)]);
  for (const [key, value] of Object.entries(globals)) {
    Object.defineProperty(globalThis, key, { value, configurable: true, writable: true });
  }
  t.after(() => {
    for (const [key, descriptor] of saved) {
      if (descriptor) Object.defineProperty(globalThis, key, descriptor);
      else delete globalThis[key];
    }
  });
}

/** setTimeout and clearTimeout on a clock that moves only with `tick`. */
export class Clock {
  now = 0;
  #timers = new Map();
  #next = 1;

  install(t) {
    // Date.now too: lifecycle.js times how long a page was away.
    const realNow = Date.now;
    Date.now = () => this.now;
    t.after(() => { Date.now = realNow; });
    install(t, {
      setTimeout: (fn, ms = 0, ...args) => {
        const id = this.#next++;
        this.#timers.set(id, { at: this.now + Math.max(0, Number(ms) || 0), fn, args });
        return id;
      },
      clearTimeout: (id) => this.#timers.delete(id),
    });
    return this;
  }

  /** The delays of the timers set, from now, soonest first. */
  pending() {
    return [...this.#timers.values()].map((timer) => timer.at - this.now).sort((a, b) => a - b);
  }

  /** Moves `ms` on, running each timer due on the way, in order. */
  async tick(ms) {
    const end = this.now + ms;
    for (;;) {
      await settle();
      let due = null;
      for (const [id, timer] of this.#timers) {
        if (timer.at <= end && (!due || timer.at < due[1].at)) due = [id, timer];
      }
      if (!due) break;
      this.#timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn(...due[1].args);
    }
    this.now = end;
    await settle();
  }
}

/** An EventSource the test drives: `open`, `emit`, `fail`. */
export class FakeEventSource {
  static instances = [];
  readyState = 0;
  onopen = null;
  onerror = null;
  #listeners = new Map();

  constructor(url, init = {}) {
    this.url = new URL(url);
    this.withCredentials = Boolean(init.withCredentials);
    FakeEventSource.instances.push(this);
  }

  /** The newest one. */
  static get last() {
    return FakeEventSource.instances.at(-1);
  }

  addEventListener(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
  }

  /** The types with a listener. */
  get listening() {
    return [...this.#listeners.keys()];
  }

  close() {
    this.readyState = 2;
  }

  get closed() {
    return this.readyState === 2;
  }

  open() {
    this.readyState = 1;
    this.onopen?.({ type: "open" });
  }

  /** An event as the server sends it: dispatched only to listeners of its type. */
  emit(type, data, lastEventId = "") {
    if (this.closed) return;
    for (const listener of this.#listeners.get(type) ?? []) listener({ type, data, lastEventId });
  }

  fail() {
    this.onerror?.({ type: "error" });
  }
}

/**
 * fetch, answered by the test: `await net.next()` is the next request,
 * answered with `json`, `status` or `stream`.
 */
export class FakeNetwork {
  requests = [];
  #unclaimed = [];
  #waiting = [];

  fetch = (input, init = {}) => new Promise((resolve, reject) => {
    const request = new FakeRequest(input, init, resolve, reject);
    this.requests.push(request);
    const waiter = this.#waiting.shift();
    if (waiter) waiter(request);
    else this.#unclaimed.push(request);
  });

  /** The next request not handed out yet (waits for it). */
  next() {
    const request = this.#unclaimed.shift();
    if (request) return Promise.resolve(request);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Requests made but not handed out by `next`. */
  get unclaimed() {
    return this.#unclaimed.length;
  }
}

class FakeRequest {
  aborted = false;
  #resolve;
  #reject;

  constructor(input, init, resolve, reject) {
    this.url = new URL(input);
    this.init = init;
    this.#resolve = resolve;
    this.#reject = reject;
    init.signal?.addEventListener("abort", () => {
      this.aborted = true;
      reject(new DOMException("aborted", "AbortError"));
    });
  }

  get transport() {
    return this.url.searchParams.get("transport");
  }

  param(name) {
    return this.url.searchParams.get(name);
  }

  /** Answers with `body` as JSON text (a string is sent as it is). */
  json(body, status = 200) {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    this.#resolve(new Response(text, { status, headers: { "content-type": "application/json" } }));
  }

  /** Refuses with the protocol's JSON error. */
  refuse(status, error) {
    this.json({ error, message: error }, status);
  }

  /** Fails as a network error does. */
  fail() {
    this.#reject(new TypeError("network error"));
  }

  /** Answers 200 with a body the test writes: `push(text)`, `end()`, `cut()`. */
  stream() {
    let controller;
    const body = new ReadableStream({ start: (c) => { controller = c; } });
    // As fetch does, an abort errors the body too.
    this.init.signal?.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
    this.#resolve(new Response(body, { status: 200, headers: { "content-type": "application/x-ndjson" } }));
    const encoder = new TextEncoder();
    return {
      push: (text) => controller.enqueue(encoder.encode(text)),
      end: () => controller.close(),
      cut: () => controller.error(new TypeError("network error")),
    };
  }
}

/**
 * The tabs of one origin: a BroadcastChannel that delivers to the other
 * instances of its name, and Web Locks granted in the order asked.
 */
export function fakeOrigin() {
  const buses = new Map();
  class BroadcastChannel {
    onmessage = null;
    #closed = false;
    constructor(name) {
      this.name = name;
      if (!buses.has(name)) buses.set(name, new Set());
      buses.get(name).add(this);
    }
    postMessage(data) {
      if (this.#closed) throw new DOMException("closed", "InvalidStateError");
      const copy = structuredClone(data);
      for (const other of buses.get(this.name)) {
        if (other !== this) realImmediate(() => other.#deliver(copy));
      }
    }
    #deliver(data) {
      if (!this.#closed) this.onmessage?.({ data });
    }
    close() {
      this.#closed = true;
      buses.get(this.name).delete(this);
    }
  }
  const queues = new Map();
  const held = new Set();
  const grant = (name) => {
    if (held.has(name)) return;
    const waiter = queues.get(name)?.shift();
    if (!waiter) return;
    held.add(name);
    Promise.resolve()
      .then(() => waiter.callback({ name }))
      .then(waiter.resolve, waiter.reject)
      .finally(() => {
        held.delete(name);
        grant(name);
      });
  };
  const locks = {
    request(name, options, callback) {
      return new Promise((resolve, reject) => {
        const waiter = { callback, resolve, reject };
        if (!queues.has(name)) queues.set(name, []);
        queues.get(name).push(waiter);
        options.signal?.addEventListener("abort", () => {
          const queue = queues.get(name);
          const at = queue.indexOf(waiter);
          if (at >= 0) {
            queue.splice(at, 1);
            reject(new DOMException("aborted", "AbortError"));
          }
        });
        grant(name);
      });
    },
    /** Test only: who holds or waits for `name`. */
    held: (name) => held.has(name),
    waiting: (name) => queues.get(name)?.length ?? 0,
  };
  return { BroadcastChannel, navigator: { locks } };
}

/** A window's page events for Tabs: `dispatch("pagehide")`. */
export function fakeWindow(origin) {
  const listeners = new Map();
  return {
    ...origin,
    addEventListener(type, fn) {
      if (!listeners.has(type)) listeners.set(type, new Set());
      listeners.get(type).add(fn);
    },
    removeEventListener(type, fn) {
      listeners.get(type)?.delete(fn);
    },
    dispatch(type) {
      for (const fn of listeners.get(type) ?? []) fn({ type });
    },
  };
}

/** A document whose script tags and frames the test answers. */
export function fakeDocument(t) {
  const appended = [];
  const element = () => ({ remove() { this.removed = true; } });
  install(t, {
    document: {
      createElement: element,
      head: { appendChild: (e) => appended.push(e) },
      body: { appendChild: (e) => appended.push(e) },
    },
    [REGISTRY]: undefined,
  });
  return appended;
}

/** The callback an element's `src` names. */
export function callbackOf(element) {
  return globalThis[REGISTRY][new URL(element.src).searchParams.get("callback").split(".")[1]];
}

/** A message envelope (PROTOCOL.md, "The envelope"). */
export function message(channel, n, extra = {}) {
  return { type: "message", channel, data: { n }, cursor: `c${n}`, ...extra };
}

/**
 * A browser for test `t`: a clock, EventSource, fetch and, with `share`,
 * one origin's BroadcastChannel and Web Locks (else none, so that no
 * client shares).
 */
export function fakeBrowser(t, { share = false } = {}) {
  const clock = new Clock().install(t);
  FakeEventSource.instances = [];
  const net = new FakeNetwork();
  const origin = share ? fakeOrigin() : { BroadcastChannel: undefined, navigator: undefined };
  install(t, { EventSource: FakeEventSource, fetch: net.fetch, ...origin });
  return { clock, net, origin, sources: FakeEventSource.instances };
}

/**
 * A page's comings and goings (lifecycle.js): a document that is shown or
 * hidden, frozen or resumed, and the window's online, offline, pagehide
 * and pageshow. Installs the document as globalThis.document (a client
 * made now keeps it: make the next tab after `page` again) and the window's
 * events on globalThis.
 */
export function fakePage(t) {
  const doc = new EventTarget();
  doc.visibilityState = "visible";
  if (typeof globalThis.addEventListener !== "function") {
    const win = new EventTarget();
    install(t, {
      addEventListener: win.addEventListener.bind(win),
      removeEventListener: win.removeEventListener.bind(win),
      dispatchEvent: win.dispatchEvent.bind(win),
    });
  }
  install(t, { document: doc });
  const fire = (target, type, extra = {}) => target.dispatchEvent(Object.assign(new Event(type), extra));
  return {
    doc,
    hide() { doc.visibilityState = "hidden"; fire(doc, "visibilitychange"); },
    show() { doc.visibilityState = "visible"; fire(doc, "visibilitychange"); },
    freeze() { fire(doc, "freeze"); },
    resume() { fire(doc, "resume"); },
    offline() { fire(globalThis, "offline"); },
    online() { fire(globalThis, "online"); },
    pagehide(persisted) { fire(globalThis, "pagehide", { persisted }); },
    pageshow(persisted) { fire(globalThis, "pageshow", { persisted }); },
  };
}

/**
 * A client's first connection in `browser` (fakeBrowser's): the bootstrap
 * poll answered with `cursor`, then its EventSource, opened.
 */
export async function openSse({ net, clock, sources }, cursor = "c0") {
  (await net.next()).json({ cursor, messages: [] });
  await clock.tick(0);
  const source = sources.at(-1);
  source.open();
  return source;
}
