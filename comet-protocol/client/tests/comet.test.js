import { test } from "node:test";
import assert from "node:assert/strict";
import { fakeBrowser, install, openSse, settle } from "./fakes.js";
import { Comet, CometMessage } from "../comet.js";

const URL_ = "http://push.test/comet";

/** No jitter, no waiting: every retry is due at once (tick(0)). */
const QUICK = { minDelay: 0, maxDelay: 0 };

/** A client and everything it emits, by event. */
function client(options, names = []) {
  const comet = new Comet(URL_, { ...QUICK, ...options });
  const seen = {};
  for (const name of ["message", "gap", "state", "error", "cursor", "transport", "reconnect", ...names]) {
    seen[name] = [];
    comet.on(name, (value) => seen[name].push(value));
  }
  const got = () => seen.message.map((m) => m.data);
  return { comet, seen, got };
}

test("messages reach the listeners of their event name, else their channel, and 'message'", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen, got } = client({ channels: ["room"] }, ["said", "room"]);
  const source = await openSse(browser);
  source.emit("room", "plain", "c1");
  source.emit("said", '{"text":"hi"}', "c2");
  assert.deepEqual(got(), ["plain", '{"text":"hi"}']);
  assert.deepEqual(seen.room.map((m) => m.data), ["plain"]);
  assert.deepEqual(seen.said.map((m) => m.json()), [{ text: "hi" }]);
  const message = seen.said[0];
  assert.ok(message instanceof CometMessage);
  assert.deepEqual({ ...message }, { channel: "room", event: "said", data: '{"text":"hi"}', cursor: "c2" });
  assert.equal(comet.cursor, "c2");
  assert.deepEqual(seen.cursor, ["c0", "c1", "c2"]);
});

test("a channel named like a client event arrives as a message, never as that event", async (t) => {
  const browser = fakeBrowser(t);
  const { seen, got } = client({ channels: ["state"] });
  const source = await openSse(browser);
  const states = seen.state.length;
  source.emit("state", "x", "c1");
  assert.deepEqual(got(), ["x"]);
  assert.equal(seen.state.length, states);
});

test("gaps, and nothing delivered twice", async (t) => {
  const browser = fakeBrowser(t);
  const { seen, got } = client({ channels: ["room"] });
  const source = await openSse(browser);
  source.emit("comet-gap", JSON.stringify({ type: "gap", channel: "room", missed: 4, cursor: "g" }), "c5");
  source.emit("room", "6", "c6");
  source.emit("room", "6", "c6");
  assert.deepEqual(seen.gap, [{ channel: "room", missed: 4, cursor: "c5" }]);
  assert.deepEqual(got(), ["6"]);
});

/** A gap over SSE, as the server sends it (PROTOCOL.md, "Streaming transports"). */
function gap(source, channel, cursor, missed = null) {
  source.emit("comet-gap", JSON.stringify({ type: "gap", channel, missed, cursor }), cursor);
}

// Issue #23: a backplane that lost writes moves the channel to a new epoch
// and sends a gap; ids served before it may come again with other content.

test("a gap is never dropped as a duplicate, even when its cursor was seen", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen } = client({ channels: ["room"] });
  const source = await openSse(browser);
  source.emit("room", "1", "c1");
  gap(source, "room", "c1");
  assert.deepEqual(seen.gap, [{ channel: "room", missed: null, cursor: "c1" }]);
  gap(source, "room", "c1");
  assert.equal(seen.gap.length, 2, "a gap told twice is told twice, never lost");
  assert.equal(comet.cursor, "c1");
});

test("after a gap, a message whose id was seen before the gap is delivered", async (t) => {
  const browser = fakeBrowser(t);
  const { seen, got } = client({ channels: ["room"] });
  const source = await openSse(browser);
  for (const n of [1, 2, 3]) source.emit("room", `old ${n}`, `c${n}`);
  gap(source, "room", "g1");
  source.emit("room", "new 2", "c2");
  source.emit("room", "new 2", "c2"); // after the gap, a repeat is still one
  source.emit("room", "new 3", "c3");
  assert.deepEqual(seen.gap.map((g) => g.cursor), ["g1"]);
  assert.deepEqual(got(), ["old 1", "old 2", "old 3", "new 2", "new 3"]);
});

