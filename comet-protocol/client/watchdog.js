// watchdog.js: a stream that is silent past its heartbeats is gone,
// whatever the socket says.

/** Calls `dead` when `kick` has not been called for `ms`. */
export function watchdog(ms, dead) {
  let timer = setTimeout(dead, ms);
  return {
    kick() {
      clearTimeout(timer);
      timer = setTimeout(dead, ms);
    },
    stop() {
      clearTimeout(timer);
    },
  };
}
