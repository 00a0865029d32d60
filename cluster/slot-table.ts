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
 * video's string and a short scan of its entries, with no key string made per slot; recency is an
 * intrusive list (touching a slot is a few index writes, not a Map delete and insert, whose holes
 * V8 walks on every later iteration); the dirty slots are an array of indexes.
 */
import { assert } from '../protocol/errors.js';
import { addDeltaAt, joinSlot, type Slot } from './bucket-state.js';
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
  /** The table's entry for this key once found (its generation and index), so a write's later steps need no look-up (SlotTable only). */
  held?: number;
}

/** One actor's slot of one bucket. */
export interface SlotEntry extends SlotKey {
  slot: Slot;
}

/**
 * The slots of one group commit, as columns: each value as it was when the commit took it (later
 * adds change the table, not the commit). A commit of 20,000 slots as objects (a slot, its bucket,
 * its value, the start's number) was a third of what outlived the young generation under load, as
 * a commit is under way for longer than a scavenge takes to come. Hot paths read the columns by
 * index; `entry(i)` and iteration make objects, for the paths that need them.
 */
export class CommitSlots {
  length = 0;
  readonly videoIds: string[];
  readonly eventTypes: string[];
  readonly actors: string[];
  readonly resolutions: Resolution[];
  starts: Float64Array;
  /** count, sum, min, max of each slot, four to a slot. */
  values: Float64Array;
  /** 1: its first commit since it came into the table, empty or as the store held nothing of it. */
  first: Uint8Array;
  /** The table's entry of each (see SlotTable), or -1. */
  held: Float64Array;

  constructor(capacity = 16) {
    // Made at their length: grown by push, the arrays of a large commit were made again and again.
    this.videoIds = new Array<string>(capacity);
    this.eventTypes = new Array<string>(capacity);
    this.actors = new Array<string>(capacity);
    this.resolutions = new Array<Resolution>(capacity);
    this.starts = new Float64Array(capacity);
    this.values = new Float64Array(4 * capacity);
    this.first = new Uint8Array(capacity);
    this.held = new Float64Array(capacity);
  }

  /** The commit of these entries (none first, none held, so the table's `committed` ignores it): for stores' tests and tools. */
  static of(entries: readonly SlotEntry[]): CommitSlots {
    const c = new CommitSlots(Math.max(1, entries.length));
    for (const e of entries) c.push(e.ref.videoId, e.ref.eventType, e.ref.res, e.ref.start, e.actor, e.slot.count, e.slot.sum, e.slot.min, e.slot.max, false, -1);
    return c;
  }

  push(videoId: string, eventType: string, res: Resolution, start: number, actor: string, count: number, sum: number, min: number, max: number, first: boolean, held: number): void {
    const i = this.length;
    if (i === this.starts.length) this.grow();
    this.videoIds[i] = videoId;
    this.eventTypes[i] = eventType;
    this.resolutions[i] = res;
    this.actors[i] = actor;
    this.starts[i] = start;
    const v = this.values;
    v[4 * i] = count;
    v[4 * i + 1] = sum;
    v[4 * i + 2] = min;
    v[4 * i + 3] = max;
    this.first[i] = first ? 1 : 0;
    this.held[i] = held;
    this.length = i + 1;
  }

  ref(i: number): BucketRef {
    return { videoId: this.videoIds[i] as string, eventType: this.eventTypes[i] as string, res: this.resolutions[i] as Resolution, start: this.starts[i] as number };
  }

  slot(i: number): Slot {
    const v = this.values;
    return { count: v[4 * i] as number, sum: v[4 * i + 1] as number, min: v[4 * i + 2] as number, max: v[4 * i + 3] as number };
  }

  entry(i: number): SlotEntry {
    return { ref: this.ref(i), actor: this.actors[i] as string, slot: this.slot(i) };
  }

  *[Symbol.iterator](): IterableIterator<SlotEntry> {
    for (let i = 0; i < this.length; i++) yield this.entry(i);
  }

