// transport-script.js: the transports a document carries when fetch and
// EventSource cannot: JSONP script tags and the forever frame, both calling
// back into `__comet_cb` (PROTOCOL.md, "Callbacks").

import { REGISTRY } from "./protocol.js";
import { watchdog } from "./watchdog.js";

let callbacks = 0;

function registry() {
  globalThis[REGISTRY] ??= Object.create(null);
  return globalThis[REGISTRY];
}

/** JSONP: long polling through one script tag after another. */
export function openJsonp(ctx) {
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
}

/** The forever frame: a hidden iframe whose document calls back per item. */
export function openIframe(ctx) {
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
}
