/**
 * One suite every `Store` implementation must pass (as Level/abstract-level's `suite`), so the
 * in-memory store the core's tests use cannot drift from LevelDB.
 */

import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { addEvents, emptyState, equals, EMPTY_STATS, value, type BucketState, type Stats } from '../../cluster/bucket-state.js';
import {
  bucketsOf,
  bucketStart,
  ceilTo,
  DAY_MS,
  HOUR_MS,
  MINUTE_MS,
  RESOLUTIONS_OF_EVENT,
  type Resolution,
} from '../../cluster/time-buckets.js';
import { TallyError } from '../../protocol/errors.js';
import { encodeKey, type BucketKey } from '../../node/bucket-keys.js';
import { MAX_GET_MANY_KEYS, type Store } from '../../node/store.js';

export interface StoreHarness {
  /** A new, unopened store on fresh storage. */
  store: Store;
  /** Close the store and open it again as after a restart; returns the store to use from then on. */
  reopen(): Promise<Store>;
  /** Close and free everything. */
  destroy(): Promise<void>;
}

const T0 = Date.UTC(2024, 0, 1);

function stateOf(actor: string, ...values: number[]): BucketState {
  const s = emptyState();
  for (const v of values) addEvents(s, actor, v, 1);
  return s;
}

const key = (res: Resolution, start: number, videoId = 'v1', eventType = 'view'): BucketKey => ({
  videoId,
  eventType,
  res,
  start,
});

async function expectTallyError(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TallyError);
  expect((err as TallyError).code).toBe(code);
}

interface Event {
  videoId: string;
  t: number;
  v: number;
  actor: string;
}

/** Write events as a node would: each into its minute, hour and day bucket, in one batch. */
async function writeEvents(store: Store, events: readonly Event[]): Promise<void> {
  const states = new Map<string, { key: BucketKey; state: BucketState }>();
  for (const e of events) {
    const starts = bucketsOf(e.t);
    RESOLUTIONS_OF_EVENT.forEach((res, i) => {
      const k = key(res, starts[i]!, e.videoId);
      const id = encodeKey(k);
      let entry = states.get(id);
      if (entry === undefined) {
        entry = { key: k, state: emptyState() };
        states.set(id, entry);
      }
      addEvents(entry.state, e.actor, e.v, 1);
    });
  }
  await store.writeBatch([...states.values()]);
}

function bruteForce(events: readonly Event[], videoId: string, startMs: number, endMs: number): Stats {
  const s = bucketStart(startMs, 'm');
  const e = endMs <= startMs ? s : ceilTo(endMs, 'm'); // an empty range covers nothing
  const hits = events.filter((ev) => ev.videoId === videoId && s <= ev.t && ev.t < e);
  if (hits.length === 0) return { ...EMPTY_STATS };
  return {
    count: hits.length,
    sum: hits.reduce((a, ev) => a + ev.v, 0),
    min: Math.min(...hits.map((ev) => ev.v)),
    max: Math.max(...hits.map((ev) => ev.v)),
  };
}

/** Timestamps over a few days, biased towards minute, hour and day edges. */
const DAYS = 4;
const timeArb = fc.oneof(
  fc.integer({ min: T0, max: T0 + DAYS * DAY_MS - 1 }),
  fc
    .tuple(
      fc.integer({ min: 0, max: DAYS - 1 }),
      fc.constantFrom(0, 1, 12, 22, 23),
      fc.constantFrom(0, 1, 58, 59),
      fc.constantFrom(0, 1, 30_000, MINUTE_MS - 1),
    )
    .map(([d, h, m, ms]) => T0 + d * DAY_MS + h * HOUR_MS + m * MINUTE_MS + ms),
);

