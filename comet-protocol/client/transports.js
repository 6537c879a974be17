// transports.js: every transport by name, and which of them can work here.

import { openSse } from "./transport-sse.js";
import { openStream, openPoll } from "./transport-fetch.js";
import { openJsonp, openIframe } from "./transport-script.js";

/**
 * Each opens one connection with a context (see Connection) and returns
 * `{ close, listen? }`; it reports through the context: opened, item,
 * envelope, answer, ended, failed.
 */
export const RUNNERS = {
  sse: openSse,
  stream: openStream,
  poll: openPoll,
  jsonp: openJsonp,
  iframe: openIframe,
};

export function supported(transport, crossOrigin) {
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
