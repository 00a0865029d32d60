/** The anti-entropy hash tree: equal contents give equal trees whatever the order, and a change shows in exactly its branch and leaf. */
import { describe, expect, test } from 'vitest';
import xxhash from 'xxhash-wasm';
import { differingBranches, differingLeaves, leafOf, LEAVES, MerkleTree, slotHash } from '../../cluster/anti-entropy.js';
import type { SlotEntry } from '../../cluster/slot-table.js';
import { AE_LEAVES_PER_BRANCH } from '../../protocol/peer.js';

const { h64 } = await xxhash();

function entry(i: number, count = 1): SlotEntry {
  return { ref: { videoId: `v${i}`, eventType: 'view', res: 'm', start: 60_000 * i }, actor: `n${i % 3}#1`, slot: { count, sum: count, min: 1, max: 1 } };
}

function tree(entries: SlotEntry[]): MerkleTree {
  const t = new MerkleTree();
  for (const e of entries) t.add(leafOf(h64(e.ref.videoId)), slotHash(h64, e));
  return t;
}

describe('MerkleTree', () => {
  const entries = Array.from({ length: 2_000 }, (_, i) => entry(i));

  test('the same slots in any order give the same branches and leaves', () => {
    const a = tree(entries);
    const b = tree([...entries].reverse());
    expect(differingBranches(a.branches(), b.branches())).toEqual([]);
    expect(a.size).toBe(2_000);
  });

  test('one changed slot shows in exactly its branch and its leaf', () => {
    const changed = entries.map((e, i) => (i === 1234 ? entry(i, 2) : e));
    const a = tree(entries);
    const b = tree(changed);
    const leaf = leafOf(h64('v1234'));
    const branches = differingBranches(a.branches(), b.branches());
    expect(branches).toEqual([Math.floor(leaf / AE_LEAVES_PER_BRANCH)]);
    expect(differingLeaves(branches, a.leavesOf(branches), b.leavesOf(branches))).toEqual([leaf]);
  });

  test('a missing slot shows too, and leaves cover the whole token space', () => {
    const a = tree(entries);
    const b = tree(entries.slice(1));
    const branches = differingBranches(a.branches(), b.branches());
    expect(differingLeaves(branches, a.leavesOf(branches), b.leavesOf(branches))).toEqual([leafOf(h64('v0'))]);
    expect(leafOf(0n)).toBe(0);
    expect(leafOf((1n << 64n) - 1n)).toBe(LEAVES - 1);
  });
});