  private grow(): void {
    const capacity = 2 * this.starts.length;
    this.starts = widened(this.starts, capacity);
    this.values = widened(this.values, 4 * capacity);
    this.first = widened(this.first, capacity);
    this.held = widened(this.held, capacity);
  }
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

/**
 * A copy of `s` that holds nothing else alive. A string decoded from a frame may be a slice of a
 * string of the whole frame (msgpackr decodes a frame's short strings into one and slices it), and
 * a video's id lives in the table for as long as any of its slots: a slice kept there kept its
 * whole frame, 30 of a node's 119 MB of live heap under load. Made once per video taken in.
 */
function ownCopy(s: string): string {
  return JSON.parse(JSON.stringify(s)) as string;
}

/** No entry: the end of a list. */
const NONE = -1;
/** Bits of an entry's flags. */
const LIVE = 1;
/** The entry has a value (clear: the store holds no slot of this actor for the bucket). */
const HAS = 2;
const DIRTY = 4;
/** The store held it when it was loaded, or a commit has taken it since. */
const STORED = 8;
/** A key holds its entry as `generation * HELD_SPAN + index`; an index is below HELD_SPAN. */
const HELD_SPAN = 2 ** 25;
/** Generations wrap below 2^28, so a held number stays below 2^53. */
const GENERATION_MASK = 2 ** 28 - 1;
const FIRST_CAPACITY = 1024;

/** A typed array of `length` holding `old` at its start. */
function widened<T extends Float64Array | Int32Array | Uint32Array | Uint8Array>(old: T, length: number): T {
  const fresh = new (old.constructor as new (n: number) => T)(length);
  fresh.set(old);
  return fresh;
}

const RESOLUTION_NAMES: readonly Resolution[] = ['m', 'h', 'd'];

function resolutionCode(res: Resolution): number {
  return res === 'm' ? 0 : res === 'h' ? 1 : 2;
}

/**
 * Event types and actors held in the table, each as a number: a few of each are shared by every
 * slot, and numbers in a typed column are nothing for the collector to trace, where a column of
 * strings is an array of 2^18 pointers it marks at every full collection. Counted, so a name no
 * slot holds any more is forgotten (event types are the clients' to choose).
 */
class Names {
  private readonly codes = new Map<string, number>();
  private readonly texts: string[] = [];
  private readonly holders: number[] = [];
  private readonly free: number[] = [];
  /** The name last looked up, and its code: a write's keys share their event type and actor. */
  private last: string | undefined;
  private lastCode = NONE;

  get size(): number {
    return this.codes.size;
  }

  /** The name's code, NONE if no slot holds it. */
  find(name: string): number {
    if (name === this.last) return this.lastCode;
    const code = this.codes.get(name) ?? NONE;
    if (code !== NONE) {
      this.last = name;
      this.lastCode = code;
    }
    return code;
  }

  /** The name's code, for one more slot that holds it. */
  take(name: string): number {
    let code = this.find(name);
    if (code === NONE) {
      code = this.free.pop() ?? this.texts.length;
      const own = ownCopy(name);
      this.texts[code] = own;
      this.holders[code] = 0;
      this.codes.set(own, code);
    }
    this.holders[code] = (this.holders[code] as number) + 1;
    return code;
  }

  of(code: number): string {
    return this.texts[code] as string;
  }

  /** One slot fewer holds the name's code. */
  release(code: number): void {
    const left = (this.holders[code] as number) - 1;
    this.holders[code] = left;
    if (left > 0) return;
    this.codes.delete(this.texts[code] as string);
    this.texts[code] = '';
    this.free.push(code);
    this.last = undefined;
    this.lastCode = NONE;
  }
}

/**
 * The table keeps its entries in columns (typed arrays, event types and actors as numbers, and an
 * array of video ids) rather than as objects: a node holds up to ~180,000 slots under its memory
 * budget, and as objects (an entry, its bucket, its value, the start's number) they were half of
 * the heap's objects, each one marked by every full collection and the new ones copied by
 * scavenges (a third of what outlived the young generation in a profile under load). An entry is
 * an index; a key remembers the index and the entry's generation, which eviction advances, so a
 * key whose entry was evicted looks it up again.
 */
export class SlotTable {
  private capacity = 0;
  private videoIds: string[] = [];
  /** Event types and actors as numbers (see Names), resolutions as their index in RESOLUTION_NAMES. */
  private eventTypes = new Uint32Array(0);
  private actors = new Uint32Array(0);
  private resolutions = new Uint8Array(0);
  /** Apart, so each keeps its own last look-up: a write's keys share their event type, and their actor. */
  private readonly eventTypeNames = new Names();
  private readonly actorNames = new Names();
  private starts = new Float64Array(0);
  /** count, sum, min, max of each entry, four to an entry. */
  private values = new Float64Array(0);
  private flags = new Uint8Array(0);
  /** Id of the commit under way that holds the entry, or 0. */
  private pinnedBy = new Float64Array(0);
  /** Neighbours in recency order: `older` towards the least recently touched. */
  private older = new Int32Array(0);
  private newer = new Int32Array(0);
  /** The next (older) entry of the same video, or, for a free entry, the next free one. */
  private nextOfVideo = new Int32Array(0);
  private generations = new Uint32Array(0);
  private used = 0;
  private freeHead = NONE;
  /** The newest entry of each video held; its others follow through nextOfVideo. */
  private readonly byVideo = new Map<string, number>();
  private count = 0;
  /** Least and most recently touched (or loaded) entries: trimming starts at `oldest`. */
  private oldest = NONE;
  private newest = NONE;
  /** Indexes of the dirty entries, the first `dirtyLength` of them: kept, not made again per commit. */
  private dirty = new Int32Array(FIRST_CAPACITY);
  private dirtyLength = 0;
  /** The video last looked up (undefined: none), and its newest entry (NONE: it has none): keys come grouped by video. */
  private lastVideo: string | undefined;
  private lastHead = NONE;
  /** Room for the values a request's adds would make, before any is applied. */
  private pending = new Float64Array(64);

