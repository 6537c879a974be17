// Access in the client (PROTOCOL.md, "Access"): the `token` option, and
// the server's changes to a live subscription (`end`, `subscribed`) on
// every transport and across tabs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { callbackOf, fakeBrowser, fakeDocument, settle } from "./fakes.js";
import { Comet } from "../comet.js";
import { fromEnvelope } from "../protocol.js";
import { shareKey } from "../tabs.js";

const URL_ = "http://push.test/comet";
const QUICK = { minDelay: 0, maxDelay: 0 };

/** A client of `room` and everything it tells. */
function client(options = {}) {
  const comet = new Comet(URL_, { ...QUICK, channels: ["room"], share: false, ...options });
  const seen = {};
  for (const name of ["message", "end", "subscribed", "error", "reconnect", "state"]) {
    seen[name] = [];
    comet.on(name, (value) => seen[name].push(value));
  }
  const got = () => seen.message.map((m) => `${m.channel}:${m.data}`);
  return { comet, seen, got };
}

/** A token function handing out t1, t2, ...; `calls` holds the channels of each call. */
function tokens() {
  const calls = [];
  const fn = (request) => {
    calls.push(request.channels);
    return Promise.resolve(`t${calls.length}`);
  };
  return { fn, calls };
}

const end = (channel, reason, cursor) => ({ type: "end", channel, reason, cursor });
const added = (channel, cursor) => ({ type: "subscribed", channel, cursor });
const message = (channel, data, cursor) => ({ type: "message", channel, data, cursor });

/** An envelope over SSE: a message as its channel's event, the others as comet-*, each with its cursor as id. */
function sse(source, envelope) {
  if (envelope.type === "message") source.emit(envelope.channel, envelope.data, envelope.cursor);
  else source.emit(`comet-${envelope.type}`, JSON.stringify(envelope), envelope.cursor);
}

/** The bootstrap poll, then the EventSource, opened. */
async function openSse({ net, clock, sources }) {
  const poll = await net.next();
  poll.json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  const source = sources.at(-1);
  source.open();
  return { poll, source };
}

test("end and subscribed envelopes become items; SSE's id is their cursor", () => {
  assert.deepEqual(fromEnvelope(end(null, "expired", "e1")), { type: "end", channel: null, reason: "expired", cursor: "e1" });
  assert.deepEqual(fromEnvelope(end("room", "closed", "e2")), { type: "end", channel: "room", reason: "closed", cursor: "e2" });
  assert.deepEqual(fromEnvelope(added("alerts", "s1")), { type: "subscribed", channel: "alerts", cursor: "s1" });
  assert.equal(fromEnvelope({ type: "someday", channel: "room", cursor: "x" }), null, "unknown types are ignored");
});

test("a token function is called before the first connect, and again after an expiry: the resume loses nothing", async (t) => {
  const browser = fakeBrowser(t);
  const token = tokens();
  const { comet, seen, got } = client({ token: token.fn });
  const { poll, source } = await openSse(browser);
  assert.equal(poll.param("token"), "t1");
  assert.equal(source.url.searchParams.get("token"), "t1");
  assert.deepEqual(token.calls, [["room"]]);
  sse(source, message("room", "1", "c1"));
  sse(source, end(null, "expired", "e1"));
  assert.equal(source.closed, true);
  await browser.clock.tick(0);
  assert.deepEqual(token.calls, [["room"], ["room"]]);
  const again = browser.sources.at(-1);
  assert.notEqual(again, source);
  assert.equal(again.url.searchParams.get("token"), "t2");
  assert.equal(again.url.searchParams.get("cursor"), "e1", "from the end's cursor");
  again.open();
  sse(again, message("room", "2", "c2"));
  assert.deepEqual(got(), ["room:1", "room:2"]);
  assert.deepEqual(seen.end, [], "an expiry is the client's to mend");
  assert.deepEqual(seen.reconnect.map((r) => r.reason), ["expired"]);
  assert.equal(comet.state, "open");
  assert.equal(browser.net.requests.length, 1, "no bootstrap poll: the end named the cursor");
});

test("a static token goes on every request; neither it nor a bad one goes in the URL", async (t) => {
  const browser = fakeBrowser(t);
  client({ token: "static", transports: ["poll"] });
  const first = await browser.net.next();
  assert.equal(first.param("token"), "static");
  first.json({ cursor: "c0", messages: [] });
  assert.equal((await browser.net.next()).param("token"), "static");
  assert.throws(() => new Comet(`${URL_}?token=x`), TypeError);
  assert.throws(() => new Comet(URL_, { token: 42 }), TypeError);
  assert.throws(() => new Comet(URL_, { token: "" }), TypeError);
});

