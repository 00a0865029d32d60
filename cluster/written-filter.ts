/**
 * Which slots may be in the store: it lets a write skip reading a slot back that cannot be there.
 *
 * A slot must be in the core's table before it changes; one that is not is loaded from the store
 * first. Most such loads find nothing: a new minute, a new hour, a video's first event of the day.
 * This filter knows, for buckets newer than anything in the store when the node started, every
 * slot this node has written since: one Bloom filter per bucket start. A slot it has not seen is
 * not in the store, so the table takes it as absent without a read. A false "maybe" only costs
 * the read it would have made anyway; there are no false "no"s, so nothing is ever lowered.
 *
 * - `writtenBefore` (per resolution) is the newest bucket start the store held when the node
 *   started (kept with every commit, see PersistBatch.written); buckets at or before it are always
 *   "maybe", since the filter did not see them written.
 * - The filters have a byte budget. When it is spent, the filter of the oldest bucket start goes
 *   (minutes first, then hours, then days), and every bucket of that resolution at or before it is
 *   "maybe" from then on.
 *
 * Pure. Its hashes are made here, in JavaScript: a call into the xxhash module per slot cost more
 * than the probes.
 */
import type { BucketRef } from './slot-table.js';
import type { Resolution } from './time-buckets.js';

/** Bits of one bucket start's filter: 1 MiB, in 16,384 blocks of 512 bits; 5 probes a slot. */
const FILTER_BITS = 1 << 23;
const PROBES = 5;
const BLOCK_BITS = 512;
const BLOCK_WORDS = BLOCK_BITS / 32;
const BLOCKS = FILTER_BITS / BLOCK_BITS;
const BLOCK_INDEX_BITS = Math.log2(BLOCKS);
export const WRITTEN_FILTER_BYTES = FILTER_BITS / 8;

export type StartsByResolution = Record<Resolution, number>;

export function noStarts(): StartsByResolution {
  return { m: Number.NEGATIVE_INFINITY, h: Number.NEGATIVE_INFINITY, d: Number.NEGATIVE_INFINITY };
}

let hash1 = 0;
let hash2 = 0;

/** The hash state after an (actor, event type) pair, which most slots share: only the video id is hashed per slot. */
let prefixActor = '';
let prefixType = '';
let prefix1 = 0;
let prefix2 = 0;

function mix(s: string, h1: number, h2: number): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  hash1 = Math.imul(h1 ^ 0xff, 0x01000193);
  hash2 = Math.imul(h2 ^ 0xff, 0x5bd1e995);
}

/** Two 32-bit hashes of the slot's (actor, event type, video), into hash1 and hash2. */
function hashKey(videoId: string, eventType: string, actor: string): void {
  if (actor !== prefixActor || eventType !== prefixType) {
    mix(actor, 0x811c9dc5, 0x9747b28c);
    mix(eventType, hash1, hash2);
    prefixActor = actor;
    prefixType = eventType;
    prefix1 = hash1;
    prefix2 = hash2;
  }
  mix(videoId, prefix1, prefix2);
  // Final avalanche, so that keys differing in their last characters spread over the bits.
  let h1 = hash1;
  h1 ^= h1 >>> 16;
  h1 = Math.imul(h1, 0x85ebca6b);
  h1 ^= h1 >>> 13;
  hash1 = h1;
  hash2 = Math.imul(hash2 ^ (hash2 >>> 16), 0xc2b2ae35) | 1;
}

/** The order filters are given up in when the budget is spent: the finest, oldest first. */
const DROP_ORDER: readonly Resolution[] = ['m', 'h', 'd'];

export class WrittenFilter {
  private readonly filters: Record<Resolution, Map<number, Uint32Array>> = { m: new Map(), h: new Map(), d: new Map() };
  /** Per resolution, the newest bucket start whose filter was given up: at or before it, "maybe". */
  private readonly dropped = noStarts();
  private count = 0;
  readonly stats = { skipped: 0, maybe: 0, dropped: 0 };

  constructor(
    private readonly writtenBefore: StartsByResolution,
    private readonly maxFilters: number,
  ) {}

  get bytes(): number {
    return this.count * WRITTEN_FILTER_BYTES;
  }

  /** False only if the slot is certainly not in the store. */
  mayExist(ref: BucketRef, actor: string): boolean {
    const res = ref.res;
    if (ref.start <= this.writtenBefore[res] || ref.start <= this.dropped[res]) return this.maybe();
    const f = this.filters[res].get(ref.start);
    // No filter for a start newer than everything stored and never given up: nothing was written to it.
    if (f === undefined || !this.probe(f, ref.videoId, ref.eventType, actor, false)) {
      this.stats.skipped++;
      return false;
    }
    return this.maybe();
  }

  /** The slot is being written to the store: from now on it may exist. Called before the write is issued. */
  written(ref: BucketRef, actor: string): void {
    this.writtenAt(ref.videoId, ref.eventType, ref.res, ref.start, actor);
  }

  /** `written`, of the bucket given by its parts (a commit keeps them in columns). */
  writtenAt(videoId: string, eventType: string, res: Resolution, start: number, actor: string): void {
    if (start <= this.writtenBefore[res] || start <= this.dropped[res]) return;
    let f = this.filters[res].get(start);
    if (f === undefined) {
      if (this.count >= this.maxFilters) this.dropOldest();
      // The budget may be too small for even this one: then this start is "maybe" for good.
      if (this.count >= this.maxFilters) {
        this.dropped[res] = Math.max(this.dropped[res], start);
        return;
      }
      f = new Uint32Array(FILTER_BITS / 32);
      this.filters[res].set(start, f);
      this.count++;
    }
    this.probe(f, videoId, eventType, actor, true);
  }

  private maybe(): boolean {
    this.stats.maybe++;
    return true;
  }

  /**
   * A blocked Bloom filter: h1 picks one 512-bit block (a cache line), and the probes fall inside
   * it by double hashing (h2 + i·step). One memory miss per slot instead of one per probe, for a
   * slightly higher false "maybe" rate at the same size.
   */
  private probe(f: Uint32Array, videoId: string, eventType: string, actor: string, set: boolean): boolean {
    hashKey(videoId, eventType, actor);
    const base = (hash1 & (BLOCKS - 1)) * BLOCK_WORDS;
    const h2 = hash2;
    const step = (hash1 >>> BLOCK_INDEX_BITS) | 1;
    for (let i = 0; i < PROBES; i++) {
      const bit = (h2 + Math.imul(i, step)) & (BLOCK_BITS - 1);
      const word = base + (bit >>> 5);
      const mask = 1 << (bit & 31);
      if (set) f[word] = (f[word] as number) | mask;
      else if (((f[word] as number) & mask) === 0) return false;
    }
    return true;
  }

  /** Gives up the oldest filter of the finest resolution that has more than one; failing that, of any. */
  private dropOldest(): void {
    const res = DROP_ORDER.find((r) => this.filters[r].size > 1) ?? DROP_ORDER.find((r) => this.filters[r].size > 0);
    if (res === undefined) return;
    const starts = this.filters[res];
    const oldest = Math.min(...starts.keys());
    starts.delete(oldest);
    this.count--;
    this.stats.dropped++;
    this.dropped[res] = Math.max(this.dropped[res], oldest);
  }
}
