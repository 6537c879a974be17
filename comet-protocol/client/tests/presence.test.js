// Presence in the client: comet.presence(channel), a live set filled from
// the server's lists and kept by joins and leaves, on every transport and
// across tabs (PROTOCOL.md, "Presence").
import { test } from "node:test";
import assert from "node:assert/strict";
import { callbackOf, fakeBrowser, fakeDocument, settle } from "./fakes.js";
import { Comet, CometPresence } from "../comet.js";

const URL_ = "http://push.test/comet";
const QUICK = { minDelay: 0, maxDelay: 0 };

/** A presence list envelope of `channel`: `members` are [user, connections]. */
function list(channel, members) {
  const presence = members.map(([user, connections]) => ({ user, info: { name: user.toUpperCase() }, connections }));
  const connections = presence.reduce((n, m) => n + m.connections, 0);
  return { type: "presence", channel, users: presence.length, connections, presence };
}

/** A join or leave envelope. */
function change(type, channel, user) {
  return { type, channel, user, info: { name: user.toUpperCase() } };
}

/** The SSE form of an envelope: its event type and data, no id. */
function sse(source, envelope) {
  const { type, ...rest } = envelope;
  if (type === "presence") source.emit("comet-presence", JSON.stringify(envelope));
  else source.emit(`comet-${type}`, JSON.stringify(rest));
}

/** A client, its set of `room`, and every join, leave and change it tells. */
function client(options = {}) {
  const comet = new Comet(URL_, { ...QUICK, channels: ["room"], share: false, ...options });
  const set = comet.presence("room");
  const seen = { join: [], leave: [], change: 0, set: [] };
  comet.on("join", (e) => seen.join.push(e.user));
  comet.on("leave", (e) => seen.leave.push(e.user));
  set.on("join", (e) => seen.set.push(`+${e.user}`));
  set.on("leave", (e) => seen.set.push(`-${e.user}`));
  set.on("change", () => seen.change++);
  const users = () => [...set.keys()].sort();
  return { comet, set, seen, users };
}

/** The bootstrap poll, then the EventSource, opened. */
async function openSse({ net, clock, sources }, messages = []) {
  const poll = await net.next();
  poll.json({ cursor: "c0", messages });
  await clock.tick(0);
  const source = sources.at(-1);
  source.open();
  return { poll, source };
}

test("a list fills the set, then joins and leaves keep it; no id is taken for a cursor", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, set, seen, users } = client();
  assert.ok(set instanceof CometPresence);
  assert.equal(comet.presence("room"), set, "one set a channel");
  assert.equal(set.ready, false);
  const { poll, source } = await openSse(browser);
  assert.equal(poll.param("presence"), "1");
  assert.equal(source.url.searchParams.get("presence"), "1");
  source.emit("room", "hello", "c1");
  sse(source, list("room", [["ann", 2], ["bob", 1]]));
  assert.equal(set.ready, true);
  assert.deepEqual(users(), ["ann", "bob"]);
  assert.deepEqual(set.get("ann"), { user: "ann", info: { name: "ANN" }, connections: 2 });
  assert.deepEqual([set.size, set.users, set.connections], [2, 2, 3]);
  assert.deepEqual(seen.join, [], "the first list fills the set: no joins");
  assert.equal(seen.change, 1);

  sse(source, change("join", "room", "cat"));
  sse(source, change("leave", "room", "ann"));
  assert.deepEqual(users(), ["bob", "cat"]);
  assert.deepEqual([set.users, set.connections], [2, 2]);
  assert.deepEqual(seen.join, ["cat"]);
  assert.deepEqual(seen.leave, ["ann"]);
  assert.deepEqual(seen.set, ["+cat", "-ann"]);
  assert.equal(seen.change, 3);

  // Presence events carry the id of the message before them (EventSource's
  // lastEventId): neither a cursor nor a repeat of that message.
  assert.equal(comet.cursor, "c1");
  const messages = [];
  comet.on("message", (m) => messages.push(m.data));
  source.emit("room", "next", "c2");
  assert.deepEqual(messages, ["next"]);
  assert.equal(comet.cursor, "c2");
  // The set is read-only from outside.
  assert.equal(typeof set.set, "undefined");
  assert.equal(typeof set.delete, "undefined");
});

