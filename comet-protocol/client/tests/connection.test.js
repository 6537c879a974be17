import { test } from "node:test";
import assert from "node:assert/strict";
import { fakeBrowser, FakeEventSource } from "./fakes.js";
import { Connection } from "../connection.js";

export const OPTIONS = {
  transports: ["sse", "stream", "poll", "jsonp", "iframe"],
  withCredentials: false,
  timeout: 25,
  minDelay: 500,
  maxDelay: 15000,
  upgradeAfter: 30000,
  openTimeout: 10000,
  heartbeatTimeout: 45000,
};

/** A connection to room (jitter 0.5), and what it reports. */
function start(t, options = {}) {
  const browser = fakeBrowser(t);
  const reports = [];
  const connection = new Connection(new URL("http://push.test/comet"), { ...OPTIONS, ...options },
    (m) => reports.push(m), () => 0.5);
  connection.update(new Set(["room"]), new Set(), undefined);
  const of = (t) => reports.filter((r) => r.t === t);
  return {
    ...browser,
    connection,
    reports,
    states: () => of("state").map((r) => `${r.state}:${r.transport}`),
    events: (name) => of("event").filter((r) => r.name === name).map((r) => r.value),
    items: () => of("item").map((r) => r.item.cursor),
  };
}

const line = (n) => `{"type":"message","channel":"room","data":${n},"cursor":"c${n}"}\n`;

test("a stream's first cursor comes from one poll answered at once", async (t) => {
  const { net, clock, connection, reports } = start(t);
  const poll = await net.next();
  assert.equal(poll.transport, "poll");
  assert.equal(poll.param("timeout"), "0");
  assert.equal(poll.param("cursor"), null);
  poll.json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  assert.equal(FakeEventSource.last.url.searchParams.get("cursor"), "c0");
  assert.equal(connection.cursor, "c0");
  assert.deepEqual(reports, [{ t: "cursor", cursor: "c0" }]);
});

test("falls back in order, backing off, and resumes from the cursor on every transport", async (t) => {
  const { net, clock, sources, states, events, items } = start(t);
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  sources.at(-1).fail();
  assert.deepEqual(clock.pending(), [375]);
  await clock.tick(375);
  assert.equal(sources.length, 2);
  assert.equal(sources[1].url.searchParams.get("cursor"), "c0");
  sources[1].fail();
  assert.deepEqual(events("transport"), [{ from: "sse", to: "stream", reason: "fallback" }]);
  assert.deepEqual(clock.pending(), [750], "the back-off doubles");
  await clock.tick(750);
  const request = await net.next();
  assert.equal(request.transport, "stream");
  assert.equal(request.param("cursor"), "c0");
  const body = request.stream();
  body.push(line(1) + line(2));
  await clock.tick(0);
  body.cut();
  await clock.tick(0);
  assert.deepEqual(clock.pending(), [250, 30000], "a quick retry, and the upgrade's timer");
  await clock.tick(250);
  const again = await net.next();
  assert.equal(again.transport, "stream");
  assert.equal(again.param("cursor"), "c2");
  assert.deepEqual(items(), ["c1", "c2"]);
  assert.deepEqual(states(), ["connecting:sse", "connecting:stream", "open:stream", "reconnecting:stream"]);
  assert.deepEqual(events("reconnect"), [
    { transport: "sse", delay: 375, reason: "failed" },
    { transport: "stream", delay: 750, reason: "failed" },
    { transport: "stream", delay: 250, reason: "dropped" },
  ]);
});

test("returns to the better transport after upgradeAfter, without a gap", async (t) => {
  const { net, clock, sources, states, events } = start(t, { transports: ["sse", "poll"] });
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  sources[0].fail();
  await clock.tick(375);
  sources[1].fail();
  await clock.tick(750);
  const poll = await net.next();
  poll.json({ cursor: "c3", messages: [] });
  await clock.tick(0);
  (await net.next()).json({ cursor: "c3", messages: [] });
  await clock.tick(30000);
  assert.deepEqual(events("transport"), [
    { from: "sse", to: "poll", reason: "fallback" },
    { from: "poll", to: "sse", reason: "upgrade" },
  ]);
  assert.equal(sources.length, 3);
  assert.equal(sources[2].url.searchParams.get("cursor"), "c3");
  sources[2].open();
  assert.deepEqual(states().at(-1), "open:sse");
  assert.deepEqual(clock.pending(), [], "nothing better to try");
});

test("a route without some transport: the next at once, and never that one again", async (t) => {
  const { net, clock, events } = start(t, { transports: ["stream", "poll"] });
  (await net.next()).json({ cursor: "c0", messages: [] });
  (await net.next()).refuse(400, "bad_transport");
  await clock.tick(0);
  assert.deepEqual(events("transport"), [{ from: "stream", to: "poll", reason: "fallback" }]);
  assert.deepEqual(events("reconnect"), [{ transport: "poll", delay: 0, reason: "failed" }]);
  assert.equal((await net.next()).transport, "poll");
  assert.deepEqual(events("error").map((e) => e.code), ["bad_transport"]);
});

