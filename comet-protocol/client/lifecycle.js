// lifecycle.js: the page's comings and goings, as a phone or a closed
// laptop makes them. A phone freezes a background page and its sockets can
// die without a word; a network that comes back leaves a retry waiting out
// its back-off. This module only watches: it tells its host when the page
// goes (hidden, frozen, offline, into the back-forward cache) and when it
// is back, and for how long it was away. Connection decides what that
// means (connection.js, `wake`).

/**
 * Watches `env` (a window) for its host:
 *   away()                 the page was hidden, frozen, went offline or
 *                          into the back-forward cache
 *   back({ away, force })  it is back after `away` ms; `force`: whatever
 *                          the time, the connection may be gone (the network
 *                          came back, the page left the back-forward cache)
 */
export class Lifecycle {
  #env;
  #doc;
  #host;
  #awaySince = null; // when the page went, while it is gone
  #listeners = [];

  constructor(host, env = globalThis) {
    this.#host = host;
    this.#env = env;
    this.#doc = env.document;
  }

  /** How long the page has been away (hidden, frozen, offline), in ms; 0 while it is here. */
  get away() {
    return this.#awaySince === null ? 0 : Date.now() - this.#awaySince;
  }

  /** True while the document is hidden (a background tab, a locked phone). */
  get hidden() {
    return this.#doc?.visibilityState === "hidden";
  }

  start() {
    const doc = this.#doc;
    if (this.hidden) this.#awaySince = Date.now();
    this.#on(doc, "visibilitychange", () => (this.hidden ? this.#away() : this.#back(false)));
    // A frozen page runs nothing: its connection is as good as hidden.
    this.#on(doc, "freeze", () => this.#away());
    this.#on(doc, "resume", () => this.#back(false));
    this.#on(this.#env, "offline", () => this.#away());
    this.#on(this.#env, "online", () => this.#back(true));
    this.#on(this.#env, "pagehide", (e) => e.persisted && this.#away());
    this.#on(this.#env, "pageshow", (e) => e.persisted && this.#back(true));
  }

  stop() {
    for (const [target, name, listener] of this.#listeners) target.removeEventListener(name, listener);
    this.#listeners = [];
  }

  #on(target, name, listener) {
    if (typeof target?.addEventListener !== "function") return;
    target.addEventListener(name, listener);
    this.#listeners.push([target, name, listener]);
  }

  #away() {
    this.#awaySince ??= Date.now();
    this.#host.away();
  }

  #back(force) {
    const now = Date.now();
    const away = this.#awaySince === null ? 0 : now - this.#awaySince;
    // Resumed but still hidden: away again from now.
    this.#awaySince = this.hidden ? now : null;
    this.#host.back({ away, force });
  }
}
