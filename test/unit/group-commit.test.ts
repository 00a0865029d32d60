/**
 * The group commit and the single-node request handler over the in-memory store: writes are
 * acknowledged only once stored, concurrent writes share commits, slots are absolute, a failed
 * batch fails its callers and leaves the store as it was, and the in-flight bound answers
 * OVERLOADED without applying anything.
 */
import { describe, expect, it } from 'vitest';
import { value } from '../../cluster/bucket-state.js';
import { GroupCommit } from '../../node/group-commit.js';
import { MemoryStore } from '../../node/memory-store.js';
import { NodeRequestHandler } from '../../node/request-handler.js';
import type { EventTuple } from '../../protocol/index.js';

const T = Date.UTC(2026, 10, 26, 10, 30, 15);
const ev = (videoId: string, n = 1, value = 1, ts = T): EventTuple => [videoId, 'view', ts, value, n];

async function setup(opts: Partial<{ maxDirty: number; maxInFlightEvents: number; cacheEntries: number }> = {}) {
  const store = new MemoryStore();
  await store.open();
  const commits = new GroupCommit(store, {
    actor: 'n1#aa',
    fsync: false,
    delayMs: 1,
    maxDirty: opts.maxDirty ?? 1000,
    cacheEntries: opts.cacheEntries ?? 1000,
  });
  const handler = new NodeRequestHandler(store, commits, { maxInFlightEvents: opts.maxInFlightEvents ?? 1e6 });
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

  it('splits a commit larger than maxDirty into several batches', async () => {
    const { store, commits } = await setup({ maxDirty: 10 });
    const sizes: number[] = [];
    const real = store.writeBatch.bind(store);
    store.writeBatch = (entries, o) => {
      sizes.push(entries.length);
      return real(entries, o);
    };
    await commits.add(Array.from({ length: 50 }, (_, i) => ev(`k${i}`)));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(10);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(150);
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
  it('answers OVERLOADED past the in-flight bound and applies nothing of that request', async () => {
    const { store, handler } = await setup({ maxInFlightEvents: 10 });
    const first = handler.handle({ t: 'count', id: 1, events: [ev('o', 8)] });
    await expect(handler.handle({ t: 'count', id: 2, events: [ev('o', 3)] })).rejects.toMatchObject({ code: 'OVERLOADED' });
    expect(await first).toEqual({ t: 'ack', id: 1, n: 8 });
    expect((await store.readRange('o', 'view', 0, T + 1)).count).toBe(8);
    expect(await handler.handle({ t: 'count', id: 3, events: [ev('o', 3)] })).toEqual({ t: 'ack', id: 3, n: 3 });
  });

  it('answers every query of a get in order', async () => {
    const { handler } = await setup();
    await handler.handle({ t: 'count', id: 1, events: [ev('p', 2, 5), ev('q', 1, 3)] });
    const reply = await handler.handle({ t: 'get', id: 2, queries: [['q', 'view', 0, T + 1], ['p', 'view', 0, T + 1], ['r', 'view', 0, T]] });
    expect(reply).toEqual({ t: 'result', id: 2, stats: [[1, 3, 3, 3], [2, 10, 5, 5], [0, 0, null, null]] });
  });
});
