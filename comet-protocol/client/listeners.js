// listeners.js: calling an event's listeners, for the client and its
// presence sets alike.

/**
 * Calls each of `listeners` (a Set, or undefined) with `value`, on a copy:
 * one added or removed meanwhile does not change this round. One faulty
 * listener must not cost the others their call: its error is reported.
 */
export function callEach(listeners, value) {
  for (const listener of [...(listeners ?? [])]) {
    try {
      listener(value);
    } catch (error) {
      (globalThis.reportError ?? console.error)(error);
    }
  }
}