test("a gap forgets the seen ids of its channel only (and those whose channel SSE cannot tell)", async (t) => {
  const browser = fakeBrowser(t);
  const { got } = client({ channels: ["a", "b"] }, ["said"]);
  const source = await openSse(browser);
  source.emit("a", "a1", "c1");
  source.emit("b", "b2", "c2");
  source.emit("said", "s3", "c3"); // two channels: SSE cannot say whose
  gap(source, "a", "g4");
  source.emit("b", "b2", "c2"); // b had no gap: still a duplicate
  source.emit("a", "a1 again", "c1");
  source.emit("said", "s3 again", "c3");
  assert.deepEqual(got(), ["a1", "b2", "s3", "a1 again", "s3 again"]);
});

test("a gap forgets seen ids on every transport (stream envelopes)", async (t) => {
  const browser = fakeBrowser(t);
  const { seen, got } = client({ channels: ["room"], transports: ["stream"] });
  (await browser.net.next()).json({ cursor: "c0", messages: [] });
  const body = (await browser.net.next()).stream();
  const send = (envelope) => body.push(`${JSON.stringify(envelope)}\n`);
  send({ type: "message", channel: "room", data: "old", cursor: "c1" });
  send({ type: "gap", channel: "room", missed: null, cursor: "c1" });
  send({ type: "message", channel: "room", data: "new", cursor: "c1" });
  await browser.clock.tick(0);
  assert.deepEqual(seen.gap, [{ channel: "room", missed: null, cursor: "c1" }]);
  assert.deepEqual(got(), ["old", "new"]);
});

test("states, and the reconnects and fallbacks between them", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen } = client({ channels: ["room"], transports: ["sse", "poll"] });
  const opened = [];
  comet.on("open", (s) => opened.push(s.transport));
  (await browser.net.next()).json({ cursor: "c0", messages: [] });
  await browser.clock.tick(0);
  browser.sources.at(-1).fail();
  await browser.clock.tick(0);
  browser.sources.at(-1).fail();
  await browser.clock.tick(0);
  (await browser.net.next()).json({ cursor: "c0", messages: [] });
  await browser.clock.tick(0);
  assert.equal(comet.state, "open");
  assert.equal(comet.transport, "poll");
  assert.deepEqual(opened, ["poll"]);
  assert.deepEqual(seen.transport, [{ from: "sse", to: "poll", reason: "fallback" }]);
  assert.deepEqual(seen.reconnect.map((r) => `${r.reason}:${r.transport}`), ["failed:sse", "failed:poll"]);
  assert.deepEqual(seen.state.map((s) => `${s.state}:${s.transport}`),
    ["connecting:null", "connecting:sse", "connecting:poll", "open:poll"]);
  comet.close();
  assert.equal(comet.state, "closed");
  assert.equal(seen.state.at(-1).state, "closed");
});

test("drop: the connection comes back by itself and nothing is lost or repeated", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen, got } = client({ channels: ["room"] });
  const first = await openSse(browser);
  first.emit("room", "1", "c1");
  comet.drop();
  assert.equal(first.closed, true);
  assert.equal(comet.state, "reconnecting");
  assert.deepEqual(seen.reconnect.map((r) => r.reason), ["dropped"]);
  await browser.clock.tick(0);
  const second = browser.sources.at(-1);
  assert.equal(second.url.searchParams.get("cursor"), "c1");
  second.open();
  second.emit("room", "2", "c2");
  assert.deepEqual(got(), ["1", "2"]);
});

test("resume: what came after an older cursor is delivered again", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen, got } = client({ channels: ["room"] });
  const first = await openSse(browser);
  for (const n of [1, 2, 3]) first.emit("room", String(n), `c${n}`);
  comet.resume("c1");
  assert.equal(comet.cursor, "c1");
  assert.equal(seen.cursor.at(-1), "c1");
  const second = browser.sources.at(-1);
  assert.equal(second.url.searchParams.get("cursor"), "c1");
  second.open();
  for (const n of [2, 3]) second.emit("room", String(n), `c${n}`);
  assert.deepEqual(got(), ["1", "2", "3", "2", "3"]);
  assert.throws(() => comet.resume(""), TypeError);
});

