/** The hint table: one hint per (node, bucket), bounds that count what they refuse, replays that only clear what they shipped. */
import { describe, expect, it, test } from 'vitest';
import xxhash from 'xxhash-wasm';
import { HintTable } from '../../cluster/hint-table.js';
import { defaultReplicationConfig } from '../../cluster/replication-config.js';
import { bucketId, CommitSlots, type BucketRef } from '../../cluster/slot-table.js';
import { Consistency } from '../../protocol/messages.js';
import { MemoryKv } from '../../node/kv.js';
import { Store } from '../../node/store.js';
import type { Ready } from '../../cluster/node-core.js';
import { coreOfThree } from '../helpers/core.js';

const ref = (videoId: string, start = 0): BucketRef => ({ videoId, eventType: 'view', res: 'm', start });

describe('HintTable', () => {
  it('coalesces per bucket, bounds per node and counts what it drops', () => {
    const t = new HintTable(2, 1_000);
    expect(t.add('n2', ref('a'), 0)).toBe('added');
    expect(t.add('n2', ref('a'), 5)).toBe('renewed');
    expect(t.add('n2', ref('b'), 6)).toBe('added');
    expect(t.add('n2', ref('c'), 7)).toBe('dropped');
    expect(t.add('n3', ref('c'), 7)).toBe('added');
    expect(t.stats()).toEqual({ n2: { pending: 2, dropped: 1, expired: 0 }, n3: { pending: 1, dropped: 0, expired: 0 } });
  });

  it('reports a member whatever its id, `__proto__` and `constructor` too', () => {
    const t = new HintTable(10, 1_000);
    t.add('__proto__', ref('a'), 0);
    t.add('constructor', ref('a'), 0);
    expect(JSON.parse(JSON.stringify(t.stats()))).toEqual(
      JSON.parse('{"__proto__":{"pending":1,"dropped":0,"expired":0},"constructor":{"pending":1,"dropped":0,"expired":0}}'),
    );
    expect(Object.keys(t.stats()).sort()).toEqual(['__proto__', 'constructor']);
  });

  it('keeps age order: a renewed hint goes to the back, expiry stops at the first young one', () => {
    const t = new HintTable(10, 1_000);
    t.add('n2', ref('a'), 0);
    t.add('n2', ref('b'), 100);
    t.add('n2', ref('a'), 900); // renewed: now the youngest
    expect(t.oldest('n2', 5).map((h) => h.ref.videoId)).toEqual(['b', 'a']);
    expect(t.expire(1_150)).toEqual([{ node: 'n2', ref: ref('b') }]);
    expect(t.stats()['n2']).toEqual({ pending: 1, dropped: 0, expired: 1 });
  });

  it('a renewal a quarter of the window after the stored time is restamped, to be written again', () => {
    const t = new HintTable(10, 1_000);
    expect(t.add('n2', ref('a'), 0)).toBe('added');
    expect(t.add('n2', ref('a'), 249)).toBe('renewed');
    expect(t.add('n2', ref('a'), 250)).toBe('restamped');
    expect(t.add('n2', ref('a'), 400)).toBe('renewed'); // stored at 250 now
    expect(t.add('n2', ref('a'), 500)).toBe('restamped');
    expect(t.expire(1_499)).toEqual([]);
  });

  it('a replay clears only hints not renewed since it took them', () => {
    const t = new HintTable(10, 1_000);
    t.add('n2', ref('a'), 0);
    t.add('n2', ref('b'), 0);
    const round = t.oldest('n2', 5);
    t.add('n2', ref('b'), 1); // written again while the replay was in flight
    const cleared = round.map((h) => t.clear('n2', h.key, h.seq)).filter((r) => r !== undefined);
    expect(cleared).toEqual([ref('a')]);
    expect(t.oldest('n2', 5).map((h) => h.key)).toEqual([bucketId(ref('b'))]);
    expect(t.forget('n2')).toEqual([ref('b')]);
    expect(t.size).toBe(0);
  });
});

