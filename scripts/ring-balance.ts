/**
 * Prints how evenly the ring spreads keys for several vnode and node counts, and how much a join
 * moves: the measurements behind DEFAULT_VNODES in cluster/hash-ring.ts.
 *
 * For each (vnodes, nodes) it builds TRIALS rings from random node ids and reports, as the mean
 * over trials (worst trial in brackets):
 * - max, min: the most and least loaded node's primary ownership over the ideal 1/n;
 * - rf3 max: the same for replica ownership with 3 replicas (ideal 3/n);
 * - join: the key space whose primary moves when one node joins, over the ideal 1/(n+1); every
 *   moved key moves to the new node (checked), so this is also the joiner's share.
 * Run: npx tsc -p tsconfig.build.json && node dist/scripts/ring-balance.js [trials]
 */

import xxhash from 'xxhash-wasm';
import { HashRing, tokensFor, type RingMember } from '../protocol/hash-ring.js';
import { Prng } from '../cluster/prng.js';

const VNODE_COUNTS = [16, 64, 128, 256] as const;
const NODE_COUNTS = [5, 10, 20, 50, 100] as const;
const DEFAULT_TRIALS = 20;
/**
 * One zone: with zones, a zone holding fewer nodes than the others carries a replica of more keys
 * (5 nodes in 3 zones: the lone node of its zone holds a replica of every key). That is placement,
 * not token balance, and is what an operator fixes by sizing zones equally.
 */
const ZONE = 'z';

const { h64 } = await xxhash();
const trials = Number(process.argv[2] ?? DEFAULT_TRIALS);
const rng = new Prng(20240601);

interface Stat {
  sum: number;
  worst: number;
  worstIsMax: boolean;
}
const stat = (worstIsMax: boolean): Stat => ({ sum: 0, worst: worstIsMax ? -Infinity : Infinity, worstIsMax });
const add = (s: Stat, x: number): void => {
  s.sum += x;
  s.worst = s.worstIsMax ? Math.max(s.worst, x) : Math.min(s.worst, x);
};
const show = (s: Stat): string => `${(s.sum / trials).toFixed(2)} (${s.worst.toFixed(2)})`.padEnd(13);

function randomId(): string {
  return `node-${rng.nextUint32().toString(16)}${rng.nextUint32().toString(16)}`;
}

function member(id: string, vnodes: number): RingMember {
  return { id, zone: ZONE, tokens: tokensFor(h64, id, vnodes) };
}

console.log(`trials per cell: ${trials}; mean (worst)`);
console.log('vnodes nodes  max          min          rf3 max      join moves');
for (const vnodes of VNODE_COUNTS) {
  for (const n of NODE_COUNTS) {
    const max = stat(true);
    const min = stat(false);
    const rf3 = stat(true);
    const join = stat(true);
    for (let t = 0; t < trials; t++) {
      const members = Array.from({ length: n }, () => member(randomId(), vnodes));
      const ring = new HashRing(members, h64);
      const shares = [...ring.ownership().values()];
      add(max, Math.max(...shares) * n);
      add(min, Math.min(...shares) * n);
      add(rf3, (Math.max(...ring.ownership(3).values()) * n) / Math.min(3, n));
      const joiner = member(randomId(), vnodes);
      const joined = new HashRing([...members, joiner], h64);
      add(join, (joined.ownership().get(joiner.id) ?? 0) * (n + 1));
    }
    console.log(`${String(vnodes).padStart(6)} ${String(n).padStart(5)}  ${show(max)}${show(min)}${show(rf3)}${show(join)}`);
  }
}
