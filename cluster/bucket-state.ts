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
 * `min <= max` hold for every slot. This module does not know about buckets' keys or time.
 * Pure: no I/O.
 */

import { Packr, Unpackr } from 'msgpackr';
import { assert, TallyError } from '../protocol/errors.js';

/** One actor's share of a bucket. */
export interface Slot {
  count: number;
  sum: number;
  min: number;
  max: number;
}

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

/** Count `n` events of `value` into `actor`'s own slot. Mutates `state`. */
export function addEvents(state: BucketState, actor: string, value: number, n = 1): void {
  checkActor(actor);
  assert(Number.isFinite(value) && value >= 0, `event value must be finite and >= 0, got ${value}`);
  assert(Number.isSafeInteger(n) && n > 0, `event count must be a positive integer, got ${n}`);
  const add = value * n;
  const slot = state.get(actor);
  if (slot === undefined) {
    state.set(actor, { count: n, sum: add, min: value, max: value });
    return;
  }
  const count = slot.count + n;
  assert(Number.isSafeInteger(count), `slot count overflow for actor ${actor}`);
  slot.count = count;
  slot.sum += add;
  if (value < slot.min) slot.min = value;
  if (value > slot.max) slot.max = value;
}

/** Join `src` into `target` slot by slot. Returns whether `target` changed. */
export function mergeInto(target: BucketState, src: BucketState): boolean {
  let changed = false;
  for (const [actor, s] of src) {
    const t = target.get(actor);
    if (t === undefined) {
      target.set(actor, { count: s.count, sum: s.sum, min: s.min, max: s.max });
      changed = true;
      continue;
    }
    if (s.count > t.count) { t.count = s.count; changed = true; }
    if (s.sum > t.sum) { t.sum = s.sum; changed = true; }
    if (s.min < t.min) { t.min = s.min; changed = true; }
    if (s.max > t.max) { t.max = s.max; changed = true; }
    // Also catches NaN in src, which compares false both ways.
    assert(t.count >= s.count && t.sum >= s.sum, `merge lowered slot of actor ${actor}`);
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
  for (const [actor, s] of b) {
    const t = a.get(actor);
    if (t === undefined) return false;
    if (t.count < s.count || t.sum < s.sum || t.min > s.min || t.max < s.max) return false;
  }
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

// Own instances so settings made elsewhere (records, structures) never change our bytes.
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false });

/**
 * Compact, deterministic bytes: msgpack of `[[actor, count, sum, min, max], ...]` with actors in
 * ascending order. Returns a fresh array (msgpackr hands out views of a shared 8 KiB buffer).
 */
export function encodeState(state: BucketState): Uint8Array {
  const actors = [...state.keys()].sort();
  const rows: [string, number, number, number, number][] = [];
  for (const actor of actors) {
    const s = state.get(actor)!;
    rows.push([actor, s.count, s.sum, s.min, s.max]);
  }
  return new Uint8Array(packr.pack(rows));
}

function corrupt(detail: string, cause?: unknown): TallyError {
  return new TallyError('INTERNAL', `corrupt bucket state: ${detail}`, cause === undefined ? undefined : { cause });
}

function isNonNegativeFinite(x: unknown): x is number {
  return typeof x === 'number' && Number.isFinite(x) && x >= 0;
}

/** Inverse of `encodeState`. Throws `TallyError('INTERNAL')` on anything it did not write. */
export function decodeState(bytes: Uint8Array): BucketState {
  let raw: unknown;
  try {
    raw = unpackr.unpack(bytes);
  } catch (err) {
    throw corrupt('not msgpack', err);
  }
  if (!Array.isArray(raw)) throw corrupt('not an array');
  if (raw.length > MAX_BUCKET_ACTORS) throw corrupt(`${raw.length} actors, limit ${MAX_BUCKET_ACTORS}`);
  const state: BucketState = new Map();
  let prev: string | undefined;
  for (let i = 0; i < raw.length; i++) {
    const row: unknown = raw[i];
    if (!Array.isArray(row) || row.length !== 5) throw corrupt(`row ${i} is not [actor, count, sum, min, max]`);
    const [actor, count, sum, min, max] = row as unknown[];
    if (typeof actor !== 'string' || actor.length === 0 || actor.length > MAX_ACTOR_ID_LENGTH) {
      throw corrupt(`row ${i}: bad actor id`);
    }
    if (prev !== undefined && !(prev < actor)) throw corrupt(`row ${i}: actors not strictly ascending`);
    prev = actor;
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1) {
      throw corrupt(`row ${i}: count must be a positive integer`);
    }
    if (!isNonNegativeFinite(sum) || !isNonNegativeFinite(min) || !isNonNegativeFinite(max) || min > max) {
      throw corrupt(`row ${i}: sum, min, max must be finite, >= 0, min <= max`);
    }
    state.set(actor, { count, sum, min, max });
  }
  return state;
}
