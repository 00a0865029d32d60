/**
 * UTC time buckets: which minute, hour and day window a timestamp falls in, and how a query range
 * splits into the fewest aligned buckets.
 *
 * Every event updates its minute, hour and day bucket, so a range query reads whole days in the
 * middle and hours and minutes only at its edges. JavaScript time has no leap seconds, so UTC
 * minutes, hours and days are plain epoch-aligned multiples of their width and no calendar or time
 * zone is involved. Pure: no clock, no I/O; timestamps are milliseconds since the epoch.
 */

import { assert } from '../protocol/errors.js';

export const Resolution = { MINUTE: 'm', HOUR: 'h', DAY: 'd' } as const;
export type Resolution = (typeof Resolution)[keyof typeof Resolution];

/** Every event updates one bucket of each, finest first: the order `bucketsOf` lists them in. */
export const RESOLUTIONS_OF_EVENT = [Resolution.MINUTE, Resolution.HOUR, Resolution.DAY] as const;

export const MINUTE_MS = 60_000;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;

export const RESOLUTION_MS: Readonly<Record<Resolution, number>> = {
  m: MINUTE_MS,
  h: HOUR_MS,
  d: DAY_MS,
};

/** Most spans `decomposeRange` returns: minutes, hours, days, hours, minutes. */
export const MAX_RANGE_SPANS = 5;

export function isResolution(x: unknown): x is Resolution {
  return x === Resolution.MINUTE || x === Resolution.HOUR || x === Resolution.DAY;
}

/** Start of the aligned UTC window of `res` that contains `tsMs` (floors, also before 1970). */
export function bucketStart(tsMs: number, res: Resolution): number {
  assert(Number.isFinite(tsMs), `timestamp must be finite, got ${tsMs}`);
  const width = RESOLUTION_MS[res];
  return Math.floor(tsMs / width) * width;
}

/** First aligned boundary of `res` at or after `tsMs`. */
/** The first aligned bucket start at or after tsMs. */
export function ceilTo(tsMs: number, res: Resolution): number {
  const width = RESOLUTION_MS[res];
  return Math.ceil(tsMs / width) * width;
}

export function isAligned(tsMs: number, res: Resolution): boolean {
  return Number.isFinite(tsMs) && tsMs % RESOLUTION_MS[res] === 0;
}

/** The three buckets one event updates: its minute, hour and day (as `RESOLUTIONS_OF_EVENT`). */
export function bucketsOf(tsMs: number): [minuteStart: number, hourStart: number, dayStart: number] {
  return [bucketStart(tsMs, 'm'), bucketStart(tsMs, 'h'), bucketStart(tsMs, 'd')];
}

/** A contiguous run of aligned buckets of one resolution: bucket starts in [start, end). */
export interface Span {
  res: Resolution;
  start: number;
  end: number;
}

/**
 * The fewest aligned buckets covering a query range, as at most `MAX_RANGE_SPANS` spans in
 * ascending order. The range covers every minute that overlaps `[startMs, endMs)`: the start is
 * truncated to its minute and the end rounded up to its minute, so an event at `t` is in the range
 * iff `floorMinute(startMs) <= t < ceilMinute(endMs)`. With minute-aligned ends that is exactly
 * `[startMs, endMs)`; with `endMs` = now it includes the minute under way, so an event just
 * counted is seen. Empty or inverted ranges give `[]`.
 *
 * Greedy from the outside in is optimal because aligned buckets nest: any hour inside the range
 * replaces 60 minutes, any day 24 hours.
 */
export function decomposeRange(startMs: number, endMs: number): Span[] {
  if (endMs <= startMs) return [];
  const s = bucketStart(startMs, 'm');
  const e = ceilTo(endMs, 'm');

  const spans: Span[] = [];
  const push = (res: Resolution, start: number, end: number): void => {
    if (start < end) spans.push({ res, start, end });
  };

  const hs = ceilTo(s, 'h');
  const he = bucketStart(e, 'h');
  if (hs >= he) {
    // No whole hour inside: minutes only (one span even when the range crosses an hour boundary).
    push('m', s, e);
    return spans;
  }
  push('m', s, hs);
  const ds = ceilTo(hs, 'd');
  const de = bucketStart(he, 'd');
  if (ds >= de) {
    push('h', hs, he);
  } else {
    push('h', hs, ds);
    push('d', ds, de);
    push('h', de, he);
  }
  push('m', he, e);

  assert(spans.length <= MAX_RANGE_SPANS, `decomposeRange made ${spans.length} spans`);
  return spans;
}

/** Number of buckets in one span. */
export function spanLength(span: Span): number {
  return (span.end - span.start) / RESOLUTION_MS[span.res];
}

/** The bucket starts of a span, ascending. */
export function spanBuckets(span: Span): number[] {
  const width = RESOLUTION_MS[span.res];
  assert(
    isAligned(span.start, span.res) && isAligned(span.end, span.res),
    `span [${span.start}, ${span.end}) is not aligned to '${span.res}'`,
  );
  const out: number[] = [];
  for (let t = span.start; t < span.end; t += width) out.push(t);
  return out;
}

/** Total number of buckets in a list of spans. */
export function countBuckets(spans: readonly Span[]): number {
  let n = 0;
  for (const span of spans) n += spanLength(span);
  return n;
}
