import fc from 'fast-check';
import { pack, Packr } from 'msgpackr';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  addDelta,
  addEvents,
  addStats,
  clone,
  dominates,
  EMPTY_STATS,
  emptyState,
  equals,
  eventsDelta,
  joinSlot,
  MAX_SLOT_VALUE,
  merge,
  mergeInto,
  value,
  type BucketState,
} from '../../cluster/bucket-state.js';
import { TallyError } from '../../protocol/errors.js';
import { decodeSlot, encodeSlot, SlotDamaged } from '../../node/slot-codec.js';

const ACTORS = ['n1#5f3a9c', 'n2#00aa11', 'n3#beef00', 'n1#777777'];

interface Op {
  actor: string;
  value: number;
  n: number;
}

const opArb: fc.Arbitrary<Op> = fc.record({
  actor: fc.constantFrom(...ACTORS),
  value: fc.oneof(fc.integer({ min: 0, max: 10_000 }), fc.double({ min: 0, max: 1e6, noNaN: true })),
  n: fc.integer({ min: 1, max: 50 }),
});

function apply(ops: readonly Op[], into: BucketState = emptyState()): BucketState {
  for (const op of ops) addEvents(into, op.actor, op.value, op.n);
  return into;
}

/**
 * Replica states as the system makes them: one shared history of per-actor operations, and each
 * replica has seen some prefix of each actor's operations (an actor's own slot only grows).
 */
const replicasArb = (k: number): fc.Arbitrary<BucketState[]> =>
  fc
    .tuple(fc.array(opArb, { maxLength: 40 }), fc.array(fc.array(fc.nat(), { minLength: ACTORS.length, maxLength: ACTORS.length }), { minLength: k, maxLength: k }))
    .map(([ops, cuts]) =>
      cuts.map((cut) => {
        const state = emptyState();
        ACTORS.forEach((actor, i) => {
          const own = ops.filter((op) => op.actor === actor);
          apply(own.slice(0, cut[i]! % (own.length + 1)), state);
        });
        return state;
      }),
    );

describe('addEvents and value', () => {
  it('counts, sums and tracks min and max', () => {
    const s = emptyState();
    expect(value(s)).toEqual(EMPTY_STATS);
    addEvents(s, 'a#1', 5, 2);
    addEvents(s, 'b#1', 1, 1);
    addEvents(s, 'a#1', 9, 1);
    expect(value(s)).toEqual({ count: 4, sum: 20, min: 1, max: 9 });
    expect(s.get('a#1')).toEqual({ count: 3, sum: 19, min: 5, max: 9 });
  });

  it('asserts its inputs', () => {
    const s = emptyState();
    expect(() => addEvents(s, 'a', -1, 1)).toThrow(/assertion/);
    expect(() => addEvents(s, 'a', Number.NaN, 1)).toThrow(/assertion/);
    expect(() => addEvents(s, 'a', Number.POSITIVE_INFINITY, 1)).toThrow(/assertion/);
    expect(() => addEvents(s, 'a', 1, 0)).toThrow(/assertion/);
    expect(() => addEvents(s, 'a', 1, 1.5)).toThrow(/assertion/);
    expect(() => addEvents(s, '', 1, 1)).toThrow(/assertion/);
    expect(s.size).toBe(0);
  });

  it('matches a brute-force aggregate of the operations', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 50 }), (ops) => {
        const v = value(apply(ops));
        const count = ops.reduce((a, o) => a + o.n, 0);
        expect(v.count).toBe(count);
        if (count === 0) {
          expect(v).toEqual(EMPTY_STATS);
          return;
        }
        expect(v.min).toBe(Math.min(...ops.map((o) => o.value)));
        expect(v.max).toBe(Math.max(...ops.map((o) => o.value)));
        const sum = ops.reduce((a, o) => a + o.value * o.n, 0);
        expect(v.sum).toBeCloseTo(sum, 3);
      }),
    );
  });

  it('addStats combines disjoint stats and treats EMPTY_STATS as identity', () => {
    const a = { count: 2, sum: 10, min: 3, max: 7 };
    expect(addStats(a, EMPTY_STATS)).toEqual(a);
    expect(addStats(EMPTY_STATS, a)).toEqual(a);
    expect(addStats(a, { count: 1, sum: 1, min: 1, max: 1 })).toEqual({ count: 3, sum: 11, min: 1, max: 7 });
  });
});