test("a long poll answered with an expiry: no poll with the old token, the next from the end's cursor", async (t) => {
  const browser = fakeBrowser(t);
  const token = tokens();
  const { got } = client({ token: token.fn, transports: ["poll"] });
  (await browser.net.next()).json({ cursor: "c0", messages: [] });
  const held = await browser.net.next();
  held.json({ cursor: "e1", messages: [message("room", "1", "c1"), end(null, "expired", "e1")] });
  await browser.clock.tick(0);
  const next = await browser.net.next();
  assert.equal(next.param("token"), "t2");
  assert.equal(next.param("cursor"), "e1");
  assert.deepEqual(browser.net.requests.map((r) => r.param("token")), ["t1", "t1", "t2"]);
  assert.deepEqual(got(), ["room:1"]);
});

test("every transport follows ends and added channels: SSE, fetch stream, poll, JSONP, forever frame", async (t) => {
  const envelopes = [
    message("room", "1", "c1"),
    added("alerts", "c2"),
    message("alerts", "2", "c3"),
    end("room", "unsubscribed", "c4"),
    { type: "someday", channel: "alerts", cursor: "x" },
    end(null, "expired", "c4"),
  ];
  for (const transport of ["sse", "stream", "poll", "jsonp", "iframe"]) {
    await t.test(transport, async (t) => {
      const browser = fakeBrowser(t);
      const appended = fakeDocument(t);
      const token = tokens();
      const { comet, seen, got } = client({ transports: [transport], token: token.fn });
      await browser.clock.tick(0);
      let next;
      if (transport === "sse") {
        const { source } = await openSse(browser);
        envelopes.forEach((e) => { if (e.type !== "someday") sse(source, e); });
        next = async () => browser.sources.at(-1).url;
      } else if (transport === "stream") {
        (await browser.net.next()).json({ cursor: "c0", messages: [] });
        const body = (await browser.net.next()).stream();
        envelopes.forEach((e) => body.push(`${JSON.stringify(e)}\n`));
        next = async () => (await browser.net.next()).url;
      } else if (transport === "poll") {
        (await browser.net.next()).json({ cursor: "c4", messages: envelopes });
        next = async () => (await browser.net.next()).url;
      } else if (transport === "jsonp") {
        callbackOf(appended[0])({ cursor: "c4", messages: envelopes });
        next = async () => new URL(appended.at(-1).src);
      } else {
        (await browser.net.next()).json({ cursor: "c0", messages: [] });
        await browser.clock.tick(0);
        const frame = appended.at(-1);
        envelopes.forEach((e) => callbackOf(frame)(e));
        next = async () => new URL(appended.at(-1).src);
      }
      await browser.clock.tick(0);
      assert.deepEqual(got(), ["room:1", "alerts:2"]);
      assert.deepEqual(seen.subscribed, [{ channel: "alerts", cursor: "c2" }]);
      assert.deepEqual(seen.end, [{ channel: "room", reason: "unsubscribed", cursor: "c4" }]);
      assert.deepEqual(comet.channels, ["alerts"]);
      const url = await next();
      assert.deepEqual(url.searchParams.getAll("channel"), ["alerts"], "the resume asks for what is left");
      assert.equal(url.searchParams.get("cursor"), "c4");
      assert.equal(url.searchParams.get("token"), "t2");
      assert.deepEqual(token.calls, [["room"], ["alerts"]]);
      assert.notEqual(comet.state, "closed");
    });
  }
});

test("a subscribed channel is asked for at the next reconnect, and its messages reach its listeners", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, got } = client();
  const alerts = [];
  comet.on("alerts", (m) => alerts.push(m.data));
  const { source } = await openSse(browser);
  sse(source, added("alerts", "s1"));
  assert.ok(source.listening.includes("alerts"), "SSE delivers the new channel's events");
  sse(source, message("alerts", "hi", "c2"));
  assert.deepEqual(alerts, ["hi"]);
  assert.equal(browser.sources.length, 1, "no reconnect for it");
  comet.drop();
  await browser.clock.tick(0);
  const url = browser.sources.at(-1).url.searchParams;
  assert.deepEqual(url.getAll("channel"), ["room", "alerts"]);
  assert.equal(url.get("cursor"), "c2");
  assert.deepEqual(got(), ["alerts:hi"]);
});

test("disconnected: an end event, closed, and no reconnect", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen } = client({ token: tokens().fn });
  const { source } = await openSse(browser);
  sse(source, end(null, "disconnected", "e1"));
  source.fail(); // the stream's close
  await browser.clock.tick(60000);
  assert.deepEqual(seen.end, [{ channel: null, reason: "disconnected", cursor: "e1" }]);
  assert.equal(comet.state, "closed");
  assert.equal(comet.cursor, "e1");
  assert.equal(browser.sources.length, 1);
  assert.equal(browser.net.requests.length, 1);
  assert.deepEqual(seen.reconnect, []);
});

