import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { answerableRange, isExpired, keptFrom, validateRetention, type Retention } from '../../cluster/retention.js';
import { bucketStart, ceilTo, DAY_MS, decomposeRange, HOUR_MS, MINUTE_MS, RESOLUTION_MS } from '../../cluster/time-buckets.js';

const NOW = Date.UTC(2026, 10, 26, 15, 37, 12);
const R: Retention = { minuteDays: 14, hourDays: 400 };

/** Every bucket `decomposeRange` reads for [from, to). */
function bucketsRead(from: number, to: number): { res: 'm' | 'h' | 'd'; start: number }[] {
  const out: { res: 'm' | 'h' | 'd'; start: number }[] = [];
  for (const span of decomposeRange(from, to)) for (let s = span.start; s < span.end; s += RESOLUTION_MS[span.res]) out.push({ res: span.res, start: s });
  return out;
}

describe('retention', () => {
  it('expires the minutes of a UTC day once the whole day is older than the retention', () => {
    const today = bucketStart(NOW, 'd');
    // 14 days: the day that ended 14 days ago (or more) is gone; the next is kept.
    expect(keptFrom('m', NOW, R)).toBe(today - 14 * DAY_MS);
    expect(isExpired({ res: 'm', start: today - 14 * DAY_MS - MINUTE_MS }, NOW, R)).toBe(true);
    expect(isExpired({ res: 'm', start: today - 14 * DAY_MS }, NOW, R)).toBe(false);
    // At the stroke of midnight the next day goes.
    expect(isExpired({ res: 'm', start: today - 14 * DAY_MS }, today + DAY_MS, R)).toBe(true);
    expect(isExpired({ res: 'm', start: today - 14 * DAY_MS }, today + DAY_MS - 1, R)).toBe(false);
    expect(isExpired({ res: 'h', start: today - 14 * DAY_MS - HOUR_MS }, NOW, R)).toBe(false);
    expect(isExpired({ res: 'h', start: today - 400 * DAY_MS - HOUR_MS }, NOW, R)).toBe(true);
    expect(isExpired({ res: 'd', start: 0 }, NOW, R)).toBe(false);
    expect(isExpired({ res: 'm', start: 0 }, NOW, { minuteDays: 0, hourDays: 0 })).toBe(false);
  });

  it('refuses a retention where hours go before minutes', () => {
    expect(() => validateRetention({ minuteDays: 30, hourDays: 7 })).toThrow(/at least as long as minutes/);
    expect(() => validateRetention({ minuteDays: 0, hourDays: 7 })).toThrow(/for ever/);
    expect(() => validateRetention({ minuteDays: 1.5, hourDays: 7 })).toThrow(/whole number/);
    expect(validateRetention({ minuteDays: 7, hourDays: 0 })).toEqual({ minuteDays: 7, hourDays: 0 });
  });

  it('answers a range with expired edges inward, at the hour or the day, and says so', () => {
    const old = bucketStart(NOW, 'd') - 20 * DAY_MS;
    // A 30-day range from 10:37, 30 days ago: its first minutes are gone, so it starts at 11:00.
    const r = answerableRange(old + 10 * HOUR_MS + 37 * MINUTE_MS, NOW, NOW, R);
    expect(r).toEqual({ from: old + 11 * HOUR_MS, to: ceilTo(NOW, 'm'), clipped: true });
    // Within kept minutes: unchanged.
    expect(answerableRange(NOW - 3 * DAY_MS, NOW, NOW, R)).toEqual({ from: bucketStart(NOW - 3 * DAY_MS, 'm'), to: ceilTo(NOW, 'm'), clipped: false });
    // Hours gone too: to the next day.
    const ancient = bucketStart(NOW, 'd') - 500 * DAY_MS;
    expect(answerableRange(ancient + 5 * HOUR_MS + 3 * MINUTE_MS, NOW, NOW, R).from).toBe(ancient + DAY_MS);
    // Both edges inside one expired hour: nothing can answer it.
    const empty = answerableRange(old + 10 * HOUR_MS + 5 * MINUTE_MS, old + 10 * HOUR_MS + 50 * MINUTE_MS, NOW, R);
    expect(empty).toEqual({ from: old + 10 * HOUR_MS + 5 * MINUTE_MS, to: old + 10 * HOUR_MS + 5 * MINUTE_MS, clipped: true });
  });

  it('never reads an expired bucket, moves an edge only when a bucket it would read has expired, and answers within the range asked', () => {
    const day = bucketStart(NOW, 'd');
    const time = fc.oneof(
      fc.integer({ min: day - 420 * DAY_MS, max: NOW + DAY_MS }),
      fc.tuple(fc.integer({ min: -420, max: 1 }), fc.integer({ min: -2, max: 2 })).map(([d, m]) => day + d * DAY_MS + m * MINUTE_MS),
    );
    const retention = fc.oneof(
      fc.constant(R),
      fc.tuple(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 0, max: 400 })).map(([m, h]) => ({ minuteDays: m, hourDays: h === 0 ? 0 : Math.max(m, h) })),
    );
    fc.assert(
      fc.property(time, time, retention, (a, b, r) => {
        const [s, e] = a <= b ? [a, b] : [b, a];
        const { from, to, clipped } = answerableRange(s, e, NOW, r);
        expect(to).toBeGreaterThanOrEqual(from);
        expect(from).toBeGreaterThanOrEqual(bucketStart(s, 'm'));
        expect(to).toBeLessThanOrEqual(ceilTo(e, 'm'));
        expect(bucketsRead(from, to).find((b) => isExpired(b, NOW, r))).toBeUndefined();
        const wholeKept = bucketsRead(s, e).every((b) => !isExpired(b, NOW, r));
        expect(clipped).toBe(!wholeKept);
      }),
      { numRuns: 3_000 },
    );
  });
});
