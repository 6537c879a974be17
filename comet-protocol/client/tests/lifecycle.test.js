// The device's comings and goings (lifecycle.js, Connection.wake and
// pause) and the server's shutdown window (an `end` for `shutdown`).

import { test } from "node:test";
import assert from "node:assert/strict";
import { fakeBrowser, fakePage, openSse, settle } from "./fakes.js";
import { Comet } from "../comet.js";

const URL_ = "http://push.test/comet";

/** Back-off of 4 to 8 s: a retry that waits it out is easy to tell from one that does not. */
const SLOW = { minDelay: 4000, maxDelay: 8000 };

function client(options = {}) {
  const comet = new Comet(URL_, { ...SLOW, channels: ["room"], share: false, ...options });
  const seen = { message: [], state: [], reconnect: [], end: [] };
  for (const name of Object.keys(seen)) comet.on(name, (value) => seen[name].push(value));
  return { comet, seen };
}

const sent = (source, n) => source.emit("room", `m${n}`, `c${n}`);
const cursorOf = (source) => source.url.searchParams.get("cursor");

test("back after longer than staleAfter away, an open stream reconnects at once from its cursor", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  const { seen } = client({ staleAfter: 20000 });
  const source = await openSse(browser);
  sent(source, 1);
  page.hide();
  await browser.clock.tick(30000);
  // The socket died in silence while the phone slept: nothing says so.
  page.show();
  await browser.clock.tick(0);
  assert.ok(source.closed, "the old stream is closed");
  assert.equal(browser.sources.length, 2, "a new stream, at once");
  assert.equal(cursorOf(browser.sources[1]), "c1", "from the cursor: nothing lost");
  assert.deepEqual(seen.reconnect.at(-1), { transport: "sse", delay: 0, reason: "wake" });
});

test("back after a short absence, a healthy stream is left alone", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  client({ staleAfter: 20000 });
  const source = await openSse(browser);
  page.hide();
  await browser.clock.tick(5000);
  page.show();
  await browser.clock.tick(0);
  assert.ok(!source.closed);
  assert.equal(browser.sources.length, 1);
});

test("resumed after a freeze longer than staleAfter, the stream reconnects; after a short one it stays", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  client({ staleAfter: 20000 });
  const source = await openSse(browser);
  page.freeze();
  await browser.clock.tick(1000);
  page.resume();
  await browser.clock.tick(0);
  assert.equal(browser.sources.length, 1);
  page.freeze();
  await browser.clock.tick(25000);
  page.resume();
  await browser.clock.tick(0);
  assert.ok(source.closed);
  assert.equal(browser.sources.length, 2);
});

test("online: a retry waiting out its back-off tries at once, and an open stream reconnects", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  client();
  const source = await openSse(browser);
  sent(source, 1);
  page.offline();
  source.fail();
  await browser.clock.tick(0);
  assert.equal(browser.sources.length, 1, "waiting: a dropped stream retries after a jittered delay");
  assert.ok(browser.clock.pending()[0] > 0);
  page.online();
  await browser.clock.tick(0);
  assert.equal(browser.sources.length, 2, "the network is back: at once");
  assert.equal(cursorOf(browser.sources[1]), "c1");
  // Open, and the network changed under it (Wi-Fi to cellular): the socket
  // may be bound to the network that went; a reconnect costs nothing.
  browser.sources[1].open();
  page.offline();
  page.online();
  await browser.clock.tick(0);
  assert.equal(browser.sources.length, 2, "a second return within a second is the same one");
  await browser.clock.tick(2000);
  page.offline();
  page.online();
  await browser.clock.tick(0);
  assert.equal(browser.sources.length, 3);
  assert.ok(browser.sources[1].closed);
});

test("a page restored from the back-forward cache reconnects at once", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  client();
  const source = await openSse(browser);
  page.pageshow(false); // the first load: nothing to do
  await browser.clock.tick(0);
  assert.equal(browser.sources.length, 1);
  page.pagehide(true);
  page.pageshow(true);
  await browser.clock.tick(0);
  assert.ok(source.closed);
  assert.equal(browser.sources.length, 2);
});

test("pauseWhenHidden closes the connection while hidden and resumes from the cursor when shown", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  const { comet, seen } = client({ pauseWhenHidden: true });
  const source = await openSse(browser);
  sent(source, 1);
  page.hide();
  await browser.clock.tick(0);
  assert.ok(source.closed, "hidden: closed");
  assert.equal(comet.state, "paused");
  await browser.clock.tick(60000);
  assert.equal(browser.sources.length, 1, "no reconnect while hidden, however long");
  page.show();
  await browser.clock.tick(0);
  assert.equal(browser.sources.length, 2);
  assert.equal(cursorOf(browser.sources[1]), "c1");
  browser.sources[1].open();
  await settle();
  assert.deepEqual(seen.state.map((s) => s.state), ["connecting", "open", "paused", "reconnecting", "open"]);
});

test("pauseWhenHidden: a page that loads hidden does not connect until shown", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  page.doc.visibilityState = "hidden";
  const { comet } = client({ pauseWhenHidden: true });
  await browser.clock.tick(60000);
  assert.equal(browser.net.requests.length + browser.sources.length, 0);
  assert.equal(comet.state, "paused");
  page.show();
  await browser.clock.tick(0);
  assert.equal(browser.net.requests.length, 1, "the bootstrap poll");
});