  get size(): number {
    return this.count;
  }

  get dirtyCount(): number {
    return this.dirtyLength;
  }

  /** Distinct event types and actors the slots held refer to. */
  get namesHeld(): number {
    return this.eventTypeNames.size + this.actorNames.size;
  }

  /** The slot held for `key` (undefined: none held, or held as absent from the store). */
  get(key: SlotKey): Slot | undefined {
    const i = this.findKey(key);
    return i === NONE ? undefined : this.slotAt(i);
  }

  has(key: SlotKey): boolean {
    return this.findKey(key) !== NONE;
  }

  /** Of `keys`, those not in the table (to load from the store before they can change). */
  missing(keys: readonly SlotKey[]): SlotKey[] {
    const out: SlotKey[] = [];
    for (const k of keys) if (this.findKey(k) === NONE) out.push(k);
    return out;
  }

  /** A slot as the store holds it (undefined: none). Joined with what is here already. */
  loaded(key: SlotKey, stored: Slot | undefined): void {
    const i = this.findKey(key);
    if (i !== NONE) {
      // The store can never be ahead of what is here, but a join is safe either way.
      if (stored !== undefined) this.joinAt(i, stored);
      return;
    }
    const ref = key.ref;
    const head = this.headOf(ref.videoId);
    const videoId = head === NONE ? ownCopy(ref.videoId) : (this.videoIds[head] as string);
    // The key's ref is given the table's copy of the id (the same text: nothing else changes).
    ref.videoId = videoId;
    const n = this.allocate();
    this.videoIds[n] = videoId;
    this.eventTypes[n] = this.eventTypeNames.take(ref.eventType);
    this.actors[n] = this.actorNames.take(key.actor);
    this.resolutions[n] = resolutionCode(ref.res);
    this.starts[n] = ref.start;
    this.pinnedBy[n] = 0;
    if (stored === undefined) {
      this.flags[n] = LIVE;
    } else {
      this.flags[n] = LIVE | HAS | STORED;
      this.setValues(n, stored.count, stored.sum, stored.min, stored.max);
    }
    this.nextOfVideo[n] = head;
    this.byVideo.set(videoId, n);
    this.lastVideo = videoId;
    this.lastHead = n;
    key.held = this.heldOf(n);
    this.count++;
    this.link(n);
  }

  /**
   * The own-slot adds of one request, all or nothing: every slot must be in the table; returns the
   * key of the first slot that would pass MAX_SLOT_VALUE (applying nothing), or undefined once all
   * are applied and dirty.
   */
  addDeltas(actor: string, deltas: readonly { key: SlotKey; delta: Slot }[]): BucketRef | undefined {
    if (this.pending.length < 5 * deltas.length) this.pending = new Float64Array(10 * deltas.length);
    const p = this.pending;
    for (let d = 0; d < deltas.length; d++) {
      const { key, delta } = deltas[d] as { key: SlotKey; delta: Slot };
      assert(key.actor === actor, 'an add goes to the own slot');
      const i = this.findKey(key);
      assert(i !== NONE, 'own slot must be loaded before an add');
      const v = this.values;
      p[5 * d] = i;
      p[5 * d + 1] = v[4 * i] as number;
      p[5 * d + 2] = v[4 * i + 1] as number;
      p[5 * d + 3] = v[4 * i + 2] as number;
      p[5 * d + 4] = v[4 * i + 3] as number;
      if (!addDeltaAt(p, 5 * d + 1, ((this.flags[i] as number) & HAS) !== 0, delta)) return key.ref;
    }
    for (let d = 0; d < deltas.length; d++) {
      const i = p[5 * d] as number;
      this.setValues(i, p[5 * d + 1] as number, p[5 * d + 2] as number, p[5 * d + 3] as number, p[5 * d + 4] as number);
      this.flags[i] = (this.flags[i] as number) | HAS;
      this.touch(i);
    }
    return undefined;
  }

