// Types for comet.js, the browser client for the comet wire protocol v1.4.

/** A transport, best first: SSE, fetch streaming (ndjson), long polling,
 * JSONP script tags, the forever frame (same origin only). */
export type Transport = "sse" | "stream" | "poll" | "jsonp" | "iframe";

/** The connection's life: `connecting` until first open, `open`,
 * `reconnecting` after a drop, `paused` while no tab shows it
 * (`pauseWhenHidden`), `closed` after `close()`, a fatal refusal or the
 * server's `end` of the subscription. */
export type State = "connecting" | "open" | "reconnecting" | "paused" | "closed";

export interface CometOptions {
  /** Channels to receive (1 to 128 of `[A-Za-z0-9_.:@/-]`, not `comet-...`,
   * `error` or `open`). */
  channels?: string[];
  /** Transports to try, in order of preference. Default: all, best first. */
  transports?: Transport[];
  /** Where channels without a cursor start: the head (default), `"oldest"`
   * retained message, or the last N messages. */
  since?: "head" | "oldest" | number;
  /** A cursor to resume from (say, one rendered into the page). */
  cursor?: string;
  /** Send cookies to a push host on another origin (CORS with credentials). */
  withCredentials?: boolean;
  /** Share one connection between the tabs of this origin (default true;
   * needs Web Locks and BroadcastChannel, else each tab connects). */
  share?: boolean;
  /** Long-poll hold in seconds (the server clamps it). Default 25. */
  timeout?: number;
  /** Reconnect backoff bounds in ms, with jitter. Defaults 500 and 15000. */
  minDelay?: number;
  maxDelay?: number;
  /** After falling back, try the better transport again after this many ms
   * (doubling while it still fails). Default 30000. */
  upgradeAfter?: number;
  /** A forever frame that gives no sign of life in this many ms failed. Default 10000. */
  openTimeout?: number;
  /** A stream or forever frame silent this long (no message, no heartbeat)
   * is presumed dead and reconnected. Default 45000, three of the server's
   * default 15 s heartbeats; keep it above the route's heartbeat. (SSE
   * heartbeats are comments EventSource never shows, so SSE relies on the
   * browser noticing the drop.) */
  heartbeatTimeout?: number;
  /**
   * A page away (hidden, frozen, offline) this long may have lost its
   * connection in silence: a phone freezes background pages and kills
   * their sockets without a word. When the page is back, the client
   * reconnects from its cursor at once (nothing lost), rather than wait for
   * `heartbeatTimeout`, or for ever over SSE. Whatever the time away, a
   * retry waiting out its back-off (not one spreading a server's shutdown)
   * tries at once when the page is back,
   * and an open connection reconnects when the network comes back
   * (`online`) or the page leaves the back-forward cache. Default 20000,
   * above the server's default 15 s heartbeat.
   */
  staleAfter?: number;
  /**
   * Close the connection while the page is hidden (every sharing tab is),
   * and resume from the cursor when it shows again: nothing is lost that
   * history still holds, and a background tab costs the server nothing
   * (its user leaves presence after the grace window). Default false.
   */
  pauseWhenHidden?: boolean;
  /**
   * A token for routes that take tokens (PROTOCOL.md, "Access"), sent as
   * `token=` on every request (an EventSource cannot send headers). A
   * function is called, and awaited, before the first connect, before a
   * reconnect that asks for more channels than the last, after the
   * server ended the subscription because the token expired (the client
   * then resumes from where it was: nothing lost, nothing twice), after a
   * 401 or a 403 `forbidden`, and after an EventSource or script tag failed
   * to open (it cannot tell a 401). It gets the channels the connection
   * will ask for: with tab sharing, the leading tab's function gets every
   * tab's. Three refusals in a row, each with a fresh token, are fatal; a
   * function that throws or rejects is an `error` (`token_failed`) and a
   * retry with back-off. Without a function, a 401 is fatal, as a 403 is.
   * Tab sharing: tabs with token functions share whatever strings they
   * return; tabs with a string share only with the same string.
   */
  token?: string | ((request: TokenRequest) => string | Promise<string>);
}

/** What the `token` function is told. */
export interface TokenRequest {
  /** The channels the connection will ask for, every sharing tab's. */
  readonly channels: string[];
}

/** A message, the same whichever transport carried it. */
export declare class CometMessage {
  /** The channel; null only over SSE for a message with an event name on a
   * subscription of several channels (SSE names the event type alone). */
  readonly channel: string | null;
  /** The publisher's event name, or null. */
  readonly event: string | null;
  /** The payload's text, like `MessageEvent.data`: as published over SSE
   * (line breaks as LF), fetch streaming (line breaks between JSON tokens as
   * spaces) and polling. JSONP and the forever frame hand over a parsed
   * value, so there a JSON payload is `JSON.stringify` of it; `json()` is
   * the same everywhere. */
  readonly data: string;
  /** The position right after this message. */
  readonly cursor: string;
  /** The payload parsed as JSON. */
  json<T = unknown>(): T;
}

