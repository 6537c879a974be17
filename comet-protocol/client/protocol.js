// protocol.js: what the client needs of the wire protocol (PROTOCOL.md):
// transport and channel names, envelopes (presence's and access's too), SSE
// events, the JSON errors.

/** Transports, best first. */
export const TRANSPORTS = ["sse", "stream", "poll", "jsonp", "iframe"];

/** PROTOCOL.md: channel names (`error` and `open` would be EventSource's own events). */
const CHANNEL = /^[A-Za-z0-9_.:@/-]{1,128}$/;
const REFUSED_CHANNELS = new Set(["error", "open"]);

/**
 * Refusals that no retry or other transport can mend. A 401 or a 403
 * `forbidden` may be mended by a new token, where the client can get one
 * (Connection decides).
 */
const FATAL_STATUS = new Set([400, 401, 403, 404, 405, 414, 431]);

/**
 * Where JSONP and forever-frame callbacks live: `__comet_cb.<name>`, the
 * only dotted callback a route accepts (PROTOCOL.md, "Callbacks").
 */
export const REGISTRY = "__comet_cb";

/** Query parameters the client writes itself: a comet URL may not carry them. */
export const PROTOCOL_PARAMS = ["channel", "cursor", "since", "transport", "timeout", "callback", "presence", "token"];

export function checkChannel(name) {
  if (typeof name !== "string" || !CHANNEL.test(name) || name.startsWith("comet-") || REFUSED_CHANNELS.has(name)) {
    throw new TypeError(`comet: bad channel name ${JSON.stringify(name)}`);
  }
  return name;
}

/** A copy of `transports`, each one known, at least one. */
export function checkTransports(transports) {
  if (!Array.isArray(transports)) throw new TypeError("comet: transports must be an array");
  for (const t of transports) {
    if (!TRANSPORTS.includes(t)) throw new TypeError(`comet: unknown transport ${JSON.stringify(t)}`);
  }
  if (!transports.length) throw new TypeError("comet: no transports");
  return [...transports];
}

/**
 * Presence items (`presence=1`): a channel's presence list, and a join or
 * leave. They take no cursor: a client keeps them apart from messages.
 */
export const PRESENCE_ITEMS = new Set(["presence", "join", "leave"]);

/**
 * The SSE events of presence, each without an `id:` line (so with
 * EventSource's `lastEventId` of the message before, never theirs), by the
 * envelope type each carries.
 */
export const SSE_PRESENCE = { "comet-presence": "presence", "comet-join": "join", "comet-leave": "leave" };

/**
 * The server's changes to a live subscription (PROTOCOL.md, "Access"): an
 * `end` of it or of one channel, and a channel it `subscribed` the user to.
 * Each carries the cursor after it; neither is a message.
 */
export const ACCESS_ITEMS = new Set(["end", "subscribed"]);

/** Their SSE events, each with the cursor as `id:` and the envelope as data. */
export const SSE_ACCESS = ["comet-end", "comet-subscribed"];

/**
 * A protocol envelope as the item every transport hands on. A JSON payload's
 * text is `raw`, as the server sent it, where the transport has it (fetch
 * streaming and polling); JSON.stringify of the parsed value would round
 * big numbers and drop duplicate keys. JSONP and the forever frame hand over
 * parsed values only. Null for a heartbeat.
 */
export function fromEnvelope(envelope, raw) {
  if (envelope.type === "gap") {
    return { type: "gap", channel: envelope.channel, missed: envelope.missed ?? null, cursor: envelope.cursor, event: null, data: null };
  }
  if (envelope.type === "presence") {
    const presence = (envelope.presence ?? []).map((m) => ({ user: m.user, info: m.info ?? null, connections: m.connections }));
    return { type: "presence", channel: envelope.channel, users: envelope.users, connections: envelope.connections, presence, cursor: null };
  }
  if (envelope.type === "join" || envelope.type === "leave") {
    return { type: envelope.type, channel: envelope.channel, user: envelope.user, info: envelope.info ?? null, cursor: null };
  }
  if (envelope.type === "end") {
    const item = { type: "end", channel: envelope.channel ?? null, reason: envelope.reason, cursor: envelope.cursor ?? null };
    // A shutdown's window (ms) to spread the reconnect over.
    if (typeof envelope.reconnect_within === "number") item.reconnectWithin = envelope.reconnect_within;
    return item;
  }
  if (envelope.type === "subscribed") {
    return { type: "subscribed", channel: envelope.channel, cursor: envelope.cursor };
  }
  if (envelope.type !== "message") return null;
  const data = typeof envelope.data === "string" ? envelope.data : (raw ?? JSON.stringify(envelope.data));
  return { type: "message", channel: envelope.channel, event: envelope.event ?? null, data, cursor: envelope.cursor };
}

/**
 * An SSE presence event (`comet-presence`, `comet-join`, `comet-leave`) as
 * an item. A list's data is the whole envelope; a join's or leave's lacks
 * its `type`, which the event type says.
 */
export function fromSsePresence(e) {
  return fromEnvelope({ ...JSON.parse(e.data), type: SSE_PRESENCE[e.type] });
}

/**
 * An SSE event as an item. SSE names the event type only: the event name,
 * or the channel when there is none, so with several channels a message
 * that has an event name cannot say its channel (null).
 */
export function fromSse(channels, e) {
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

/**
 * The JSON text of every `"data"` member at nesting `depth` of `text` (1:
 * the members of an envelope; 3: those of the envelopes in a poll answer),
 * in order. PROTOCOL.md, "Payloads": the server sends the publisher's bytes.
 */
export function rawPayloads(text, depth) {
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

/** The protocol's JSON error, with what the client should do about it. */
export async function refusal(response) {
  let code = `http_${response.status}`;
  let message = response.statusText;
  try {
    const body = await response.json();
    code = body.error ?? code;
    message = body.message ?? message;
  } catch { /* not the protocol's JSON */ }
  // A cross-site JSONP request is refused whatever it carries: the other
  // transports may still work from this page.
  const unsupported = code === "bad_transport" || code === "cross_site";
  return { status: response.status, code, message, unsupported, fatal: !unsupported && FATAL_STATUS.has(response.status) };
}
