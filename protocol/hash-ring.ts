/**
 * The consistent-hash ring of virtual-node tokens, and replica placement on it.
 *
 * Why: any node must be able to say, with no coordination, which N nodes hold a key. Every node
 * builds the ring from the same membership and gets the same answer; `checksum()` makes a
 * disagreement visible (it travels in gossip).
 * - A member's tokens are hash64(`${nodeId}#${i}`) for i < vnodes: derived from the id alone, so a
 *   restarted node (new generation) keeps its tokens and its data, and tokens need not be gossiped.
 *   They deliberately do not depend on the generation: that would move every key of a node each
 *   time it restarts.
 * - A key k lives in the range (previous token, token] of the first token ≥ hash64(k), wrapping.
 * - The preference list walks clockwise collecting distinct nodes, skipping a node whose zone is
 *   already used while unused zones remain; once every zone is used the skipped nodes are taken
 *   in the order they were met (Cassandra's NetworkTopologyStrategy does the same with racks).
 * Pure and immutable; the hash function is injected (the node passes xxhash-wasm's h64).
 * Not here: who is up (the caller skips or hints down replicas), token assignment other than
 * random (an allocator like Cassandra's would balance better with fewer vnodes).
 */

import { assert } from './errors.js';

/** A 64-bit hash of a string, as an unsigned bigint in [0, 2^64). */
export type Hash64 = (s: string) => bigint;

export interface RingMember {
  id: string;
  zone: string;
  tokens: readonly bigint[];
}

const RING_SIZE = 1n << 64n;
const RING_SIZE_AS_NUMBER = 2 ** 64;

/**
 * Default virtual nodes per member, from scripts/ring-balance.ts (40 random id sets per cell,
 * xxhash64 tokens, one zone). "max" is the most loaded node's primary share over the ideal 1/n,
 * "rf3" its replica share with 3 replicas over 3/n; mean over the sets, worst set in brackets:
 *   vnodes  n=5: max  rf3          n=20: max  rf3         n=100: max  rf3
 *       16  1.27 (1.53)  1.18 (1.34)  1.50 (1.91)  1.28 (1.46)  1.74 (2.11)  1.40 (1.68)
 *       64  1.15 (1.43)  1.09 (1.15)  1.25 (1.36)  1.14 (1.22)  1.35 (1.57)  1.20 (1.32)
 *      128  1.10 (1.25)  1.07 (1.15)  1.17 (1.38)  1.11 (1.17)  1.23 (1.34)  1.13 (1.18)
 *      256  1.07 (1.14)  1.04 (1.09)  1.12 (1.18)  1.07 (1.15)  1.16 (1.23)  1.09 (1.12)
 * A join moved 0.98-1.03x of the ideal 1/(n+1) of the keys on average at every count.
 * 128: the hottest node carries at most ~1.25x (worst seen 1.38x) of its fair share up to 100
 * nodes, ~1.1x as a replica. 256 gains only ~0.07x for twice the tokens (ring build 12 ms vs 5 ms
 * at 100 nodes, and every per-range job later: repair, hint replay, streaming); 64 lets one node
 * carry 1.35-1.6x.
 */
export const DEFAULT_VNODES = 128;

/** The tokens of `nodeId`: hash64(`${nodeId}#${i}`) for i < count, in that order. */
export function tokensFor(hash64: Hash64, nodeId: string, count: number): bigint[] {
  assert(Number.isSafeInteger(count) && count >= 1, `token count must be a positive integer, got ${count}`);
  const tokens: bigint[] = new Array<bigint>(count);
  for (let i = 0; i < count; i++) tokens[i] = hash64(`${nodeId}#${i}`);
  return tokens;
}

export class HashRing {
  /** Members sorted by id; owner indexes below point into this. */
  private readonly memberIds: readonly string[];
  private readonly memberZone: readonly number[];
  private readonly zoneCount: number;
  /** All tokens, ascending; ties (64-bit collisions) broken by member id. */
  private readonly tokens: readonly bigint[];
  private readonly owners: readonly number[];
  private readonly memberTokens: readonly (readonly bigint[])[];
  private readonly zones: readonly string[];
  private cachedChecksum: string | undefined;