describe('CRDT laws', () => {
  it('merge is commutative', () => {
    fc.assert(
      fc.property(replicasArb(2), ([a, b]) => {
        expect(equals(merge(a!, b!), merge(b!, a!))).toBe(true);
      }),
    );
  });

  it('merge is associative', () => {
    fc.assert(
      fc.property(replicasArb(3), ([a, b, c]) => {
        expect(equals(merge(merge(a!, b!), c!), merge(a!, merge(b!, c!)))).toBe(true);
      }),
    );
  });

  it('merge is idempotent and mergeInto reports no change on repeats', () => {
    fc.assert(
      fc.property(replicasArb(2), ([a, b]) => {
        expect(equals(merge(a!, a!), a!)).toBe(true);
        const t = clone(a!);
        mergeInto(t, b!);
        expect(mergeInto(t, b!)).toBe(false);
        expect(mergeInto(t, a!)).toBe(false);
      }),
    );
  });

  it('merge dominates both inputs, and mergeInto changes a state iff it did not dominate', () => {
    fc.assert(
      fc.property(replicasArb(2), ([a, b]) => {
        const m = merge(a!, b!);
        expect(dominates(m, a!) && dominates(m, b!)).toBe(true);
        expect(mergeInto(clone(a!), b!)).toBe(!dominates(a!, b!));
      }),
    );
  });

  it('count and sum never decrease, min never rises, max never falls', () => {
    fc.assert(
      fc.property(replicasArb(2), ([a, b]) => {
        const before = value(a!);
        const after = value(merge(a!, b!));
        expect(after.count).toBeGreaterThanOrEqual(before.count);
        expect(after.sum).toBeGreaterThanOrEqual(before.sum);
        if (before.min !== null) expect(after.min!).toBeLessThanOrEqual(before.min);
        if (before.max !== null) expect(after.max!).toBeGreaterThanOrEqual(before.max);
      }),
    );
  });

  it('merging every replica gives the aggregate of the full history', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 40 }), fc.integer({ min: 1, max: 4 }), (ops, k) => {
        const full = apply(ops);
        // Each replica saw everything of some actors; together they saw all.
        const replicas = Array.from({ length: k }, (_, r) =>
          apply(ops.filter((op) => ACTORS.indexOf(op.actor) % k === r)),
        );
        const merged = replicas.reduce((acc, s) => merge(acc, s), emptyState());
        expect(equals(merged, full)).toBe(true);
      }),
    );
  });

  it('merge does not touch its inputs', () => {
    const a = apply([{ actor: 'a#1', value: 1, n: 1 }]);
    const b = apply([{ actor: 'a#1', value: 5, n: 3 }]);
    const a0 = clone(a);
    merge(a, b);
    expect(equals(a, a0)).toBe(true);
  });
});

describe('the slot rules', () => {
  it('addDelta refuses, rather than applies, a result past 2^53 - 1', () => {
    const big = { count: MAX_SLOT_VALUE - 1, sum: 5, min: 1, max: 1 };
    expect(addDelta(big, eventsDelta(1, 1))).toEqual({ count: MAX_SLOT_VALUE, sum: 6, min: 1, max: 1 });
    expect(addDelta(big, eventsDelta(1, 2))).toBeUndefined();
    expect(addDelta({ count: 1, sum: MAX_SLOT_VALUE - 10, min: 0, max: 5 }, eventsDelta(1e9, 1))).toBeUndefined();
    expect(addDelta(undefined, eventsDelta(1e9, 1))).toEqual({ count: 1, sum: 1e9, min: 1e9, max: 1e9 });
  });

  it('joinSlot returns its first argument itself when the second adds nothing', () => {
    const a = { count: 5, sum: 9, min: 1, max: 4 };
    expect(joinSlot(a, { count: 3, sum: 2, min: 2, max: 3 })).toBe(a);
    expect(joinSlot(a, { count: 6, sum: 2, min: 2, max: 3 })).toEqual({ count: 6, sum: 9, min: 1, max: 4 });
  });

  it('joinSlot is the merge of bucket states, slot by slot', () => {
    fc.assert(
      fc.property(replicasArb(2), ([a, b]) => {
        const viaSlots = new Map(a!);
        for (const [actor, s] of b!) viaSlots.set(actor, joinSlot(viaSlots.get(actor), s));
        expect(equals(viaSlots, merge(a!, b!))).toBe(true);
      }),
    );
  });
});