test("shared: the leader pauses only when every tab is hidden; a follower's return wakes it", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leaderPage = fakePage(t);
  const leader = client({ pauseWhenHidden: true, share: true });
  await settle();
  const followerPage = fakePage(t); // the next tab, its own document
  const follower = client({ pauseWhenHidden: true, share: true });
  await settle();
  const source = await openSse(browser);
  await settle();
  assert.ok(leader.comet.leader && !follower.comet.leader);
  leaderPage.hide();
  await settle();
  assert.ok(!source.closed, "a follower still shows the messages");
  followerPage.hide();
  await settle();
  assert.ok(source.closed, "no tab shows them: paused");
  assert.equal(follower.comet.state, "paused");
  followerPage.show();
  await browser.clock.tick(0);
  assert.equal(browser.sources.length, 2, "the follower is back: the leader reconnects");
});

test("a follower back after long away has the leader check its connection, if the leader was away too", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leaderPage = fakePage(t);
  client({ share: true, staleAfter: 20000 });
  await settle();
  const followerPage = fakePage(t);
  client({ share: true, staleAfter: 20000 });
  await settle();
  const source = await openSse(browser);
  await settle();
  // A tab switch: the leader was here all along, its connection worked.
  followerPage.hide();
  await browser.clock.tick(30000);
  followerPage.show();
  await browser.clock.tick(0);
  assert.ok(!source.closed);
  // The phone slept: every tab away; the follower is looked at first.
  leaderPage.hide();
  followerPage.hide();
  await browser.clock.tick(30000);
  followerPage.show();
  await browser.clock.tick(0);
  assert.ok(source.closed);
  assert.equal(browser.sources.length, 2);
});

test("pauseWhenHidden: a page resumed or back online while still hidden stays paused", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  const { comet } = client({ pauseWhenHidden: true });
  const source = await openSse(browser);
  page.hide();
  await browser.clock.tick(0);
  assert.ok(source.closed);
  page.freeze();
  await browser.clock.tick(30000);
  page.resume();
  page.offline();
  page.online();
  page.pageshow(true);
  await browser.clock.tick(0);
  assert.equal(comet.state, "paused");
  assert.equal(browser.sources.length, 1);
});

test("shared, pauseWhenHidden: when the last tab that showed it leaves, the hidden leader pauses", async (t) => {
  const browser = fakeBrowser(t, { share: true });
  const leaderPage = fakePage(t);
  const leader = client({ pauseWhenHidden: true, share: true });
  await settle();
  fakePage(t);
  const follower = client({ pauseWhenHidden: true, share: true });
  await settle();
  const source = await openSse(browser);
  await settle();
  leaderPage.hide();
  await settle();
  assert.ok(!source.closed);
  follower.comet.close();
  await settle();
  assert.ok(source.closed, "no tab shows it now");
  assert.equal(leader.comet.state, "paused");
});

test("a shutdown spreads the reconnect over the server's window, and a wake does not cut it short", async (t) => {
  const browser = fakeBrowser(t);
  const page = fakePage(t);
  const { comet, seen } = client();
  const source = await openSse(browser);
  sent(source, 1);
  const end = { type: "end", channel: null, reason: "shutdown", cursor: "c1", reconnect_within: 10000 };
  source.emit("comet-end", JSON.stringify(end), "c1");
  await browser.clock.tick(0);
  assert.ok(source.closed);
  assert.deepEqual(seen.end, [], "not an end for the app: the client comes back by itself");
  assert.notEqual(comet.state, "closed");
  const { delay, reason } = seen.reconnect.at(-1);
  assert.equal(reason, "shutdown");
  assert.ok(delay >= 0 && delay < 10000, "a random part of the window");
  page.offline();
  page.online();
  await browser.clock.tick(Math.max(0, delay - 1));
  assert.equal(browser.sources.length, 1);
  await browser.clock.tick(1);
  assert.equal(browser.sources.length, 2);
  assert.equal(cursorOf(browser.sources[1]), "c1");
});

test("a shutdown without a window, or with an absurd one, reconnects within bounds", async (t) => {
  const browser = fakeBrowser(t);
  const { seen } = client();
  let source = await openSse(browser);
  source.emit("comet-end", JSON.stringify({ type: "end", channel: null, reason: "shutdown", cursor: "c0" }), "c0");
  await browser.clock.tick(0);
  assert.ok(seen.reconnect.at(-1).delay <= 250, "as a clean end");
  await browser.clock.tick(250);
  source = browser.sources.at(-1);
  source.open();
  const absurd = { type: "end", channel: null, reason: "shutdown", cursor: "c0", reconnect_within: 1e12 };
  source.emit("comet-end", JSON.stringify(absurd), "c0");
  await browser.clock.tick(0);
  assert.ok(seen.reconnect.at(-1).delay <= 60000);
});

test("staleAfter must be a number of ms", () => {
  assert.throws(() => new Comet(URL_, { staleAfter: -1 }), TypeError);
  assert.throws(() => new Comet(URL_, { staleAfter: "soon" }), TypeError);
});
