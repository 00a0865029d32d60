import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { DEFAULT_VNODES, HashRing, tokensFor, type RingMember } from '../../protocol/hash-ring.js';

const { h64 } = await (await import('xxhash-wasm')).default();

const ZONES = ['zone-a', 'zone-b', 'zone-c'] as const;

function member(id: string, zone: string = ZONES[0], vnodes = DEFAULT_VNODES): RingMember {
  return { id, zone, tokens: tokensFor(h64, id, vnodes) };
}

/** Distinct node ids such as "node-x7": what an operator or a generator would choose. */
const ids = (min: number, max: number): fc.Arbitrary<string[]> =>
  fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9-]{0,11}$/), { minLength: min, maxLength: max });

const KEYS = Array.from({ length: 2000 }, (_, i) => `video-${i}`);

describe('tokensFor', () => {
  test('derives tokens from the node id alone: hash64(`${id}#${i}`)', () => {
    const tokens = tokensFor(h64, 'node-1', 4);
    expect(tokens).toEqual([0, 1, 2, 3].map((i) => h64(`node-1#${i}`)));
    expect(tokensFor(h64, 'node-1', 4)).toEqual(tokens);
    expect(tokensFor(h64, 'node-1', 8).slice(0, 4)).toEqual(tokens);
  });
});

