import { test } from "node:test";
import assert from "node:assert/strict";
import { fakeBrowser, install, until, FakeEventSource } from "./fakes.js";
import { openSse } from "../transport-sse.js";
import { bootstrap, openPoll, openStream } from "../transport-fetch.js";
import { openJsonp } from "../transport-script.js";
import { RUNNERS, supported } from "../transports.js";
import { REGISTRY, fromEnvelope } from "../protocol.js";

/** What a transport is given (see Connection), recording what it reports. */
function context(channels = ["room"], names = []) {
  const calls = [];
  const ctx = {
    calls,
    channels: new Set(channels),
    names: () => [...names, ...channels],
    credentials: false,
    timeout: 25,
    openTimeout: 10000,
    heartbeatTimeout: 45000,
    url: (transport, extra = {}) => {
      const url = new URL("http://push.test/comet");
      for (const c of channels) url.searchParams.append("channel", c);
      url.searchParams.set("transport", transport);
      for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, String(v));
      return url.href;
    },
    opened: () => calls.push(["opened"]),
    item: (item) => calls.push(["item", item]),
    envelope: (envelope, raw) => {
      const item = fromEnvelope(envelope, raw);
      if (item) ctx.item(item);
    },
    answer: (body, text) => calls.push(["answer", body.cursor, body.messages.length, text !== undefined]),
    ended: () => calls.push(["ended"]),
    failed: (info) => calls.push(["failed", info]),
  };
  ctx.kinds = () => calls.map((c) => c[0]);
  return ctx;
}

test("SSE: opens, hands on events with their cursor, and gaps", (t) => {
  fakeBrowser(t);
  const ctx = context(["room"], ["said"]);
  openSse(ctx);
  const source = FakeEventSource.last;
  assert.equal(source.url.searchParams.get("transport"), "sse");
  source.open();
  source.emit("room", "plain", "c1");
  source.emit("said", '{"a":1}', "c2");
  source.emit("comet-gap", JSON.stringify({ type: "gap", channel: "room", missed: 3, cursor: "old" }), "c3");
  assert.deepEqual(ctx.calls, [
    ["opened"],
    ["item", { type: "message", channel: "room", event: null, data: "plain", cursor: "c1" }],
    ["item", { type: "message", channel: "room", event: "said", data: '{"a":1}', cursor: "c2" }],
    ["item", { type: "gap", channel: "room", missed: 3, cursor: "c3", event: null, data: null }],
  ]);
});

test("SSE: listens to every channel and event name, but never to open or error", (t) => {
  fakeBrowser(t);
  // A channel may be named like a client event ("state"): it still arrives.
  const ctx = context(["state", "room"], ["said", "error", "open"]);
  const runner = openSse(ctx);
  const source = FakeEventSource.last;
  runner.listen("late");
  assert.deepEqual(source.listening.sort(), ["comet-end", "comet-gap", "comet-join", "comet-leave", "comet-presence", "comet-subscribed", "late", "message", "room", "said", "state"]);
  source.emit("state", "x", "c1");
  assert.equal(ctx.calls[0][1].channel, "state");
});

test("SSE: an error closes the EventSource (no retry of its own) and says whether it had opened", (t) => {
  fakeBrowser(t);
  const before = context();
  openSse(before);
  FakeEventSource.last.fail();
  assert.equal(FakeEventSource.last.closed, true);
  assert.deepEqual(before.calls, [["failed", { opened: false }]]);
  const after = context();
  openSse(after);
  FakeEventSource.last.open();
  FakeEventSource.last.fail();
  assert.deepEqual(after.calls.at(-1), ["failed", { opened: true }]);
});

test("stream: splits lines across chunks, keeps each payload's text, ends cleanly", async (t) => {
  const { net } = fakeBrowser(t);
  const ctx = context();
  openStream(ctx);
  const request = await net.next();
  assert.equal(request.transport, "stream");
  const body = request.stream();
  body.push('{"type":"message","channel":"room","data":{"n": 1.0},"cursor":"c1"}\n{"type":"heart');
  body.push('beat"}\n\n{"type":"message","channel":"room","data":"two","cursor":"c2"}\n');
  body.end();
  await until(() => ctx.kinds().includes("ended"));
  assert.deepEqual(ctx.calls, [
    ["opened"],
    ["item", { type: "message", channel: "room", event: null, data: '{"n": 1.0}', cursor: "c1" }],
    ["item", { type: "message", channel: "room", event: null, data: "two", cursor: "c2" }],
    ["ended"],
  ]);
});

