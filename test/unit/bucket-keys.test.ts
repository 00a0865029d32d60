import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeKey,
  decodeMetaKey,
  encodeKey,
  encodeMetaKey,
  expiryKeyRange,
  hexTime,
  MAX_KEY_TIMESTAMP_MS,
  metaPrefixRange,
  spanKeyRanges,
  startOfKey,
  type BucketKey,
} from '../../node/bucket-keys.js';
import { bucketStart, DAY_MS, HOUR_MS, MINUTE_MS, type Resolution } from '../../cluster/time-buckets.js';

const T0 = Date.UTC(2024, 0, 1);
// Ids without control characters, including non-ASCII and astral characters.
const idArb = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).filter((s) => !/[\x00-\x1f\x7f]/.test(s));
const resArb = fc.constantFrom<Resolution>('m', 'h', 'd');
const keyArb: fc.Arbitrary<BucketKey> = fc
  .record({
    videoId: idArb,
    eventType: idArb,
    res: resArb,
    t: fc.integer({ min: 0, max: Date.UTC(9999, 0, 1) }),
  })
  .map(({ videoId, eventType, res, t }) => ({ videoId, eventType, res, start: bucketStart(t, res) }));

/** UTF-8 byte order, which is LevelDB's order for utf8 keys. */
const byteCompare = (a: string, b: string): number => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

describe('encodeKey and decodeKey', () => {
  it('lays keys out as documented', () => {
    const day = T0;
    const minute = T0 + 13 * HOUR_MS + 5 * MINUTE_MS;
    expect(encodeKey({ videoId: 'v1', eventType: 'view', res: 'd', start: day })).toBe(`d\0v1\0view\0${hexTime(day)}`);
    expect(encodeKey({ videoId: 'v1', eventType: 'view', res: 'm', start: minute })).toBe(
      `m\0${hexTime(day)}\0v1\0view\0${hexTime(minute)}`,
    );
    expect(hexTime(T0)).toMatch(/^[0-9a-f]{12}$/);
  });

  it('round-trips', () => {
    fc.assert(
      fc.property(keyArb, (key) => {
        const str = encodeKey(key);
        expect(decodeKey(str)).toEqual(key);
        expect(startOfKey(str)).toBe(key.start);
      }),
      { numRuns: 1000 },
    );
  });

  it('orders keys of one series and resolution by time, in UTF-8 byte order too', () => {
    fc.assert(
      fc.property(keyArb, fc.integer({ min: 0, max: Date.UTC(9999, 0, 1) }), (key, t) => {
        const other = { ...key, start: bucketStart(t, key.res) };
        const a = encodeKey(key);
        const b = encodeKey(other);
        expect(Math.sign(byteCompare(a, b))).toBe(Math.sign(key.start - other.start));
        expect(Math.sign(a < b ? -1 : a > b ? 1 : 0)).toBe(Math.sign(key.start - other.start));
      }),
      { numRuns: 1000 },
    );
  });

  it('rejects what it cannot encode and what it did not make', () => {
    expect(() => encodeKey({ videoId: 'a\0b', eventType: 'view', res: 'd', start: T0 })).toThrow(/assertion/);
    expect(() => encodeKey({ videoId: 'a', eventType: 'view', res: 'h', start: T0 + 1 })).toThrow(/aligned/);
    expect(() => encodeKey({ videoId: 'a', eventType: 'view', res: 'm', start: -MINUTE_MS })).toThrow(/assertion/);
    expect(() => hexTime(MAX_KEY_TIMESTAMP_MS + 1)).toThrow(/assertion/);
    expect(decodeKey('x\x00a\x00b\x00000000000000')).toBeUndefined();
    expect(decodeKey(`d\0a\0b\0${hexTime(T0 + 1)}`)).toBeUndefined(); // not aligned
    expect(decodeKey(`m\0${hexTime(T0)}\0a\0b\0${hexTime(T0 + DAY_MS)}`)).toBeUndefined(); // wrong partition
    expect(decodeKey(`d\0a\0b\0${hexTime(T0).toUpperCase()}`)).toBeUndefined();
    expect(decodeKey('z\0meta')).toBeUndefined();
  });
});

