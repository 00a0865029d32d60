/**
 * The slot table's one subtle promise: a slot handed to a commit (takeDirty) keeps the value it
 * had then, whatever the table adds after, while the commit is under way; a failed commit leaves
 * every add in the table, dirty; and a request's adds are applied whole or not at all. And, as the
 * table keeps its entries in columns by index, that it agrees with a plain model of the same rules
 * (values, dirty and pinned slots, which slots a trim evicts) through random operations.
 */
import { describe, expect, it } from 'vitest';
import type { Slot } from '../../cluster/bucket-state.js';
import { joinSlot } from '../../cluster/bucket-state.js';
import { CommitSlots, SlotTable, slotId, type BucketRef, type SlotKey } from '../../cluster/slot-table.js';
import type { Resolution } from '../../cluster/time-buckets.js';
import { seededRandom } from '../helpers/random.js';

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

  it('agrees with a plain model through random loads, adds, joins, commits, failures and trims', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const rand = seededRandom(seed);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
      const t = new SlotTable();
      /** id → what the table must hold: value (undefined: absent from the store), dirty, pinning commit, recency. */
      const model = new Map<string, { ref: BucketRef; actor: string; slot: Slot | undefined; dirty: boolean; pinnedBy: number; touched: number }>();
      const commits = new Map<number, { slots: CommitSlots; values: Map<string, Slot> }>();
      let clock = 0;
      let commitId = 0;
      const anyKey = (): SlotKey => {
        const res = pick<Resolution>(['m', 'h', 'd']);
        return { ref: { videoId: pick(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']), eventType: pick(['view', 'like']), res, start: res === 'm' ? T0 + 60_000 * Math.floor(rand() * 3) : T0 }, actor: pick([ACTOR, 'n2#bb']) };
      };
      const touch = (id: string): void => {
        const m = model.get(id)!;
        m.touched = ++clock;
        m.dirty = true;
      };
      for (let step = 0; step < 3000; step++) {
        const k = anyKey();
        const id = slotId(k.ref, k.actor);
        const m = model.get(id);
        const op = rand();
        if (op < 0.25) {
          const stored = rand() < 0.5 ? undefined : delta(1 + Math.floor(rand() * 5));
          t.loaded(k, stored);
          if (m === undefined) model.set(id, { ref: k.ref, actor: k.actor, slot: stored, dirty: false, pinnedBy: 0, touched: ++clock });
          else if (stored !== undefined) m.slot = joinSlot(m.slot, stored);
        } else if (op < 0.5) {
          if (m === undefined || k.actor !== ACTOR) continue;
          const d = delta(1 + Math.floor(rand() * 3), Math.floor(rand() * 9));
          expect(t.addDeltas(ACTOR, [{ key: k, delta: d }])).toBeUndefined();
          m.slot = m.slot === undefined ? { ...d } : { count: m.slot.count + d.count, sum: m.slot.sum + d.sum, min: Math.min(m.slot.min, d.min), max: Math.max(m.slot.max, d.max) };
          touch(id);
        } else if (op < 0.6) {
          if (m === undefined) continue;
          const other = delta(1 + Math.floor(rand() * 12), Math.floor(rand() * 9));
          const joined = joinSlot(m.slot, other);
          expect(t.join({ ...k, slot: other })).toBe(joined !== m.slot);
          if (joined !== m.slot) {
            m.slot = joined;
            touch(id);
          }
        } else if (op < 0.65) {
          if (m === undefined) continue;
          t.rewrite(k);
          if (m.slot !== undefined) touch(id);
        } else if (op < 0.78) {
          const slots = t.takeDirty(++commitId);
          const values = new Map<string, Slot>();
          const dirty = [...model].filter(([, x]) => x.dirty);
          expect(slots.length).toBe(dirty.length);
          for (const e of slots) values.set(slotId(e.ref, e.actor), e.slot);
          for (const [did, x] of dirty) {
            expect(values.get(did)).toEqual(x.slot);
            x.dirty = false;
            x.pinnedBy = commitId;
          }
          commits.set(commitId, { slots, values });
        } else if (op < 0.95) {
          if (commits.size === 0) continue;
          const [cid, c] = [...commits][0]!; // the store reports commits in order
          commits.delete(cid);
          const ok = rand() < 0.8;
          // What the commit took is still what it took, whatever came after.
          for (const e of c.slots) expect(e.slot).toEqual(c.values.get(slotId(e.ref, e.actor)));
          t.committed(cid, c.slots, ok);
          for (const x of model.values()) {
            if (x.pinnedBy !== cid) continue;
            x.pinnedBy = 0;
            if (!ok) x.dirty = true;
          }
        } else {
          const max = Math.max(0, model.size - 1 - Math.floor(rand() * 3)); // a few: which ones shows the order
          const evictable = [...model].filter(([, x]) => !x.dirty && x.pinnedBy === 0).sort((a, b) => a[1].touched - b[1].touched);
          const expected = Math.min(evictable.length, Math.max(0, model.size - max));
          expect(t.trim(max)).toBe(expected);
          for (const [eid] of evictable.slice(0, expected)) model.delete(eid);
        }
        expect(t.size).toBe(model.size);
        expect(t.dirtyCount).toBe([...model.values()].filter((x) => x.dirty).length);
        for (const x of model.values()) {
          expect(t.has({ ref: x.ref, actor: x.actor })).toBe(true);
          expect(t.get({ ref: x.ref, actor: x.actor })).toEqual(x.slot);
        }
        expect(t.has(k)).toBe(model.has(id));
      }
    }
  });

  it('forgets event types and actors no slot holds any more', () => {
    const t = new SlotTable();
    for (let i = 0; i < 500; i++) {
      const k: SlotKey = { ref: { videoId: `v${i % 7}`, eventType: `type-${i}`, res: 'm', start: T0 }, actor: i % 2 === 0 ? ACTOR : 'n2#bb' };
      t.loaded(k, delta(1 + i));
    }
    expect(t.namesHeld).toBe(502);
    expect(t.get({ ref: { videoId: 'v3', eventType: 'type-10', res: 'm', start: T0 }, actor: ACTOR })).toEqual(delta(11));
    expect(t.trim(100)).toBe(400);
    expect(t.namesHeld).toBe(102);
    expect(t.trim(0)).toBe(100);
    expect(t.namesHeld).toBe(0);
    // And a name taken again after it was forgotten reads as itself.
    add(t, 'v', 3);
    expect(t.get(key('v'))).toEqual(delta(3));
    expect(t.namesHeld).toBe(2);
  });

  it('a commit grows past the room it was made with, keeping what it holds', () => {
    const entries = Array.from({ length: 40 }, (_, i) => ({ ref: ref(`v${i}`), actor: ACTOR, slot: delta(i + 1, i % 3) }));
    const c = CommitSlots.of(entries.slice(0, 1));
    for (const e of entries.slice(1)) c.push(e.ref.videoId, e.ref.eventType, e.ref.res, e.ref.start, e.actor, e.slot.count, e.slot.sum, e.slot.min, e.slot.max, false, -1);
    expect(c.length).toBe(40);
    expect([...c]).toEqual(entries);
  });
});