  constructor(
    members: readonly RingMember[],
    private readonly hash64: Hash64,
  ) {
    const sorted = [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const zoneIndex = new Map<string, number>();
    const memberZone: number[] = [];
    for (let i = 0; i < sorted.length; i++) {
      const m = sorted[i] as RingMember;
      assert(i === 0 || (sorted[i - 1] as RingMember).id !== m.id, `duplicate ring member ${m.id}`);
      assert(m.tokens.length > 0, `ring member ${m.id} has no tokens`);
      let z = zoneIndex.get(m.zone);
      if (z === undefined) {
        z = zoneIndex.size;
        zoneIndex.set(m.zone, z);
      }
      memberZone.push(z);
    }
    const order: number[] = [];
    const flatTokens: bigint[] = [];
    const flatOwners: number[] = [];
    sorted.forEach((m, owner) => {
      for (const t of m.tokens) {
        assert(t >= 0n && t < RING_SIZE, `token ${t} of ${m.id} is outside [0, 2^64)`);
        order.push(flatTokens.length);
        flatTokens.push(t);
        flatOwners.push(owner);
      }
    });
    // Owner indexes follow the id order, so comparing them breaks token ties by id.
    order.sort((a, b) => {
      const ta = flatTokens[a] as bigint;
      const tb = flatTokens[b] as bigint;
      return ta < tb ? -1 : ta > tb ? 1 : (flatOwners[a] as number) - (flatOwners[b] as number);
    });
    this.tokens = order.map((i) => flatTokens[i] as bigint);
    this.owners = order.map((i) => flatOwners[i] as number);
    this.memberIds = sorted.map((m) => m.id);
    this.memberTokens = sorted.map((m) => m.tokens);
    this.memberZone = memberZone;
    this.zones = [...zoneIndex.keys()];
    this.zoneCount = zoneIndex.size;
  }

  /** Member ids, sorted. */
  get members(): readonly string[] {
    return this.memberIds;
  }

  get tokenCount(): number {
    return this.tokens.length;
  }

  /** The first `n` distinct nodes clockwise from hash64(key), in distinct zones while zones remain. */
  preferenceList(key: string, n: number): string[] {
    if (this.tokens.length === 0) return [];
    return this.walk(this.indexAtOrAfter(this.hash64(key)), n).map((o) => this.memberIds[o] as string);
  }

  /**
   * The token index whose range holds `key` (-1 on an empty ring): keys of one index share their
   * preference list, so a caller can keep one list per index (a few hundred per node) rather than
   * one per key.
   */
  indexOf(key: string): number {
    return this.tokens.length === 0 ? -1 : this.indexAtOrAfter(this.hash64(key));
  }

  /** The preference list of the keys at token index `index` (see indexOf). */
  preferenceListAt(index: number, n: number): string[] {
    if (index < 0) return [];
    return this.walk(index, n).map((o) => this.memberIds[o] as string);
  }

  /**
   * The fraction of the key space each member holds: as primary (replicas = 1, fractions sum to
   * 1) or as any of the first `replicas` of the preference list (fractions sum to min(replicas, n)).
   */
  ownership(replicas = 1): Map<string, number> {
    const owned = new Array<bigint>(this.memberIds.length).fill(0n);
    const len = this.tokens.length;
    for (let i = 0; i < len; i++) {
      const prev = this.tokens[(i - 1 + len) % len] as bigint;
      const token = this.tokens[i] as bigint;
      // One token alone owns the whole ring; otherwise (prev, token], wrapping past 2^64.
      const size = len === 1 ? RING_SIZE : (token - prev + RING_SIZE) % RING_SIZE;
      const holders = replicas === 1 ? [this.owners[i] as number] : this.walk(i, replicas);
      for (const o of holders) owned[o] = (owned[o] as bigint) + size;
    }
    const result = new Map<string, number>();
    this.memberIds.forEach((id, o) => result.set(id, Number(owned[o]) / RING_SIZE_AS_NUMBER));
    return result;
  }

  /** xxhash64 (hex) of members, zones and tokens in a canonical order; same ring, same checksum. */
  checksum(): string {
    if (this.cachedChecksum === undefined) {
      const parts: string[] = [];
      this.memberIds.forEach((id, o) => {
        parts.push(`${id}|${this.zones[this.memberZone[o] as number]}|${(this.memberTokens[o] as bigint[]).join(',')}`);
      });
      this.cachedChecksum = this.hash64(parts.join('\n')).toString(16).padStart(16, '0');
    }
    return this.cachedChecksum;
  }

  /** Index of the first token ≥ h, wrapping to 0. */
  private indexAtOrAfter(h: bigint): number {
    let lo = 0;
    let hi = this.tokens.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.tokens[mid] as bigint) < h) lo = mid + 1;
      else hi = mid;
    }
    return lo === this.tokens.length ? 0 : lo;
  }

  /** Owner indexes of the preference list that starts at token index `start`. */
  private walk(start: number, n: number): number[] {
    const want = Math.min(n, this.memberIds.length);
    const result: number[] = [];
    if (want <= 0) return result;
    const seen = new Set<number>();
    const zonesUsed = new Set<number>();
    const skipped: number[] = [];
    const len = this.tokens.length;
    for (let step = 0; step < len && result.length < want; step++) {
      const owner = this.owners[(start + step) % len] as number;
      if (seen.has(owner)) continue;
      seen.add(owner);
      const zone = this.memberZone[owner] as number;
      if (zonesUsed.size < this.zoneCount && zonesUsed.has(zone)) {
        skipped.push(owner);
        continue;
      }
      result.push(owner);
      zonesUsed.add(zone);
      if (zonesUsed.size === this.zoneCount) {
        while (skipped.length > 0 && result.length < want) result.push(skipped.shift() as number);
      }
    }
    assert(result.length === want, `preference list found ${result.length} of ${want} nodes`);
    return result;
  }
}