describe('key ranges', () => {
  const inRange = (k: string, r: { gte: string; lt: string }): boolean =>
    byteCompare(k, r.gte) >= 0 && byteCompare(k, r.lt) < 0;

  it('a span of minutes splits by day partition', () => {
    const span = { res: 'm' as const, start: T0 + DAY_MS - 2 * MINUTE_MS, end: T0 + 2 * DAY_MS + 2 * MINUTE_MS };
    expect(spanKeyRanges('v', 'e', span)).toHaveLength(3);
    expect(spanKeyRanges('v', 'e', { res: 'd', start: T0, end: T0 + 30 * DAY_MS })).toHaveLength(1);
    expect(spanKeyRanges('v', 'e', { res: 'h', start: T0, end: T0 })).toEqual([]);
  });

  it('a span range holds exactly the series buckets inside the span', () => {
    fc.assert(
      fc.property(keyArb, idArb, fc.integer({ min: -3, max: 3 }), fc.integer({ min: 0, max: 3000 }), (key, otherId, off, len) => {
        const w = key.res === 'm' ? MINUTE_MS : key.res === 'h' ? HOUR_MS : DAY_MS;
        const start = Math.max(0, key.start + off * w);
        const span = { res: key.res, start, end: start + len * w };
        const ranges = spanKeyRanges(key.videoId, key.eventType, span);
        const hits = ranges.filter((r) => inRange(encodeKey(key), r)).length;
        expect(hits).toBe(span.start <= key.start && key.start < span.end ? 1 : 0);
        // A series whose id extends this one's never falls in its ranges.
        const longer = encodeKey({ ...key, eventType: key.eventType + otherId });
        expect(ranges.some((r) => inRange(longer, r))).toBe(false);
        const otherRes = encodeKey({ ...key, res: key.res === 'd' ? 'h' : 'd', start: bucketStart(key.start, 'd') });
        expect(ranges.some((r) => inRange(otherRes, r))).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  it('expiry covers partitions that end at or before the cutoff and nothing else', () => {
    fc.assert(
      fc.property(keyArb, fc.integer({ min: 0, max: Date.UTC(9999, 0, 1) }), (key, cutoff) => {
        for (const res of ['m', 'h'] as const) {
          const range = expiryKeyRange(res, cutoff);
          const k = encodeKey(key);
          const expired = range !== undefined && inRange(k, range);
          const partitionEnd = bucketStart(key.start, 'd') + DAY_MS;
          expect(expired).toBe(key.res === res && partitionEnd <= cutoff);
        }
      }),
      { numRuns: 1000 },
    );
    expect(expiryKeyRange('m', DAY_MS - 1)).toBeUndefined();
    expect(expiryKeyRange('m', -5)).toBeUndefined();
    expect(expiryKeyRange('m', DAY_MS)).toEqual({ gte: 'm\0', lt: `m\0${hexTime(DAY_MS)}` });
    expect(() => expiryKeyRange('d' as 'm', T0)).toThrow(/assertion/);
  });

  it('meta keys are printable ASCII under their own prefix', () => {
    expect(decodeMetaKey(encodeMetaKey('hint/n2/v1'))).toBe('hint/n2/v1');
    expect(() => encodeMetaKey('a\0b')).toThrow(/assertion/);
    expect(() => encodeMetaKey('é')).toThrow(/assertion/);
    const r = metaPrefixRange('hint/');
    expect(inRange(encodeMetaKey('hint/n2'), r)).toBe(true);
    expect(inRange(encodeMetaKey('hint/~~~'), r)).toBe(true);
    expect(inRange(encodeMetaKey('hint'), r)).toBe(false);
    expect(inRange(encodeMetaKey('hinu'), r)).toBe(false);
  });
});