test("a join of a user already listed (one's own, after the list) and a leave of one not listed change nothing", async (t) => {
  const browser = fakeBrowser(t);
  const { set, seen, users } = client();
  const { source } = await openSse(browser);
  sse(source, list("room", [["me", 1], ["bob", 1]]));
  sse(source, change("join", "room", "me"));
  sse(source, change("join", "room", "me"));
  sse(source, change("leave", "room", "nobody"));
  assert.deepEqual(users(), ["bob", "me"]);
  assert.equal(set.connections, 2);
  assert.deepEqual(seen.join, []);
  assert.deepEqual(seen.leave, []);
  assert.equal(seen.change, 1);
  // A join, then the same user's join again: told once.
  sse(source, change("join", "room", "cat"));
  sse(source, change("join", "room", "cat"));
  assert.deepEqual(seen.join, ["cat"]);
});

test("after a reconnect the new list replaces the set, and only its differences are told", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen, users, set } = client();
  const { source } = await openSse(browser);
  source.emit("room", "1", "c1");
  sse(source, list("room", [["ann", 1], ["bob", 1]]));
  comet.drop();
  await browser.clock.tick(0);
  const again = browser.sources.at(-1);
  assert.equal(again.url.searchParams.get("cursor"), "c1");
  assert.equal(again.url.searchParams.get("presence"), "1");
  again.open();
  // bob left and cat came while the client was away; ann has a second tab.
  sse(again, list("room", [["ann", 2], ["cat", 1]]));
  assert.deepEqual(users(), ["ann", "cat"]);
  assert.deepEqual(seen.join, ["cat"]);
  assert.deepEqual(seen.leave, ["bob"]);
  assert.equal(set.connections, 3);
  const changes = seen.change;
  // The same list again: nothing changed, nothing told.
  sse(again, list("room", [["ann", 2], ["cat", 1]]));
  assert.equal(seen.change, changes);
  assert.deepEqual([seen.join.length, seen.leave.length], [1, 1]);
});

test("long polls: every answer's list is diffed against the set (events between polls are not sent again)", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen, users } = client({ transports: ["poll"] });
  const first = await browser.net.next();
  assert.equal(first.param("presence"), "1");
  first.json({ cursor: "c0", messages: [list("room", [["ann", 1]])] });
  const second = await browser.net.next();
  assert.equal(second.param("cursor"), "c0");
  // The hold: a message, and a join that came during it.
  second.json({
    cursor: "c1",
    messages: [
      list("room", [["ann", 1]]),
      { type: "message", channel: "room", data: { n: 1 }, cursor: "c1" },
      change("join", "room", "bob"),
    ],
  });
  const third = await browser.net.next();
  assert.deepEqual(users(), ["ann", "bob"]);
  assert.deepEqual(seen.join, ["bob"]);
  // Between the polls bob left, cat came and went, dan came: the list
  // alone says so. cat is never seen.
  third.json({ cursor: "c1", messages: [list("room", [["ann", 1], ["dan", 1]])] });
  await browser.net.next();
  assert.deepEqual(users(), ["ann", "dan"]);
  assert.deepEqual(seen.join, ["bob", "dan"]);
  assert.deepEqual(seen.leave, ["bob"]);
  assert.equal(comet.cursor, "c1");
});