test('a node that restarts keeps the time of a hint it renewed, not the one it first stored', async () => {
  const { h64 } = await xxhash();
  const now = Date.UTC(2026, 10, 28, 12);
  const window = defaultReplicationConfig().hintWindowMs;
  const r: BucketRef = { videoId: 'v1', eventType: 'view', res: 'm', start: now - (now % 60_000) };
  const store = new Store(new MemoryKv(), h64);
  await store.open();
  // Stored two hours ago; the journal of a commit just before a crash hints the bucket again.
  const core = coreOfThree(h64, now, { hints: [{ node: 'n2', ref: r, atMs: now - window + 3_600_000 }], journal: [{ key: 'abc-1', refs: [r] }] });
  let t = now + 1;
  let ready = core.step({ kind: 'tick' }, t);
  while (ready.persist === undefined) ready = core.step({ kind: 'tick' }, (t += 100));
  await store.commit(ready.persist);
  const stored = new Map((await store.loadHints(100)).hints.map((h) => [h.node, h.atMs]));
  // n3's is new; n2's carries its renewal, so a restart two hours on does not expire it at once.
  expect(stored.get('n3')).toBe(now);
  expect(stored.get('n2')).toBe(now);
});

test('a bucket hinted again while the deletes of many expired hints wait their turn stays hinted in the store', async () => {
  const { h64 } = await xxhash();
  const now = Date.UTC(2026, 10, 28, 12);
  const window = defaultReplicationConfig().hintWindowMs;
  const minute = now - (now % 60_000);
  // 150,000 hints for n2 past the window, the deletes of four commits; the last three
  // are the buckets of the event written below.
  const refs: BucketRef[] = Array.from({ length: 149_997 }, (_, i) => ({ videoId: `old${i}`, eventType: 'view', res: 'm' as const, start: minute }));
  const mine: BucketRef[] = [
    { videoId: 'v1', eventType: 'view', res: 'm', start: minute },
    { videoId: 'v1', eventType: 'view', res: 'h', start: now - (now % 3_600_000) },
    { videoId: 'v1', eventType: 'view', res: 'd', start: now - (now % 86_400_000) },
  ];
  const hints = [...refs, ...mine].map((ref) => ({ node: 'n2', ref, atMs: now - window - 60_000 }));
  const store = new Store(new MemoryKv(), h64);
  await store.open();
  const core = coreOfThree(h64, now, { hints });
  for (let i = 0; i < hints.length; i += 10_000) await store.commit({ id: 0, slots: CommitSlots.of([]), hintsPut: hints.slice(i, i + 10_000), hintsDelete: [], batchesPut: [], batchesDelete: [], journalPut: [], journalDelete: [], sync: false, afterInFlight: false });
  // Its first step, once it would settle with nobody to ask: an event of v1 at `one`, with n2
  // down, is taken while the hints expire; once its commit lands, its buckets are hinted to n2
  // again, while the deletes of the expired ones are still on their way to the store.
  let t = now + 11_000;
  const readies: Ready[] = [core.step({ kind: 'write', req: 1, events: [['v1', 'view', now, 1, 1]], cl: Consistency.ONE }, t)];
  const replies: Ready['replies'] = [];
  for (let i = 0; i < 1_000 && readies.length > 0; i++) {
    const ready = readies.shift() as Ready;
    replies.push(...ready.replies);
    for (const load of ready.loads) readies.push(core.step({ kind: 'loaded', load: load.id, slots: load.keys.map(() => undefined) }, t));
    if (ready.persist !== undefined) {
      const b = ready.persist;
      await store.commit(b);
      readies.push(core.step({ kind: 'persisted', persist: b.id }, t));
    }
    if (readies.length === 0 && i < 300) readies.push(core.step({ kind: 'tick' }, (t += 100)));
  }
  expect(replies.map((r) => r.reply.ok)).toEqual([true]);
  const kept = (await store.loadHints(1_000_000)).hints.filter((h) => h.node === 'n2' && h.ref.videoId === 'v1').map((h) => h.ref.res).sort();
  // In memory the node holds them; a restart must find them too.
  expect(core.stats().hints['n2']?.pending).toBe(3);
  expect(kept).toEqual(['d', 'h', 'm']);
}, 60_000);
