/**
 * The group commit and the single-node request handler over the in-memory store: writes are
 * acknowledged only once stored, concurrent writes share commits, slots are absolute, a failed
 * batch fails its callers and leaves the store as it was, and the bounds answer OVERLOADED
 * without applying anything.
 */
import { describe, expect, it } from 'vitest';
import { value } from '../../cluster/bucket-state.js';
import { GroupCommit } from '../../node/group-commit.js';
import { MemoryStore } from '../../node/memory-store.js';
import { NodeRequestHandler } from '../../node/request-handler.js';
import type { EventTuple } from '../../protocol/index.js';

const T = Date.UTC(2026, 10, 26, 10, 30, 15);
const ev = (videoId: string, n = 1, value = 1, ts = T): EventTuple => [videoId, 'view', ts, value, n];

async function setup(opts: Partial<{ maxDirtyBuckets: number; maxInFlightQueries: number; cacheEntries: number }> = {}) {
  const store = new MemoryStore();
  await store.open();
  const commits = new GroupCommit(store, {
    actor: 'n1#aa',
    fsync: false,
    delayMs: 1,
    commitAtDirty: 1000,
    maxDirtyBuckets: opts.maxDirtyBuckets ?? 1000,
    cacheEntries: opts.cacheEntries ?? 1000,
  });
  const handler = new NodeRequestHandler(store, commits, { maxInFlightQueries: opts.maxInFlightQueries ?? 1000 });
  return { store, commits, handler };
}

describe('group commit', () => {
  it('acknowledges only stored events, and shares commits between concurrent writers', async () => {
    const { store, commits } = await setup();
    const writes = Array.from({ length: 100 }, (_, i) => commits.add([ev(`v${i % 10}`, 2)]));
    expect(commits.inFlightEvents).toBe(200);
    await Promise.all(writes);
    expect(commits.inFlightEvents).toBe(0);
    expect(commits.stats.commits).toBeLessThan(5);
    for (let i = 0; i < 10; i++) expect((await store.readRange(`v${i}`, 'view', 0, T + 60_000)).count).toBe(20);
  });

  it('writes minute, hour and day buckets with absolute slots that survive a cold cache', async () => {
    const { store, commits } = await setup({ cacheEntries: 1 });
    for (let i = 0; i < 5; i++) await commits.add([ev('a', 1, 10 * i), ev('b', 3, 7)]);
    const [minute, hour, day] = await store.getMany([
      { videoId: 'a', eventType: 'view', res: 'm', start: T - (T % 60_000) },
      { videoId: 'a', eventType: 'view', res: 'h', start: T - (T % 3_600_000) },
      { videoId: 'a', eventType: 'view', res: 'd', start: T - (T % 86_400_000) },
    ]);
    for (const s of [minute, hour, day]) {
      expect(s && value(s)).toEqual({ count: 5, sum: 100, min: 0, max: 40 });
      expect([...(s as Map<string, unknown>).keys()]).toEqual(['n1#aa']);
    }
    expect(await store.readRange('b', 'view', 0, T + 1)).toEqual({ count: 15, sum: 105, min: 7, max: 7 });
  });

  it('fails the callers of a failed batch and keeps the store unchanged', async () => {
    const { store, commits } = await setup();
    await commits.add([ev('x', 4)]);
    const real = store.writeBatch.bind(store);
    store.writeBatch = () => Promise.reject(new Error('disk full'));
    await expect(commits.add([ev('x', 100)])).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(commits.inFlightEvents).toBe(0);
    store.writeBatch = real;
    expect((await store.readRange('x', 'view', 0, T + 1)).count).toBe(4);
    await commits.add([ev('x', 1)]);
    expect((await store.readRange('x', 'view', 0, T + 1)).count).toBe(5);
  });

  it('writes each commit as one atomic batch, and refuses what might not fit with OVERLOADED', async () => {
    const { store, commits } = await setup({ maxDirtyBuckets: 30 });
    const sizes: number[] = [];
    const real = store.writeBatch.bind(store);
    store.writeBatch = (entries, o) => {
      sizes.push(entries.length);
      return real(entries, o);
    };
    const first = commits.add(Array.from({ length: 8 }, (_, i) => ev(`k${i}`))); // 24 buckets
    const three = [ev('k8'), ev('k9'), ev('k10')];
    await expect(commits.add(three)).rejects.toMatchObject({
      code: 'OVERLOADED',
      message: expect.stringMatching(/24 buckets await the next group commit and this request may add 9, the limit is 30/),
    });
    await first;
    await commits.add(three);
    expect(sizes).toEqual([24, 9]);
    expect((await store.readRange('k9', 'view', 0, T + 1)).count).toBe(1);
  });

  it('takes a million events in one tuple as three buckets', async () => {
    const { store, commits } = await setup({ maxDirtyBuckets: 3 });
    await commits.add([ev('many', 1_000_000)]);
    expect((await store.readRange('many', 'view', 0, T + 1)).count).toBe(1_000_000);
  });

  it('refuses new work after close, having flushed what it accepted', async () => {
    const { store, commits } = await setup();
    const pending = commits.add([ev('c', 9)]);
    await commits.close();
    await pending;
    expect((await store.readRange('c', 'view', 0, T + 1)).count).toBe(9);
    await expect(commits.add([ev('c')])).rejects.toMatchObject({ code: 'NOT_READY' });
  });
});

describe('request handler', () => {
  it('answers OVERLOADED past the bound of queries in flight', async () => {
    const { handler } = await setup({ maxInFlightQueries: 2 });
    const q = ['o', 'view', 0, T + 1] as [string, string, number, number];
    const first = handler.handle({ t: 'get', id: 1, queries: [q, q] });
    await expect(handler.handle({ t: 'get', id: 2, queries: [q] })).rejects.toMatchObject({ code: 'OVERLOADED' });
    expect(await first).toMatchObject({ t: 'result', id: 1 });
    expect(await handler.handle({ t: 'get', id: 3, queries: [q] })).toMatchObject({ t: 'result', id: 3 });
  });

  it('answers every query of a get in order', async () => {
    const { handler } = await setup();
    await handler.handle({ t: 'count', id: 1, events: [ev('p', 2, 5), ev('q', 1, 3)] });
    const reply = await handler.handle({ t: 'get', id: 2, queries: [['q', 'view', 0, T + 1], ['p', 'view', 0, T + 1], ['r', 'view', 0, T]] });
    expect(reply).toEqual({ t: 'result', id: 2, stats: [[1, 3, 3, 3], [2, 10, 5, 5], [0, 0, null, null]] });
  });
});