test("a refusal no retry can mend stops it, and says so", async (t) => {
  const { net, clock, reports } = start(t);
  (await net.next()).refuse(400, "bad_cursor");
  await clock.tick(0);
  assert.equal(reports.at(-1).t, "fatal");
  assert.equal(reports.at(-1).info.code, "bad_cursor");
  assert.deepEqual(clock.pending(), []);
  await clock.tick(60000);
  assert.equal(net.unclaimed, 0);
});

test("a cursor the server no longer takes: a gap, then the head; refused again, it stops", async (t) => {
  const { net, clock, reports, connection } = start(t, { transports: ["poll"] });
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  const refused = await net.next();
  assert.equal(refused.param("cursor"), "c0");
  refused.refuse(400, "bad_cursor");
  await clock.tick(0);
  assert.deepEqual(reports.filter((r) => r.t === "item").map((r) => r.item),
    [{ type: "gap", channel: null, missed: null, cursor: null }]);
  assert.equal(connection.cursor, null);
  assert.ok(!reports.some((r) => r.t === "fatal"));
  const fresh = await net.next();
  assert.equal(fresh.param("cursor"), null);
  fresh.refuse(400, "bad_cursor");
  await clock.tick(0);
  assert.equal(reports.at(-1).t, "fatal");
});

test("a server that is unavailable for a while: errors, and retries", async (t) => {
  const { net, clock, events } = start(t, { transports: ["poll"] });
  (await net.next()).refuse(503, "unavailable");
  await clock.tick(0);
  assert.deepEqual(events("error").map((e) => [e.status, e.code, e.fatal]), [[503, "unavailable", false]]);
  await clock.tick(375);
  assert.equal((await net.next()).transport, "poll");
});

test("a clean end (byte budget, shutdown) resumes at once from the cursor", async (t) => {
  const { net, clock, events } = start(t, { transports: ["stream"] });
  (await net.next()).json({ cursor: "c0", messages: [] });
  const body = (await net.next()).stream();
  body.push(line(1));
  body.end();
  await clock.tick(0);
  assert.deepEqual(events("reconnect"), [{ transport: "stream", delay: 125, reason: "ended" }]);
  await clock.tick(125);
  assert.equal((await net.next()).param("cursor"), "c1");
});

test("drop: closes the transport as a network failure would; it comes back from the cursor", async (t) => {
  const { net, clock, sources, connection, states, events } = start(t);
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  sources[0].open();
  sources[0].emit("room", "1", "c1");
  connection.drop();
  assert.equal(sources[0].closed, true);
  assert.deepEqual(events("reconnect"), [{ transport: "sse", delay: 250, reason: "dropped" }]);
  await clock.tick(250);
  assert.equal(sources[1].url.searchParams.get("cursor"), "c1");
  sources[1].open();
  assert.deepEqual(states(), ["open:sse", "reconnecting:sse", "open:sse"]);
});

test("resume: reconnects at once from an older cursor", async (t) => {
  const { net, clock, sources, connection } = start(t);
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  sources[0].open();
  sources[0].emit("room", "5", "c5");
  connection.resume("c2");
  assert.equal(sources[0].closed, true);
  assert.equal(sources[1].url.searchParams.get("cursor"), "c2");
  assert.equal(connection.cursor, "c2");
});

test("setTransports: forces another transport at once, from the cursor", async (t) => {
  const { net, clock, sources, connection, events } = start(t);
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  sources[0].open();
  connection.setTransports(["poll"]);
  assert.equal(sources[0].closed, true);
  assert.deepEqual(events("transport"), [{ from: "sse", to: "poll", reason: "forced" }]);
  const poll = await net.next();
  assert.equal(poll.transport, "poll");
  assert.equal(poll.param("cursor"), "c0");
});

test("more channels reconnect from the cursor; more names only listen", async (t) => {
  const { net, clock, sources, connection } = start(t);
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  connection.update(new Set(["room"]), new Set(["said"]), undefined);
  assert.equal(sources.length, 1);
  assert.ok(sources[0].listening.includes("said"));
  connection.update(new Set(["room", "other"]), new Set(), 5);
  assert.equal(sources.length, 2);
  const url = sources[1].url.searchParams;
  assert.deepEqual(url.getAll("channel"), ["room", "other"]);
  assert.equal(url.get("cursor"), "c0");
  assert.equal(url.get("since"), "5");
  connection.stop();
  assert.equal(sources[1].closed, true);
});