test("setTransports: forces one at once, resuming from the cursor; unknown ones are refused", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen } = client({ channels: ["room"] });
  const source = await openSse(browser);
  source.emit("room", "1", "c1");
  assert.throws(() => comet.setTransports(["websocket"]), /unknown transport/);
  assert.throws(() => comet.setTransports([]), /no transports/);
  comet.setTransports(["poll"]);
  assert.equal(source.closed, true);
  assert.deepEqual(seen.transport, [{ from: "sse", to: "poll", reason: "forced" }]);
  const poll = await browser.net.next();
  assert.equal(poll.transport, "poll");
  assert.equal(poll.param("cursor"), "c1");
  poll.json({ cursor: "c1", messages: [] });
  await browser.clock.tick(0);
  assert.equal(comet.transport, "poll");
});

test("subscribe and unsubscribe reconnect from the cursor; bad names are refused", async (t) => {
  const browser = fakeBrowser(t);
  const { comet } = client({ channels: ["a"] });
  const source = await openSse(browser);
  source.emit("a", "1", "c1");
  comet.subscribe("b", ["c"]);
  assert.deepEqual(comet.channels, ["a", "b", "c"]);
  const url = browser.sources.at(-1).url.searchParams;
  assert.deepEqual(url.getAll("channel"), ["a", "b", "c"]);
  assert.equal(url.get("cursor"), "c1");
  comet.subscribe("a");
  assert.equal(browser.sources.length, 2, "no change, no reconnect");
  comet.unsubscribe("b", "c");
  assert.deepEqual(browser.sources.at(-1).url.searchParams.getAll("channel"), ["a"]);
  assert.throws(() => comet.subscribe("comet-x"), TypeError);
  assert.throws(() => new Comet(URL_, { channels: ["error"] }), TypeError);
  assert.throws(() => new Comet(URL_, { transports: ["nope"] }), TypeError);
  assert.throws(() => comet.on("x", "not a function"), TypeError);
});

test("listeners: on returns its removal, off removes, a throwing one costs the others nothing", async (t) => {
  const browser = fakeBrowser(t);
  const reported = [];
  install(t, { reportError: (e) => reported.push(e.message) });
  const { comet, got } = client({ channels: ["room"] });
  const calls = [];
  const remove = comet.on("room", () => calls.push("removed"));
  const listener = () => calls.push("off");
  comet.on("room", listener);
  comet.on("room", () => { throw new Error("faulty"); });
  remove();
  comet.off("room", listener);
  const source = await openSse(browser);
  source.emit("room", "1", "c1");
  assert.deepEqual(calls, []);
  assert.deepEqual(got(), ["1"]);
  assert.deepEqual(reported, ["faulty"]);
});

test("a cursor the server refuses: an error and a gap, then the head; a refusal nothing can mend: closed", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen } = client({ channels: ["room"], cursor: "forged", transports: ["poll"] });
  (await browser.net.next()).refuse(400, "bad_cursor");
  await browser.clock.tick(0);
  assert.notEqual(comet.state, "closed");
  assert.deepEqual(seen.gap, [{ channel: null, missed: null, cursor: null }]);
  const fresh = await browser.net.next();
  assert.equal(fresh.param("cursor"), null);
  fresh.refuse(400, "bad_cursor");
  await browser.clock.tick(0);
  assert.equal(comet.state, "closed");
  assert.deepEqual(seen.error.map((e) => [e.code, e.fatal]), [["bad_cursor", false], ["bad_cursor", true]]);
});

test("a cursor given to the constructor is where it resumes, with no bootstrap poll", async (t) => {
  const browser = fakeBrowser(t);
  const { comet } = client({ channels: ["room"], cursor: "rendered", since: 5 });
  await browser.clock.tick(0);
  const url = browser.sources.at(-1).url.searchParams;
  assert.equal(url.get("cursor"), "rendered");
  assert.equal(url.get("since"), "5");
  assert.equal(comet.cursor, "rendered");
  assert.equal(browser.net.requests.length, 0);
});

