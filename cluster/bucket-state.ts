/**
 * The CRDT aggregate state of one bucket: per actor, a slot of count, sum, min and max.
 *
 * Why per actor: `count` and `sum` are G-counters (each actor only grows its own slot; merge takes
 * the max per slot), `min` and `max` are per-actor registers merged by min and max. Within one
 * actor every field moves one way only, so merging slot by slot is a join: commutative,
 * associative and idempotent, and every replication, hint and repair path may repeat freely.
 * Values are non-negative, so `sum` grows with `count`.
 *
 * A slot exists only once its actor has counted at least one event, so `count >= 1` and
 * `min <= max` hold for every slot. Every path that changes a slot uses the two rules here: the
 * owner's `addDelta` and everyone's `joinSlot`. This module does not know about buckets' keys,
 * time or bytes (the stored form is node/slot-codec.ts). Pure: no I/O.
 */

import { assert } from '../protocol/errors.js';

/** One actor's share of a bucket. */
export interface Slot {
  count: number;
  sum: number;
  min: number;
  max: number;
}

/** A stored slot whose bytes failed their checksum: not a value, never served (see node/slot-codec.ts). */
export const DAMAGED = 'damaged';

/** Actor id → slot. An actor is a node's data directory, e.g. `n1#5f3a9c`. */
export type BucketState = Map<string, Slot>;

/** What a reader sees: the bucket (or range) summed over all actors. */
export interface Stats {
  count: number;
  sum: number;
  /** null when count is 0. */
  min: number | null;
  max: number | null;
}

export const EMPTY_STATS: Readonly<Stats> = Object.freeze({ count: 0, sum: 0, min: null, max: null });

/** Longest actor id we accept; ids are `${nodeId}#${epoch}`, far shorter in practice. */
export const MAX_ACTOR_ID_LENGTH = 256;
/**
 * Most actors one stored bucket may have. Actors are data-directory lifetimes of the replicas of
 * one video, so real buckets have a handful; this only stops garbage from allocating without end.
 */
export const MAX_BUCKET_ACTORS = 65_536;

export function emptyState(): BucketState {
  return new Map();
}

function checkActor(actor: string): void {
  assert(
    typeof actor === 'string' && actor.length > 0 && actor.length <= MAX_ACTOR_ID_LENGTH,
    `actor id must be a string of 1..${MAX_ACTOR_ID_LENGTH} chars`,
  );
}

/**
 * Largest count or sum a slot may hold: beyond 2^53 a float64 can no longer count by one, and a
 * stored state past it would not decode. A write that would cross it is refused, applying nothing.
 */
export const MAX_SLOT_VALUE = Number.MAX_SAFE_INTEGER;

/**
 * The owner's write rule, the one place slot arithmetic is done: `slot` (undefined: the actor has
 * no slot yet) plus a `delta` of new events of that actor, as a new slot. Nothing is mutated.
 * Returns undefined when the result would pass MAX_SLOT_VALUE, so the caller can refuse the write.
 */
export function addDelta(slot: Readonly<Slot> | undefined, delta: Readonly<Slot>): Slot | undefined {
  if (slot !== undefined) {
    one[0] = slot.count;
    one[1] = slot.sum;
    one[2] = slot.min;
    one[3] = slot.max;
  }
  if (!addDeltaAt(one, 0, slot !== undefined, delta)) return undefined;
  return { count: one[0] as number, sum: one[1] as number, min: one[2] as number, max: one[3] as number };
}

const one = new Float64Array(4);

/**
 * `addDelta` on a slot kept as four numbers (count, sum, min, max) at `values[at]`, `has` false if
 * there is none yet: replaced by the sum, and true; or left as it was, and false, when the sum
 * would pass MAX_SLOT_VALUE. For the slot table, which keeps slots in columns.
 */
export function addDeltaAt(values: Float64Array, at: number, has: boolean, delta: Readonly<Slot>): boolean {
  assert(Number.isSafeInteger(delta.count) && delta.count > 0, `delta count must be a positive integer, got ${delta.count}`);
  assert(delta.sum >= 0 && delta.min >= 0 && delta.min <= delta.max, 'delta must hold sum >= 0 and 0 <= min <= max');
  if (!has) {
    if (delta.count > MAX_SLOT_VALUE || delta.sum > MAX_SLOT_VALUE) return false;
    values[at] = delta.count;
    values[at + 1] = delta.sum;
    values[at + 2] = delta.min;
    values[at + 3] = delta.max;
    return true;
  }
  const count = (values[at] as number) + delta.count;
  const sum = (values[at + 1] as number) + delta.sum;
  if (count > MAX_SLOT_VALUE || sum > MAX_SLOT_VALUE) return false;
  values[at] = count;
  values[at + 1] = sum;
  values[at + 2] = Math.min(values[at + 2] as number, delta.min);
  values[at + 3] = Math.max(values[at + 3] as number, delta.max);
  return true;
}

