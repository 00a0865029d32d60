/**
 * The slot table's one subtle promise: a slot handed to a commit (takeDirty) keeps the value it
 * had then, whatever the table adds after, while the commit is under way; a failed commit leaves
 * every add in the table, dirty; and a request's adds are applied whole or not at all.
 */
import { describe, expect, it } from 'vitest';
import type { Slot } from '../../cluster/bucket-state.js';
import { SlotTable, type BucketRef, type SlotKey } from '../../cluster/slot-table.js';

const ACTOR = 'n1#aa';
const T0 = Date.UTC(2024, 0, 1);
const ref = (videoId: string): BucketRef => ({ videoId, eventType: 'view', res: 'm', start: T0 });
/** A fresh key each time, as a write makes them. */
const key = (videoId: string): SlotKey => ({ ref: ref(videoId), actor: ACTOR });
const delta = (count: number, value = 1): Slot => ({ count, sum: count * value, min: value, max: value });

function add(t: SlotTable, videoId: string, count: number, value = 1): void {
  const k = key(videoId);
  if (t.missing([k]).length > 0) t.loaded(k, undefined);
  expect(t.addDeltas(ACTOR, [{ key: k, delta: delta(count, value) }])).toBeUndefined();
}

describe('SlotTable', () => {
  it('a committed slot keeps its value while later adds change the table', () => {
    const t = new SlotTable();
    add(t, 'v', 2);
    add(t, 'v', 3); // in place: no commit holds it yet
    const first = t.takeDirty(1);
    expect([...first].map((s) => s.slot)).toEqual([delta(5)]);
    add(t, 'v', 4, 7);
    expect(first.slot(0)).toEqual(delta(5)); // the commit's value, not the table's
    expect(t.get(key('v'))).toEqual({ count: 9, sum: 33, min: 1, max: 7 });
    const second = t.takeDirty(2);
    add(t, 'v', 1);
    t.committed(1, first, true);
    add(t, 'v', 1);
    expect(first.slot(0)).toEqual(delta(5));
    expect(second.slot(0)).toEqual({ count: 9, sum: 33, min: 1, max: 7 });
    t.committed(2, second, true);
    expect(t.get(key('v'))).toEqual({ count: 11, sum: 35, min: 1, max: 7 });
  });

  it('a slot taken again unchanged by a second commit stays fixed until that commit is done too', () => {
    const t = new SlotTable();
    add(t, 'v', 2);
    const first = t.takeDirty(1);
    t.rewrite(key('v')); // dirty again with no change: the second commit holds the same slot
    const second = t.takeDirty(2);
    expect(second.slot(0)).toEqual(first.slot(0));
    t.committed(1, first, true); // the first is done, the second is not
    add(t, 'v', 5);
    expect(second.slot(0)).toEqual(delta(2));
    t.committed(2, second, true);
    const third = t.takeDirty(3);
    t.committed(3, third, true);
    add(t, 'v', 1);
    expect(t.get(key('v'))).toEqual(delta(8));
  });

  it('a failed commit\'s slots are dirty again with every add kept, its own values unchanged', () => {
    const t = new SlotTable();
    add(t, 'v', 2);
    const failed = t.takeDirty(1);
    add(t, 'v', 3);
    t.committed(1, failed, false);
    expect(failed.slot(0)).toEqual(delta(2));
    add(t, 'v', 1);
    expect(failed.slot(0)).toEqual(delta(2));
    const retry = t.takeDirty(2);
    expect([...retry].map((s) => s.slot)).toEqual([delta(6)]);
  });

  it('refuses, whole, adds that would pass 2^53, changing nothing', () => {
    const t = new SlotTable();
    add(t, 'v', 2);
    add(t, 'w', 1);
    const big = Number.MAX_SAFE_INTEGER - 1; // 2 + big passes 2^53 - 1
    const over = t.addDeltas(ACTOR, [
      { key: key('w'), delta: delta(1) },
      { key: key('v'), delta: delta(big) },
    ]);
    expect(over).toEqual(ref('v'));
    expect(t.get(key('w'))).toEqual(delta(1));
    expect(t.get(key('v'))).toEqual(delta(2));
  });

  it('a key whose slot was evicted finds nothing, not the slot that took its place', () => {
    const t = new SlotTable();
    const kv = key('v');
    t.loaded(kv, undefined);
    expect(t.addDeltas(ACTOR, [{ key: kv, delta: delta(2) }])).toBeUndefined();
    t.committed(1, t.takeDirty(1), true);
    expect(t.trim(0)).toBe(1);
    add(t, 'w', 5); // takes the evicted slot's room
    expect(t.size).toBe(1);
    expect(t.get(kv)).toBeUndefined();
    expect(t.missing([kv])).toEqual([kv]);
    t.loaded(kv, delta(2)); // as the store holds it
    expect(t.get(kv)).toEqual(delta(2));
    expect(t.get(key('w'))).toEqual(delta(5));
    // Pinned and dirty slots stay through a trim.
    add(t, 'v', 1);
    const taken = t.takeDirty(2);
    add(t, 'x', 1);
    expect(t.trim(0)).toBe(0);
    t.committed(2, taken, true);
    t.committed(3, t.takeDirty(3), true);
    expect(t.trim(1)).toBe(2);
    expect(t.get(key('x'))).toEqual(delta(1));
  });
});