describe('the stored slot codec', () => {
  const KEY = 'd\u00000123456789abcdef\u0000v1\u0000view\u000000018c000000\u0000n1#ab';
  it('round-trips', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => {
        for (const s of apply(ops).values()) expect(decodeSlot(KEY, encodeSlot(KEY, s))).toEqual(s);
      }),
    );
  });

  it('writes the bytes msgpackr and two CRCs wrote: marker, crc32(value, crc32(key)), msgpack [count, sum, min, max]', () => {
    const packr = new Packr({ useRecords: false });
    const reference = (key: string, s: { count: number; sum: number; min: number; max: number }): Uint8Array => {
      const body = packr.pack([s.count, s.sum, s.min, s.max]);
      const out = Buffer.alloc(5 + body.length);
      out[0] = 0xc1;
      out.writeUInt32BE(crc32(body, crc32(key)), 1);
      out.set(body, 5);
      return new Uint8Array(out);
    };
    const num = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 70_000 }), fc.integer({ min: 0, max: 2 ** 32 + 5 }), fc.maxSafeNat(), fc.double({ min: 0, max: 1e15, noNaN: true }));
    // Keys in UTF-8 of several widths, and one too long for the encoder's scratch buffer.
    const key = fc.oneof(fc.constant(KEY), fc.string({ unit: 'binary', minLength: 1, maxLength: 300 }), fc.constant(`${KEY}${'é'.repeat(30_000)}`));
    fc.assert(
      fc.property(key, fc.integer({ min: 1, max: 2 ** 40 }), num, num, num, (k, count, sum, a, b) => {
        const s = { count, sum, min: Math.min(a, b), max: Math.max(a, b) };
        expect(new Uint8Array(encodeSlot(k, s))).toEqual(reference(k, s));
      }),
    );
  });

  const expectDamaged = (bytes: Uint8Array, key = KEY): void => {
    try {
      decodeSlot(key, bytes);
    } catch (err) {
      expect(err).toBeInstanceOf(SlotDamaged);
      expect((err as TallyError).code).toBe('STORAGE_DAMAGED');
      expect((err as TallyError).message).toMatch(/is damaged/);
      return;
    }
    throw new Error('decodeSlot accepted garbage');
  };

  it('rejects garbage, and slots written before checksums still read', () => {
    expectDamaged(new Uint8Array([]));
    expectDamaged(new Uint8Array([0xc1]));
    expectDamaged(new Uint8Array([0x92, 0x01]));
    expectDamaged(pack({ a: 1 }));
    expectDamaged(pack([1, 2, 3]));
    expectDamaged(pack([0, 0, 0, 0]));
    expectDamaged(pack([1.5, 2, 1, 1]));
    expectDamaged(pack([1, -2, 1, 1]));
    expectDamaged(pack([1, 2, 3, 1]));
    expectDamaged(pack([2 ** 53, 2, 1, 1]));
    expectDamaged(new Uint8Array([...encodeSlot(KEY, { count: 1, sum: 1, min: 1, max: 1 }), 0x00]));
    expect(decodeSlot(KEY, pack([3, 6, 1, 3]))).toEqual({ count: 3, sum: 6, min: 1, max: 3 });
  });

  it('finds every flipped bit of a checksummed slot, and a slot read under another key', () => {
    const good = encodeSlot(KEY, { count: 123456, sum: 9876543, min: 2, max: 901 });
    for (let bit = 0; bit < good.length * 8; bit++) {
      const bad = new Uint8Array(good);
      bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7));
      // A flip in the marker byte makes a bare msgpack read of the rest: still refused.
      expectDamaged(bad);
    }
    expectDamaged(good, `${KEY}x`);
  });

  it('never throws anything but STORAGE_DAMAGED on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          decodeSlot(KEY, bytes);
        } catch (err) {
          expect(err).toBeInstanceOf(TallyError);
          expect((err as TallyError).code).toBe('STORAGE_DAMAGED');
        }
      }),
      { numRuns: 2000 },
    );
  });
});
