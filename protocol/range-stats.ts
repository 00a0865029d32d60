/**
 * A range read's figures as callers see them, shared by the client library and the node's HTTP
 * API: the range asked for as the node reads it (to the minute), the range the reply covers, and
 * the RANGE_EXPIRED refusal when retention moved an edge and the caller did not accept that.
 */
import { ErrorCode, TallyError } from './errors.js';
import type { QueryTuple, StatsTuple } from './messages.js';

export interface EventStats {
  count: number;
  sum: number;
  min: number | null;
  max: number | null;
  /** sum / count, or null when count is 0. */
  avg: number | null;
  /** The range counted, `[from, to)` in ms: the one asked for, to the minute, unless retention moved an edge. */
  from: number;
  to: number;
  /** Whether retention moved an edge inward (the minutes, or hours, there have expired). */
  clipped: boolean;
}

const MINUTE_MS = 60_000;

/** `[start, end)` as the node reads it: start truncated, end rounded up, to the minute (an empty range stays empty). */
function askedRange(q: QueryTuple): [number, number] {
  const from = Math.floor(q[2] / MINUTE_MS) * MINUTE_MS;
  return q[3] <= q[2] ? [from, from] : [from, Math.ceil(q[3] / MINUTE_MS) * MINUTE_MS];
}

/** The figures of query `q`, from its stats and the range the node answered (absent: the one asked). */
export function rangeStats(q: QueryTuple, stats: StatsTuple, answered: [number, number] | undefined): EventStats {
  const [count, sum, min, max] = stats;
  const asked = askedRange(q);
  const [from, to] = answered ?? asked;
  return { count, sum, min, max, avg: count > 0 ? sum / count : null, from, to, clipped: from !== asked[0] || to !== asked[1] };
}

const showRange = (from: number, to: number): string => `[${new Date(from).toISOString().slice(0, 16)}Z, ${new Date(to).toISOString().slice(0, 16)}Z)`;

/** RANGE_EXPIRED for query `q`, whose figures `s` are clipped; `remedy` says how to accept the clipped range. */
export function rangeExpired(q: QueryTuple, s: EventStats, remedy: string): TallyError {
  const [from, to] = askedRange(q);
  return new TallyError(
    ErrorCode.RANGE_EXPIRED,
    `${showRange(from, to)} reaches past retention (its minute or hour buckets at an edge have expired); ` +
      (s.to > s.from ? `the range that can be counted is ${showRange(s.from, s.to)}: ask for it, or ${remedy}` : 'nothing of it can be counted at a resolution still kept'),
  );
}
