import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TallyError } from '../../protocol/errors.js';
import { LevelStore } from '../../node/level-store.js';
import { MemoryStore } from '../../node/memory-store.js';
import { storeConformance } from './store-conformance.js';

storeConformance('MemoryStore', async () => {
  const store = new MemoryStore();
  return {
    store,
    reopen: async () => {
      await store.close();
      await store.open();
      return store;
    },
    destroy: () => store.close(),
  };
});

storeConformance('LevelStore', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tally-store-'));
  let store = new LevelStore(dir);
  return {
    store,
    reopen: async () => {
      await store.close();
      store = new LevelStore(dir);
      await store.open();
      return store;
    },
    destroy: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('LevelStore', () => {
  it('reports a second opener of the same directory as INTERNAL, and reopens the same instance', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tally-store-'));
    const a = new LevelStore(dir);
    const b = new LevelStore(dir);
    try {
      await a.open();
      await a.putMeta('k', new Uint8Array([1]));
      const err = await b.open().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TallyError);
      expect((err as TallyError).code).toBe('INTERNAL');
      expect((err as TallyError).cause).toBeDefined();
      await a.close();
      await a.open();
      expect(await a.getMeta('k')).toEqual(new Uint8Array([1]));
    } finally {
      await a.close();
      await b.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
