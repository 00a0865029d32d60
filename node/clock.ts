/**
 * The node's clocks. `monotonicNowMs` never steps back (the wall clock at process start, then
 * `performance.now()`), so an NTP step cannot make the failure detector see a silence or a burst;
 * `wallNowMs` is the wall clock, for generations and event-time bounds. Both carry the process's
 * clock offset (`--clock-offset-ms`), zero unless a fault test sets it to play a node whose clock
 * is off without touching the machine's.
 */
let offsetMs = 0;

/** Most a clock may be set off: well inside the 10 minutes a generation may lead the others. */
export const MAX_CLOCK_OFFSET_MS = 5 * 60 * 1000;

export function setClockOffsetMs(ms: number): void {
  offsetMs = ms;
}

export function monotonicNowMs(): number {
  return Math.floor(performance.timeOrigin + performance.now()) + offsetMs;
}

export function wallNowMs(): number {
  return Date.now() + offsetMs;
}
