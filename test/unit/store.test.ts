/**
 * One suite every key-value backend of the `Store` must pass (as Level/abstract-level's `suite`),
 * so the in-memory store the core's tests and the simulator use cannot drift from LevelDB.
 */
import fc from 'fast-check';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import xxhash from 'xxhash-wasm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DAMAGED, type Slot } from '../../cluster/bucket-state.js';
import type { PersistBatch } from '../../cluster/node-core.js';
import { CommitSlots, type BucketRef, type SlotEntry } from '../../cluster/slot-table.js';
import { DAY_MS, HOUR_MS, MINUTE_MS, bucketStart, type Resolution } from '../../cluster/time-buckets.js';
import { LevelKv, MemoryKv, type Kv, reportsCorruption } from '../../node/kv.js';
import { MAX_READS_IN_FLIGHT, MAX_READS_WAITING, RangeReader } from '../../node/range-reader.js';
import { holdFirstFailSecond } from '../helpers/kv.js';
import { Level } from 'level';
import { Store } from '../../node/store.js';
import { encodeSlot } from '../../node/slot-codec.js';
import { TallyError } from '../../protocol/errors.js';
import { MAX_MEMBERS } from '../../cluster/membership.js';
import { MAX_ADDRESS_BYTES, MAX_NAME_BYTES } from '../../protocol/limits.js';
import type { SpanTuple } from '../../protocol/peer.js';

const { h64 } = await xxhash();
const T0 = Date.UTC(2024, 0, 1);

const ref = (res: Resolution, start: number, videoId = 'v1', eventType = 'view'): BucketRef => ({ videoId, eventType, res, start });
const slot = (count: number, sum = count, min = 1, max = 1): Slot => ({ count, sum, min, max });
const batch = (slots: SlotEntry[], extra: Partial<PersistBatch> = {}): PersistBatch => ({
  id: 1, slots: CommitSlots.of(slots), hintsPut: [], hintsDelete: [], batchesPut: [], batchesDelete: [], journalPut: [], journalDelete: [], sync: false, afterInFlight: false, ...extra,
});

interface Harness {
  kv: () => Kv;
  destroy: () => Promise<void>;
}