/** Messages were lost to this client: history no longer held them. */
export interface Gap {
  /**
   * The channel, or null for every channel: the server refused the cursor
   * (400 `bad_cursor`, as after its nodes' shared key changed), and the
   * client started again at the head.
   */
  readonly channel: string | null;
  /** How many, or null when unknown (the channel restarted: a new epoch). */
  readonly missed: number | null;
  /** The cursor after the gap; null when the client started at the head. */
  readonly cursor: string | null;
}

export interface StateChange {
  readonly state: State;
  readonly transport: Transport | null;
}

/** The connection moved to another transport. */
export interface TransportChange {
  readonly from: Transport;
  readonly to: Transport;
  /** `fallback`: `from` failed here (or the route does not offer it);
   * `upgrade`: trying the better `to` again, `upgradeAfter` ms after falling
   * back; `forced`: `setTransports`. */
  readonly reason: "fallback" | "upgrade" | "forced";
}

/** The next connection attempt is scheduled. */
export interface Reconnect {
  /** The transport it will use. */
  readonly transport: Transport;
  /** Milliseconds until it starts: the back-off with jitter after a failure. */
  readonly delay: number;
  /** `ended`: the server ended the stream cleanly (byte budget);
   * `dropped`: an open connection was lost (or `drop()`); `failed`: it
   * could not open (or its token was refused); `expired`: the server ended
   * the subscription at its token's expiry (a new token comes first);
   * `shutdown`: the server is shutting down (the delay is a random part of
   * the window it suggested); `wake`: the page is back (see `staleAfter`)
   * or unpaused. */
  readonly reason: "ended" | "dropped" | "failed" | "expired" | "shutdown" | "wake";
}

/** Why the server ended a subscription or one channel of it. */
export type EndReason = "expired" | "disconnected" | "unsubscribed" | "closed" | "shutdown";

/**
 * The server ended one channel of the subscription (the client no longer
 * asks for it, and its presence set is emptied), or all of it (`channel`
 * null: the client is closed, and reconnects no more). An expiry and a
 * server's shutdown are not told: the client gets a new token, or waits a
 * random part of the server's window, and resumes.
 */
export interface End {
  readonly channel: string | null;
  /** `disconnected`: the app ended the user's subscriptions;
   * `unsubscribed`: it took the channel out of them; `closed`: it closed
   * the channel (its history too). A reason this client does not know
   * ends as these do. */
  readonly reason: EndReason | (string & {});
  /** The cursor after it (it no longer names an ended channel). */
  readonly cursor: string | null;
}

/** The server added a channel to the user's subscriptions: this client now
 * receives it (and asks for it at every reconnect), from its head. */
export interface Subscribed {
  readonly channel: string;
  /** The cursor after it, naming the channel. */
  readonly cursor: string;
}

/** A refusal from the server (the protocol's JSON error), or a fatal one. */
export interface CometError {
  readonly status?: number;
  /** The protocol's error code (`unauthorized`, ...), or `token_failed`:
   * the `token` function threw, rejected or gave no string. */
  readonly code?: string;
  readonly message?: string;
  readonly fatal?: boolean;
}

/** A user present on a channel (`comet.presence(channel)`). */
export interface PresenceMember {
  /** The user id the server gave the subscriptions (its route's `identify`). */
  readonly user: string;
  /** What the app attached to that identity (a JSON object), or null. */
  readonly info: Record<string, unknown> | null;
  /** Their connections to the channel on every node, as of the last list
   * (1 for a user known from a join alone). */
  readonly connections: number;
}

/** A user came to a channel or left it: a `join` or `leave` event. */
export interface PresenceChange {
  readonly channel: string;
  readonly user: string;
  readonly info: Record<string, unknown> | null;
}

export interface PresenceEvents {
  /** The set changed (a list, a join, a leave); the value is the set. */
  change: CometPresence;
  join: PresenceChange;
  leave: PresenceChange;
}

/**
 * Who is on a channel, live: user ids to members, read like a `Map`. The
 * server's presence lists fill it (the first when the client subscribes
 * with presence, another at each reconnect and with every long poll) and
 * its joins and leaves keep it. Lists and events have set semantics: a
 * join of a user already there (the client's own, after the list) changes
 * nothing. Each list after the first replaces the set, and what it changes
 * is told as `join` and `leave` (the events between two long polls are not
 * sent again); the first list fills it with no events. Read-only: only
 * what the server says changes it.
 */