/** The delta of `n` events of `value`, for `addDelta`. */
export function eventsDelta(value: number, n: number): Slot {
  checkEvents(value, n);
  return { count: n, sum: value * n, min: value, max: value };
}

/** Throws unless `n` events of `value` make a delta (see eventsDelta). */
export function checkEvents(value: number, n: number): void {
  assert(Number.isFinite(value) && value >= 0, `event value must be finite and >= 0, got ${value}`);
  assert(Number.isSafeInteger(n) && n > 0, `event count must be a positive integer, got ${n}`);
}

/** Folds `n` more events of `value` into the delta `a` (checked with checkEvents). Mutates `a`. */
export function foldEvents(a: Slot, value: number, n: number): void {
  a.count += n;
  a.sum += value * n;
  if (value < a.min) a.min = value;
  if (value > a.max) a.max = value;
}

/**
 * The join of two versions of one actor's slot (the merge rule of every replication and repair
 * path): each field's max, min for `min`. Returns `a` itself when `b` adds nothing, so callers can
 * tell whether anything changed with `===`.
 */
export function joinSlot(a: Readonly<Slot> | undefined, b: Readonly<Slot>): Slot {
  if (a === undefined) return { count: b.count, sum: b.sum, min: b.min, max: b.max };
  if (b.count <= a.count && b.sum <= a.sum && b.min >= a.min && b.max <= a.max) return a as Slot;
  // Also catches NaN, which compares false both ways.
  const out = { count: Math.max(a.count, b.count), sum: Math.max(a.sum, b.sum), min: Math.min(a.min, b.min), max: Math.max(a.max, b.max) };
  assert(out.count >= a.count && out.sum >= a.sum && out.count >= b.count, 'join lowered a slot');
  return out;
}

/** Whether slot `a` already holds everything `b` does. */
export function slotDominates(a: Readonly<Slot> | undefined, b: Readonly<Slot>): boolean {
  return a !== undefined && a.count >= b.count && a.sum >= b.sum && a.min <= b.min && a.max >= b.max;
}

/** Count `n` events of `value` into `actor`'s own slot. Mutates `state`. */
export function addEvents(state: BucketState, actor: string, value: number, n = 1): void {
  checkActor(actor);
  const next = addDelta(state.get(actor), eventsDelta(value, n));
  assert(next !== undefined, `slot count overflow for actor ${actor}`);
  state.set(actor, next);
}

/** Join `src` into `target` slot by slot. Returns whether `target` changed. */
export function mergeInto(target: BucketState, src: BucketState): boolean {
  let changed = false;
  for (const [actor, s] of src) {
    const t = target.get(actor);
    const joined = joinSlot(t, s);
    if (joined !== t) {
      target.set(actor, joined);
      changed = true;
    }
  }
  return changed;
}

/** The join of `a` and `b` as a new state; neither input is touched. */
export function merge(a: BucketState, b: BucketState): BucketState {
  const out = clone(a);
  mergeInto(out, b);
  return out;
}

export function clone(state: BucketState): BucketState {
  const out: BucketState = new Map();
  for (const [actor, s] of state) out.set(actor, { count: s.count, sum: s.sum, min: s.min, max: s.max });
  return out;
}

function slotEquals(a: Slot, b: Slot): boolean {
  return a.count === b.count && a.sum === b.sum && a.min === b.min && a.max === b.max;
}

export function equals(a: BucketState, b: BucketState): boolean {
  if (a.size !== b.size) return false;
  for (const [actor, s] of a) {
    const t = b.get(actor);
    if (t === undefined || !slotEquals(s, t)) return false;
  }
  return true;
}

/** `a >= b` in the lattice: merging `b` into `a` would change nothing. */
export function dominates(a: BucketState, b: BucketState): boolean {
  for (const [actor, s] of b) if (!slotDominates(a.get(actor), s)) return false;
  return true;
}

/** The bucket summed over its actors. */
export function value(state: BucketState): Stats {
  let count = 0;
  let sum = 0;
  let min: number | null = null;
  let max: number | null = null;
  for (const s of state.values()) {
    count += s.count;
    sum += s.sum;
    if (min === null || s.min < min) min = s.min;
    if (max === null || s.max > max) max = s.max;
  }
  if (count === 0) return { count: 0, sum: 0, min: null, max: null };
  return { count, sum, min, max };
}

/** Stats of two disjoint sets of events together (buckets of a range). */
export function addStats(a: Stats, b: Stats): Stats {
  return {
    count: a.count + b.count,
    sum: a.sum + b.sum,
    min: a.min === null ? b.min : b.min === null ? a.min : Math.min(a.min, b.min),
    max: a.max === null ? b.max : b.max === null ? a.max : Math.max(a.max, b.max),
  };
}
