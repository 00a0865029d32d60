/**
 * The slots a node holds in memory: one entry per (bucket, actor), each known to be at least what
 * the store holds for it. Every path that changes a slot goes through here — the node's own adds
 * (`addDeltas`) and every join of another version (`join`: replication, hints, read repair) — and
 * both use the one write rule of bucket-state.ts.
 *
 * Why slots and not whole buckets: the store keeps one key per slot, so a join writes only the
 * slots that changed, and a node's own add needs only its own slot of a bucket, never the others.
 * A slot must be in the table before it can change (`missing` says which to load first); a loaded
 * slot is joined, never overwritten, so a load that races a change cannot lower anything.
 *
 * Changed slots are dirty until `takeDirty` hands them to a group commit; they stay pinned (never
 * evicted) until that commit is durable (`committed`), or are dirty again if it failed. `trim`
 * evicts the least recently touched clean slots. Pure: no I/O, no clock.
 */
import { assert } from '../protocol/errors.js';
import { addDelta, joinSlot, type Slot } from './bucket-state.js';
import type { Resolution } from './time-buckets.js';

/** One bucket of one series. */
export interface BucketRef {
  videoId: string;
  eventType: string;
  res: Resolution;
  start: number;
}

/** One actor's slot of one bucket. */
export interface SlotEntry {
  ref: BucketRef;
  actor: string;
  slot: Slot;
}

export interface SlotKey {
  ref: BucketRef;
  actor: string;
}

/** A map key for a bucket. NUL cannot occur in validated ids. */
export function bucketId(ref: BucketRef): string {
  return `${ref.res}\u0000${ref.start}\u0000${ref.videoId}\u0000${ref.eventType}`;
}

export function slotId(ref: BucketRef, actor: string): string {
  return `${bucketId(ref)}\u0000${actor}`;
}

interface Entry {
  ref: BucketRef;
  actor: string;
  /** Undefined: the store holds no slot of this actor for the bucket. */
  slot: Slot | undefined;
  dirty: boolean;
  /** Id of the commit under way that holds this slot, or 0. */
  pinnedBy: number;
}

export class SlotTable {
  /** In order of last touch (re-inserted when touched), so trimming takes the oldest first. */
  private readonly entries = new Map<string, Entry>();
  private readonly dirty = new Set<string>();

  get size(): number {
    return this.entries.size;
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  get(id: string): Slot | undefined {
    return this.entries.get(id)?.slot;
  }

  /** Whether a slot is dirty or in a commit under way: its current value is not durable yet. */
  isPending(id: string): boolean {
    const e = this.entries.get(id);
    return e !== undefined && (e.dirty || e.pinnedBy !== 0);
  }

  /** Of `keys`, those not in the table (to load from the store before they can change). */
  missing(keys: readonly SlotKey[]): SlotKey[] {
    return keys.filter((k) => !this.entries.has(slotId(k.ref, k.actor)));
  }

  /** A slot as the store holds it (undefined: none). Joined with what is here already. */
  loaded(key: SlotKey, stored: Slot | undefined): void {
    const id = slotId(key.ref, key.actor);
    const e = this.entries.get(id);
    if (e === undefined) {
      this.entries.set(id, { ref: key.ref, actor: key.actor, slot: stored === undefined ? undefined : { ...stored }, dirty: false, pinnedBy: 0 });
    } else if (stored !== undefined) {
      // The store can never be ahead of what is here, but a join is safe either way.
      e.slot = joinSlot(e.slot, stored);
    }
  }

  /**
   * The own-slot adds of one request, all or nothing: every slot must be in the table; returns the
   * key of the first slot that would pass MAX_SLOT_VALUE (applying nothing), or undefined once all
   * are applied and dirty.
   */
  addDeltas(actor: string, deltas: readonly { ref: BucketRef; delta: Slot }[]): BucketRef | undefined {
    const next: Slot[] = [];
    for (const { ref, delta } of deltas) {
      const e = this.entries.get(slotId(ref, actor));
      assert(e !== undefined, 'own slot must be loaded before an add');
      const s = addDelta(e.slot, delta);
      if (s === undefined) return ref;
      next.push(s);
    }
    deltas.forEach(({ ref }, i) => {
      const id = slotId(ref, actor);
      const e = this.entries.get(id) as Entry;
      e.slot = next[i];
      this.touch(id, e);
    });
    return undefined;
  }

  /** Joins another version of a slot, which must be in the table. Returns whether it changed. */
  join(entry: SlotEntry): boolean {
    const id = slotId(entry.ref, entry.actor);
    const e = this.entries.get(id);
    assert(e !== undefined, 'a slot must be loaded before a join');
    const joined = joinSlot(e.slot, entry.slot);
    if (joined === e.slot) return false;
    e.slot = joined;
    this.touch(id, e);
    return true;
  }

  /** Marks a loaded slot dirty without changing it, so the next commit writes (and ships) it again. */
  rewrite(key: SlotKey): void {
    const id = slotId(key.ref, key.actor);
    const e = this.entries.get(id);
    assert(e !== undefined, 'a slot must be loaded before a rewrite');
    if (e.slot !== undefined) this.touch(id, e);
  }

  /** Every dirty slot, for the commit `commitId`; they stay pinned until `committed(commitId)`. */
  takeDirty(commitId: number): SlotEntry[] {
    assert(commitId > 0, 'commit ids start at 1');
    const out: SlotEntry[] = [];
    for (const id of this.dirty) {
      const e = this.entries.get(id) as Entry;
      assert(e.slot !== undefined, 'a dirty slot has a value');
      e.dirty = false;
      e.pinnedBy = commitId;
      out.push({ ref: e.ref, actor: e.actor, slot: e.slot });
    }
    this.dirty.clear();
    return out;
  }

  /** The commit is durable (`ok`), or failed: its slots become dirty again, to be written next time. */
  committed(commitId: number, slots: readonly SlotEntry[], ok: boolean): void {
    for (const s of slots) {
      const id = slotId(s.ref, s.actor);
      const e = this.entries.get(id);
      if (e === undefined || e.pinnedBy !== commitId) continue;
      e.pinnedBy = 0;
      if (!ok) {
        e.dirty = true;
        this.dirty.add(id);
      }
    }
  }

  /** Evicts the least recently touched clean, unpinned slots until at most `max` remain. */
  trim(max: number): number {
    let evicted = 0;
    if (this.entries.size <= max) return 0;
    for (const [id, e] of this.entries) {
      if (this.entries.size <= max) break;
      if (e.dirty || e.pinnedBy !== 0) continue;
      this.entries.delete(id);
      evicted++;
    }
    return evicted;
  }

  private touch(id: string, e: Entry): void {
    this.entries.delete(id);
    this.entries.set(id, e);
    e.dirty = true;
    this.dirty.add(id);
  }
}