test("a closed channel is dropped with its presence; when it was the last, closed without a reconnect loop", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen } = client({ channels: ["room", "other"], transports: ["stream"] });
  const set = comet.presence("room");
  (await browser.net.next()).json({ cursor: "c0", messages: [] });
  const body = (await browser.net.next()).stream();
  const send = (e) => body.push(`${JSON.stringify(e)}\n`);
  send({ type: "presence", channel: "room", users: 1, connections: 1, presence: [{ user: "ann", info: null, connections: 1 }] });
  await browser.clock.tick(0);
  assert.equal(set.size, 1);
  send(end("room", "closed", "c1"));
  await browser.clock.tick(0);
  assert.deepEqual(comet.channels, ["other"]);
  assert.equal([set.size, set.ready].join(), "0,false", "its presence set is emptied");
  assert.equal(browser.net.unclaimed, 0, "the stream goes on");
  send(end("other", "closed", "c2"));
  send(end(null, "closed", "c2"));
  body.end();
  await browser.clock.tick(60000);
  assert.deepEqual(seen.end.map((e) => `${e.channel}:${e.reason}`), ["room:closed", "other:closed", "null:closed"]);
  assert.equal(comet.state, "closed");
  assert.equal(browser.net.requests.length, 2);
});

test("401 with a token function: a new token after the back-off, fatal after three in a row", async (t) => {
  const browser = fakeBrowser(t);
  const token = tokens();
  const { comet, seen } = client({ token: token.fn, transports: ["poll"], minDelay: 100, maxDelay: 1000 });
  for (const expected of ["t1", "t2", "t3"]) {
    const request = await browser.net.next();
    assert.equal(request.param("token"), expected);
    request.refuse(401, "unauthorized");
    await browser.clock.tick(0);
    if (expected !== "t3") {
      assert.equal(browser.net.unclaimed, 0, "not at once");
      assert.ok(browser.clock.pending()[0] > 0);
      await browser.clock.tick(1000);
    }
  }
  assert.deepEqual(seen.error.map((e) => [e.code, e.fatal]),
    [["unauthorized", false], ["unauthorized", false], ["unauthorized", true]]);
  assert.equal(comet.state, "closed");
  await browser.clock.tick(60000);
  assert.equal(token.calls.length, 3);
  assert.equal(browser.net.requests.length, 3);
});

test("a token that works again starts the count over", async (t) => {
  const browser = fakeBrowser(t);
  const token = tokens();
  const { comet } = client({ token: token.fn, transports: ["poll"] });
  for (let round = 0; round < 3; round++) {
    (await browser.net.next()).refuse(401, "unauthorized");
    await browser.clock.tick(0);
    (await browser.net.next()).refuse(403, "forbidden");
    await browser.clock.tick(0);
    (await browser.net.next()).json({ cursor: "c0", messages: [] });
    (await browser.net.next()).json({ cursor: "e", messages: [end(null, "expired", "e")] });
    await browser.clock.tick(0);
  }
  assert.notEqual(comet.state, "closed");
  assert.equal(token.calls.length, 10);
});

test("without a token function, a 401 is fatal at once, as a 403 is", async (t) => {
  for (const [status, code] of [[401, "unauthorized"], [403, "forbidden"]]) {
    await t.test(code, async (t) => {
      const browser = fakeBrowser(t);
      const { comet, seen } = client({ token: "static", transports: ["poll"] });
      (await browser.net.next()).refuse(status, code);
      await browser.clock.tick(60000);
      assert.deepEqual(seen.error.map((e) => [e.code, e.fatal]), [[code, true]]);
      assert.equal(comet.state, "closed");
      assert.equal(browser.net.requests.length, 1);
    });
  }
});

test("a token function that fails: an error, and a retry with back-off", async (t) => {
  const browser = fakeBrowser(t);
  let calls = 0;
  const token = () => (++calls === 1 ? Promise.reject(new Error("offline")) : "fresh");
  const { seen } = client({ token, transports: ["poll"], minDelay: 100, maxDelay: 1000 });
  await browser.clock.tick(0);
  assert.deepEqual(seen.error.map((e) => [e.code, e.message, e.fatal]), [["token_failed", "offline", false]]);
  assert.equal(browser.net.requests.length, 0);
  await browser.clock.tick(100);
  assert.equal((await browser.net.next()).param("token"), "fresh");
});

