// comet.d.ts says what the code does: the same members, options and client
// events (there is no TypeScript compiler here; this reads the file).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fakeBrowser } from "./fakes.js";
import { Comet, CometMessage, CometPresence } from "../comet.js";

const types = readFileSync(new URL("../comet.d.ts", import.meta.url), "utf8");

/** The member names declared in `export (declare class|interface) name { ... }`. */
function members(kind, name) {
  const start = types.indexOf(`export ${kind} ${name} `);
  assert.ok(start >= 0, `${kind} ${name} in comet.d.ts`);
  const body = types.slice(types.indexOf("{", start) + 1, types.indexOf("\n}", start));
  const names = [...body.matchAll(/^ {2}(?:readonly )?(\w+)\??[(:<]/gm)].map((m) => m[1]);
  return [...new Set(names)].filter((n) => n !== "constructor").sort();
}

const own = (prototype) => Object.getOwnPropertyNames(prototype).filter((n) => n !== "constructor").sort();

test("class Comet: the same methods and properties", () => {
  assert.deepEqual(members("declare class", "Comet"), own(Comet.prototype));
});

test("class CometMessage: the same fields and json()", () => {
  const fields = Object.keys(new CometMessage({ channel: "c", event: null, data: "1", cursor: "k" }));
  assert.deepEqual(members("declare class", "CometMessage"), [...fields, ...own(CometMessage.prototype)].sort());
});

test("class CometPresence: the same members (its iterator aside)", () => {
  assert.deepEqual(members("declare class", "CometPresence"), own(CometPresence.prototype));
  assert.equal(typeof CometPresence.prototype[Symbol.iterator], "function");
});

test("PresenceEvents: the names a presence set's on() takes", () => {
  const set = new CometPresence("room");
  for (const name of members("interface", "PresenceEvents")) set.on(name, () => {});
  assert.throws(() => set.on("message", () => {}), TypeError);
});

test("CometOptions: exactly the options the constructor reads", () => {
  const read = new Set();
  const options = new Proxy({}, { get: (_, key) => { read.add(key); } });
  new Comet("http://push.test/comet", options).close();
  assert.deepEqual(members("interface", "CometOptions"), [...read].sort());
});

test("ClientEvents: the names the client keeps for its own events, never listened for over SSE", async (t) => {
  const { net, clock, sources } = fakeBrowser(t);
  const events = members("interface", "ClientEvents");
  assert.ok(events.includes("transport") && events.includes("reconnect"));
  const comet = new Comet("http://push.test/comet", { channels: ["room"], share: false });
  for (const name of [...events, "said"]) comet.on(name, () => {});
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  assert.deepEqual(sources[0].listening.sort(), ["comet-end", "comet-gap", "comet-join", "comet-leave", "comet-presence", "comet-subscribed", "message", "room", "said"]);
  comet.close();
});
