/**
 * A commit never holds more than the store takes: a replication journal of 110,000 buckets
 * replayed at a start (two hints each, RF 3) goes out over several commits, each written.
 */
import { expect, test } from 'vitest';
import xxhash from 'xxhash-wasm';
import { defaultConfig, validateConfig } from '../../cluster/membership-config.js';
import { NodeCore, type Ready } from '../../cluster/node-core.js';
import { Prng } from '../../cluster/prng.js';
import { defaultReplicationConfig } from '../../cluster/replication-config.js';
import { MemoryKv } from '../../node/kv.js';
import { MAX_COMMIT_ENTRIES, Store } from '../../node/store.js';

test('a journal of 110,000 buckets replayed at a start is written over several commits within the limit', async () => {
  const { h64 } = await xxhash();
  const now = Date.UTC(2026, 10, 28, 12);
  const refs = Array.from({ length: 110_000 }, (_, i) => ({ videoId: `v${i}`, eventType: 'view', res: 'm' as const, start: now - (now % 60_000) }));
  const core = new NodeCore({
    self: { id: 'n1', address: '127.0.0.1:7401', zone: 'z1' },
    actor: 'n1#00000001',
    membership: validateConfig({ ...defaultConfig(), seeds: ['127.0.0.1:7401'] }),
    replication: defaultReplicationConfig(),
    rng: new Prng(1),
    hash64: h64,
    nowMs: now,
    generation: now,
    bootstrapped: true,
    knownPeers: [
      { id: 'n2', address: '127.0.0.1:7402', zone: 'z2', vnodes: 256 },
      { id: 'n3', address: '127.0.0.1:7403', zone: 'z3', vnodes: 256 },
    ],
    journal: [{ key: 'abc-1', refs }],
  });
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
  expect((await store.loadHints(1_000_000)).length).toBe(2 * refs.length);
}, 60_000);