  /** Joins another version of a slot, which must be in the table. Returns whether it changed. */
  join(entry: SlotEntry): boolean {
    const i = this.findKey(entry);
    assert(i !== NONE, 'a slot must be loaded before a join');
    if (!this.joinAt(i, entry.slot)) return false;
    this.touch(i);
    return true;
  }

  /** Marks a loaded slot dirty without changing it, so the next commit writes (and ships) it again. */
  rewrite(key: SlotKey): void {
    const i = this.findKey(key);
    assert(i !== NONE, 'a slot must be loaded before a rewrite');
    if (((this.flags[i] as number) & HAS) !== 0) this.touch(i);
  }

  /**
   * Every dirty slot, for the commit `commitId`, each with its value now (later adds change the
   * table, not the commit's copy); they stay pinned until `committed(commitId)`.
   */
  takeDirty(commitId: number): CommitSlots {
    assert(commitId > 0, 'commit ids start at 1');
    const out = new CommitSlots(Math.max(16, this.dirtyLength));
    const v = this.values;
    for (let d = 0; d < this.dirtyLength; d++) {
      const i = this.dirty[d] as number;
      const f = this.flags[i] as number;
      assert((f & HAS) !== 0, 'a dirty slot has a value');
      this.flags[i] = (f & ~DIRTY) | STORED;
      this.pinnedBy[i] = commitId;
      out.push(
        this.videoIds[i] as string, this.eventTypeNames.of(this.eventTypes[i] as number), RESOLUTION_NAMES[this.resolutions[i] as number] as Resolution, this.starts[i] as number, this.actorNames.of(this.actors[i] as number),
        v[4 * i] as number, v[4 * i + 1] as number, v[4 * i + 2] as number, v[4 * i + 3] as number,
        (f & STORED) === 0, this.heldOf(i),
      );
    }
    this.dirtyLength = 0;
    return out;
  }

  /** The commit is durable (`ok`), or failed: its slots become dirty again, to be written next time. */
  committed(commitId: number, slots: CommitSlots, ok: boolean): void {
    for (let s = 0; s < slots.length; s++) {
      const i = this.heldEntry(slots.held[s] as number);
      if (i === NONE || this.pinnedBy[i] !== commitId) continue;
      this.pinnedBy[i] = 0;
      const f = this.flags[i] as number;
      if (!ok && (f & DIRTY) === 0) {
        this.flags[i] = f | DIRTY;
        this.markDirty(i);
      }
    }
  }

  /** Evicts the least recently touched clean, unpinned slots until at most `max` remain. */
  trim(max: number): number {
    let evicted = 0;
    for (let i = this.oldest; i !== NONE && this.count > max; ) {
      const newer = this.newer[i] as number;
      if (((this.flags[i] as number) & DIRTY) === 0 && this.pinnedBy[i] === 0) {
        this.unlink(i);
        this.remove(i);
        evicted++;
      }
      i = newer;
    }
    return evicted;
  }

  private slotAt(i: number): Slot | undefined {
    if (((this.flags[i] as number) & HAS) === 0) return undefined;
    const v = this.values;
    return { count: v[4 * i] as number, sum: v[4 * i + 1] as number, min: v[4 * i + 2] as number, max: v[4 * i + 3] as number };
  }

  private setValues(i: number, count: number, sum: number, min: number, max: number): void {
    const v = this.values;
    v[4 * i] = count;
    v[4 * i + 1] = sum;
    v[4 * i + 2] = min;
    v[4 * i + 3] = max;
  }

  /** Joins `other` into entry `i` (the one write rule: joinSlot); whether it changed. */
  private joinAt(i: number, other: Slot): boolean {
    const current = this.slotAt(i);
    const joined = joinSlot(current, other);
    if (joined === current) return false;
    this.setValues(i, joined.count, joined.sum, joined.min, joined.max);
    this.flags[i] = (this.flags[i] as number) | HAS;
    return true;
  }

  private heldOf(i: number): number {
    return (this.generations[i] as number) * HELD_SPAN + i;
  }

  /** The entry a key or commit holds (see heldOf), or NONE if it was evicted since. */
  private heldEntry(held: number): number {
    if (held < 0) return NONE;
    const i = held % HELD_SPAN;
    return i < this.used && (this.generations[i] as number) === (held - i) / HELD_SPAN && ((this.flags[i] as number) & LIVE) !== 0 ? i : NONE;
  }

