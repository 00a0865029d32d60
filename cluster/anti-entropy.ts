/**
 * The hash tree two replicas compare in anti-entropy, and what its comparison yields.
 *
 * Why: hints and read repair heal short outages and the keys somebody reads; a lost hint, a wiped
 * disk or a dropped message can leave a bucket different on two replicas for good. Anti-entropy
 * finds those differences without shipping the data: each side hashes what it holds of the keys
 * they share, they compare hashes top-down, and only the slots under differing leaves are sent
 * (Dynamo §4.7, Cassandra's repair, Riak's active anti-entropy).
 *
 * The tree: 65,536 leaves, one per 16-bit prefix of the key's ring token (xxhash64 of the video
 * id), so a leaf is a narrow token range and its keys are all on the same replicas. A leaf's hash
 * is the XOR of its slots' 64-bit hashes (order-free, so two walks that meet slots in different
 * orders agree; Cassandra's leaves are XORs of row hashes too). 256 branches of 256 leaves sit
 * above; the root is not exchanged, the branches are (2 KB). A comparison costs 2 KB, plus 2 KB per
 * differing branch, plus the slots of differing leaves: bytes grow with the divergence, not the
 * data. Because slots are merged by a join, sending a slot the other side already holds changes
 * nothing, so a difference made by a write racing the walks costs a few extra slots, never harm.
 * Pure: the hash function is injected (the node passes xxhash-wasm's h64).
 */
import type { Hash64 } from '../protocol/hash-ring.js';
import { AE_BRANCHES as BRANCHES, AE_LEAVES_PER_BRANCH as LEAVES_PER_BRANCH, AE_WORDS_PER_HASH as WORDS_PER_HASH } from '../protocol/peer.js';
import type { SlotEntry } from './slot-table.js';

export const LEAVES = BRANCHES * LEAVES_PER_BRANCH;
const LEAF_BITS = Math.log2(LEAVES);

/** The leaf of a key with ring token `token`. */
export function leafOf(token: bigint): number {
  return Number(token >> BigInt(64 - LEAF_BITS));
}

/** The 64-bit hash of one slot: the bucket, the actor and every field of its value. */
export function slotHash(hash64: Hash64, e: SlotEntry): bigint {
  const { ref, actor, slot } = e;
  return hash64(`${ref.videoId}\0${ref.eventType}\0${ref.res}\0${ref.start}\0${actor}\0${slot.count}\0${slot.sum}\0${slot.min}\0${slot.max}`);
}

export class MerkleTree {
  private readonly leaves = new Uint32Array(LEAVES * WORDS_PER_HASH);
  /** Slots hashed in. */
  size = 0;

  add(leaf: number, hash: bigint): void {
    const i = leaf * WORDS_PER_HASH;
    this.leaves[i] = (this.leaves[i] as number) ^ Number(hash >> 32n);
    this.leaves[i + 1] = (this.leaves[i + 1] as number) ^ Number(hash & 0xffff_ffffn);
    this.size++;
  }

  /** Every branch's hash, in order: BRANCHES × WORDS_PER_HASH numbers. */
  branches(): number[] {
    const out = new Array<number>(BRANCHES * WORDS_PER_HASH).fill(0);
    for (let b = 0; b < BRANCHES; b++) {
      let hi = 0;
      let lo = 0;
      for (let l = b * LEAVES_PER_BRANCH; l < (b + 1) * LEAVES_PER_BRANCH; l++) {
        hi ^= this.leaves[l * WORDS_PER_HASH] as number;
        lo ^= this.leaves[l * WORDS_PER_HASH + 1] as number;
      }
      out[b * WORDS_PER_HASH] = hi >>> 0;
      out[b * WORDS_PER_HASH + 1] = lo >>> 0;
    }
    return out;
  }

  /** The leaf hashes of the branches `branches`, one after another: LEAVES_PER_BRANCH × WORDS_PER_HASH numbers each. */
  leavesOf(branches: readonly number[]): number[] {
    const out: number[] = [];
    for (const b of branches) {
      const from = b * LEAVES_PER_BRANCH * WORDS_PER_HASH;
      for (let i = from; i < from + LEAVES_PER_BRANCH * WORDS_PER_HASH; i++) out.push(this.leaves[i] as number);
    }
    return out;
  }
}

/** Branches whose hashes differ between two `branches()` results. */
export function differingBranches(mine: readonly number[], theirs: readonly number[]): number[] {
  const out: number[] = [];
  for (let b = 0; b < BRANCHES; b++) {
    const i = b * WORDS_PER_HASH;
    if (mine[i] !== theirs[i] || mine[i + 1] !== theirs[i + 1]) out.push(b);
  }
  return out;
}

/** Leaves whose hashes differ, given both sides' `leavesOf(branches)` for the same branches. */
export function differingLeaves(branches: readonly number[], mine: readonly number[], theirs: readonly number[]): number[] {
  const out: number[] = [];
  for (let k = 0; k < branches.length; k++) {
    for (let j = 0; j < LEAVES_PER_BRANCH; j++) {
      const i = (k * LEAVES_PER_BRANCH + j) * WORDS_PER_HASH;
      if (mine[i] !== theirs[i] || mine[i + 1] !== theirs[i + 1]) out.push((branches[k] as number) * LEAVES_PER_BRANCH + j);
    }
  }
  return out;
}