test("stream: silent past heartbeatTimeout is dead; a cut is a failure after opening", async (t) => {
  const { net, clock } = fakeBrowser(t);
  const silent = context();
  openStream(silent);
  (await net.next()).stream().push('{"type":"heartbeat"}\n');
  await clock.tick(44999);
  assert.deepEqual(silent.kinds(), ["opened"]);
  await clock.tick(1);
  assert.deepEqual(silent.kinds(), ["opened", "failed"]);
  assert.equal(silent.calls[1][1].opened, true);

  const cut = context();
  openStream(cut);
  (await net.next()).stream().cut();
  await clock.tick(0);
  assert.deepEqual(cut.kinds(), ["opened", "failed"]);
  assert.equal(cut.calls[1][1].opened, true);
});

test("stream and poll: refusals carry the protocol's error", async (t) => {
  const { net, clock } = fakeBrowser(t);
  const stream = context();
  openStream(stream);
  (await net.next()).refuse(400, "bad_transport");
  const poll = context();
  openPoll(poll);
  (await net.next()).refuse(400, "bad_cursor");
  await clock.tick(0);
  assert.equal(stream.calls[0][1].unsupported, true);
  assert.equal(poll.calls[0][1].fatal, true);
  assert.equal(poll.calls[0][1].code, "bad_cursor");
});

test("poll: the first answers at once, then each holds for the timeout", async (t) => {
  const { net } = fakeBrowser(t);
  const ctx = context();
  const runner = openPoll(ctx);
  const first = await net.next();
  assert.equal(first.param("timeout"), "0");
  assert.equal(first.init.cache, "no-store");
  first.json({ cursor: "c0", messages: [] });
  const second = await net.next();
  assert.equal(second.param("timeout"), "25");
  second.json({ cursor: "c1", messages: [{ type: "message", channel: "room", data: 1, cursor: "c1" }] });
  const third = await net.next();
  assert.deepEqual(ctx.calls, [["opened"], ["answer", "c0", 0, true], ["answer", "c1", 1, true]]);
  runner.close();
  assert.equal(third.aborted, true);
  assert.deepEqual(ctx.kinds(), ["opened", "answer", "answer"], "closing is no failure");
});

test("bootstrap: one poll for the cursor, then the stream; without polling, the stream alone", async (t) => {
  const { net } = fakeBrowser(t);
  const ctx = context();
  let streams = 0;
  bootstrap(ctx, () => streams++, () => assert.fail("poll is offered"));
  const poll = await net.next();
  assert.equal(poll.param("timeout"), "0");
  poll.json({ cursor: "c0", messages: [] });
  await until(() => streams === 1);
  assert.deepEqual(ctx.calls, [["answer", "c0", 0, true]]);

  let noPoll = 0;
  bootstrap(ctx, () => streams++, () => noPoll++);
  (await net.next()).refuse(400, "bad_transport");
  await until(() => streams === 2);
  assert.equal(noPoll, 1);
});

test("JSONP: script tags calling back into the registry, one after another", async (t) => {
  const { clock } = fakeBrowser(t);
  const scripts = [];
  install(t, {
    document: {
      createElement: () => ({ remove() { this.removed = true; } }),
      head: { appendChild: (script) => scripts.push(script) },
    },
    [REGISTRY]: undefined,
  });
  const ctx = context();
  const runner = openJsonp(ctx);
  const src = new URL(scripts[0].src);
  assert.equal(src.searchParams.get("timeout"), "0");
  const callback = src.searchParams.get("callback");
  assert.match(callback, /^__comet_cb\.p\d+$/);
  // The server's answer runs the callback, then the script loads.
  globalThis[REGISTRY][callback.split(".")[1]]({ cursor: "c1", messages: [] });
  scripts[0].onload();
  assert.equal(scripts[0].removed, true);
  assert.equal(new URL(scripts[1].src).searchParams.get("timeout"), "25");
  // A script that loads without calling back failed.
  scripts[1].onload();
  assert.deepEqual(ctx.calls, [["opened"], ["answer", "c1", 0, false], ["failed", { opened: true }]]);
  assert.equal(scripts.length, 2);
  runner.close();
  await clock.tick(60000);
  assert.equal(ctx.calls.length, 3, "nothing after close");
});

test("which transports can work here", (t) => {
  fakeBrowser(t);
  assert.deepEqual(Object.keys(RUNNERS), ["sse", "stream", "poll", "jsonp", "iframe"]);
  assert.equal(supported("sse", false), true);
  assert.equal(supported("stream", false), true);
  assert.equal(supported("jsonp", false), false, "no document in Node");
  install(t, { document: {} });
  assert.equal(supported("iframe", false), true);
  assert.equal(supported("iframe", true), false, "a forever frame cannot call a page of another origin");
  install(t, { EventSource: undefined });
  assert.equal(supported("sse", false), false);
});