  /** The video's newest entry, or NONE; the answer is kept for the next look-up (a write's keys come grouped by video, and a new video's are each looked for before any is loaded). */
  private headOf(videoId: string): number {
    if (videoId === this.lastVideo) return this.lastHead;
    const head = this.byVideo.get(videoId) ?? NONE;
    this.lastVideo = videoId;
    this.lastHead = head;
    return head;
  }

  /** The key's entry: the one it holds if still the same, else looked up (and then held). */
  private findKey(key: SlotKey): number {
    if (key.held !== undefined) {
      const i = this.heldEntry(key.held);
      if (i !== NONE) return i;
    }
    const i = this.find(key.ref, key.actor);
    key.held = i === NONE ? undefined : this.heldOf(i);
    return i;
  }

  /** Newest first: a video's recent buckets are the ones looked for most. */
  private find(ref: BucketRef, actor: string): number {
    const head = this.headOf(ref.videoId);
    if (head === NONE) return NONE;
    const eventType = this.eventTypeNames.find(ref.eventType);
    const actorCode = this.actorNames.find(actor);
    if (eventType === NONE || actorCode === NONE) return NONE;
    const start = ref.start;
    const res = resolutionCode(ref.res);
    for (let i = head; i !== NONE; i = this.nextOfVideo[i] as number) {
      if (this.starts[i] === start && this.resolutions[i] === res && this.actors[i] === actorCode && this.eventTypes[i] === eventType) return i;
    }
    return NONE;
  }

  private allocate(): number {
    if (this.freeHead !== NONE) {
      const i = this.freeHead;
      this.freeHead = this.nextOfVideo[i] as number;
      return i;
    }
    if (this.used === this.capacity) this.grow();
    return this.used++;
  }

  private grow(): void {
    const capacity = Math.max(FIRST_CAPACITY, 2 * this.capacity);
    assert(capacity <= HELD_SPAN, 'the slot table holds at most 2^25 entries');
    this.starts = widened(this.starts, capacity);
    this.eventTypes = widened(this.eventTypes, capacity);
    this.actors = widened(this.actors, capacity);
    this.resolutions = widened(this.resolutions, capacity);
    this.values = widened(this.values, 4 * capacity);
    this.flags = widened(this.flags, capacity);
    this.pinnedBy = widened(this.pinnedBy, capacity);
    this.older = widened(this.older, capacity);
    this.newer = widened(this.newer, capacity);
    this.nextOfVideo = widened(this.nextOfVideo, capacity);
    this.generations = widened(this.generations, capacity);
    this.capacity = capacity;
  }

  private remove(i: number): void {
    const videoId = this.videoIds[i] as string;
    const head = this.headOf(videoId);
    const next = this.nextOfVideo[i] as number;
    if (head === i) {
      if (next === NONE) this.byVideo.delete(videoId);
      else this.byVideo.set(videoId, next);
      this.lastHead = next;
    } else {
      let before = head;
      while (before !== NONE && this.nextOfVideo[before] !== i) before = this.nextOfVideo[before] as number;
      assert(before !== NONE, "an entry is in its video's list");
      this.nextOfVideo[before] = next;
    }
    this.flags[i] = 0;
    // A key still holding this index finds it changed, and looks its slot up again.
    this.generations[i] = ((this.generations[i] as number) + 1) & GENERATION_MASK;
    this.videoIds[i] = '';
    this.eventTypeNames.release(this.eventTypes[i] as number);
    this.actorNames.release(this.actors[i] as number);
    this.nextOfVideo[i] = this.freeHead;
    this.freeHead = i;
    this.count--;
  }

  private touch(i: number): void {
    if (this.newest !== i) {
      this.unlink(i);
      this.link(i);
    }
    const f = this.flags[i] as number;
    if ((f & DIRTY) === 0) {
      this.flags[i] = f | DIRTY;
      this.markDirty(i);
    }
  }

  private markDirty(i: number): void {
    if (this.dirtyLength === this.dirty.length) this.dirty = widened(this.dirty, 2 * this.dirty.length);
    this.dirty[this.dirtyLength++] = i;
  }

  /** Puts `i` at the newest end. */
  private link(i: number): void {
    this.older[i] = this.newest;
    this.newer[i] = NONE;
    if (this.newest !== NONE) this.newer[this.newest] = i;
    else this.oldest = i;
    this.newest = i;
  }

  private unlink(i: number): void {
    const older = this.older[i] as number;
    const newer = this.newer[i] as number;
    if (older !== NONE) this.newer[older] = newer;
    else this.oldest = newer;
    if (newer !== NONE) this.older[newer] = older;
    else this.newest = older;
    this.older[i] = NONE;
    this.newer[i] = NONE;
  }
}
