/**
 * The node's clocks. `monotonicNowMs` never steps back (the wall clock at process start, then
 * `performance.now()`), so an NTP step cannot make the failure detector see a silence or a burst;
 * `wallNowMs` is the wall clock, for generations and event-time bounds. Both carry the process's
 * clock offset (`--clock-offset-ms`), zero unless a fault test sets it to play a node whose clock
 * is off without touching the machine's.
 */
let offsetMs = 0;

/**
 * Most a clock may be set off. One node off by more than the 10 minutes a generation may lead is
 * refused by its peers; a whole cluster set off by the same amount runs as if on another date,
 * which is how a month of retention is played in minutes (scripts/retention-month.ts).
 */
export const MAX_CLOCK_OFFSET_MS = 400 * 24 * 60 * 60 * 1000;

export function setClockOffsetMs(ms: number): void {
  offsetMs = ms;
}

export function monotonicNowMs(): number {
  return Math.floor(performance.timeOrigin + performance.now()) + offsetMs;
}

export function wallNowMs(): number {
  return Date.now() + offsetMs;
}
