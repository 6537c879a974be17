// The file servers hand out (protocol::CLIENT_SCRIPT, built by
// comet-core/build.rs) is these modules: same exports, same behaviour.
// `cargo test --test client_js` passes its path as COMET_CLIENT_BUNDLE.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";
import { fakeBrowser, settle } from "./fakes.js";
import * as modules from "../comet.js";

const bundle = process.env.COMET_CLIENT_BUNDLE;
const skip = !bundle && "COMET_CLIENT_BUNDLE is not set (cargo test --test client_js sets it)";

test("the served file exports what comet.js exports", { skip }, async () => {
  const served = await import(pathToFileURL(bundle).href);
  assert.deepEqual(Object.keys(served).sort(), Object.keys(modules).sort());
});

test("the served file falls back, shares between tabs and resumes", { skip }, async (t) => {
  const { Comet } = await import(pathToFileURL(bundle).href);
  const { net, clock, sources } = fakeBrowser(t, { share: true });
  const options = { channels: ["room"], transports: ["sse", "poll"], minDelay: 0, maxDelay: 0 };
  const leader = new Comet("http://push.test/comet", options);
  const follower = new Comet("http://push.test/comet", options);
  const got = [];
  follower.on("message", (m) => got.push(m.data));
  await settle();
  (await net.next()).json({ cursor: "c0", messages: [] });
  await clock.tick(0);
  sources.at(-1).fail();
  await clock.tick(0);
  sources.at(-1).fail();
  await clock.tick(0);
  const poll = await net.next();
  assert.equal(poll.transport, "poll");
  poll.json('{"cursor":"c1","messages":[{"type":"message","channel":"room","data":{"n": 1.0},"cursor":"c1"}]}');
  await clock.tick(0);
  await settle();
  assert.deepEqual(got, ['{"n": 1.0}']);
  assert.equal(follower.transport, "poll");
  const held = await net.next();
  leader.close();
  await settle();
  assert.equal(held.aborted, true);
  assert.equal(follower.leader, true);
  // A new leader starts from the best transport again, from the cursor.
  assert.equal(sources.at(-1).url.searchParams.get("cursor"), "c1");
  follower.close();
});