test("presence() on a connected client reconnects from its cursor with presence=1", async (t) => {
  const browser = fakeBrowser(t);
  const comet = new Comet(URL_, { ...QUICK, channels: ["room"], share: false });
  const { poll, source } = await openSse(browser);
  assert.equal(poll.param("presence"), null);
  assert.equal(source.url.searchParams.get("presence"), null);
  source.emit("room", "1", "c1");
  const set = comet.presence("other");
  assert.equal(source.closed, true);
  const next = browser.sources.at(-1);
  assert.equal(next.url.searchParams.get("presence"), "1");
  assert.equal(next.url.searchParams.get("cursor"), "c1");
  assert.deepEqual(next.url.searchParams.getAll("channel"), ["room", "other"], "presence subscribes");
  comet.presence("room");
  assert.equal(browser.sources.at(-1), next, "presence already asked: no reconnect");
  next.open();
  sse(next, list("other", [["ann", 1]]));
  sse(next, list("room", [["bob", 1]]));
  assert.deepEqual([...set.keys()], ["ann"]);
  // Unsubscribing ends the channel's presence: its set is emptied.
  comet.unsubscribe("other");
  assert.equal(set.size, 0);
  assert.equal(set.ready, false);
});

test("joins and leaves of channels not asked for are not told; unknown envelope types are ignored", async (t) => {
  const browser = fakeBrowser(t);
  const { comet, seen, users } = client({ channels: ["room", "news"], transports: ["stream"] });
  const joins = [];
  comet.on("join", (e) => joins.push(`${e.channel}:${e.user}`));
  const messages = [];
  comet.on("message", (m) => messages.push(m.data));
  (await browser.net.next()).json({ cursor: "c0", messages: [] });
  const body = (await browser.net.next()).stream();
  for (const envelope of [
    list("news", [["ann", 1]]),
    change("join", "news", "bob"),
    list("room", []),
    { type: "typing", channel: "room", user: "ann" },
    { type: "message", channel: "room", data: "still here", cursor: "c1" },
    change("join", "room", "cat"),
  ]) body.push(`${JSON.stringify(envelope)}\n`);
  await browser.clock.tick(0);
  assert.deepEqual(joins, ["room:cat"]);
  assert.deepEqual(seen.join, ["cat"]);
  assert.deepEqual(users(), ["cat"]);
  assert.deepEqual(messages, ["still here"]);
});

test("every transport hands presence on: SSE, fetch stream, poll, JSONP, forever frame", async (t) => {
  const envelopes = [list("room", [["ann", 1]]), change("join", "room", "bob"), change("leave", "room", "ann")];
  for (const transport of ["sse", "stream", "poll", "jsonp", "iframe"]) {
    await t.test(transport, async (t) => {
      const browser = fakeBrowser(t);
      const appended = fakeDocument(t);
      const { seen, users, set } = client({ transports: [transport] });
      await settle();
      if (transport === "sse") {
        const { source } = await openSse(browser);
        envelopes.forEach((e) => sse(source, e));
      } else if (transport === "stream") {
        (await browser.net.next()).json({ cursor: "c0", messages: [] });
        const body = (await browser.net.next()).stream();
        envelopes.forEach((e) => body.push(`${JSON.stringify(e)}\n`));
      } else if (transport === "poll") {
        (await browser.net.next()).json({ cursor: "c0", messages: envelopes });
      } else if (transport === "jsonp") {
        assert.equal(new URL(appended[0].src).searchParams.get("presence"), "1");
        callbackOf(appended[0])({ cursor: "c0", messages: envelopes });
      } else {
        (await browser.net.next()).json({ cursor: "c0", messages: [] });
        await browser.clock.tick(0);
        const frame = appended.at(-1);
        assert.equal(new URL(frame.src).searchParams.get("presence"), "1");
        envelopes.forEach((e) => callbackOf(frame)(e));
      }
      await browser.clock.tick(0);
      assert.equal(set.ready, true, transport);
      assert.deepEqual(users(), ["bob"], transport);
      assert.deepEqual([seen.join, seen.leave], [["bob"], ["ann"]], transport);
    });
  }
});