function suite(name: string, make: () => Promise<Harness>): void {
  describe(`Store on ${name}`, () => {
    let h: Harness;
    let store: Store;
    beforeEach(async () => {
      h = await make();
      store = new Store(h.kv(), h64);
      await store.open();
    });
    afterEach(async () => {
      await store.close();
      await h.destroy();
    });

    it('getSlots returns what commit wrote, in order, undefined when missing', async () => {
      const a = { ref: ref('m', T0), actor: 'n1#aa', slot: slot(3, 7, 1, 4) };
      const b = { ref: ref('d', T0), actor: 'n2#bb', slot: slot(5) };
      await store.commit(batch([a, b]));
      const got = await store.getSlots([b, { ref: ref('h', T0), actor: 'n1#aa' }, a]);
      expect(got).toEqual([b.slot, undefined, a.slot]);
    });

    it('keeps series, actors and ids that extend each other apart', async () => {
      const ids = ['v', 'v1', 'v1x', 'vidé', '视频', 'v\u{1F600}'];
      const entries = ids.flatMap((videoId, i) => [
        { ref: ref('d', T0, videoId), actor: 'n1#aa', slot: slot(i + 1) },
        { ref: ref('d', T0, videoId, 'like'), actor: 'n1#aa', slot: slot(100 + i) },
        { ref: ref('d', T0, videoId), actor: 'n1#aa0', slot: slot(200 + i) },
      ]);
      await store.commit(batch(entries));
      expect(await store.getSlots(entries)).toEqual(entries.map((e) => e.slot));
      for (const [i, videoId] of ids.entries()) {
        const found = await store.scan([[videoId, 'view', 'd', T0, T0 + DAY_MS]]);
        expect(found).toEqual([
          [0, T0, 'n1#aa', i + 1, i + 1, 1, 1],
          [0, T0, 'n1#aa0', 200 + i, 200 + i, 1, 1],
        ]);
      }
    });

    it('scan returns exactly the slots in each span, across day partitions, tagged by span', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.tuple(fc.constantFrom<Resolution>('m', 'h', 'd'), fc.integer({ min: 0, max: 4 * DAY_MS - 1 }), fc.constantFrom('n1#aa', 'n2#bb')), { minLength: 1, maxLength: 40 }),
          fc.constantFrom<Resolution>('m', 'h', 'd'),
          fc.integer({ min: 0, max: 4 * DAY_MS }),
          fc.integer({ min: 0, max: 4 * DAY_MS }),
          async (raw, res, a, b) => {
            const width = { m: MINUTE_MS, h: HOUR_MS, d: DAY_MS }[res];
            const start = T0 + bucketStart(Math.min(a, b), res);
            const end = T0 + bucketStart(Math.max(a, b), res);
            const video = `p${Math.floor(Math.random() * 1e9)}`;
            const entries = raw.map(([r, t, actor], i) => ({ ref: ref(r, T0 + bucketStart(t, r), video), actor, slot: slot(i + 1) }));
            await store.commit(batch(entries));
            const span: SpanTuple = [video, 'view', res, start, end];
            const found = await store.scan([[video, 'like', res, start, end], span]);
            // What the store holds now: the last write of each key wins.
            const held = new Map<string, [number, string, number]>();
            for (const e of entries) if (e.ref.res === res) held.set(`${e.ref.start}|${e.actor}`, [e.ref.start, e.actor, e.slot.count]);
            const want = [...held.values()].filter(([s]) => s >= start && s < end).sort((x, y) => x[0] - y[0] || (x[1] < y[1] ? -1 : 1));
            expect(found.map(([si, s, actor, count]) => [si, s, actor, count])).toEqual(want.map(([s, actor, count]) => [1, s, actor, count]));
            void width;
          },
        ),
        { numRuns: 30 },
      );
    });

    it('one scan of many spans finds what a scan of each finds, whatever the names\' order in UTF-16 and in UTF-8', async () => {
      // A series' keys follow its video's token, id and event type. U+FF5E and U+1F600 sort one way
      // as UTF-8 bytes (LevelDB) and the other as UTF-16 (JavaScript): the event types of one video
      // below are next to each other in the store in the one order, and not in the other.
      const types = ['e', 'e\uFF5E', 'e\u{1F600}', 'e\u{1F600}x', 'f', 'e\uFF5Ez'];
      const series = ['v1', 'v\u{1F600}'].flatMap((videoId) => types.map((eventType) => [videoId, eventType] as const));
      const entries = series.flatMap(([videoId, eventType], i) =>
        (['m', 'h', 'd'] as const).flatMap((res) => [0, 1, 2].map((k) => ({ ref: ref(res, T0 + bucketStart(k * (DAY_MS + HOUR_MS + MINUTE_MS), res), videoId, eventType), actor: `n${k}#a`, slot: slot(10 * i + k + 1) }))),
      );
      await store.commit(batch(entries));
      const spans: SpanTuple[] = series.flatMap(([videoId, eventType]) => [
        [videoId, eventType, 'm', T0, T0 + 3 * DAY_MS] as SpanTuple,
        [videoId, eventType, 'h', T0 + HOUR_MS, T0 + 2 * DAY_MS + 2 * HOUR_MS] as SpanTuple,
        [videoId, eventType, 'd', T0, T0 + DAY_MS] as SpanTuple,
        [videoId, eventType, 'd', T0 + 2 * DAY_MS, T0 + 3 * DAY_MS] as SpanTuple,
      ]);
      const together = await store.scan(spans);
      const apart = (await Promise.all(spans.map(async (span, i) => (await store.scan([span])).map(([, ...rest]) => [i, ...rest])))).flat();
      expect(together).toEqual(apart);
      // Each series' day span holds its one slot of that day, of its own count.
      for (const [i] of series.entries()) expect(together.filter(([si]) => si === 4 * i + 2).map(([, , , count]) => count)).toEqual([10 * i + 1]);
    });

    it('a range read gives every entry in order whatever it was told to expect, within its limit', async () => {
      const kv = h.kv();
      const keys = Array.from({ length: 40 }, (_, i) => `r/${String(i).padStart(3, '0')}`);
      await kv.write(keys.map((key, i) => ({ type: 'put' as const, key, value: new Uint8Array([i]) })), false);
      const all = keys.map((k, i) => [k, new Uint8Array([i])]);
      for (const expected of [undefined, 0, 1, 7, 39, 40, 41, 5_000]) {
        expect(await kv.range({ gte: 'r/', lt: 'r0' }, undefined, expected)).toEqual(all);
        expect(await kv.range({ gte: 'r/005', lt: 'r/030' }, 12, expected)).toEqual(all.slice(5, 17));
      }
    });

    it('a commit with a bad entry writes nothing', async () => {
      const good = { ref: ref('d', T0), actor: 'n1#aa', slot: slot(1) };
      const badActor = { ref: ref('d', T0), actor: 'n1\u0000x', slot: slot(2) };
      await expect(store.commit(batch([good, badActor]))).rejects.toThrow();
      expect(await store.getSlots([good])).toEqual([undefined]);
    });

    it('commits made at once are written in the order made, numbered without gaps, a failed one taking no number', async () => {
      await store.loadCommitSeq();
      // The first is far larger, so it is made (in slices) long after the second: the second still lands after it.
      const big = Array.from({ length: 5_000 }, (_, i) => ({ ref: ref('d', T0, `big-${i}`), actor: 'n1#aa', slot: slot(1) }));
      const shared = { ref: ref('d', T0), actor: 'n1#aa', slot: slot(1) };
      const bad = { ref: ref('d', T0), actor: 'n1\u0000x', slot: slot(9) };
      const order: string[] = [];
      const first = store.commit(batch([...big, shared], { id: 1 })).then(() => order.push('first'));
      const failed = store.commit(batch([bad], { id: 2 })).then(() => order.push('failed'), () => order.push('refused'));
      const second = store.commit(batch([{ ...shared, slot: slot(5) }], { id: 3 })).then(() => order.push('second'));
      await Promise.all([first, failed, second]);
      // Each is told in the order made, the one refused too.
      expect(order).toEqual(['first', 'refused', 'second']);
      // The later value stands (the earlier commit did not land over it), and the numbers run 1, 2.
      expect(await store.getSlots([shared])).toEqual([slot(5)]);
      expect(await store.loadCommitSeq()).toBe(2);
      expect(await store.missingCommits()).toEqual([]);
    });

    it('a commit made on top of one that fails is not written either; one made after it is', async () => {
      // The second holds values that include the first's events, whose batch ids the first held:
      // landing alone, it would leave those events on disk without their ids.
      const bad = { ref: ref('d', T0), actor: 'n1\u0000x', slot: slot(9) };
      const hot = { ref: ref('d', T0, 'hot'), actor: 'n1#aa', slot: slot(2) };
      const b2 = { batch: 'c:2', atMs: T0 };
      const first = store.commit(batch([bad], { id: 1, batchesPut: [{ batch: 'c:1', atMs: T0 }] }));
      const second = store.commit(batch([hot], { id: 2, batchesPut: [b2], afterInFlight: true }));
      await expect(first).rejects.toThrow();
      await expect(second).rejects.toThrow(/the commit before it failed/);
      expect(await store.getSlots([hot])).toEqual([undefined]);
      expect((await store.loadBatches(10)).map((b) => b.batch)).toEqual([]);
      // Made once the failure was known (not on top of it): written.
      await store.commit(batch([hot], { id: 3, batchesPut: [b2], afterInFlight: false }));
      expect(await store.getSlots([hot])).toEqual([slot(2)]);
      expect((await store.loadBatches(10)).map((b) => b.batch)).toEqual(['c:2']);
    });

    it('loads the newest batch ids and forward records, whatever their ids\' order, and deletes the rest', async () => {
      // Key order is id order: a client whose ids sort last wrote the newest here.
      const old = Array.from({ length: 6 }, (_, i) => ({ batch: `aaa:${i}`, atMs: T0 + i }));
      const forwards = Array.from({ length: 6 }, (_, i) => ({ batch: `aab:${i}`, atMs: T0 + i, forwardedTo: [['n2,n3', 'n2#01']] as [string, string][] }));
      const newest = { batch: 'zzz:1', atMs: T0 + 60_000 };
      await store.commit(batch([], { batchesPut: [...old, ...forwards, newest] }));
      const loaded = await store.loadBatches(4);
      expect(loaded.filter((b) => b.forwardedTo === undefined).map((b) => b.batch)).toEqual(['aaa:3', 'aaa:4', 'aaa:5', 'zzz:1']);
      expect(loaded.filter((b) => b.forwardedTo !== undefined).map((b) => b.batch)).toEqual(['aab:2', 'aab:3', 'aab:4', 'aab:5']);
      expect(loaded.map((b) => b.atMs)).toEqual([...loaded.map((b) => b.atMs)].sort((a, b) => a - b));
      // Those left out are older than every one kept, and gone from the store.
      expect((await store.loadBatches(100)).map((b) => b.batch)).toEqual(loaded.map((b) => b.batch));
    });

    it('loads every member\'s hints, the newest within the bounds, and deletes the rest', async () => {
      // n1 first in key order with 25,000 (more than a page), then n2 and n3 with few.
      const hint = (node: string, i: number, atMs: number) => ({ node, ref: ref('m', T0 + i * MINUTE_MS, `v${i}`), atMs });
      const n1 = Array.from({ length: 25_000 }, (_, i) => hint('n1', i, 1_000 + i));
      await store.commit(batch([], { hintsPut: [...n1, hint('n2', 0, 5), hint('n2', 1, 6), hint('n3', 0, 1), hint('n3', 1, 50_000)] }));
      const all = await store.loadHints(100_000);
      expect(all.dropped).toBe(0);
      expect(all.hints).toHaveLength(25_004);
      // 20,000 a member: n1's oldest 5,000 go; then 15,000 in all: the oldest of the rest go, n3's old one first.
      const bounded = await store.loadHints(20_000, 15_000);
      expect(bounded.dropped).toBe(25_004 - 15_000);
      expect(bounded.hints.map((h) => h.atMs)).toEqual([...Array.from({ length: 14_999 }, (_, i) => 1_000 + 10_001 + i), 50_000]);
      // What was dropped is gone from the store.
      expect((await store.loadHints(100_000)).hints).toEqual(bounded.hints);
    });

    it('hints and batch ids: put, load (oldest first), delete, in the same atomic batch as slots', async () => {
      const r1 = ref('h', T0 + HOUR_MS, 'v\u00e9');
      const r2 = ref('m', T0);
      await store.commit(batch([{ ref: r2, actor: 'n1#aa', slot: slot(1) }], {
        hintsPut: [{ node: 'n2', ref: r1, atMs: 20 }, { node: 'n3', ref: r2, atMs: 10 }],
        batchesPut: [{ batch: 'c1:1', atMs: 5 }, { batch: 'c1:2', atMs: 6 }],
      }));
      expect((await store.loadHints(100)).hints).toEqual([{ node: 'n3', ref: r2, atMs: 10 }, { node: 'n2', ref: r1, atMs: 20 }]);
      expect(await store.loadBatches(100)).toEqual([{ batch: 'c1:1', atMs: 5 }, { batch: 'c1:2', atMs: 6 }]);
      await store.commit(batch([], { hintsDelete: [{ node: 'n2', ref: r1 }], batchesDelete: ['c1:1'] }));
      expect((await store.loadHints(100)).hints).toEqual([{ node: 'n3', ref: r2, atMs: 10 }]);
      expect(await store.loadBatches(100)).toEqual([{ batch: 'c1:2', atMs: 6 }]);
      // Forward records and the replication journal round-trip too.
      await store.commit(batch([], {
        batchesPut: [{ batch: 'c1:3', atMs: 7, forwardedTo: [['n1,n2,n3', 'n2']] }],
        journalPut: [{ key: '18c-1', refs: [r1, r2] }],
      }));
      expect(await store.loadBatches(100)).toEqual([{ batch: 'c1:2', atMs: 6 }, { batch: 'c1:3', atMs: 7, forwardedTo: [['n1,n2,n3', 'n2']] }]);
      expect(await store.loadJournal(100)).toEqual([{ key: '18c-1', refs: [r1, r2] }]);
      await store.commit(batch([], { journalDelete: ['18c-1'] }));
      expect(await store.loadJournal(100)).toEqual([]);
      // Hints and batch ids never show up in a scan of buckets.
      expect(await store.scan([['v1', 'view', 'm', T0, T0 + MINUTE_MS]])).toEqual([[0, T0, 'n1#aa', 1, 1, 1, 1]]);
    });

    it('expireBefore removes only minute (or hour) slots of days that ended by the cutoff', async () => {
      const entries = [0, 1, 2].flatMap((d) => (['m', 'h', 'd'] as const).map((res) => ({ ref: ref(res, T0 + d * DAY_MS), actor: 'n1#aa', slot: slot(d + 1) })));
      await store.commit(batch(entries));
      await store.expireBefore('m', T0 + 2 * DAY_MS + 5 * HOUR_MS);
      const left = await store.getSlots(entries);
      expect(left.map((s, i) => [entries[i]!.ref.res, entries[i]!.ref.start, s !== undefined])).toEqual(
        entries.map((e) => [e.ref.res, e.ref.start, !(e.ref.res === 'm' && e.ref.start < T0 + 2 * DAY_MS)]),
      );
    });

    it('keeps the members a node knew however many and however long their names', async () => {
      // As the node keeps them (JSON), every one at the longest id, zone and address gossip takes,
      // and a tombstone's actor and generation on each.
      const long = (c: string, n: number): string => c.repeat(n);
      const peers = Array.from({ length: MAX_MEMBERS }, (_, i) => ({
        id: `${i}`.padStart(MAX_NAME_BYTES, 'n'),
        address: `${long('a', MAX_ADDRESS_BYTES - 6)}:${7000 + (i % 1000)}`,
        zone: long('z', MAX_NAME_BYTES),
        vnodes: 256,
        removed: { actor: `${i}`.padStart(MAX_NAME_BYTES, 'n') + '#ffffffff', generation: Date.now() },
      }));
      const bytes = Buffer.from(JSON.stringify(peers));
      await store.putMeta('known-peers', bytes);
      expect(Buffer.from((await store.getMeta('known-peers'))!).equals(bytes)).toBe(true);
    });

    it('keeps data across close and reopen; refuses work when closed', async () => {
      const e = { ref: ref('d', T0), actor: 'n1#aa', slot: slot(9) };
      await store.commit(batch([e]));
      await store.putMeta('generation', new Uint8Array([7]));
      await store.close();
      const err = await store.getSlots([e]).then(() => undefined, (x: unknown) => x);
      expect((err as TallyError).code).toBe('NOT_READY');
      store = new Store(h.kv(), h64);
      await store.open();
      expect(await store.getSlots([e])).toEqual([e.slot]);
      expect(await store.getMeta('generation')).toEqual(new Uint8Array([7]));
    });

    it('serves no damaged slot: a load says DAMAGED, a scan fails STORAGE_DAMAGED, a walk leaves it out', async () => {
      const kv = h.kv();
      const e = { ref: ref('d', T0), actor: 'n1#aa', slot: slot(9) };
      const f = { ref: ref('d', T0), actor: 'n2#bb', slot: slot(4) };
      await store.commit(batch([e, f]));
      await kv.open();
      // One bit of e's stored value flipped.
      const [bytes] = await kv.getMany([store.keys.slotKey(e)]);
      const bad = new Uint8Array(bytes as Uint8Array);
      bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 0x01;
      await kv.write([{ type: 'put', key: store.keys.slotKey(e), value: bad }], false);
      expect(await store.getSlots([e, f])).toEqual([DAMAGED, f.slot]);
      const err = await store.scan([['v1', 'view', 'd', T0, T0 + DAY_MS]]).then(() => undefined, (x: unknown) => x);
      expect(err).toBeInstanceOf(TallyError);
      expect((err as TallyError).code).toBe('STORAGE_DAMAGED');
      expect((await store.walk(undefined, 100)).entries).toEqual([f]);
      expect(store.damagedSlots).toBe(2);
      store.damagedSlots = 0;
      // A walk in pages of one still goes past it to the end.
      const more = Array.from({ length: 10 }, (_, i) => ({ ref: ref('d', T0, `w${i}`), actor: 'n3#cc', slot: slot(1) }));
      await store.commit(batch(more));
      const seen: SlotEntry[] = [];
      for (let after: string | undefined, i = 0; i < 100; i++) {
        const page = await store.walk(after, 1);
        seen.push(...page.entries);
        if (page.next === undefined) break;
        after = page.next;
      }
      expect(seen).toHaveLength(11);
      // A join writes over it, and it reads again.
      await store.commit(batch([{ ...e, slot: slot(10) }]));
      expect(await store.getSlots([e])).toEqual([slot(10)]);
    });

    it('reports commits in the order made, even one that fails at once while the one before is written', async () => {
      // The node is told of its commits in order (it settles the oldest under way first): a
      // later commit's failure told first was taken as a broken invariant and lost, and the
      // commit stayed under way for good, holding back every later one (no write acknowledged).
      const { release, restore } = holdFirstFailSecond(h.kv());
      try {
        const order: string[] = [];
        const first = store.commit(batch([{ ref: ref('d', T0, 'one'), actor: 'n1#aa', slot: slot(1) }], { id: 1 })).then(() => order.push('first'), () => order.push('first failed'));
        const second = store.commit(batch([{ ref: ref('d', T0, 'two'), actor: 'n1#aa', slot: slot(1) }], { id: 2, afterInFlight: true })).then(() => order.push('second'), () => order.push('second failed'));
        await new Promise((resolve) => setTimeout(resolve, 50));
        release();
        await Promise.all([first, second]);
        expect(order).toEqual(['first', 'second failed']);
      } finally {
        restore();
      }
    });

    it('says which bucket starts it may hold: none when new, what its commits kept, any when it holds slots but never kept them', async () => {
      const now = T0 + 10 * DAY_MS;
      expect(await store.loadWrittenStarts(now)).toEqual({ m: -Infinity, h: -Infinity, d: -Infinity });
      // Slots written before commits were numbered (and before the starts were kept): any bucket
      // up to the furthest an event may reach may be stored, so none may be taken as absent.
      const k = { ref: ref('m', T0 + 5 * MINUTE_MS), actor: 'n1#aa' };
      await h.kv().write([{ type: 'put', key: store.keys.slotKey(k), value: encodeSlot(store.keys.slotKey(k), slot(7)) }], false);
      const old = await store.loadWrittenStarts(now);
      for (const res of ['m', 'h', 'd'] as const) expect(old[res], res).toBeGreaterThanOrEqual(now);
      await store.commit(batch([{ ...k, slot: slot(8) }], { written: { m: k.ref.start, h: -Infinity, d: -Infinity } }));
      expect(await store.loadWrittenStarts(now)).toEqual({ m: k.ref.start, h: -Infinity, d: -Infinity });
    });

    it('with every commit checked against the store, commits still land in the order made, however long each check takes', async () => {
      // TALLY_VERIFY_COMMITS (every chaos run): each commit reads its slots back first. A commit
      // whose check took longer than the next one's must still land first: the next holds the
      // newer values (and the first one's events, whose batch ids the first holds).
      await store.loadCommitSeq();
      store.verifyCommits = true;
      const kv = h.kv() as Kv & { getMany: Kv['getMany'] };
      const read = kv.getMany.bind(kv);
      let hold: Promise<void> | undefined;
      kv.getMany = async (keys) => {
        const wait = hold;
        hold = undefined;
        const values = await read(keys);
        if (wait !== undefined) await wait;
        return values;
      };
      try {
        const k = { ref: ref('d', T0, 'checked'), actor: 'n1#aa' };
        await store.commit(batch([{ ...k, slot: slot(1) }], { id: 1 }));
        let release = (): void => {};
        hold = new Promise<void>((resolve) => (release = resolve));
        const order: string[] = [];
        const second = store.commit(batch([{ ...k, slot: slot(2) }], { id: 2 })).then(() => order.push('second'), () => order.push('second failed'));
        const third = store.commit(batch([{ ...k, slot: slot(3) }], { id: 3, afterInFlight: true })).then(() => order.push('third'), () => order.push('third failed'));
        await new Promise((resolve) => setTimeout(resolve, 50));
        release();
        await Promise.all([second, third]);
        expect(order).toEqual(['second', 'third']);
        expect(await store.getSlots([k])).toEqual([slot(3)]);
        expect(await store.loadCommitSeq()).toBe(3);
      } finally {
        delete (kv as { getMany?: unknown }).getMany;
        store.verifyCommits = false;
      }
    });
  });
}

