import { test } from "node:test";
import assert from "node:assert/strict";
import { checkChannel, checkTransports, fromEnvelope, fromSse, rawPayloads, refusal } from "../protocol.js";

test("channel names follow PROTOCOL.md", () => {
  for (const ok of ["room/lobby", "a", "x".repeat(128), "A-z_0.9:@/-"]) assert.equal(checkChannel(ok), ok);
  for (const bad of ["", "x".repeat(129), "with space", "comet-gap", "error", "open", 7, null]) {
    assert.throws(() => checkChannel(bad), TypeError, String(bad));
  }
});

test("transports must be known, and at least one", () => {
  assert.deepEqual(checkTransports(["poll", "sse"]), ["poll", "sse"]);
  assert.throws(() => checkTransports([]), /no transports/);
  assert.throws(() => checkTransports(["websocket"]), /unknown transport/);
  assert.throws(() => checkTransports("sse"), TypeError);
});

test("envelopes become items; a JSON payload keeps its text as sent", () => {
  const raw = '{"n": 12345678901234567890123, "z": 1, "z": 2}';
  const item = fromEnvelope({ type: "message", channel: "c", data: JSON.parse(raw), cursor: "k" }, raw);
  assert.deepEqual(item, { type: "message", channel: "c", event: null, data: raw, cursor: "k" });
  // Without the text (JSONP, forever frame): the parsed value, stringified.
  assert.equal(fromEnvelope({ type: "message", channel: "c", data: { a: 1 }, cursor: "k" }).data, '{"a":1}');
  // A text payload is the string itself.
  assert.equal(fromEnvelope({ type: "message", channel: "c", data: "hi", event: "said", cursor: "k" }).event, "said");
  assert.deepEqual(fromEnvelope({ type: "gap", channel: "c", cursor: "k" }),
    { type: "gap", channel: "c", missed: null, cursor: "k", event: null, data: null });
  assert.equal(fromEnvelope({ type: "heartbeat" }), null);
});

test("rawPayloads finds each data member's text at its depth, whatever the strings hold", () => {
  const line = '{"type":"message","channel":"c","data":{"data": "}\\"{", "n": [1, {"data": 2}]},"cursor":"k"}';
  assert.deepEqual(rawPayloads(line, 1), ['{"data": "}\\"{", "n": [1, {"data": 2}]}']);
  const answer = '{"cursor":"k","messages":[{"type":"message","data":1.0e3},{"type":"gap","missed":1},'
    + '{"type":"message","data" : "s\\"t"},{"type":"message","data":[ "]" ]}]}';
  assert.deepEqual(rawPayloads(answer, 3), ["1.0e3", '"s\\"t"', '[ "]" ]']);
});

test("SSE events name a channel or an event, and say so when they cannot tell", () => {
  const one = new Set(["room"]);
  assert.deepEqual(fromSse(one, { type: "room", data: "x", lastEventId: "k" }),
    { type: "message", channel: "room", event: null, data: "x", cursor: "k" });
  assert.equal(fromSse(one, { type: "said", data: "x", lastEventId: "k" }).event, "said");
  assert.equal(fromSse(one, { type: "message", data: "x", lastEventId: "k" }).event, null);
  const two = new Set(["a", "b"]);
  assert.equal(fromSse(two, { type: "b", data: "x", lastEventId: "k" }).channel, "b");
  const named = fromSse(two, { type: "said", data: "x", lastEventId: "k" });
  assert.equal(named.channel, null);
  assert.equal(named.event, "said");
});

test("refusals: which are fatal, which mean another transport", async () => {
  const answer = (status, body) => new Response(JSON.stringify(body), { status });
  assert.deepEqual(await refusal(answer(400, { error: "bad_cursor", message: "no" })),
    { status: 400, code: "bad_cursor", message: "no", unsupported: false, fatal: true });
  const other = await refusal(answer(400, { error: "bad_transport" }));
  assert.equal(other.unsupported, true);
  assert.equal(other.fatal, false);
  assert.equal((await refusal(answer(503, { error: "unavailable" }))).fatal, false);
  const html = await refusal(new Response("<h1>bad gateway</h1>", { status: 502, statusText: "Bad Gateway" }));
  assert.equal(html.code, "http_502");
  assert.equal(html.message, "Bad Gateway");
});