export function storeConformance(name: string, factory: () => Promise<StoreHarness>): void {
  describe(`Store conformance: ${name}`, () => {
    let harness: StoreHarness;
    let store: Store;

    beforeEach(async () => {
      harness = await factory();
      store = harness.store;
      await store.open();
    });

    afterEach(async () => {
      await harness.destroy();
    });

    it('getMany returns what writeBatch wrote, in order, undefined when missing', async () => {
      const a = stateOf('n1#aa', 1, 2, 3);
      const b = stateOf('n2#bb', 7);
      await store.writeBatch([
        { key: key('m', T0 + MINUTE_MS), state: a },
        { key: key('d', T0), state: b },
      ]);
      const got = await store.getMany([key('d', T0), key('m', T0), key('m', T0 + MINUTE_MS), key('h', T0)]);
      expect(got).toHaveLength(4);
      expect(equals(got[0]!, b)).toBe(true);
      expect(got[1]).toBeUndefined();
      expect(equals(got[2]!, a)).toBe(true);
      expect(got[3]).toBeUndefined();
      expect(await store.getMany([])).toEqual([]);
    });

    it('keeps series apart, including ids that extend each other', async () => {
      await store.writeBatch([
        { key: key('d', T0, 'v1', 'view'), state: stateOf('a#1', 1) },
        { key: key('d', T0, 'v1', 'views'), state: stateOf('a#1', 2, 2) },
        { key: key('d', T0, 'v10', 'view'), state: stateOf('a#1', 3, 3, 3) },
        { key: key('d', T0, 'vidé🎬', 'view'), state: stateOf('a#1', 4, 4, 4, 4) },
      ]);
      const span = { res: 'd' as const, start: T0, end: T0 + DAY_MS };
      const counts = async (v: string, e: string): Promise<number[]> =>
        (await store.scanSpan(v, e, span)).map((b) => value(b.state).count);
      expect(await counts('v1', 'view')).toEqual([1]);
      expect(await counts('v1', 'views')).toEqual([2]);
      expect(await counts('v10', 'view')).toEqual([3]);
      expect(await counts('vidé🎬', 'view')).toEqual([4]);
      expect(await counts('v', 'view')).toEqual([]);
    });

    it('a later entry for the same key in one batch wins, and writes replace', async () => {
      await store.writeBatch([
        { key: key('h', T0), state: stateOf('a#1', 1) },
        { key: key('h', T0), state: stateOf('a#1', 1, 1) },
      ]);
      expect(value((await store.getMany([key('h', T0)]))[0]!).count).toBe(2);
      await store.writeBatch([{ key: key('h', T0), state: stateOf('b#1', 5) }], { sync: true });
      const [got] = await store.getMany([key('h', T0)]);
      expect(equals(got!, stateOf('b#1', 5))).toBe(true);
    });

    it('a batch with a bad entry writes nothing', async () => {
      await expect(
        store.writeBatch([
          { key: key('m', T0), state: stateOf('a#1', 1) },
          { key: key('m', T0 + 1), state: stateOf('a#1', 1) }, // not aligned
        ]),
      ).rejects.toThrow(/aligned/);
      await expect(
        store.writeBatch([
          { key: key('m', T0), state: stateOf('a#1', 1) },
          { key: key('m', T0, 'bad\0id'), state: stateOf('a#1', 1) },
        ]),
      ).rejects.toThrow(/assertion/);
      expect(await store.getMany([key('m', T0)])).toEqual([undefined]);
    });

    it('scanSpan returns exactly the buckets in [start, end), ascending, across day partitions', async () => {
      // Minutes and hours around two midnights, days around them.
      const minutes: number[] = [];
      const hours: number[] = [];
      for (const midnight of [T0 + DAY_MS, T0 + 2 * DAY_MS]) {
        for (let i = -3; i < 3; i++) minutes.push(midnight + i * MINUTE_MS);
        for (let i = -2; i < 2; i++) hours.push(midnight + i * HOUR_MS);
      }
      const days = [T0, T0 + DAY_MS, T0 + 2 * DAY_MS, T0 + 3 * DAY_MS];
      await store.writeBatch([
        ...minutes.map((t) => ({ key: key('m', t), state: stateOf('a#1', t % 1000) })),
        ...hours.map((t) => ({ key: key('h', t), state: stateOf('a#1', 1) })),
        ...days.map((t) => ({ key: key('d', t), state: stateOf('a#1', 1) })),
        { key: key('m', T0 + DAY_MS, 'v2'), state: stateOf('a#1', 1) },
      ]);
      const starts = async (res: Resolution, start: number, end: number): Promise<number[]> =>
        (await store.scanSpan('v1', 'view', { res, start, end })).map((b) => b.start);
      const between = (xs: number[], s: number, e: number): number[] => xs.filter((t) => s <= t && t < e);

      for (const [s, e] of [
        [T0, T0 + 4 * DAY_MS],
        [T0 + DAY_MS - 2 * MINUTE_MS, T0 + DAY_MS + 2 * MINUTE_MS],
        [T0 + DAY_MS, T0 + DAY_MS + MINUTE_MS],
        [T0 + DAY_MS - MINUTE_MS, T0 + DAY_MS],
        [T0 + DAY_MS + 3 * MINUTE_MS, T0 + 2 * DAY_MS - 3 * MINUTE_MS],
        [T0 + DAY_MS - MINUTE_MS, T0 + 2 * DAY_MS + MINUTE_MS],
        [T0 + DAY_MS, T0 + DAY_MS],
      ] as const) {
        expect(await starts('m', s, e)).toEqual(between(minutes, s, e));
      }
      for (const [s, e] of [
        [T0, T0 + 4 * DAY_MS],
        [T0 + DAY_MS - HOUR_MS, T0 + DAY_MS + HOUR_MS],
        [T0 + DAY_MS, T0 + 2 * DAY_MS],
      ] as const) {
        expect(await starts('h', s, e)).toEqual(between(hours, s, e));
      }
      expect(await starts('d', T0 + DAY_MS, T0 + 3 * DAY_MS)).toEqual([T0 + DAY_MS, T0 + 2 * DAY_MS]);
      expect(await starts('d', T0, T0 + 10 * DAY_MS)).toEqual(days);
      const [first] = await store.scanSpan('v1', 'view', { res: 'm', start: T0 + DAY_MS, end: T0 + DAY_MS + MINUTE_MS });
      expect(first!.state.get('a#1')!.min).toBe((T0 + DAY_MS) % 1000);
      await expect(store.scanSpan('v1', 'view', { res: 'h', start: T0 + 1, end: T0 + HOUR_MS })).rejects.toThrow(/aligned/);
    });

    it('readRange equals a brute-force sum over raw events, across minute, hour and day edges', async () => {
      const events = fc.sample(
        fc.record({
          videoId: fc.constantFrom('v1', 'v2'),
          t: timeArb,
          v: fc.integer({ min: 0, max: 100 }),
          actor: fc.constantFrom('n1#aa', 'n2#bb', 'n3#cc'),
        }),
        { numRuns: 600, seed: 42 },
      );
      await writeEvents(store, events);
      await fc.assert(
        fc.asyncProperty(fc.constantFrom('v1', 'v2'), timeArb, timeArb, async (videoId, a, b) => {
          expect(await store.readRange(videoId, 'view', a, b)).toEqual(bruteForce(events, videoId, a, b));
        }),
        { numRuns: 150 },
      );
      // A 30-day read whose middle is days only.
      expect(await store.readRange('v1', 'view', T0 - 13 * DAY_MS, T0 + 17 * DAY_MS)).toEqual(
        bruteForce(events, 'v1', T0 - 13 * DAY_MS, T0 + 17 * DAY_MS),
      );
      expect(await store.readRange('v1', 'view', T0 + DAY_MS, T0)).toEqual(EMPTY_STATS);
      expect(await store.readRange('v1', 'other', T0, T0 + DAY_MS)).toEqual(EMPTY_STATS);
    });

    it('expireBefore removes only minute (or hour) buckets of days that ended by the cutoff', async () => {
      const entries: { key: BucketKey; state: BucketState }[] = [];
      for (let d = 0; d < 3; d++) {
        const day = T0 + d * DAY_MS;
        for (const res of ['m', 'h', 'd'] as const) {
          entries.push({ key: key(res, day), state: stateOf('a#1', 1) });
          if (res !== 'd') entries.push({ key: key(res, day + DAY_MS - (res === 'm' ? MINUTE_MS : HOUR_MS)), state: stateOf('a#1', 1) });
        }
        entries.push({ key: key('m', day + HOUR_MS, 'v2', 'like'), state: stateOf('a#1', 1) });
      }
      await store.writeBatch(entries);
      await store.putMeta('m', new Uint8Array([1]));
      const present = async (res: Resolution, videoId = 'v1', eventType = 'view'): Promise<number[]> =>
        (await store.scanSpan(videoId, eventType, { res, start: T0, end: T0 + 3 * DAY_MS })).map((b) => b.start);
      const before = { m: await present('m'), h: await present('h'), d: await present('d') };

      // Mid-day cutoff: only day 0 has ended.
      await store.expireBefore('m', T0 + DAY_MS + 5 * HOUR_MS);
      expect(await present('m')).toEqual(before.m.filter((t) => t >= T0 + DAY_MS));
      expect(await present('m', 'v2', 'like')).toEqual([T0 + DAY_MS + HOUR_MS, T0 + 2 * DAY_MS + HOUR_MS]);
      expect(await present('h')).toEqual(before.h);
      expect(await present('d')).toEqual(before.d);

      // Cutoff exactly at a midnight: the day that ends there goes.
      await store.expireBefore('m', T0 + 2 * DAY_MS);
      expect(await present('m')).toEqual(before.m.filter((t) => t >= T0 + 2 * DAY_MS));
      await store.expireBefore('h', T0 + 2 * DAY_MS - 1);
      expect(await present('h')).toEqual(before.h.filter((t) => t >= T0 + DAY_MS));
      expect(await present('d')).toEqual(before.d);
      expect(await store.getMeta('m')).toEqual(new Uint8Array([1]));

      // Nothing to expire before the epoch's first day, and far-future cutoffs expire everything.
      await store.expireBefore('h', 0);
      expect(await present('h')).toEqual(before.h.filter((t) => t >= T0 + DAY_MS));
      await store.expireBefore('h', Date.UTC(9000, 0, 1));
      expect(await present('h')).toEqual([]);
      expect(await present('m')).toEqual(before.m.filter((t) => t >= T0 + 2 * DAY_MS));
      expect(await present('d')).toEqual(before.d);
    });

    it('keeps data across close and reopen', async () => {
      const s = stateOf('n1#aa', 4, 5);
      await store.writeBatch([{ key: key('d', T0), state: s }], { sync: true });
      await store.putMeta('ring', new Uint8Array([9, 8, 7]), { sync: true });
      store = await harness.reopen();
      const [got] = await store.getMany([key('d', T0)]);
      expect(equals(got!, s)).toBe(true);
      expect(await store.getMeta('ring')).toEqual(new Uint8Array([9, 8, 7]));
      expect(await store.readRange('v1', 'view', T0, T0 + DAY_MS)).toEqual({ count: 2, sum: 9, min: 4, max: 5 });
    });

    it('meta values: put, get, overwrite, delete, prefix scan, invisible to bucket scans', async () => {
      expect(await store.getMeta('nothing')).toBeUndefined();
      const bytes = new Uint8Array([1, 2, 3]);
      await store.putMeta('hint/n2/v1', bytes);
      bytes[0] = 99; // the store keeps its own copy
      expect(await store.getMeta('hint/n2/v1')).toEqual(new Uint8Array([1, 2, 3]));
      await store.putMeta('hint/n2/v1', new Uint8Array([4]));
      await store.putMeta('hint/n2/v2', new Uint8Array([5]));
      await store.putMeta('hint/n3/v1', new Uint8Array([6]));
      await store.putMeta('hint', new Uint8Array([7]));
      await store.putMeta('', new Uint8Array([]));
      expect(await store.getMeta('')).toEqual(new Uint8Array([]));
      expect(await store.getMeta('hint/n2/v1')).toEqual(new Uint8Array([4]));
      expect((await store.scanMeta('hint/n2/')).map((e) => [e.key, [...e.value]])).toEqual([
        ['hint/n2/v1', [4]],
        ['hint/n2/v2', [5]],
      ]);
      expect((await store.scanMeta('hint/', 2)).map((e) => e.key)).toEqual(['hint/n2/v1', 'hint/n2/v2']);
      expect((await store.scanMeta('')).map((e) => e.key)).toEqual(['', 'hint', 'hint/n2/v1', 'hint/n2/v2', 'hint/n3/v1']);
      await store.deleteMeta('hint/n2/v1');
      await store.deleteMeta('never-there');
      expect(await store.getMeta('hint/n2/v1')).toBeUndefined();
      expect((await store.scanMeta('hint/')).map((e) => e.key)).toEqual(['hint/n2/v2', 'hint/n3/v1']);
      expect(await store.scanSpan('v1', 'view', { res: 'd', start: 0, end: T0 + 365 * DAY_MS })).toEqual([]);
      await store.expireBefore('m', Date.UTC(9000, 0, 1));
      expect(await store.getMeta('hint/n2/v2')).toEqual(new Uint8Array([5]));
    });

    it('refuses work when not open, and oversized requests', async () => {
      await expectTallyError(store.getMany(Array.from({ length: MAX_GET_MANY_KEYS + 1 }, () => key('d', T0))), 'TOO_LARGE');
      await store.close();
      await expectTallyError(store.getMany([key('d', T0)]), 'NOT_READY');
      await expectTallyError(store.writeBatch([{ key: key('d', T0), state: stateOf('a#1', 1) }]), 'NOT_READY');
      await expectTallyError(store.readRange('v1', 'view', T0, T0 + DAY_MS), 'NOT_READY');
      await expectTallyError(store.getMeta('x'), 'NOT_READY');
      await store.close(); // twice is fine
      await store.open();
      expect(await store.getMany([key('d', T0)])).toEqual([undefined]);
    });
  });
}
