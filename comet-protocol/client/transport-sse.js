// transport-sse.js: Server-Sent Events through the browser's EventSource
// (PROTOCOL.md, "Streaming transports").

import { SSE_ACCESS, SSE_PRESENCE, fromEnvelope, fromSse, fromSsePresence } from "./protocol.js";

/**
 * Types an EventSource dispatches as its own events (`open`, `error`):
 * never a message's (PROTOCOL.md, "Event types").
 */
const OWN_EVENTS = new Set(["open", "error"]);

/**
 * SSE only delivers the event types it listens for: `message`, and every
 * name `ctx.names()` gives (event names and channels), added with `listen`.
 */
export function openSse(ctx) {
  const source = new EventSource(ctx.url("sse"), { withCredentials: ctx.credentials });
  const state = { opened: false };
  const onMessage = (e) => ctx.item(fromSse(ctx.channels, e));
  const listening = new Set(["message"]);
  const listen = (name) => {
    if (listening.has(name) || OWN_EVENTS.has(name)) return;
    listening.add(name);
    source.addEventListener(name, onMessage);
  };
  source.addEventListener("message", onMessage);
  ctx.names().forEach(listen);
  // A gap, an end, a channel added: the envelope as data, the cursor as id.
  for (const type of ["comet-gap", ...SSE_ACCESS]) {
    source.addEventListener(type, (e) => {
      const item = fromEnvelope(JSON.parse(e.data));
      if (item) ctx.item({ ...item, cursor: e.lastEventId || item.cursor });
    });
  }
  // Presence (with `presence=1`): no id, so EventSource's lastEventId is
  // the message's before, never a cursor of theirs.
  for (const type of Object.keys(SSE_PRESENCE)) {
    source.addEventListener(type, (e) => ctx.item(fromSsePresence(e)));
  }
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
}
