/** The written filter: a slot it has not seen written is absent from the store; it never says "absent" of one that was written. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BucketRef } from '../../cluster/slot-table.js';
import { noStarts, WrittenFilter } from '../../cluster/written-filter.js';
import type { Resolution } from '../../cluster/time-buckets.js';

const MIN = 60_000;
const ref = (videoId: string, start: number, res: Resolution = 'm'): BucketRef => ({ videoId, eventType: 'view', res, start });

describe('WrittenFilter', () => {
  it('says absent of what was never written, present of what was', () => {
    const f = new WrittenFilter(noStarts(), 16);
    expect(f.mayExist(ref('a', MIN), 'n1#1')).toBe(false);
    f.written(ref('a', MIN), 'n1#1');
    expect(f.mayExist(ref('a', MIN), 'n1#1')).toBe(true);
    // Another actor, another bucket start, another video: not written.
    expect(f.mayExist(ref('a', MIN), 'n2#1')).toBe(false);
    expect(f.mayExist(ref('a', 2 * MIN), 'n1#1')).toBe(false);
    expect(f.mayExist(ref('b', MIN), 'n1#1')).toBe(false);
    expect(f.stats.skipped).toBe(4);
  });

  it('says maybe of every bucket at or before what the store held at start', () => {
    const f = new WrittenFilter({ m: 10 * MIN, h: 0, d: 0 }, 16);
    expect(f.mayExist(ref('a', 10 * MIN), 'n1#1')).toBe(true);
    expect(f.mayExist(ref('a', 9 * MIN), 'n1#1')).toBe(true);
    expect(f.mayExist(ref('a', 11 * MIN), 'n1#1')).toBe(false);
  });

  it('when over its budget gives up the oldest minute filter, and says maybe of that start and older ones', () => {
    const f = new WrittenFilter(noStarts(), 3);
    f.written(ref('a', 0, 'd'), 'n1#1');
    f.written(ref('a', 0, 'h'), 'n1#1');
    f.written(ref('a', MIN), 'n1#1');
    expect(f.mayExist(ref('zzz', MIN), 'n1#1')).toBe(false);
    f.written(ref('a', 2 * MIN), 'n1#1');
    // Four starts, three filters: the oldest minute's went; the hour's and day's stay.
    expect(f.bytes).toBe(3 * 1024 * 1024);
    expect(f.stats.dropped).toBe(1);
    expect(f.mayExist(ref('zzz', MIN), 'n1#1')).toBe(true);
    expect(f.mayExist(ref('zzz', 0), 'n1#1')).toBe(true);
    expect(f.mayExist(ref('zzz', 2 * MIN), 'n1#1')).toBe(false);
    expect(f.mayExist(ref('zzz', 0, 'h'), 'n1#1')).toBe(false);
    expect(f.mayExist(ref('zzz', 0, 'd'), 'n1#1')).toBe(false);
    expect(f.mayExist(ref('a', 2 * MIN), 'n1#1')).toBe(true);
  });

  it('with no budget says maybe of everything it was told of', () => {
    const f = new WrittenFilter(noStarts(), 0);
    f.written(ref('a', MIN), 'n1#1');
    expect(f.mayExist(ref('zzz', MIN), 'n1#1')).toBe(true);
    expect(f.bytes).toBe(0);
  });

  it('says maybe of few slots it never saw: under 1% at half a million slots in a bucket', () => {
    const f = new WrittenFilter(noStarts(), 16);
    for (let i = 0; i < 500_000; i++) f.written(ref(`video-${i}`, MIN), 'n1#1');
    let maybe = 0;
    for (let i = 0; i < 100_000; i++) if (f.mayExist(ref(`video-${i + 1_000_000}`, MIN), 'n1#1')) maybe++;
    expect(maybe / 100_000).toBeLessThan(0.01);
    // The same videos of another actor or event type are other slots.
    let other = 0;
    for (let i = 0; i < 100_000; i++) if (f.mayExist({ ...ref(`video-${i}`, MIN), eventType: 'like' }, 'n1#1') || f.mayExist(ref(`video-${i}`, MIN), 'n2#1')) other++;
    expect(other / 100_000).toBeLessThan(0.02);
  });

  it('never says absent of a slot that was written, whatever the budget and order (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ v: fc.integer({ min: 0, max: 30 }), m: fc.integer({ min: 0, max: 12 }), res: fc.constantFrom<Resolution>('m', 'h', 'd'), a: fc.constantFrom('n1#1', 'n2#1') }), { maxLength: 80 }),
        fc.integer({ min: 0, max: 4 }),
        fc.integer({ min: -1, max: 6 }),
        (ops, budget, before) => {
          const start = (o: { m: number; res: Resolution }): number => (o.res === 'm' ? o.m * MIN : o.m);
          const f = new WrittenFilter(before < 0 ? noStarts() : { m: before * MIN, h: before, d: before }, budget);
          const done: typeof ops = [];
          for (const o of ops) {
            f.written(ref(`v${o.v}`, start(o), o.res), o.a);
            done.push(o);
            for (const w of done) if (!f.mayExist(ref(`v${w.v}`, start(w), w.res), w.a)) return false;
          }
          return true;
        },
      ),
      { numRuns: 300 },
    );
  });
});