test("an EventSource that fails to open may have met a 401: the next attempt has a new token", async (t) => {
  const browser = fakeBrowser(t);
  const token = tokens();
  client({ token: token.fn, cursor: "c5" });
  await browser.clock.tick(0);
  browser.sources.at(-1).fail();
  await browser.clock.tick(0);
  assert.equal(browser.sources.at(-1).url.searchParams.get("token"), "t2");
  browser.sources.at(-1).open();
  browser.sources.at(-1).fail(); // a drop after it opened: a network's, the token stays
  await browser.clock.tick(0);
  assert.equal(browser.sources.at(-1).url.searchParams.get("token"), "t2");
  assert.equal(token.calls.length, 2);
});

test("more channels: the token function is told them before the reconnect", async (t) => {
  const browser = fakeBrowser(t);
  const token = tokens();
  const { comet } = client({ token: token.fn });
  await openSse(browser);
  comet.subscribe("more");
  await browser.clock.tick(0);
  assert.deepEqual(token.calls, [["room"], ["room", "more"]]);
  assert.equal(browser.sources.at(-1).url.searchParams.get("token"), "t2");
  comet.unsubscribe("more");
  await browser.clock.tick(0);
  assert.equal(token.calls.length, 2, "fewer channels: the token still grants them");
});

// ---- tabs

test("tabs: a token function is no part of the sharing key, a token string is", () => {
  const url = new URL(URL_);
  assert.equal(shareKey(url, false, () => "a"), shareKey(url, false));
  assert.equal(shareKey(url, false, "one"), shareKey(url, false, "one"));
  assert.notEqual(shareKey(url, false, "one"), shareKey(url, false, "two"));
  assert.notEqual(shareKey(url, false, "one"), shareKey(url, false));
  assert.ok(!shareKey(url, false, "secret").includes("secret"));
});

test("tabs: followers learn added and ended channels; the leader asks for no stale channel; a disconnect closes every tab", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leaderToken = tokens();
  const followerToken = tokens();
  const leader = client({ share: true, token: leaderToken.fn });
  const follower = client({ share: true, token: followerToken.fn, channels: ["room", "side"] });
  await settle();
  // The leader's first poll, then (the follower said hello) one for both.
  const [first, second] = [await browser.net.next(), await browser.net.next()];
  assert.equal(first.aborted, true);
  assert.deepEqual(second.url.searchParams.getAll("channel"), ["room", "side"]);
  assert.deepEqual(leaderToken.calls, [["room"], ["room", "side"]], "the leader's function is told every tab's channels");
  assert.deepEqual(followerToken.calls, []);
  second.json({ cursor: "c0", messages: [] });
  await browser.clock.tick(0);
  const shared = browser.sources.at(-1);
  assert.equal(shared.url.searchParams.get("token"), "t2");
  shared.open();

  sse(shared, added("alerts", "s1"));
  sse(shared, message("alerts", "a", "c2"));
  sse(shared, end("side", "unsubscribed", "c3"));
  await settle();
  await browser.clock.tick(0);
  for (const tab of [leader, follower]) {
    assert.deepEqual(tab.seen.subscribed, [{ channel: "alerts", cursor: "s1" }]);
    assert.deepEqual(tab.got(), ["alerts:a"]);
  }
  assert.deepEqual(follower.seen.end, [{ channel: "side", reason: "unsubscribed", cursor: "c3" }]);
  assert.deepEqual(leader.seen.end, [], "the leader's own channels did not change");
  assert.deepEqual(follower.comet.channels, ["room", "alerts"]);
  assert.equal(browser.sources.at(-1), shared, "no reconnect: not for the added channel, nor for the follower's old wants");

  const requests = browser.net.requests.length;
  sse(shared, end(null, "disconnected", "c4"));
  await settle();
  await browser.clock.tick(60000);
  for (const tab of [leader, follower]) {
    assert.deepEqual(tab.seen.end.at(-1), { channel: null, reason: "disconnected", cursor: "c4" });
    assert.equal(tab.comet.state, "closed");
  }
  // (With these fakes the lock reaches the follower before the leader's
  // last words: it leads for a moment, then honours the end.)
  assert.ok(browser.sources.every((s) => s.closed), "no EventSource open");
  assert.ok(browser.net.requests.slice(requests).every((r) => r.aborted), "no request open");
});

test("tabs: the next leader gets its own token, told every channel", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leaderToken = tokens();
  const followerToken = tokens();
  const leader = client({ share: true, token: leaderToken.fn });
  const follower = client({ share: true, token: followerToken.fn });
  await settle();
  const { source } = await openSse(browser);
  sse(source, message("room", "1", "c1"));
  await settle();
  leader.comet.close();
  await settle();
  await browser.clock.tick(0);
  assert.equal(follower.comet.leader, true);
  assert.deepEqual(followerToken.calls, [["room"]]);
  const next = browser.sources.at(-1).url.searchParams;
  assert.equal(next.get("token"), "t1");
  assert.equal(next.get("cursor"), "c1");
});
