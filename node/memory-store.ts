/**
 * An in-memory `Store` with the same key layout and behaviour as `LevelStore`, for fast tests of
 * the core and the simulator.
 *
 * It keeps encoded bytes under the same string keys in sorted order, so encoding bugs and range
 * bounds are exercised exactly as with LevelDB. Closing keeps the data; opening the same instance
 * again is a "restart". No I/O, no timers; every method still returns a promise to match LevelDB.
 * Not for production: inserts are O(n).
 */

import { decodeState, encodeState, type BucketState, type Stats } from '../cluster/bucket-state.js';
import type { Span } from '../cluster/time-buckets.js';
import {
  decodeMetaKey,
  encodeKey,
  encodeMetaKey,
  expiryKeyRange,
  metaPrefixRange,
  spanKeyRanges,
  startOfKey,
  type BucketKey,
  type KeyRange,
} from './bucket-keys.js';
import {
  checkBatchSize,
  checkGetManySize,
  checkMetaValue,
  checkScanLimit,
  MAX_META_SCAN_ENTRIES,
  notOpen,
  readRangeByScans,
  type BucketEntry,
  type Store,
  type WriteOptions,
} from './store.js';

/** Index of the first element of sorted `keys` that is >= `key`. */
function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class MemoryStore implements Store {
  private readonly values = new Map<string, Uint8Array>();
  /** Every key of `values`, ascending. */
  private readonly keys: string[] = [];
  private isOpen = false;

  async open(): Promise<void> {
    this.isOpen = true;
  }

  async close(): Promise<void> {
    this.isOpen = false;
  }

  async getMany(keys: readonly BucketKey[]): Promise<(BucketState | undefined)[]> {
    this.checkOpen();
    checkGetManySize(keys.length);
    return keys.map((key) => {
      const bytes = this.values.get(encodeKey(key));
      return bytes === undefined ? undefined : decodeState(bytes);
    });
  }

  async writeBatch(entries: readonly BucketEntry[], _opts?: WriteOptions): Promise<void> {
    this.checkOpen();
    checkBatchSize(entries.length);
    // Encode everything before touching the map, so a bad entry leaves the store as it was.
    const encoded = entries.map((e) => [encodeKey(e.key), encodeState(e.state)] as const);
    for (const [key, bytes] of encoded) this.set(key, bytes);
  }

  async scanSpan(videoId: string, eventType: string, span: Span): Promise<{ start: number; state: BucketState }[]> {
    this.checkOpen();
    const out: { start: number; state: BucketState }[] = [];
    for (const range of spanKeyRanges(videoId, eventType, span)) {
      for (const key of this.keysIn(range)) {
        out.push({ start: startOfKey(key), state: decodeState(this.values.get(key)!) });
      }
    }
    return out;
  }

  async readRange(videoId: string, eventType: string, startMs: number, endMs: number): Promise<Stats> {
    this.checkOpen();
    return readRangeByScans(this, videoId, eventType, startMs, endMs);
  }

  async expireBefore(res: 'm' | 'h', cutoffMs: number): Promise<void> {
    this.checkOpen();
    const range = expiryKeyRange(res, cutoffMs);
    if (range === undefined) return;
    const from = lowerBound(this.keys, range.gte);
    const to = lowerBound(this.keys, range.lt);
    for (const key of this.keys.splice(from, to - from)) this.values.delete(key);
  }

  async getMeta(key: string): Promise<Uint8Array | undefined> {
    this.checkOpen();
    const bytes = this.values.get(encodeMetaKey(key));
    return bytes === undefined ? undefined : new Uint8Array(bytes);
  }

  async putMeta(key: string, value: Uint8Array, _opts?: WriteOptions): Promise<void> {
    this.checkOpen();
    checkMetaValue(value);
    this.set(encodeMetaKey(key), new Uint8Array(value));
  }

  async deleteMeta(key: string, _opts?: WriteOptions): Promise<void> {
    this.checkOpen();
    const full = encodeMetaKey(key);
    if (!this.values.delete(full)) return;
    this.keys.splice(lowerBound(this.keys, full), 1);
  }

  async scanMeta(prefix: string, limit = MAX_META_SCAN_ENTRIES): Promise<{ key: string; value: Uint8Array }[]> {
    this.checkOpen();
    checkScanLimit(limit);
    const out: { key: string; value: Uint8Array }[] = [];
    for (const key of this.keysIn(metaPrefixRange(prefix))) {
      if (out.length >= limit) break;
      out.push({ key: decodeMetaKey(key), value: new Uint8Array(this.values.get(key)!) });
    }
    return out;
  }

  private *keysIn(range: KeyRange): Generator<string> {
    for (let i = lowerBound(this.keys, range.gte); i < this.keys.length; i++) {
      const key = this.keys[i]!;
      if (key >= range.lt) return;
      yield key;
    }
  }

  private set(key: string, bytes: Uint8Array): void {
    if (!this.values.has(key)) this.keys.splice(lowerBound(this.keys, key), 0, key);
    this.values.set(key, bytes);
  }

  private checkOpen(): void {
    if (!this.isOpen) throw notOpen();
  }
}
