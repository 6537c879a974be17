import { test } from "node:test";
import assert from "node:assert/strict";
import { TransportPolicy } from "../policy.js";

const OPTIONS = { minDelay: 500, maxDelay: 15000, upgradeAfter: 30000 };
const ALL = ["sse", "stream", "poll", "jsonp", "iframe"];

/** A policy whose jitter is `jitter` (0: the low end, 1: the high end). */
function policy(order = ALL, jitter = 0.5, options = OPTIONS) {
  return new TransportPolicy(order, options, () => jitter);
}

test("falls back in order, after two failures to open", () => {
  const p = policy();
  const seen = [];
  for (let i = 0; i < 10; i++) {
    seen.push(p.transport);
    p.failed(p.transport, {});
  }
  assert.deepEqual(seen, ["sse", "sse", "stream", "stream", "poll", "poll", "jsonp", "jsonp", "iframe", "iframe"]);
  assert.equal(p.transport, "sse", "after the last, the first again");
  assert.equal(p.everOpened, false);
});

test("says which transport it falls back to, and only when it changes", () => {
  const p = policy();
  assert.equal(p.failed("sse", {}).change, null);
  assert.deepEqual(p.failed("sse", {}).change, { from: "sse", to: "stream", reason: "fallback" });
});

test("a transport that worked gets four tries before the next", () => {
  const p = policy();
  p.opened("sse");
  for (let i = 0; i < 3; i++) {
    p.failed("sse", {});
    assert.equal(p.transport, "sse");
  }
  p.failed("sse", {});
  assert.equal(p.transport, "stream");
});

test("a drop after opening is no failure to open: same transport, short delay", () => {
  const p = policy(ALL, 1);
  p.opened("sse");
  for (let i = 0; i < 10; i++) {
    const { delay, change } = p.failed("sse", { opened: true });
    assert.equal(change, null);
    assert.equal(delay, OPTIONS.minDelay);
  }
  assert.equal(p.transport, "sse");
});

test("one the route does not offer is skipped at once, and for good", () => {
  const p = policy();
  assert.deepEqual(p.failed("sse", { unsupported: true }), { delay: 0, change: { from: "sse", to: "stream", reason: "fallback" } });
  assert.equal(p.isUnavailable("sse"), true);
  for (let i = 0; i < 8; i++) p.failed(p.transport, {});
  assert.equal(p.transport, "stream", "sse is never tried again");
  // Nothing to return to either.
  assert.equal(p.opened("stream"), null);
});

test("backs off exponentially up to maxDelay, with jitter in the upper half", () => {
  const low = policy(["sse"], 0);
  const high = policy(["sse"], 0.999999);
  const lows = [];
  const highs = [];
  for (let i = 0; i < 8; i++) {
    lows.push(low.failed("sse", {}).delay);
    highs.push(Math.round(high.failed("sse", {}).delay));
  }
  assert.deepEqual(lows, [250, 500, 1000, 2000, 4000, 7500, 7500, 7500]);
  assert.deepEqual(highs, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  // Opening starts the back-off over.
  low.opened("sse");
  assert.equal(low.failed("sse", {}).delay, 250);
});

test("a clean end resumes at once, within 250 ms", () => {
  assert.equal(policy(ALL, 0.999999).ended() < 250, true);
  assert.equal(policy(ALL, 1, { ...OPTIONS, minDelay: 100 }).ended(), 100);
});

test("after a fallback, tries the better transport again, and returns to it", () => {
  const p = policy();
  p.failed("sse", {});
  p.failed("sse", {});
  assert.equal(p.opened("stream"), OPTIONS.upgradeAfter);
  assert.deepEqual(p.upgrade(), { from: "stream", to: "sse", reason: "upgrade" });
  assert.equal(p.transport, "sse");
  assert.equal(p.opened("sse"), null, "the best: nothing to upgrade to");
});

test("a better transport that still fails: back at once, and wait twice as long", () => {
  const p = policy();
  p.failed("sse", {});
  p.failed("sse", {});
  let after = p.opened("stream");
  const waits = [];
  for (let i = 0; i < 6; i++) {
    waits.push(after);
    p.upgrade();
    assert.deepEqual(p.failed("sse", {}), { delay: 0, change: { from: "sse", to: "stream", reason: "fallback" } });
    after = p.opened("stream");
  }
  assert.deepEqual(waits, [30000, 60000, 120000, 240000, 300000, 300000]);
  // Once it works, the wait starts over.
  p.upgrade();
  p.opened("sse");
  p.failed("sse", {});
  p.failed("sse", {});
  p.failed("sse", {});
  p.failed("sse", {});
  assert.equal(p.opened("stream"), 30000);
});

test("reset starts over with the forced order, and remembers having opened", () => {
  const p = policy();
  p.opened("sse");
  p.failed("sse", { unsupported: true });
  p.reset(["poll", "sse"]);
  assert.equal(p.transport, "poll");
  assert.equal(p.isUnavailable("sse"), false);
  assert.equal(p.everOpened, true);
});
