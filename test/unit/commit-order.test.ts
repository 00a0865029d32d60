/**
 * A node's commits are told to its core in the order made, whatever the store meets: a commit
 * that fails at once while the one before it is still being written (a full disk) is told after
 * that one, so the core settles both and goes on committing and acknowledging.
 */
import { expect, test } from 'vitest';
import xxhash from 'xxhash-wasm';
import { coreOfOne } from '../helpers/core.js';
import type { CoreInput, Ready } from '../../cluster/node-core.js';
import { MemoryKv } from '../../node/kv.js';
import { holdFirstFailSecond } from '../helpers/kv.js';
import { Store } from '../../node/store.js';
import { Consistency } from '../../protocol/messages.js';

test('a commit that fails at once while the one before is written is told after it, and later writes are acknowledged', async () => {
  const { h64 } = await xxhash();
  const t0 = Date.UTC(2026, 10, 28, 12);
  // Small commits, so a second is made while the first is written.
  const core = coreOfOne(h64, t0, { commitAtDirty: 4 });
  const kv = new MemoryKv();
  const store = new Store(kv, h64);
  await store.open();
  // The first write waits in the store until let go; the second fails at once (the disk is full).
  const { release, writes } = holdFirstFailSecond(kv);
  // A driver's part, as node/driver.ts plays it: each commit handed to the store, its outcome told back.
  let now = t0 + 1;
  const replies = new Map<number, boolean>();
  const errors: string[] = [];
  const step = (input: CoreInput): void => {
    let ready: Ready;
    try {
      ready = core.step(input, now);
    } catch (err) {
      errors.push((err as Error).message);
      return;
    }
    for (const r of ready.replies) replies.set(r.req, r.reply.ok);
    for (const load of ready.loads) void store.getSlots(load.keys).then((slots) => step({ kind: 'loaded', load: load.id, slots }));
    if (ready.persist !== undefined) {
      const id = ready.persist.id;
      store.commit(ready.persist).then(
        () => step({ kind: 'persisted', persist: id }),
        (err: unknown) => step({ kind: 'persistFailed', persist: id, message: (err as Error).message, code: 'STORAGE_FULL' }),
      );
    }
  };
  const events = (n: number, from: number) => Array.from({ length: n }, (_, i): [string, string, number, number, number] => [`v${from + i}`, 'view', t0, 1, 1]);
  step({ kind: 'tick' });
  step({ kind: 'write', req: 1, events: events(4, 0), cl: Consistency.ONE, batch: 'c:1' });
  step({ kind: 'write', req: 2, events: events(4, 10), cl: Consistency.ONE, batch: 'c:2' });
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(writes(), 'a second commit was made while the first was written').toBe(2);
  release();
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(errors).toEqual([]);
  expect(replies.get(1)).toBe(true);
  expect(replies.get(2)).toBe(false);
  // The store has room again: the next writes are committed and acknowledged.
  for (let i = 0; i < 5 && replies.get(3) === undefined; i++) {
    now += 2_000;
    if (i === 0) step({ kind: 'write', req: 3, events: events(4, 20), cl: Consistency.ONE, batch: 'c:3' });
    step({ kind: 'tick' });
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  expect(replies.get(3)).toBe(true);
});