const memory = new Map<string, MemoryKv>();
suite('MemoryKv', async () => {
  const key = String(Math.random());
  memory.set(key, new MemoryKv());
  return { kv: () => memory.get(key) as MemoryKv, destroy: async () => void memory.delete(key) };
});

for (const readsOnThread of ['busy', 'always'] as const) {
  // 'busy' reads a lone read's ranges on this thread (the suite's reads come one at a time);
  // 'always' reads every one on the read thread.
  suite(`LevelKv (ranges read: ${readsOnThread})`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tally-store-'));
    let current: LevelKv | undefined;
    return {
      kv: () => (current = current ?? new LevelKv(dir, undefined, readsOnThread)),
      destroy: async () => {
        await current?.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  });
}

describe('LevelKv', () => {
  it('reads ranges on its own thread when nothing else is read or written, else on the read thread', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tally-store-'));
    const kv = new LevelKv(dir);
    try {
      await kv.open();
      const value = new Uint8Array(200).fill(5);
      await kv.write(Array.from({ length: 100 }, (_, i) => ({ type: 'put' as const, key: `r${String(i).padStart(3, '0')}`, value })), false);
      const ranges = [{ gte: 'r010', lt: 'r020' }, { gte: 'r050', lt: 'r099' }];
      const want = await kv.ranges(ranges);
      expect(want.map((r) => r.length)).toEqual([10, 49]);
      expect(kv.stats).toEqual({ rangeReadsHere: 1, rangeReadsOnThread: 0 });
      // Three at once: the first here, the other two on the read thread; all read the same.
      expect(await Promise.all([kv.ranges(ranges), kv.ranges(ranges), kv.ranges(ranges)])).toEqual([want, want, want]);
      expect(kv.stats).toEqual({ rangeReadsHere: 2, rangeReadsOnThread: 2 });
      // While a write is under way (a large one: it is made in slices, turns apart), reads go to the read thread.
      const writing = kv.write(Array.from({ length: 5_000 }, (_, i) => ({ type: 'put' as const, key: `w${i}`, value })), true);
      expect(await kv.ranges(ranges)).toEqual(want);
      await writing;
      expect(kv.stats).toEqual({ rangeReadsHere: 2, rangeReadsOnThread: 3 });
    } finally {
      await kv.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('leaves its directory free once closed, closed while opening or twice at once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tally-store-'));
    try {
      const a = new LevelKv(dir);
      const opening = a.open();
      await Promise.all([a.close(), opening]);
      const b = new LevelKv(dir);
      await b.open();
      await b.write([{ type: 'put', key: 'k', value: new Uint8Array([2]) }], false);
      await Promise.all([b.close(), b.close()]);
      // Free at once: another instance opens it and reads what the last wrote, its ranges too.
      const c = new LevelKv(dir);
      await c.open();
      expect(await c.ranges([{ gte: 'a', lt: 'z' }])).toEqual([[['k', new Uint8Array([2])]]]);
      await c.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reports a second opener of the same directory as IN_USE, and reopens the same instance', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tally-store-'));
    const a = new LevelKv(dir);
    const b = new LevelKv(dir);
    try {
      await a.open();
      await a.write([{ type: 'put', key: 'k', value: new Uint8Array([1]) }], false);
      const err = await b.open().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(TallyError);
      expect((err as TallyError).code).toBe('IN_USE');
      expect((err as TallyError).message).toMatch(/in use by another process/);
      await a.close();
      await a.open();
      expect(await a.getMany(['k'])).toEqual([new Uint8Array([1])]);
    } finally {
      await a.close();
      await b.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("reads ranges on a thread of its own that sees each write once it is done, and starts another when that thread ends", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tally-store-'));
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    await db.open({ multithreading: true });
    const reader = new RangeReader(dir);
    const asBytes = (entries: [string, Uint8Array][]): [string, number[]][] => entries.map(([k, v]) => [k, [...v]]);
    try {
      await db.batch(Array.from({ length: 300 }, (_, i) => ({ type: 'put' as const, key: `a${String(i).padStart(4, '0')}`, value: new Uint8Array([i & 255, i >> 8, 7]) })));
      await reader.open();
      const ranges = [
        { gte: 'a0010', lt: 'a0020', expected: 10 },
        { gte: 'a0100', lt: 'a0290' },
        { gte: 'b', lt: 'c' },
      ];
      const want = async (): Promise<[string, number[]][][]> => Promise.all(ranges.map(async (r) => asBytes(await db.iterator({ gte: r.gte, lt: r.lt }).all())));
      expect((await reader.read(ranges)).map(asBytes)).toEqual(await want());
      expect((await want()).map((e) => e.length)).toEqual([10, 190, 0]);
      // A write done on the node's handle is seen by the next read.
      await db.put('b1', new Uint8Array([9]));
      expect((await reader.read(ranges))[2]).toEqual([['b1', new Uint8Array([9])]]);
      // The thread ends: the next read starts another, and reads the same.
      await reader.terminate();
      expect((await reader.read(ranges)).map(asBytes)).toEqual(await want());
      // Past MAX_READS_IN_FLIGHT on the thread, reads wait their turn and are read; past
      // MAX_READS_WAITING more, a read is refused at once, OVERLOADED.
      const one = (await want())[0];
      const many = await Promise.allSettled(Array.from({ length: MAX_READS_IN_FLIGHT + MAX_READS_WAITING + 20 }, () => reader.read(ranges.slice(0, 1))));
      const refused = many.filter((r) => r.status === 'rejected');
      expect(refused).toHaveLength(20);
      for (const r of refused) expect(((r as PromiseRejectedResult).reason as TallyError).code).toBe('OVERLOADED');
      for (const r of many) if (r.status === 'fulfilled') expect(r.value.map(asBytes)).toEqual([one]);
      // Closing fails the reads still waiting for the thread, as those on it.
      const closing = Promise.allSettled(Array.from({ length: MAX_READS_IN_FLIGHT + 10 }, () => reader.read(ranges.slice(0, 1))));
      await reader.close();
      const ends = await closing;
      expect(ends.every((r) => r.status === 'fulfilled' || ((r as PromiseRejectedResult).reason as TallyError).code === 'NOT_READY')).toBe(true);
      expect(ends.slice(MAX_READS_IN_FLIGHT).every((r) => r.status === 'rejected')).toBe(true);
      await expect(reader.read(ranges)).rejects.toMatchObject({ code: 'NOT_READY', message: 'the store is closing' });
    } finally {
      await reader.close();
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('reportsCorruption', () => {
  it("takes LevelDB's Corruption status, not the word in a path", () => {
    expect(reportsCorruption('Corruption: block checksum mismatch: /var/lib/tally/db/000005.ldb')).toBe(true);
    expect(reportsCorruption('store write failed: Corruption: bad entry in block')).toBe(true);
    expect(reportsCorruption('IO error: /srv/corruption-tests/db/000007.log: No such file or directory')).toBe(false);
    expect(reportsCorruption('IO error: /srv/Corruption/db/LOCK: Permission denied')).toBe(false);
  });
});
