import { test } from "node:test";
import assert from "node:assert/strict";
import { fakeOrigin, fakeWindow, settle } from "./fakes.js";
import { Tabs, canShare, shareKey } from "../tabs.js";

/** One tab of `origin`: its Tabs, and what it was told. */
function tab(origin, { channels = ["a"], names = [], since } = {}) {
  const env = fakeWindow(origin);
  const log = [];
  const host = {
    wants: () => ({ channels, names, since }),
    lead: () => log.push("lead"),
    changed: (s) => log.push(`changed ${s}`),
    status: () => ({ state: "open", transport: "sse" }),
    control: (m) => log.push(`control ${m.op}`),
    follow: (m) => {
      if (m.t === "item") tabs.remember(m.item); // as Comet does with what it delivers
      log.push(`${m.t} ${m.item?.cursor ?? m.cursor ?? m.state ?? m.name}`);
    },
  };
  const tabs = new Tabs("key", host, { replay: since !== undefined, env });
  tabs.start();
  return { env, log, tabs, channels };
}

const item = (channel, cursor) => ({ type: "message", channel, event: null, data: "x", cursor });

/** The leader delivers an item: it remembers it and hands it on. */
function deliver(leader, it) {
  leader.tabs.remember(it);
  leader.tabs.send({ t: "item", item: it });
}

test("sharing needs BroadcastChannel and Web Locks; the key names route, credentials and version", () => {
  assert.equal(canShare(fakeOrigin()), true);
  assert.equal(canShare({ BroadcastChannel: class {} }), false);
  assert.equal(canShare({ navigator: { locks: {} } }), false);
  const url = new URL("https://push.test/comet");
  assert.equal(shareKey(url, false), "comet:4:https://push.test/comet:-");
  assert.notEqual(shareKey(url, true), shareKey(url, false));
});

test("the first tab leads; the next follows, and the leader learns what it wants", async () => {
  const origin = fakeOrigin();
  const first = tab(origin);
  await settle();
  assert.equal(first.tabs.leading, true);
  assert.deepEqual(first.log, ["lead"]);
  const second = tab(origin, { channels: ["b"], names: ["said"] });
  await settle();
  assert.equal(second.tabs.leading, false);
  assert.deepEqual(first.tabs.peers(), [{ channels: ["b"], names: ["said"], presence: [], access: 0, hidden: false }]);
  assert.deepEqual(first.log, ["lead", "changed undefined"]);
  assert.deepEqual(second.log, ["state open"], "the leader tells a new tab its state");
});

test("the leader's reports reach every follower; followers' controls reach the leader", async () => {
  const origin = fakeOrigin();
  const leader = tab(origin);
  await settle();
  const followers = [tab(origin), tab(origin)];
  await settle();
  leader.tabs.send({ t: "item", item: item("a", "c1") });
  leader.tabs.send({ t: "cursor", cursor: "c2" });
  leader.tabs.send({ t: "event", name: "reconnect", value: {} });
  followers[0].tabs.send({ t: "item", item: item("a", "x") }); // a follower sends nothing
  followers[1].tabs.control({ op: "drop" });
  leader.tabs.control({ op: "resume" }); // the leader asks no one
  await settle();
  for (const f of followers) assert.deepEqual(f.log.slice(-3), ["item c1", "cursor c2", "event reconnect"]);
  assert.deepEqual(leader.log.filter((l) => l.startsWith("control")), ["control drop"]);
});

test("a late tab gets the recent items it asked for with since, once, then the live ones", async () => {
  const origin = fakeOrigin();
  const leader = tab(origin, { channels: ["a", "b"] });
  await settle();
  for (const cursor of ["a1", "a2", "a3"]) leader.tabs.remember(item("a", cursor));
  leader.tabs.remember(item("b", "b1"));
  const late = tab(origin, { channels: ["a"], since: 2 });
  await settle();
  assert.deepEqual(late.log, ["item a2", "item a3", "state open"]);
  deliver(leader, item("a", "a4"));
  await settle();
  assert.deepEqual(late.log.at(-1), "item a4");
  // Asked again (a hello after on()), nothing is replayed twice.
  late.tabs.hello();
  await settle();
  assert.equal(late.log.filter((l) => l === "item a2").length, 1);
  // since: "oldest" is everything remembered; "head" is nothing.
  const oldest = tab(origin, { channels: ["a", "b"], since: "oldest" });
  const head = tab(origin, { channels: ["a"], since: "head" });
  await settle();
  assert.deepEqual(oldest.log.filter((l) => l.startsWith("item")), ["item a1", "item a2", "item a3", "item b1", "item a4"]);
  assert.deepEqual(head.log.filter((l) => l.startsWith("item")), []);
});

test("what reaches a late tab before its replay is in the replay: once, in order", async () => {
  const origin = fakeOrigin();
  const leader = tab(origin);
  await settle();
  leader.tabs.remember(item("a", "a1"));
  const late = tab(origin, { since: 5 });
  // The leader's next item overtakes the late tab's hello.
  deliver(leader, item("a", "a2"));
  await settle();
  assert.deepEqual(late.log.filter((l) => l.startsWith("item")), ["item a1", "item a2"]);
  // The late tab leads next, and replays the same, in the same order.
  leader.tabs.close();
  await settle();
  const later = tab(origin, { since: 5 });
  await settle();
  assert.deepEqual(later.log.filter((l) => l.startsWith("item")), ["item a1", "item a2"]);
});

test("when the leader closes, the next tab leads and asks every tab what it wants", async () => {
  const origin = fakeOrigin();
  const first = tab(origin);
  await settle();
  const second = tab(origin, { channels: ["b"] });
  const third = tab(origin, { channels: ["c"] });
  await settle();
  first.tabs.close();
  await settle();
  assert.equal(second.tabs.leading, true);
  assert.equal(third.tabs.leading, false);
  assert.equal(second.log.at(-2), "lead");
  assert.deepEqual(second.tabs.peers(), [{ channels: ["c"], names: [], presence: [], access: 0, hidden: false }], "the closed tab said bye");
  third.tabs.close();
  await settle();
  assert.deepEqual(second.tabs.peers(), []);
});

test("a page put in the back-forward cache says bye, and hello when it is back", async () => {
  const origin = fakeOrigin();
  const leader = tab(origin);
  await settle();
  const other = tab(origin, { channels: ["b"] });
  await settle();
  other.env.dispatch("pagehide");
  await settle();
  assert.deepEqual(leader.tabs.peers(), []);
  other.env.dispatch("pageshow");
  await settle();
  assert.deepEqual(leader.tabs.peers(), [{ channels: ["b"], names: [], presence: [], access: 0, hidden: false }]);
});

test("a tab closed while waiting for the lock never leads and hears nothing", async () => {
  const origin = fakeOrigin();
  const leader = tab(origin);
  await settle();
  const gone = tab(origin);
  await settle();
  assert.equal(origin.navigator.locks.waiting("key"), 1);
  gone.tabs.close();
  await settle();
  assert.equal(origin.navigator.locks.waiting("key"), 0);
  const before = gone.log.length;
  leader.tabs.send({ t: "item", item: item("a", "c1") });
  leader.tabs.close();
  await settle();
  assert.equal(gone.log.length, before);
  assert.equal(gone.tabs.leading, false);
});
