// policy.js: which transport to try next and when. Falls back on failures
// that happened, returns to a better transport when it works again, backs
// off with jitter. Decisions only: Connection keeps the timers.

/** A better transport that keeps failing is tried again at most this rarely (ms). */
const MAX_UPGRADE_DELAY = 300000;

/** A server's shutdown window is honoured up to this (ms): a bad one must not strand a client. */
const MAX_SPREAD = 60000;

export class TransportPolicy {
  #options;
  #random;
  #order;
  #index;
  #failures;
  #attempt;
  #worked;
  #unavailable;
  #upgradeDelay;
  #probeFrom;
  #everOpened = false;

  /**
   * @param {string[]} order transports that can work here, best first
   * @param {{minDelay: number, maxDelay: number, upgradeAfter: number}} options
   * @param {() => number} random in [0, 1), for the jitter
   */
  constructor(order, options, random = Math.random) {
    this.#options = options;
    this.#random = random;
    this.reset(order);
  }

  /** Starts over with another order (the transports were forced). */
  reset(order) {
    this.#order = [...order];
    this.#index = 0;
    this.#failures = 0;
    this.#attempt = 0;
    this.#worked = new Set();
    this.#unavailable = new Set();
    this.#upgradeDelay = this.#options.upgradeAfter;
    this.#probeFrom = null;
  }

  /** The transport to connect with. */
  get transport() { return this.#order[this.#index]; }

  /** True once any transport has opened: later attempts are reconnects. */
  get everOpened() { return this.#everOpened; }

  /** The route does not offer `transport`: never try it again. */
  setUnavailable(transport) { this.#unavailable.add(transport); }

  isUnavailable(transport) { return this.#unavailable.has(transport); }

  /**
   * `transport` opened. Returns after how many ms to try the better one
   * again (see `upgrade`), or null when this is the best there is.
   */
  opened(transport) {
    this.#everOpened = true;
    this.#worked.add(transport);
    this.#failures = 0;
    this.#attempt = 0;
    this.#probeFrom = null;
    const best = this.#best();
    if (best >= 0 && best < this.#index) return this.#upgradeDelay;
    this.#upgradeDelay = this.#options.upgradeAfter;
    return null;
  }

  /** Moves to the best transport, to try it again; returns the change. */
  upgrade() {
    const from = this.transport;
    this.#probeFrom = this.#index;
    this.#index = this.#best();
    this.#failures = 0;
    return { from, to: this.transport, reason: "upgrade" };
  }

  /**
   * `transport` failed: `info.opened` after it had opened, `info.unsupported`
   * when the route does not offer it. Returns the delay before the next
   * attempt and, when the next one uses another transport, the change.
   */
  failed(transport, info) {
    if (this.#probeFrom !== null) {
      // The better transport still fails: back to the one that worked.
      this.#index = this.#probeFrom;
      this.#probeFrom = null;
      this.#upgradeDelay = Math.min(this.#upgradeDelay * 2, MAX_UPGRADE_DELAY);
      return { delay: 0, change: this.#change(transport) };
    }
    if (info.unsupported) {
      this.#unavailable.add(transport);
      this.#next();
      return { delay: 0, change: this.#change(transport) };
    }
    if (!info.opened) {
      // Failures before opening decide fallback; one that worked before
      // gets more tries (a restarting server looks the same for a while).
      this.#failures++;
      if (this.#failures >= (this.#worked.has(transport) ? 4 : 2)) this.#next();
    }
    const delay = info.opened ? this.#random() * this.#options.minDelay : this.backoff();
    return { delay, change: this.#change(transport) };
  }

  /** A clean end (byte budget, server shutdown): the delay to resume after. */
  ended() {
    return this.#random() * Math.min(250, this.#options.minDelay);
  }

  /**
   * After a server's shutdown: a random delay within the window it
   * suggests (ms, at most MAX_SPREAD), so that its clients come back spread
   * out; without one, as `ended`.
   */
  spread(window) {
    if (!Number.isFinite(window) || window <= 0) return this.ended();
    return this.#random() * Math.min(window, MAX_SPREAD);
  }

  #change(from) {
    return from === this.transport ? null : { from, to: this.transport, reason: "fallback" };
  }

  #best() {
    return this.#order.findIndex((t) => !this.#unavailable.has(t));
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

  /**
   * The next delay of the back-off: exponential, from minDelay to maxDelay,
   * with jitter in its upper half; it starts over once a transport opens.
   * (For failures that are no transport's: a refused token, say.)
   */
  backoff() {
    const ceiling = Math.min(this.#options.maxDelay, this.#options.minDelay * 2 ** this.#attempt++);
    return ceiling / 2 + this.#random() * ceiling / 2;
  }
}
