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
 *
 * This is the hot path of every write, so it avoids work per slot: slots are found by their
 * video's string and a short scan, with no key string made per slot; recency is an intrusive
 * list (touching a slot is a few pointer writes, not a Map delete and insert, whose holes V8
 * walks on every later iteration); the dirty slots are an array.
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

export interface SlotKey {
  ref: BucketRef;
  actor: string;
  /** `slotId(ref, actor)`, once it has been made (see idOf). */
  id?: string;
  /** The table's entry for this key once found, so a write's later steps need no look-up (SlotTable only). */
  held?: unknown;
}

/** One actor's slot of one bucket. */
export interface SlotEntry extends SlotKey {
  slot: Slot;
}

/** A slot handed to a group commit. */
export interface DirtySlot extends SlotEntry {
  /** Its first commit since it came into the table, empty or as the store held nothing of it. */
  first: boolean;
}

/** A map key for a bucket. NUL cannot occur in validated ids. */
export function bucketId(ref: BucketRef): string {
  return `${ref.res}\u0000${ref.start}\u0000${ref.videoId}\u0000${ref.eventType}`;
}

export function slotId(ref: BucketRef, actor: string): string {
  return `${bucketId(ref)}\u0000${actor}`;
}

/** The key's slot id, made once and kept on the key. */
export function idOf(k: SlotKey): string {
  return (k.id ??= slotId(k.ref, k.actor));
}

interface Entry {
  readonly ref: BucketRef;
  readonly actor: string;
  /** Undefined: the store holds no slot of this actor for the bucket. */
  slot: Slot | undefined;
  dirty: boolean;
  /** Id of the commit under way that holds this slot, or 0. */
  pinnedBy: number;
  /** The store held it when it was loaded, or a commit has taken it since. */
  stored: boolean;
  /** Neighbours in recency order: `older` towards the least recently touched. */
  older: Entry | undefined;
  newer: Entry | undefined;
  /** False once evicted: a key still holding it looks it up again. */
  live: boolean;
}

function same(e: Entry, ref: BucketRef, actor: string): boolean {
  const r = e.ref;
  return r.start === ref.start && r.res === ref.res && e.actor === actor && r.eventType === ref.eventType;
}

/**
 * A copy of `s` that holds nothing else alive. A string decoded from a frame may be a slice of a
 * string of the whole frame (msgpackr decodes a frame's short strings into one and slices it), and
 * a video's id lives in the table for as long as any of its slots: a slice kept there kept its
 * whole frame, 30 of a node's 119 MB of live heap under load. Made once per video taken in.
 */
function ownCopy(s: string): string {
  return JSON.parse(JSON.stringify(s)) as string;
}

export class SlotTable {
  /**
   * Entries by video id, then in a short list (a video's buckets and actors held here). One map
   * look-up per video rather than per slot: a write's keys share their video's string, whose hash
   * is made once, and the lists are small enough to scan.
   */
  private readonly byVideo = new Map<string, Entry[]>();
  private count = 0;
  /** Least and most recently touched (or loaded) entries: trimming starts at `oldest`. */
  private oldest: Entry | undefined;
  private newest: Entry | undefined;
  private dirty: Entry[] = [];
  /** The list last looked up (undefined: none), and its video: keys come grouped by video. */
  private lastVideo: string | undefined;
  private lastList: Entry[] | undefined;

  get size(): number {
    return this.count;
  }

  get dirtyCount(): number {
    return this.dirty.length;
  }

  /** The slot held for `key` (undefined: none held, or held as absent from the store). */
  get(key: SlotKey): Slot | undefined {
    return this.findKey(key)?.slot;
  }

  has(key: SlotKey): boolean {
    return this.findKey(key) !== undefined;
  }

  /** Of `keys`, those not in the table (to load from the store before they can change). */
  missing(keys: readonly SlotKey[]): SlotKey[] {
    const out: SlotKey[] = [];
    for (const k of keys) if (this.findKey(k) === undefined) out.push(k);
    return out;
  }

