import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bucketsOf,
  bucketStart,
  ceilTo,
  countBuckets,
  DAY_MS,
  decomposeRange,
  HOUR_MS,
  isAligned,
  MAX_RANGE_SPANS,
  MINUTE_MS,
  RESOLUTION_MS,
  RESOLUTIONS_OF_EVENT,
  spanBuckets,
  type Resolution,
  type Span,
} from '../../cluster/time-buckets.js';

const T0 = Date.UTC(2024, 0, 1); // a UTC midnight
const WINDOW_DAYS = 40;
const at = (iso: string): number => Date.parse(iso);

/** Timestamps in the window, biased towards bucket boundaries and their neighbours. */
const timestampArb = fc.oneof(
  fc.integer({ min: T0 - DAY_MS, max: T0 + WINDOW_DAYS * DAY_MS }),
  fc
    .tuple(
      fc.integer({ min: -1, max: WINDOW_DAYS }),
      fc.integer({ min: 0, max: 23 }),
      fc.constantFrom(0, 1, 30, 58, 59),
      fc.constantFrom(-MINUTE_MS - 1, -MINUTE_MS, -1, 0, 1, MINUTE_MS - 1, MINUTE_MS, 30_000),
    )
    .map(([d, h, m, delta]) => T0 + d * DAY_MS + h * HOUR_MS + m * MINUTE_MS + delta),
);

describe('bucketStart', () => {
  it('floors to UTC minute, hour and day', () => {
    const t = at('2024-03-10T13:47:29.123Z');
    expect(bucketStart(t, 'm')).toBe(at('2024-03-10T13:47:00Z'));
    expect(bucketStart(t, 'h')).toBe(at('2024-03-10T13:00:00Z'));
    expect(bucketStart(t, 'd')).toBe(at('2024-03-10T00:00:00Z'));
    expect(bucketsOf(t)).toEqual([at('2024-03-10T13:47:00Z'), at('2024-03-10T13:00:00Z'), at('2024-03-10T00:00:00Z')]);
  });

  it('is the identity on boundaries and floors before the epoch', () => {
    expect(bucketStart(T0, 'd')).toBe(T0);
    expect(bucketStart(T0 - 1, 'd')).toBe(T0 - DAY_MS);
    expect(bucketStart(-1, 'm')).toBe(-MINUTE_MS);
  });

  it('rejects non-finite timestamps', () => {
    expect(() => bucketStart(Number.NaN, 'm')).toThrow(/assertion/);
  });

  it('puts t in [start, start + width) for every resolution', () => {
    fc.assert(
      fc.property(timestampArb, (t) => {
        const starts = bucketsOf(t);
        RESOLUTIONS_OF_EVENT.forEach((res, i) => {
          const start = starts[i]!;
          expect(start).toBe(bucketStart(t, res));
          expect(isAligned(start, res)).toBe(true);
          expect(start <= t && t < start + RESOLUTION_MS[res]).toBe(true);
        });
      }),
    );
  });
});

describe('decomposeRange examples', () => {
  const spans = (a: string, b: string): [Resolution, string, string][] =>
    decomposeRange(at(a), at(b)).map((s) => [s.res, new Date(s.start).toISOString(), new Date(s.end).toISOString()]);

  it('empty and inverted ranges give nothing', () => {
    expect(decomposeRange(T0, T0)).toEqual([]);
    expect(decomposeRange(T0 + 10, T0 + 10)).toEqual([]);
    // Inside one minute: that whole minute, since it overlaps the range.
    expect(decomposeRange(T0 + 10, T0 + 59_999)).toEqual([{ res: 'm', start: T0 - (T0 % MINUTE_MS), end: T0 - (T0 % MINUTE_MS) + MINUTE_MS }]);
    expect(decomposeRange(T0 + DAY_MS, T0)).toEqual([]);
  });

  it('a range inside one hour is minutes only', () => {
    expect(spans('2024-01-01T10:05:30Z', '2024-01-01T10:20:59Z')).toEqual([
      ['m', '2024-01-01T10:05:00.000Z', '2024-01-01T10:21:00.000Z'],
    ]);
  });

  it('a range crossing one hour boundary without a whole hour is one minute span', () => {
    expect(spans('2024-01-01T10:50:00Z', '2024-01-01T11:10:00Z')).toEqual([
      ['m', '2024-01-01T10:50:00.000Z', '2024-01-01T11:10:00.000Z'],
    ]);
  });

  it('exactly one hour is one hour bucket', () => {
    expect(spans('2024-01-01T10:00:00Z', '2024-01-01T11:00:00Z')).toEqual([
      ['h', '2024-01-01T10:00:00.000Z', '2024-01-01T11:00:00.000Z'],
    ]);
  });

  it('hours and minutes within a day', () => {
    expect(spans('2024-01-01T10:15:00Z', '2024-01-01T14:45:00Z')).toEqual([
      ['m', '2024-01-01T10:15:00.000Z', '2024-01-01T11:00:00.000Z'],
      ['h', '2024-01-01T11:00:00.000Z', '2024-01-01T14:00:00.000Z'],
      ['m', '2024-01-01T14:00:00.000Z', '2024-01-01T14:45:00.000Z'],
    ]);
  });

  it('hours across midnight without a whole day stay one hour span', () => {
    expect(spans('2024-01-01T20:00:00Z', '2024-01-02T04:00:00Z')).toEqual([
      ['h', '2024-01-01T20:00:00.000Z', '2024-01-02T04:00:00.000Z'],
    ]);
  });

  it('the full five spans over 30 days', () => {
    expect(spans('2024-01-01T10:15:42Z', '2024-01-31T14:45:10Z')).toEqual([
      ['m', '2024-01-01T10:15:00.000Z', '2024-01-01T11:00:00.000Z'],
      ['h', '2024-01-01T11:00:00.000Z', '2024-01-02T00:00:00.000Z'],
      ['d', '2024-01-02T00:00:00.000Z', '2024-01-31T00:00:00.000Z'],
      ['h', '2024-01-31T00:00:00.000Z', '2024-01-31T14:00:00.000Z'],
      ['m', '2024-01-31T14:00:00.000Z', '2024-01-31T14:46:00.000Z'],
    ]);
  });

  it('whole days only', () => {
    expect(spans('2024-01-01T00:00:00Z', '2024-01-08T00:00:00Z')).toEqual([
      ['d', '2024-01-01T00:00:00.000Z', '2024-01-08T00:00:00.000Z'],
    ]);
  });

  it('spanBuckets and countBuckets', () => {
    const span: Span = { res: 'h', start: T0, end: T0 + 3 * HOUR_MS };
    expect(spanBuckets(span)).toEqual([T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS]);
    expect(countBuckets(decomposeRange(at('2024-01-01T10:15:00Z'), at('2024-01-01T14:45:00Z')))).toBe(45 + 3 + 45);
    expect(() => spanBuckets({ res: 'h', start: T0 + 1, end: T0 + HOUR_MS })).toThrow(/aligned/);
  });
});