describe('HashRing', () => {
  test('an empty ring places nothing; a ring of one places everything on it', () => {
    expect(new HashRing([], h64).preferenceList('k', 3)).toEqual([]);
    const one = new HashRing([member('solo')], h64);
    expect(one.preferenceList('k', 3)).toEqual(['solo']);
    expect(one.ownership().get('solo')).toBeCloseTo(1, 12);
    expect(new HashRing([member('solo', 'z', 1)], h64).ownership().get('solo')).toBe(1);
  });

  test('the list at a key\'s token index is the key\'s preference list', () => {
    expect(new HashRing([], h64).indexOf('k')).toBe(-1);
    fc.assert(
      fc.property(ids(1, 12), fc.integer({ min: 1, max: 4 }), (nodeIds, n) => {
        const ring = new HashRing(nodeIds.map((id, i) => member(id, ZONES[i % ZONES.length])), h64);
        return KEYS.slice(0, 200).every((k) => JSON.stringify(ring.preferenceListAt(ring.indexOf(k), n)) === JSON.stringify(ring.preferenceList(k, n)));
      }),
      { numRuns: 50 },
    );
  });

  test('every node computes the same ring from the same membership, in any order', () => {
    fc.assert(
      fc.property(
        ids(1, 30).chain((nodeIds) => fc.tuple(fc.constant(nodeIds), fc.shuffledSubarray(nodeIds, { minLength: nodeIds.length }))),
        ([nodeIds, permuted]) => {
          const zoneOf = (id: string): string => ZONES[nodeIds.indexOf(id) % 3] as string;
          const a = new HashRing(nodeIds.map((id) => member(id, zoneOf(id), 16)), h64);
          const b = new HashRing(permuted.map((id) => member(id, zoneOf(id), 16)), h64);
          expect(b.checksum()).toBe(a.checksum());
          for (const key of KEYS.slice(0, 50)) expect(b.preferenceList(key, 3)).toEqual(a.preferenceList(key, 3));
        },
      ),
      { numRuns: 50 },
    );
  });

  test('the checksum changes with any change of membership, zone or tokens', () => {
    const members = ['a', 'b', 'c'].map((id) => member(id, 'z', 8));
    const base = new HashRing(members, h64).checksum();
    expect(base).toMatch(/^[0-9a-f]{16}$/);
    expect(new HashRing([...members, member('d', 'z', 8)], h64).checksum()).not.toBe(base);
    expect(new HashRing(members.slice(1), h64).checksum()).not.toBe(base);
    expect(new HashRing([member('a', 'y', 8), ...members.slice(1)], h64).checksum()).not.toBe(base);
    expect(new HashRing([member('a', 'z', 9), ...members.slice(1)], h64).checksum()).not.toBe(base);
  });

  test('a preference list holds min(n, members) distinct nodes, starting at the key’s owner', () => {
    fc.assert(
      fc.property(ids(1, 20), fc.integer({ min: 1, max: 6 }), fc.string(), (nodeIds, n, key) => {
        const ring = new HashRing(
          nodeIds.map((id) => member(id, 'z', 16)),
          h64,
        );
        const list = ring.preferenceList(key, n);
        expect(list).toHaveLength(Math.min(n, nodeIds.length));
        expect(new Set(list).size).toBe(list.length);
        // The owner is the node of the first token at or after the key's hash, wrapping.
        const h = h64(key);
        const all = nodeIds.flatMap((id) => tokensFor(h64, id, 16).map((t) => ({ t, id })));
        all.sort((x, y) => (x.t < y.t ? -1 : x.t > y.t ? 1 : x.id < y.id ? -1 : 1));
        const owner = (all.find((x) => x.t >= h) ?? all[0])?.id;
        expect(list[0]).toBe(owner);
      }),
      { numRuns: 100 },
    );
  });

  test('replicas go to distinct zones while zones remain', () => {
    fc.assert(
      fc.property(
        ids(3, 30).chain((nodeIds) =>
          fc.tuple(fc.constant(nodeIds), fc.array(fc.constantFrom(...ZONES), { minLength: nodeIds.length, maxLength: nodeIds.length })),
        ),
        fc.integer({ min: 1, max: 5 }),
        ([nodeIds, zones], n) => {
          const zoneOf = new Map(nodeIds.map((id, i) => [id, zones[i] as string]));
          const ring = new HashRing(
            nodeIds.map((id) => member(id, zoneOf.get(id), 16)),
            h64,
          );
          const zoneCount = new Set(zones).size;
          for (const key of KEYS.slice(0, 100)) {
            const list = ring.preferenceList(key, n);
            const distinct = new Set(list.map((id) => zoneOf.get(id)));
            expect(distinct.size).toBe(Math.min(list.length, zoneCount));
            // Every zone is used before any is used twice.
            const firstZones = list.slice(0, Math.min(list.length, zoneCount)).map((id) => zoneOf.get(id));
            expect(new Set(firstZones).size).toBe(firstZones.length);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  test('ownership sums to 1 as primary and to min(3, n) as one of 3 replicas', () => {
    fc.assert(
      fc.property(ids(1, 40), (nodeIds) => {
        const ring = new HashRing(
          nodeIds.map((id, i) => member(id, ZONES[i % 3], 16)),
          h64,
        );
        const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
        expect(sum(ring.ownership())).toBeCloseTo(1, 9);
        expect(sum(ring.ownership(3))).toBeCloseTo(Math.min(3, nodeIds.length), 9);
      }),
      { numRuns: 50 },
    );
  });

  // Bounds from scripts/ring-balance.ts at DEFAULT_VNODES over 3-100 nodes: the hottest node's
  // share was at most 1.38x of 1/n and the coldest at least 0.69x; a join took 0.8-1.33x of 1/(n+1).
  test(`ownership is balanced across 3-50 nodes with ${DEFAULT_VNODES} vnodes`, () => {
    fc.assert(
      fc.property(ids(3, 50), (nodeIds) => {
        const n = nodeIds.length;
        const shares = [...new HashRing(nodeIds.map((id) => member(id)), h64).ownership().values()];
        expect(Math.max(...shares) * n).toBeLessThan(1.6);
        expect(Math.min(...shares) * n).toBeGreaterThan(0.5);
      }),
      { numRuns: 40 },
    );
  });

  test('a join moves only about 1/(n+1) of the keys, all of them to the new node', () => {
    fc.assert(
      fc.property(ids(4, 51), (nodeIds) => {
        const [joiner, ...existing] = nodeIds as [string, ...string[]];
        const n = existing.length;
        const before = new HashRing(existing.map((id, i) => member(id, ZONES[i % 3])), h64);
        const after = new HashRing([...existing.map((id, i) => member(id, ZONES[i % 3])), member(joiner, ZONES[n % 3])], h64);
        // Exactly: the key space whose primary moved is the joiner's share.
        const moved = after.ownership().get(joiner) as number;
        expect(moved * (n + 1)).toBeGreaterThan(0.5);
        expect(moved * (n + 1)).toBeLessThan(1.6);
        let changedLists = 0;
        for (const key of KEYS) {
          const [was] = before.preferenceList(key, 1);
          const [now] = after.preferenceList(key, 1);
          if (now !== was) expect(now).toBe(joiner);
          const oldList = before.preferenceList(key, 3);
          const newList = after.preferenceList(key, 3);
          if (newList.join() !== oldList.join()) {
            changedLists++;
            expect(newList).toContain(joiner);
          }
        }
        // With 3 replicas a join touches about 3/(n+1) of the replica sets (zones add some churn).
        expect(changedLists / KEYS.length).toBeLessThan((3 * 2) / (n + 1) + 0.03);
      }),
      { numRuns: 25 },
    );
  });

  test('a leave moves only the leaver’s keys, about 1/n of them', () => {
    fc.assert(
      fc.property(ids(4, 50), (nodeIds) => {
        const [leaver, ...rest] = nodeIds as [string, ...string[]];
        const n = nodeIds.length;
        const before = new HashRing(nodeIds.map((id) => member(id)), h64);
        const after = new HashRing(rest.map((id) => member(id)), h64);
        const share = before.ownership().get(leaver) as number;
        expect(share * n).toBeGreaterThan(0.5);
        expect(share * n).toBeLessThan(1.6);
        let moved = 0;
        for (const key of KEYS) {
          const [was] = before.preferenceList(key, 1);
          const [now] = after.preferenceList(key, 1);
          if (now !== was) {
            moved++;
            expect(was).toBe(leaver);
          }
        }
        // Sampled, so a little looser than the exact share.
        expect(moved / KEYS.length).toBeLessThan(share + 0.04);
      }),
      { numRuns: 25 },
    );
  });
});
