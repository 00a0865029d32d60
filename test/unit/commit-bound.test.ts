/**
 * A commit never holds more than the store takes: a replication journal of 110,000 buckets
 * replayed at a start (two hints each, RF 3) goes out over several commits, each written.
 */
import { expect, test } from 'vitest';
import xxhash from 'xxhash-wasm';
import type { Ready } from '../../cluster/node-core.js';
import { MemoryKv } from '../../node/kv.js';
import { MAX_COMMIT_ENTRIES, Store } from '../../node/store.js';
import { coreOfThree } from '../helpers/core.js';

test('a journal of 110,000 buckets replayed at a start is written over several commits within the limit', async () => {
  const { h64 } = await xxhash();
  const now = Date.UTC(2026, 10, 28, 12);
  const refs = Array.from({ length: 110_000 }, (_, i) => ({ videoId: `v${i}`, eventType: 'view', res: 'm' as const, start: now - (now % 60_000) }));
  const core = coreOfThree(h64, now, { journal: [{ key: 'abc-1', refs }] });
  const store = new Store(new MemoryKv(), h64);
  await store.open();
  let t = now + 1;
  let ready: Ready = core.step({ kind: 'tick' }, t);
  let hints = 0;
  for (let commits = 0; hints < 2 * refs.length; commits++) {
    expect(commits, 'commits made').toBeLessThan(20);
    while (ready.persist === undefined) ready = core.step({ kind: 'tick' }, (t += 100));
    const b = ready.persist;
    const entries = b.slots.length + b.hintsPut.length + b.hintsDelete.length + b.batchesPut.length + b.batchesDelete.length + b.journalPut.length + b.journalDelete.length;
    expect(entries).toBeLessThanOrEqual(MAX_COMMIT_ENTRIES);
    await store.commit(b);
    hints += b.hintsPut.length;
    ready = core.step({ kind: 'persisted', persist: b.id }, t);
  }
  expect(hints).toBe(2 * refs.length);
  expect((await store.loadHints(1_000_000)).hints.length).toBe(2 * refs.length);
}, 60_000);

test('a journal record replayed at a start is deleted only with the last of the hints made of it, so a crash between commits loses none', async () => {
  const { h64 } = await xxhash();
  const now = Date.UTC(2026, 10, 28, 12);
  // 30,000 buckets, two hints each (RF 3): more than one commit carries.
  const refs = Array.from({ length: 30_000 }, (_, i) => ({ videoId: `v${i}`, eventType: 'view', res: 'm' as const, start: now - (now % 60_000) }));
  const core = coreOfThree(h64, now, { journal: [{ key: 'abc-1', refs }] });
  let t = now + 1;
  let ready: Ready = core.step({ kind: 'tick' }, t);
  let hints = 0;
  for (let commits = 0; ; commits++) {
    expect(commits, 'commits made').toBeLessThan(20);
    while (ready.persist === undefined) ready = core.step({ kind: 'tick' }, (t += 100));
    const b = ready.persist;
    hints += b.hintsPut.length;
    // Were the node killed once this commit is written, the journal record would be gone: every hint made of it must be on disk by then.
    if (b.journalDelete.includes('abc-1')) {
      expect(hints, 'hints durable when the journal record goes').toBe(2 * refs.length);
      break;
    }
    ready = core.step({ kind: 'persisted', persist: b.id }, t);
  }
});
