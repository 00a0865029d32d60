/**
 * Retention: how long minute and hour buckets are kept, and what a read can still answer.
 *
 * Expiry is decided by a bucket's own time, the same rule on every replica: the minute (or hour)
 * buckets of a UTC day expire together once that whole day is older than the retention, i.e. at
 * `day + 1 day + retention`. Whole days, because the store keeps minutes and hours day by day
 * (slot-keys.ts), so expiring them is one range delete; a bucket is kept at least its retention
 * and at most a day longer. Day buckets are kept for ever: one slot per series, day and actor.
 *
 * An expired bucket is never written, merged, repaired or served: every path that takes a slot
 * drops it, so nothing brings it back once the sweep deleted it. A read whose edges fall in
 * expired minutes (or hours) is answered over the largest range inside it that the kept buckets
 * cover (its edges moved inward to the hour, or the day), and says so. Pure: no clock, no I/O.
 */
import { TallyError } from '../protocol/errors.js';
import { MAX_RETENTION_DAYS } from '../protocol/limits.js';
import type { BucketRef } from './slot-table.js';
import { bucketStart, ceilTo, DAY_MS, type Resolution } from './time-buckets.js';

export interface Retention {
  /** Days minute buckets are kept after their day ends; 0: for ever. */
  minuteDays: number;
  /** Days hour buckets are kept after their day ends; 0: for ever. */
  hourDays: number;
}


export function defaultRetention(): Retention {
  // Minutes answer "the last few hours or days" to the minute: two weeks covers a dashboard's
  // usual windows and a bad weekend. They are 1,440 slots a series a day at full rate (98 % of
  // what a series adds daily), so two weeks caps a series at ~21,600 rather than 525,600 a year.
  // Hours over 400 days allow a year-over-year comparison by the hour; days, for ever.
  return { minuteDays: 14, hourDays: 400 };
}

export function validateRetention(r: Retention): Retention {
  const fail = (m: string): never => {
    throw new TallyError('BAD_REQUEST', `retention: ${m}`);
  };
  for (const k of ['minuteDays', 'hourDays'] as const) {
    const v = r[k];
    if (!Number.isSafeInteger(v) || v < 0 || v > MAX_RETENTION_DAYS) fail(`${k} must be a whole number of days in [0, ${MAX_RETENTION_DAYS}] (0: for ever), got ${String(v)}`);
  }
  // Hours answer the edges of ranges whose minutes are gone; days, those whose hours are gone.
  if (forever(r.minuteDays) && !forever(r.hourDays)) fail('hours cannot expire while minutes are kept for ever');
  if (!forever(r.hourDays) && r.hourDays < r.minuteDays) fail(`hours must be kept at least as long as minutes (${r.minuteDays} days), got ${r.hourDays}`);
  return r;
}

function forever(days: number): boolean {
  return days === 0;
}

export function sameRetention(a: Retention, b: Retention): boolean {
  return a.minuteDays === b.minuteDays && a.hourDays === b.hourDays;
}

/**
 * What starting with `wanted` would delete of data kept under `stored`: the resolutions whose
 * retention it shortens, each as `minutes 14 → 7 days`, or none. Lengthening deletes nothing
 * (what expired is gone either way).
 */
export function shortenedRetention(stored: Retention, wanted: Retention): string[] {
  const d = (n: number): string => (forever(n) ? 'for ever' : `${n} days`);
  const out: string[] = [];
  for (const [k, name] of [['minuteDays', 'minutes'], ['hourDays', 'hours']] as const) {
    const a = stored[k];
    const b = wanted[k];
    if (!forever(b) && (forever(a) || b < a)) out.push(`${name} ${d(a)} → ${d(b)}`);
  }
  return out;
}

export function describeRetention(r: Retention): string {
  const d = (n: number): string => (forever(n) ? 'for ever' : `${n} days`);
  return `minutes ${d(r.minuteDays)}, hours ${d(r.hourDays)}, days for ever`;
}

/**
 * The first UTC day whose buckets of `res` are still kept at `nowMs` (every earlier day's have
 * expired), or -Infinity when they are kept for ever.
 */
export function keptFrom(res: Resolution, nowMs: number, r: Retention): number {
  const days = res === 'm' ? r.minuteDays : res === 'h' ? r.hourDays : 0;
  if (forever(days)) return Number.NEGATIVE_INFINITY;
  // Day D expires at D + (days + 1) × DAY; the first day not yet expired follows the last that is.
  return bucketStart(nowMs - (days + 1) * DAY_MS, 'd') + DAY_MS;
}

/** Whether `ref` has expired at `nowMs`. */
export function isExpired(ref: Pick<BucketRef, 'res' | 'start'>, nowMs: number, r: Retention): boolean {
  return ref.res !== 'd' && ref.start < keptFrom(ref.res, nowMs, r);
}

/** The cutoff to hand the store's `expireBefore(res, cutoff)`: every day partition ending at or before it has expired. */
export function expiryCutoff(res: 'm' | 'h', nowMs: number, r: Retention): number | undefined {
  const from = keptFrom(res, nowMs, r);
  return Number.isFinite(from) ? from : undefined;
}

/**
 * The range a query `[startMs, endMs)` is answered over: as `decomposeRange` reads it (start
 * truncated, end rounded up, to the minute), with each edge that falls in expired minutes moved
 * inward to the hour, and one that falls in expired hours to the day. `clipped` says whether that
 * moved an edge; an empty result (`from === to`, at the range's start) means nothing of the range
 * is kept at a resolution that can answer it.
 */
export function answerableRange(startMs: number, endMs: number, nowMs: number, r: Retention): { from: number; to: number; clipped: boolean } {
  const s = bucketStart(startMs, 'm');
  const e = ceilTo(endMs, 'm');
  if (endMs <= startMs) return { from: s, to: s, clipped: false };
  const mFrom = keptFrom('m', nowMs, r);
  const hFrom = keptFrom('h', nowMs, r);
  let from = s;
  if (from < mFrom) from = ceilTo(from, 'h');
  if (from < hFrom) from = ceilTo(from, 'd');
  let to = e;
  if (to < mFrom) to = bucketStart(to, 'h');
  if (to < hFrom) to = bucketStart(to, 'd');
  // Nothing of it can be answered: an empty range where it begins, not past its end.
  if (to <= from) return { from: s, to: s, clipped: true };
  return { from, to, clipped: from !== s || to !== e };
}