describe('decomposeRange properties', () => {
  it('covers exactly the minutes [floorMinute(start), ceilMinute(end)) with aligned, ordered, disjoint spans', () => {
    fc.assert(
      fc.property(timestampArb, timestampArb, (a, b) => {
        const spans = decomposeRange(a, b);
        const s = bucketStart(a, 'm');
        const e = b <= a ? s : ceilTo(b, 'm'); // an empty range covers nothing
        if (s >= e) {
          expect(spans).toEqual([]);
          return;
        }
        expect(spans.length).toBeGreaterThan(0);
        expect(spans.length).toBeLessThanOrEqual(MAX_RANGE_SPANS);
        let width = 0;
        let cursor = s;
        for (const span of spans) {
          expect(span.start).toBe(cursor); // contiguous and ascending, so disjoint
          expect(span.end).toBeGreaterThan(span.start);
          expect(isAligned(span.start, span.res) && isAligned(span.end, span.res)).toBe(true);
          width += span.end - span.start;
          cursor = span.end;
        }
        expect(cursor).toBe(e);
        expect(width).toBe(e - s);
      }),
      { numRuns: 2000 },
    );
  });

  it('uses the fewest buckets: no run of minutes or hours could be a coarser bucket', () => {
    fc.assert(
      fc.property(timestampArb, timestampArb, (a, b) => {
        for (const span of decomposeRange(a, b)) {
          if (span.res === 'd') continue;
          const coarser: Resolution = span.res === 'm' ? 'h' : 'd';
          const w = RESOLUTION_MS[coarser];
          // No whole coarser bucket fits inside a finer span.
          const firstWhole = Math.ceil(span.start / w) * w;
          expect(firstWhole + w > span.end).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('gives the same totals as summing raw events with s <= t < e', () => {
    const eventArb = fc.record({ t: timestampArb, v: fc.integer({ min: 0, max: 1000 }) });
    fc.assert(
      fc.property(
        fc.array(eventArb, { minLength: 0, maxLength: 300 }),
        fc.array(fc.tuple(timestampArb, timestampArb), { minLength: 1, maxLength: 20 }),
        (events, ranges) => {
          // What a node stores: every event into its minute, hour and day bucket.
          const totals: Record<Resolution, Map<number, { count: number; sum: number }>> = {
            m: new Map(),
            h: new Map(),
            d: new Map(),
          };
          for (const { t, v } of events) {
            const starts = bucketsOf(t);
            RESOLUTIONS_OF_EVENT.forEach((res, i) => {
              const cell = totals[res].get(starts[i]!) ?? { count: 0, sum: 0 };
              cell.count += 1;
              cell.sum += v;
              totals[res].set(starts[i]!, cell);
            });
          }
          for (const [a, b] of ranges) {
            let count = 0;
            let sum = 0;
            for (const span of decomposeRange(a, b)) {
              for (const start of spanBuckets(span)) {
                const cell = totals[span.res].get(start);
                count += cell?.count ?? 0;
                sum += cell?.sum ?? 0;
              }
            }
            const s = bucketStart(a, 'm');
            const e = b <= a ? s : ceilTo(b, 'm'); // an empty range covers nothing
            const inRange = events.filter(({ t }) => s <= t && t < e);
            expect(count).toBe(inRange.length);
            expect(sum).toBe(inRange.reduce((acc, { v }) => acc + v, 0));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
