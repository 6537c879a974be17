// transport-fetch.js: the transports fetch carries: ndjson streaming, long
// polling, and the one poll that gives a stream its first cursor
// (PROTOCOL.md, "Streaming transports" and "Long polling").

import { rawPayloads, refusal } from "./protocol.js";
import { watchdog } from "./watchdog.js";

function fetchOptions(ctx, signal) {
  return { signal, cache: "no-store", credentials: ctx.credentials ? "include" : "same-origin" };
}

/** Runs `body` and reports a throw (not from our own abort) as a failure. */
function guarded(ctx, abort, state, body) {
  body().catch((error) => {
    if (!abort.signal.aborted || state.silent) ctx.failed({ opened: state.opened, message: String(error) });
  });
}

/**
 * One poll answered at once, for the cursor to stream from; `then` opens
 * the stream, `noPoll` says the route offers no polling.
 */
export function bootstrap(ctx, then, noPoll) {
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

/** ndjson: one envelope a line, heartbeats included, until the byte budget. */
export function openStream(ctx) {
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
    try {
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
    } finally {
      watch.stop(); // a cut stream too
    }
    ctx.ended();
  });
  return {
    close: () => {
      state.watch?.stop();
      abort.abort();
    },
  };
}

/** Long polling: one request after another, each from the last cursor. */
export function openPoll(ctx) {
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
}
