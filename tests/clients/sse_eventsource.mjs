// What the npm `eventsource` package, an EventSource nobody here wrote,
// dispatches, one JSON line per event on stdout. Used by
// tests/independent_clients.rs; stops when its stdin closes.
//
// usage: node sse_eventsource.mjs URL [EVENT_TYPE...]
import { EventSource } from "eventsource";

const [url, ...types] = process.argv.slice(2);
const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const source = new EventSource(url);
// Listeners, as a page's `onopen`/`onerror` are: any event of these types
// reaches them, whether the connection's own or one the server named so.
source.addEventListener("open", (e) => out({ kind: "open", data: e.data ?? null }));
source.addEventListener("error", (e) => out({ kind: "error", data: e.data ?? null, message: e.message ?? null }));
for (const type of ["message", ...types]) {
  source.addEventListener(type, (e) => out({ kind: "event", type: e.type, data: e.data, id: e.lastEventId }));
}
process.stdin.on("end", () => {
  source.close();
  process.exit(0);
});
process.stdin.resume();