export declare class CometPresence implements Iterable<[string, PresenceMember]> {
  /** The channel. */
  readonly channel: string;
  /** How many users the set holds. */
  readonly size: number;
  /** How many users are present on every node: `size`, unless the server
   * lists fewer than are there (past its `max_presence_listed`; then a list
   * may also tell unlisted users as leaves). */
  readonly users: number;
  /** Their connections on every node: the last list's count, plus one a
   * join, minus a leaving user's (another connection of a present user is
   * no event: the next list counts it). */
  readonly connections: number;
  /** True once a list has arrived: before it the set is empty, not known. */
  readonly ready: boolean;
  has(user: string): boolean;
  get(user: string): PresenceMember | undefined;
  keys(): IterableIterator<string>;
  values(): IterableIterator<PresenceMember>;
  [Symbol.iterator](): IterableIterator<[string, PresenceMember]>;
  /** `change`, `join` or `leave` of this channel (joins and leaves only
   * when the set changes). Returns a function that removes the listener. */
  on<K extends keyof PresenceEvents>(name: K, listener: (value: PresenceEvents[K]) => void): () => void;
  off(name: keyof PresenceEvents, listener: (value: any) => void): void;
}

export interface ClientEvents {
  message: CometMessage;
  gap: Gap;
  error: CometError;
  state: StateChange;
  connecting: StateChange;
  open: StateChange;
  reconnecting: StateChange;
  paused: StateChange;
  closed: StateChange;
  /** The last cursor changed: after each message or gap, a poll answer, `resume`. */
  cursor: string;
  transport: TransportChange;
  reconnect: Reconnect;
  /** A user came to a channel this client asked `presence` of (only when
   * its set changes: never twice for one user). */
  join: PresenceChange;
  /** A user left such a channel (after their last connection ended and the
   * server's grace window passed). */
  leave: PresenceChange;
  /** The server ended a channel, or the whole subscription (then `closed`
   * follows). */
  end: End;
  /** The server added a channel to this client's; its messages follow. */
  subscribed: Subscribed;
}

export declare class Comet {
  /** `url`: the comet route. Its query goes with every request (an app's
   * own parameters, such as the identity a server's `identify` reads), but
   * may not set the protocol's (`channel`, `cursor`, `since`, `transport`,
   * `timeout`, `callback`, `presence`, `token`: a TypeError; a token goes
   * in the `token` option). Tabs share a
   * connection only when their URLs are the same, query included. */
  constructor(url: string | URL, options?: CometOptions);
  readonly state: State;
  readonly transport: Transport | null;
  /** The last cursor seen; pass it as `cursor` to resume elsewhere. */
  readonly cursor: string | null;
  readonly channels: string[];
  /** True when this tab holds the shared connection (or does not share). */
  readonly leader: boolean;
  /** A client event (the names of `ClientEvents`), or messages whose event
   * name (else channel) is `name`; a channel or event named like a client
   * event (`join`, `leave`, `end` and `subscribed` too) reaches `message` listeners only. With tab sharing, every tab sees the
   * shared connection's events. Returns a function that removes the listener. */
  on<K extends keyof ClientEvents>(name: K, listener: (value: ClientEvents[K]) => void): () => void;
  on(name: string, listener: (message: CometMessage) => void): () => void;
  off(name: string, listener: (value: any) => void): void;
  subscribe(...channels: (string | string[])[]): void;
  /** Removes channels; the presence of one removed ends: its set is emptied. */
  unsubscribe(...channels: (string | string[])[]): void;
  /** Who is on `channel`, live; the same set at every call. The first call
   * subscribes to the channel if needed and asks for presence
   * (`presence=1`), reconnecting from the cursor if the connection was
   * without it; from then on the client emits the channel's `join` and
   * `leave`. Only channels the server gives presence list anyone. With tab
   * sharing, every tab that asks gets the set. */
  presence(channel: string): CometPresence;
  /** Drops the connection as a network failure would: the client reconnects
   * by itself and resumes from its cursor. (With tab sharing, these three act
   * on the shared connection, whichever tab calls them.) */
  drop(): void;
  /** Reconnects from `cursor`, one this client saw earlier: this client gets
   * what came after it again (other tabs do not), or a gap where history no
   * longer holds it. */
  resume(cursor: string): void;
  /** Uses these transports from now on, best first, reconnecting at once
   * from the cursor (`["poll"]` forces one). Throws on an unknown one. */
  setTransports(transports: Transport[]): void;
  close(): void;
}
