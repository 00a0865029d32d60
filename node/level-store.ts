/**
 * The LevelDB `Store`: one database per node data directory.
 *
 * Key layout (built in bucket-keys.ts; `\x00` is a safe separator because ids are validated
 * upstream to contain no control characters; timestamps are 12-digit lowercase hex so byte order
 * is time order):
 *   d \0 {videoId} \0 {eventType} \0 {dayHex}
 *   h \0 {dayHex} \0 {videoId} \0 {eventType} \0 {hourHex}
 *   m \0 {dayHex} \0 {videoId} \0 {eventType} \0 {minuteHex}
 *   z \0 {metaKey}
 * Why this shape:
 * - Days are kept for ever and read in runs, so a series' days are contiguous: a 30-day read is one
 *   seek for the days plus, at each edge, one seek for the hours and one for the minutes (a span
 *   that crosses midnight costs one more per day partition it touches).
 * - Minutes and hours are the bulk of the data and only matter while recent, so they are
 *   partitioned by UTC day first: expiring everything older than a day is one range delete
 *   (`clear({ gte: 'm\0', lt: 'm\0' + cutoffDayHex })`) that never scans the data it keeps.
 * - Meta values live under their own prefix so no bucket scan can see them.
 * Values are `encodeState` bytes (msgpack, actors sorted), stored as Uint8Array ('view').
 * LevelDB failures come back as `TallyError('INTERNAL')` with the original error as `cause`.
 * This class does not batch or merge; group commit lives above it.
 */

import { Level } from 'level';
import { decodeState, encodeState, type BucketState, type Stats } from '../cluster/bucket-state.js';
import type { Span } from '../cluster/time-buckets.js';
import { TallyError } from '../protocol/errors.js';
import {
  decodeMetaKey,
  encodeKey,
  encodeMetaKey,
  expiryKeyRange,
  metaPrefixRange,
  spanKeyRanges,
  startOfKey,
  type BucketKey,
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

/** classic-level hands out Buffers for 'view'; callers get a plain Uint8Array (no copy), as from MemoryStore. */
function plainBytes(bytes: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(bytes) === Uint8Array.prototype
    ? bytes
    : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export class LevelStore implements Store {
  /**
   * Made in `open`, not in the constructor: abstract-level opens a new instance by itself on the
   * next tick, so two stores constructed on one directory would race for its lock.
   */
  private level: Level<string, Uint8Array> | undefined;
  /** An open under way, so concurrent callers share it instead of fighting for the lock. */
  private opening: Promise<void> | undefined;

  constructor(readonly location: string) {}

  async open(): Promise<void> {
    if (this.level !== undefined) return;
    this.opening ??= this.openLevel().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async openLevel(): Promise<void> {
    const level = new Level<string, Uint8Array>(this.location, { keyEncoding: 'utf8', valueEncoding: 'view' });
    try {
      await level.open({ createIfMissing: true });
    } catch (err) {
      // LevelDB's own message ("Database failed to open") hides the usual cause: another process
      // (a node already running on this directory) holds the lock.
      if ((err as { cause?: { code?: string } }).cause?.code === 'LEVEL_LOCKED') {
        throw new TallyError(
          'INTERNAL',
          `the database in ${this.location} is in use by another process (is a node already running on this data directory?)`,
          { cause: err },
        );
      }
      throw new TallyError('INTERNAL', `store open ${this.location} failed: ${(err as Error).message}`, { cause: err });
    }
    this.level = level;
  }

  async close(): Promise<void> {
    const level = this.level;
    if (level === undefined) return;
    this.level = undefined;
    await this.io('close', () => level.close());
  }

  async getMany(keys: readonly BucketKey[]): Promise<(BucketState | undefined)[]> {
    this.checkOpen();
    checkGetManySize(keys.length);
    if (keys.length === 0) return [];
    const encoded = keys.map(encodeKey);
    const values = await this.io('getMany', () => this.db.getMany(encoded));
    return values.map((bytes) => (bytes === undefined ? undefined : decodeState(bytes)));
  }

  async writeBatch(entries: readonly BucketEntry[], opts?: WriteOptions): Promise<void> {
    this.checkOpen();
    checkBatchSize(entries.length);
    if (entries.length === 0) return;
    // Encode everything first, so a bad entry fails before LevelDB sees any of the batch.
    const ops = entries.map((e) => ({ type: 'put' as const, key: encodeKey(e.key), value: encodeState(e.state) }));
    await this.io('writeBatch', () => this.db.batch(ops, { sync: opts?.sync ?? false }));
  }

  async scanSpan(videoId: string, eventType: string, span: Span): Promise<{ start: number; state: BucketState }[]> {
    this.checkOpen();
    const ranges = spanKeyRanges(videoId, eventType, span);
    const out: { start: number; state: BucketState }[] = [];
    for (const range of ranges) {
      const entries = await this.io('scan', () => this.db.iterator({ gte: range.gte, lt: range.lt }).all());
      for (const [key, bytes] of entries) out.push({ start: startOfKey(key), state: decodeState(bytes) });
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
    await this.io('expire', () => this.db.clear({ gte: range.gte, lt: range.lt }));
  }

  async getMeta(key: string): Promise<Uint8Array | undefined> {
    this.checkOpen();
    const full = encodeMetaKey(key);
    const bytes = await this.io('getMeta', () => this.db.get(full));
    return bytes === undefined ? undefined : plainBytes(bytes);
  }

  async putMeta(key: string, value: Uint8Array, opts?: WriteOptions): Promise<void> {
    this.checkOpen();
    const full = encodeMetaKey(key);
    checkMetaValue(value);
    await this.io('putMeta', () => this.db.put(full, value, { sync: opts?.sync ?? false }));
  }

  async deleteMeta(key: string, opts?: WriteOptions): Promise<void> {
    this.checkOpen();
    const full = encodeMetaKey(key);
    await this.io('deleteMeta', () => this.db.del(full, { sync: opts?.sync ?? false }));
  }

  async scanMeta(prefix: string, limit = MAX_META_SCAN_ENTRIES): Promise<{ key: string; value: Uint8Array }[]> {
    this.checkOpen();
    checkScanLimit(limit);
    const range = metaPrefixRange(prefix);
    const entries = await this.io('scanMeta', () => this.db.iterator({ gte: range.gte, lt: range.lt, limit }).all());
    return entries.map(([key, value]) => ({ key: decodeMetaKey(key), value: plainBytes(value) }));
  }

  /** The open database; NOT_READY when closed. */
  private get db(): Level<string, Uint8Array> {
    if (this.level === undefined) throw notOpen();
    return this.level;
  }

  private checkOpen(): void {
    if (this.level === undefined) throw notOpen();
  }

  /** Run one LevelDB call; its failures become INTERNAL errors that keep the original as cause. */
  private async io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof TallyError) throw err;
      const detail = err instanceof Error ? err.message : String(err);
      throw new TallyError('INTERNAL', `store ${what} failed: ${detail}`, { cause: err });
    }
  }
}