  /** A slot as the store holds it (undefined: none). Joined with what is here already. */
  loaded(key: SlotKey, stored: Slot | undefined): void {
    const e = this.findKey(key);
    if (e === undefined) {
      let list = this.listOf(key.ref.videoId);
      let videoId: string;
      if (list === undefined) {
        videoId = ownCopy(key.ref.videoId);
        list = [];
        this.byVideo.set(videoId, list);
        this.lastVideo = videoId;
        this.lastList = list;
      } else {
        videoId = (list[0] as Entry).ref.videoId;
      }
      // The key's ref is kept, given the table's copy of the id (the same text: nothing else changes).
      key.ref.videoId = videoId;
      const fresh: Entry = { ref: key.ref, actor: key.actor, slot: stored === undefined ? undefined : { ...stored }, dirty: false, pinnedBy: 0, stored: stored !== undefined, older: undefined, newer: undefined, live: true };
      key.held = fresh;
      list.push(fresh);
      this.count++;
      this.link(fresh);
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
  addDeltas(actor: string, deltas: readonly { key: SlotKey; delta: Slot }[]): BucketRef | undefined {
    const found: Entry[] = new Array(deltas.length);
    const next: Slot[] = new Array(deltas.length);
    for (let i = 0; i < deltas.length; i++) {
      const { key, delta } = deltas[i] as { key: SlotKey; delta: Slot };
      assert(key.actor === actor, 'an add goes to the own slot');
      const e = this.findKey(key);
      assert(e !== undefined, 'own slot must be loaded before an add');
      const s = addDelta(e.slot, delta);
      if (s === undefined) return key.ref;
      found[i] = e;
      next[i] = s;
    }
    for (let i = 0; i < found.length; i++) {
      const e = found[i] as Entry;
      e.slot = next[i];
      this.touch(e);
    }
    return undefined;
  }

  /** Joins another version of a slot, which must be in the table. Returns whether it changed. */
  join(entry: SlotEntry): boolean {
    const e = this.findKey(entry);
    assert(e !== undefined, 'a slot must be loaded before a join');
    const joined = joinSlot(e.slot, entry.slot);
    if (joined === e.slot) return false;
    e.slot = joined;
    this.touch(e);
    return true;
  }

  /** Marks a loaded slot dirty without changing it, so the next commit writes (and ships) it again. */
  rewrite(key: SlotKey): void {
    const e = this.findKey(key);
    assert(e !== undefined, 'a slot must be loaded before a rewrite');
    if (e.slot !== undefined) this.touch(e);
  }

  /** Every dirty slot, for the commit `commitId`; they stay pinned until `committed(commitId)`. */
  takeDirty(commitId: number): DirtySlot[] {
    assert(commitId > 0, 'commit ids start at 1');
    const out: DirtySlot[] = new Array(this.dirty.length);
    for (let i = 0; i < this.dirty.length; i++) {
      const e = this.dirty[i] as Entry;
      assert(e.slot !== undefined, 'a dirty slot has a value');
      e.dirty = false;
      e.pinnedBy = commitId;
      out[i] = { ref: e.ref, actor: e.actor, slot: e.slot, held: e, first: !e.stored };
      e.stored = true;
    }
    this.dirty = [];
    return out;
  }

  /** The commit is durable (`ok`), or failed: its slots become dirty again, to be written next time. */
  committed(commitId: number, slots: readonly SlotEntry[], ok: boolean): void {
    for (const s of slots) {
      const e = this.findKey(s);
      if (e === undefined || e.pinnedBy !== commitId) continue;
      e.pinnedBy = 0;
      if (!ok && !e.dirty) {
        e.dirty = true;
        this.dirty.push(e);
      }
    }
  }

  /** Evicts the least recently touched clean, unpinned slots until at most `max` remain. */
  trim(max: number): number {
    let evicted = 0;
    for (let e = this.oldest; e !== undefined && this.count > max; ) {
      const newer = e.newer;
      if (!e.dirty && e.pinnedBy === 0) {
        this.unlink(e);
        this.remove(e);
        evicted++;
      }
      e = newer;
    }
    return evicted;
  }

  /** The video's list, or undefined when it has none; the answer is kept for the next look-up (a write's keys come grouped by video, and a new video's are each looked for before any is loaded). */
  private listOf(videoId: string): Entry[] | undefined {
    if (videoId === this.lastVideo) return this.lastList;
    const list = this.byVideo.get(videoId);
    this.lastVideo = videoId;
    this.lastList = list;
    return list;
  }

  /** The key's entry: the one it holds if still live, else looked up (and then held). */
  private findKey(key: SlotKey): Entry | undefined {
    const held = key.held as Entry | undefined;
    if (held !== undefined && held.live) return held;
    const e = this.find(key.ref, key.actor);
    key.held = e;
    return e;
  }

  /** Newest first: a video's recent buckets are the ones looked for most. */
  private find(ref: BucketRef, actor: string): Entry | undefined {
    const list = this.listOf(ref.videoId);
    if (list === undefined) return undefined;
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i] as Entry;
      if (same(e, ref, actor)) return e;
    }
    return undefined;
  }

  private remove(e: Entry): void {
    const list = this.byVideo.get(e.ref.videoId) as Entry[];
    const i = list.indexOf(e);
    assert(i >= 0, 'an entry is in its video\'s list');
    list.splice(i, 1);
    e.live = false;
    this.count--;
    if (list.length === 0) {
      this.byVideo.delete(e.ref.videoId);
      if (this.lastList === list) {
        this.lastVideo = undefined;
        this.lastList = undefined;
      }
    }
  }

  private touch(e: Entry): void {
    if (this.newest !== e) {
      this.unlink(e);
      this.link(e);
    }
    if (!e.dirty) {
      e.dirty = true;
      this.dirty.push(e);
    }
  }

  /** Puts `e` at the newest end. */
  private link(e: Entry): void {
    e.older = this.newest;
    e.newer = undefined;
    if (this.newest !== undefined) this.newest.newer = e;
    else this.oldest = e;
    this.newest = e;
  }

  private unlink(e: Entry): void {
    if (e.older !== undefined) e.older.newer = e.newer;
    else this.oldest = e.newer;
    if (e.newer !== undefined) e.newer.older = e.older;
    else this.newest = e.older;
    e.older = undefined;
    e.newer = undefined;
  }
}
