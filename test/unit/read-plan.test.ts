/** The read coordinator's arithmetic: spans asked for, and replicas' answers joined, summed and diffed. */
import { describe, expect, it } from 'vitest';
import { halveRead, latestEventDayEnd, mergeRead, planSpans } from '../../cluster/read-plan.js';
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../cluster/time-buckets.js';
import { MAX_TIME_MS, MIN_EVENT_TIME_MS } from '../../protocol/limits.js';
import { MAX_BUCKETS_PER_READ, type SpanSlot } from '../../protocol/peer.js';

const T = Date.UTC(2026, 0, 1);

describe('planSpans', () => {
  it('asks for the fewest aligned buckets, cut so no message covers more than MAX_BUCKETS_PER_READ', () => {
    expect(planSpans('v', 'view', T + 30 * MINUTE_MS, T + DAY_MS + 2 * HOUR_MS)).toEqual([
      ['v', 'view', 'm', T + 30 * MINUTE_MS, T + HOUR_MS],
      ['v', 'view', 'h', T + HOUR_MS, T + DAY_MS + 2 * HOUR_MS],
    ]);
    const long = planSpans('v', 'view', T, T + 3000 * DAY_MS);
    expect(long.every(([, , res, s, e]) => res === 'd' && (e - s) / DAY_MS <= MAX_BUCKETS_PER_READ)).toBe(true);
    expect(long.reduce((a, [, , , s, e]) => a + (e - s) / DAY_MS, 0)).toBe(3000);
  });

  it('asks for no bucket before the earliest time an event may have, so a count since 1970 asks for 30 years fewer', () => {
    const since1970 = planSpans('v', 'view', 0, T);
    expect(since1970[0]?.[3]).toBe(MIN_EVENT_TIME_MS);
    expect(since1970.reduce((a, [, , , s, e]) => a + (e - s) / DAY_MS, 0)).toBe((T - MIN_EVENT_TIME_MS) / DAY_MS);
    expect(since1970.length).toBe(Math.ceil((T - MIN_EVENT_TIME_MS) / DAY_MS / MAX_BUCKETS_PER_READ));
    expect(planSpans('v', 'view', 0, MIN_EVENT_TIME_MS - DAY_MS)).toEqual([]);
    expect(planSpans('v', 'view', MIN_EVENT_TIME_MS - HOUR_MS, MIN_EVENT_TIME_MS + HOUR_MS)).toEqual([['v', 'view', 'h', MIN_EVENT_TIME_MS, MIN_EVENT_TIME_MS + HOUR_MS]]);
  });

  it('given the clock, asks for no day past the last one an event may be in (24 h ahead, twice over for clocks that differ)', () => {
    const now = T + 5 * HOUR_MS;
    expect(latestEventDayEnd(now)).toBe(T + 3 * DAY_MS);
    expect(planSpans('v', 'view', T, MAX_TIME_MS, now)).toEqual([['v', 'view', 'd', T, T + 3 * DAY_MS]]);
    // A range that ends before then is asked for as it is.
    expect(planSpans('v', 'view', T, T + 2 * DAY_MS + HOUR_MS, now)).toEqual(planSpans('v', 'view', T, T + 2 * DAY_MS + HOUR_MS));
    expect(planSpans('v', 'view', T + 4 * DAY_MS, MAX_TIME_MS, now)).toEqual([]);
  });
});

describe('halveRead', () => {
  it('halves a message by its spans, then a lone span at its middle bucket, down to one bucket', () => {
    const spans = planSpans('v', 'view', T + 30 * MINUTE_MS, T + DAY_MS + 2 * HOUR_MS);
    expect(halveRead(spans, ['a', 'b'])).toEqual([
      [[spans[0]], ['a']],
      [[spans[1]], ['b']],
    ]);
    expect(halveRead([['v', 'view', 'd', T, T + 5 * DAY_MS]], [7])).toEqual([
      [[['v', 'view', 'd', T, T + 2 * DAY_MS]], [7]],
      [[['v', 'view', 'd', T + 2 * DAY_MS, T + 5 * DAY_MS]], [7]],
    ]);
    expect(halveRead([['v', 'view', 'm', T, T + MINUTE_MS]], [7])).toBeUndefined();
  });
});

describe('mergeRead', () => {
  const slot = (span: number, start: number, actor: string, count: number, min = 1, max = 1): SpanSlot => [span, start, actor, count, count, min, max];
  it('joins per slot (never adds two versions of one slot), sums, and tells each replica what it lacked', () => {
    const spans = planSpans('v', 'view', T, T + 2 * HOUR_MS);
    const answers = new Map<string, SpanSlot[]>([
      ['n1', [slot(0, T, 'n1#a', 5), slot(0, T, 'n2#b', 3)]],
      ['n2', [slot(0, T, 'n1#a', 4), slot(0, T, 'n2#b', 3), slot(0, T + HOUR_MS, 'n2#b', 2)]],
      ['n3', []],
    ]);
    const read = mergeRead(spans, answers);
    expect(read.stats).toEqual([10, 10, 1, 1]); // n1#a: 5 (not 9), n2#b: 3 + 2
    expect(read.repairs.get('n1')?.map((e) => [e.actor, e.ref.start, e.slot.count])).toEqual([['n2#b', T + HOUR_MS, 2]]);
    expect(read.repairs.get('n2')?.map((e) => [e.actor, e.ref.start, e.slot.count])).toEqual([['n1#a', T, 5]]);
    expect(read.repairs.get('n3')).toHaveLength(3);
    expect(mergeRead(spans, new Map([['n1', []]])).stats).toEqual([0, 0, null, null]);
  });
});
