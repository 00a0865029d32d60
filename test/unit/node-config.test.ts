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
    const f = fitToHeap(r, 64 * MiB);
    expect(f.maxCachedSlots).toBe(Math.floor((64 * MiB * 0.35) / HEAP_BYTES_PER_SLOT));
    expect(f.maxDirtySlots).toBe(30_000); // 15% would be 20,132: a full 10,000-event request needs 30,000
    expect(f.commitAtDirty).toBeLessThanOrEqual(f.maxDirtySlots);
    expect(() => validateReplicationConfig(f)).not.toThrow();
    // A heap limit of 208 MiB in all (V8's figure for 160 MiB of old space).
    const d = fitToHeap(r, 208 * MiB);
    expect(d.maxCachedSlots).toBe(Math.floor((208 * MiB * 0.35) / HEAP_BYTES_PER_SLOT));
    expect(d.maxDirtySlots).toBe(Math.min(r.maxDirtySlots, Math.floor((208 * MiB * 0.15) / HEAP_BYTES_PER_SLOT)));
    expect((d.maxCachedSlots + d.maxDirtySlots) * HEAP_BYTES_PER_SLOT).toBeLessThan(0.55 * 208 * MiB);
    // Bounds set lower than the heap allows stay as set.
    expect(fitToHeap({ ...r, maxCachedSlots: 5_000 }, 208 * MiB).maxCachedSlots).toBe(5_000);
  });
});