test("the URL's own query goes with every request; the protocol's parameters are refused in it", async (t) => {
  const browser = fakeBrowser(t);
  const comet = new Comet(`${URL_}?user=ann&x=1`, { ...QUICK, channels: ["room"], share: false });
  comet.presence("room");
  const { poll, source } = await openSse(browser);
  for (const url of [poll.url, source.url]) {
    assert.equal(url.searchParams.get("user"), "ann");
    assert.equal(url.searchParams.get("presence"), "1");
  }
  for (const name of ["channel", "cursor", "since", "transport", "timeout", "callback", "presence"]) {
    assert.throws(() => new Comet(`${URL_}?${name}=1`), TypeError, name);
  }
  assert.throws(() => comet.presence("comet-x"), TypeError);
  assert.throws(() => comet.presence("room").on("nope", () => {}), TypeError);
});

// ---- tabs

test("tabs: a follower's presence reaches the leader's connection; lists, joins and leaves reach every tab", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leader = new Comet(URL_, { ...QUICK, channels: ["room"] });
  const follower = new Comet(URL_, { ...QUICK, channels: ["room"] });
  await settle();
  const { source } = await openSse(browser);
  await settle();
  assert.equal(follower.leader, false);
  assert.equal(source.url.searchParams.get("presence"), null);

  const set = follower.presence("room");
  const joins = [];
  follower.on("join", (e) => joins.push(e.user));
  const leaderJoins = [];
  leader.on("join", (e) => leaderJoins.push(e.user));
  await settle();
  const next = browser.sources.at(-1);
  assert.equal(next.url.searchParams.get("presence"), "1", "the leader reconnected with presence");
  assert.equal(browser.sources.length, 2);
  next.open();
  sse(next, list("room", [["ann", 1]]));
  sse(next, change("join", "room", "bob"));
  await settle();
  assert.deepEqual([...set.keys()].sort(), ["ann", "bob"]);
  assert.deepEqual(joins, ["bob"]);
  assert.deepEqual(leaderJoins, [], "the leader did not ask presence: no events for it");

  // A tab that asks later gets the leader's list at once, with no
  // reconnect, then the events.
  const late = new Comet(URL_, { ...QUICK, channels: ["room"] });
  const lateSet = late.presence("room");
  await settle();
  assert.equal(browser.sources.length, 2);
  assert.equal(lateSet.ready, true);
  assert.deepEqual([...lateSet.keys()].sort(), ["ann", "bob"]);
  sse(next, change("leave", "room", "ann"));
  await settle();
  assert.deepEqual([...lateSet.keys()], ["bob"]);
  assert.deepEqual([...set.keys()], ["bob"]);

  // The leader goes: the next leads, and its first list is diffed.
  leader.close();
  await settle();
  assert.equal(follower.leader, true);
  const third = browser.sources.at(-1);
  assert.equal(third.url.searchParams.get("presence"), "1");
  third.open();
  sse(third, list("room", [["bob", 1], ["cat", 1]]));
  await settle();
  assert.deepEqual(joins, ["bob", "cat"]);
  assert.deepEqual([...lateSet.keys()].sort(), ["bob", "cat"]);
  follower.close();
  late.close();
});

test("tabs: a late tab that waits for its replay has the presence that went by before it, from the leader's list", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leader = new Comet(URL_, { ...QUICK, channels: ["room"], since: 5 });
  leader.presence("room");
  await settle();
  const { source } = await openSse(browser);
  sse(source, list("room", [["ann", 1]]));
  source.emit("room", "1", "c1");
  const late = new Comet(URL_, { ...QUICK, channels: ["room"], since: 5 });
  const set = late.presence("room");
  const got = [];
  late.on("message", (m) => got.push(m.data));
  // Before the late tab's hello reaches the leader, a join goes by.
  sse(source, change("join", "room", "bob"));
  await settle();
  assert.deepEqual([...set.keys()].sort(), ["ann", "bob"]);
  assert.deepEqual(got, ["1"]);
  leader.close();
  late.close();
});
