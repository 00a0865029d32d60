/**
 * A slot's key is its bucket's key, a NUL, and its actor: made in one expression for speed, it must
 * stay exactly that, or a commit would write slots where no read or scan looks.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RESOLUTION_MS } from '../../cluster/time-buckets.js';
import { SlotKeys } from '../../node/slot-keys.js';

describe('SlotKeys', () => {
  it('makes a slot key as its bucket key, NUL, actor; inside its span range', () => {
    const keys = new SlotKeys((v) => BigInt.asUintN(64, BigInt(v.length) * 0x9e3779b97f4a7c15n + BigInt(v.charCodeAt(0))));
    const id = (max: number) => fc.string({ unit: 'binary', minLength: 1, maxLength: max }).filter((x) => !x.includes('\u0000'));
    fc.assert(
      fc.property(id(40), id(16), fc.constantFrom('m' as const, 'h' as const, 'd' as const), fc.integer({ min: 0, max: 2_000_000 }), id(24), (videoId, eventType, res, unit, actor) => {
        const ref = { videoId, eventType, res, start: unit * RESOLUTION_MS[res] };
        const key = keys.slotKey({ ref, actor });
        expect(key).toBe(`${keys.bucketKey(ref)}\u0000${actor}`);
        const ranges = keys.spanRanges([videoId, eventType, res, ref.start, ref.start + RESOLUTION_MS[res]]);
        expect(ranges.some((r) => key >= r.gte && key < r.lt)).toBe(true);
      }),
    );
    // The parts kept from the slot before, changed one at a time: event type, actor, resolution at one start.
    const day = 19_700 * 86_400_000;
    const seq = [
      { ref: { videoId: 'v', eventType: 'view', res: 'd' as const, start: day }, actor: 'n1#1' },
      { ref: { videoId: 'v', eventType: 'like', res: 'd' as const, start: day }, actor: 'n1#1' },
      { ref: { videoId: 'v', eventType: 'like', res: 'd' as const, start: day }, actor: 'n2#1' },
      { ref: { videoId: 'v', eventType: 'like', res: 'h' as const, start: day }, actor: 'n2#1' },
      { ref: { videoId: 'v', eventType: 'like', res: 'm' as const, start: day }, actor: 'n2#1' },
      { ref: { videoId: 'w', eventType: 'like', res: 'm' as const, start: day }, actor: 'n2#1' },
      { ref: { videoId: 'w', eventType: 'like', res: 'm' as const, start: day + 60_000 }, actor: 'n2#1' },
      { ref: { videoId: 'w', eventType: 'like', res: 'h' as const, start: day + 86_400_000 }, actor: 'n2#1' },
    ];
    for (const k of seq) expect(keys.slotKey(k)).toBe(`${keys.bucketKey(k.ref)}\u0000${k.actor}`);
    expect(() => keys.slotKey({ ref: { videoId: 'a\u0000b', eventType: 'view', res: 'd', start: 0 }, actor: 'n1#1' })).toThrow(/videoId/);
    expect(() => keys.slotKey({ ref: { videoId: 'a', eventType: 'view', res: 'h', start: 1 }, actor: 'n1#1' })).toThrow(/not aligned/);
  });
});