// ---- tabs: several clients in one process are the tabs of one origin

test("tabs share one connection; when the leader closes, the next resumes from the cursor", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const first = client({ channels: ["room"] });
  const second = client({ channels: ["room"] }, ["said"]);
  await settle();
  const source = await openSse(browser);
  await settle();
  assert.equal(first.comet.leader, true);
  assert.equal(second.comet.leader, false);
  assert.equal(second.comet.state, "open");
  assert.equal(second.comet.transport, "sse");
  assert.ok(source.listening.includes("said"), "the leader listens for what followers want");
  source.emit("room", "1", "c1");
  source.emit("said", "2", "c2");
  await settle();
  assert.deepEqual(second.got(), ["1", "2"]);
  assert.deepEqual(second.seen.said.map((m) => m.data), ["2"]);
  assert.equal(second.comet.cursor, "c2");
  assert.equal(browser.sources.length, 1, "one connection for both tabs");
  assert.equal(browser.net.requests.length, 1);

  first.comet.close();
  await settle();
  assert.equal(second.comet.leader, true);
  const next = browser.sources.at(-1);
  assert.equal(browser.sources.length, 2);
  assert.equal(next.url.searchParams.get("cursor"), "c2", "resumed from the last cursor");
  assert.equal(second.comet.state, "reconnecting");
  next.open();
  next.emit("said", "2", "c2"); // overlap: not shown twice
  next.emit("room", "3", "c3");
  assert.deepEqual(second.got(), ["1", "2", "3"]);
  assert.equal(second.comet.state, "open");
});

test("a late tab gets the recent history it asked for from the leader, then what is new", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const first = client({ channels: ["room"], since: 10 });
  await settle();
  const source = await openSse(browser);
  for (const n of [1, 2, 3, 4]) source.emit("room", String(n), `c${n}`);
  const late = client({ channels: ["room"], since: 2 });
  await settle();
  source.emit("room", "5", "c5");
  await settle();
  assert.deepEqual(late.got(), ["3", "4", "5"]);
  assert.deepEqual(first.got(), ["1", "2", "3", "4", "5"]);
  assert.equal(browser.sources.length, 1);
});

test("a follower's drop, resume and setTransports act on the leader's connection", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leader = client({ channels: ["room"] });
  const follower = client({ channels: ["room"] });
  await settle();
  const source = await openSse(browser);
  for (const n of [1, 2, 3]) source.emit("room", String(n), `c${n}`);
  await settle();

  follower.comet.drop();
  await settle();
  assert.equal(source.closed, true);
  assert.deepEqual(follower.seen.reconnect.map((r) => r.reason), ["dropped"]);
  await browser.clock.tick(0);
  const again = browser.sources.at(-1);
  assert.equal(again.url.searchParams.get("cursor"), "c3");
  again.open();

  follower.comet.resume("c1");
  await settle();
  const replay = browser.sources.at(-1);
  assert.equal(replay.url.searchParams.get("cursor"), "c1");
  replay.open();
  for (const n of [2, 3]) replay.emit("room", String(n), `c${n}`);
  await settle();
  assert.deepEqual(follower.got(), ["1", "2", "3", "2", "3"], "the tab that asked sees them again");
  assert.deepEqual(leader.got(), ["1", "2", "3"], "the others do not");

  follower.comet.setTransports(["poll"]);
  await settle();
  assert.equal((await browser.net.next()).transport, "poll");
  assert.deepEqual(leader.seen.transport.at(-1), { from: "sse", to: "poll", reason: "forced" });
  assert.equal(browser.sources.length, 3);
});

test("a follower forgets a channel's seen ids after a gap as the leader does", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leader = client({ channels: ["room"] });
  const follower = client({ channels: ["room"] });
  await settle();
  const source = await openSse(browser);
  source.emit("room", "old", "c1");
  gap(source, "room", "c1");
  source.emit("room", "new", "c1");
  await settle();
  for (const tab of [leader, follower]) {
    assert.deepEqual(tab.seen.gap.map((g) => g.cursor), ["c1"]);
    assert.deepEqual(tab.got(), ["old", "new"]);
  }
});
