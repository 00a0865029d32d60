/** The slot cache and dirty-slot bound follow the heap limit, so a node with a small heap cannot fill it with slots. */
import { describe, expect, test } from 'vitest';
import { defaultReplicationConfig, validateReplicationConfig } from '../../cluster/replication-config.js';
import { fitToHeap, HEAP_BYTES_PER_SLOT } from '../../node/config.js';

const MiB = 1024 * 1024;

describe('fitToHeap', () => {
  test('under V8\'s default limit the configured bounds stand', () => {
    const r = defaultReplicationConfig();
    expect(fitToHeap(r, 4096 * MiB)).toEqual(r);
  });

  test('a small heap lowers the cache to 35% of it and the dirty slots to 15%, never below one full request, and stays valid', () => {
    const r = defaultReplicationConfig();
    const f = fitToHeap(r, 176 * MiB);
    expect(f.maxCachedSlots).toBe(Math.floor((176 * MiB * 0.35) / HEAP_BYTES_PER_SLOT));
    expect(f.maxDirtySlots).toBe(30_000); // 15% would be 27,682: a full 10,000-event request needs 30,000
    expect(f.commitAtDirty).toBeLessThanOrEqual(f.maxDirtySlots);
    expect((f.maxCachedSlots + f.maxDirtySlots) * HEAP_BYTES_PER_SLOT).toBeLessThan(0.55 * 176 * MiB);
    expect(() => validateReplicationConfig(f)).not.toThrow();
    // Bounds set lower than the heap allows stay as set.
    expect(fitToHeap({ ...r, maxCachedSlots: 5_000 }, 176 * MiB).maxCachedSlots).toBe(5_000);
  });
});
