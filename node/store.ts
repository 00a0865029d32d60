/**
 * The storage interface of a node: bucket states by key, span scans, range sums, expiry of old
 * fine-grained buckets, and a few small metadata values.
 *
 * Two implementations behave the same and are held to it by one conformance suite
 * (test/unit/store-conformance.ts): `LevelStore` (LevelDB, the real thing) and `MemoryStore`
 * (sorted in memory, for the core's fast tests). The store does not merge: callers read, join with
 * the CRDT and write back the absolute state; batching and group commit live above it.
 */

import { addStats, EMPTY_STATS, value, type BucketState, type Stats } from '../cluster/bucket-state.js';
import { decomposeRange, type Span } from '../cluster/time-buckets.js';
import { assert, TallyError } from '../protocol/errors.js';
import type { BucketKey } from './bucket-keys.js';

export type { BucketKey } from './bucket-keys.js';

/** Most keys one `getMany` may ask for. */
export const MAX_GET_MANY_KEYS = 65_536;
/** Most entries one `writeBatch` may hold; group commit flushes well below this. */
export const MAX_WRITE_BATCH_ENTRIES = 65_536;
/** Largest metadata value. Meta is for small things (hints, ring state), not bulk data. */
export const MAX_META_VALUE_BYTES = 1024 * 1024;
/** Most entries one `scanMeta` returns. */
export const MAX_META_SCAN_ENTRIES = 65_536;

export interface BucketEntry {
  key: BucketKey;
  state: BucketState;
}

export interface WriteOptions {
  /** Fsync the LevelDB log before resolving. Default false: the write is in the OS page cache. */
  sync?: boolean;
}

export interface Store {
  open(): Promise<void>;
  /** Data stays: opening again (or a new store on the same location) sees it. */
  close(): Promise<void>;
  getMany(keys: readonly BucketKey[]): Promise<(BucketState | undefined)[]>;
  /** One atomic batch: all entries or none. A key given twice keeps its last state. */
  writeBatch(entries: readonly BucketEntry[], opts?: WriteOptions): Promise<void>;
  /** Buckets of one series and resolution with start in [span.start, span.end), ascending. */
  scanSpan(videoId: string, eventType: string, span: Span): Promise<{ start: number; state: BucketState }[]>;
  /** The series' stats over [startMs, endMs) (ends truncated to the minute; see decomposeRange). */
  readRange(videoId: string, eventType: string, startMs: number, endMs: number): Promise<Stats>;
  /** Delete every bucket of `res` whose UTC day partition ends at or before `cutoffMs`. */
  expireBefore(res: 'm' | 'h', cutoffMs: number): Promise<void>;
  getMeta(key: string): Promise<Uint8Array | undefined>;
  putMeta(key: string, value: Uint8Array, opts?: WriteOptions): Promise<void>;
  deleteMeta(key: string, opts?: WriteOptions): Promise<void>;
  /** Meta entries whose key starts with `prefix`, ascending by key, at most `limit`. */
  scanMeta(prefix: string, limit?: number): Promise<{ key: string; value: Uint8Array }[]>;
}

/** `readRange` for any store: decompose, scan each span (concurrently), sum the buckets. */
export async function readRangeByScans(
  store: Pick<Store, 'scanSpan'>,
  videoId: string,
  eventType: string,
  startMs: number,
  endMs: number,
): Promise<Stats> {
  const spans = decomposeRange(startMs, endMs);
  const results = await Promise.all(spans.map((span) => store.scanSpan(videoId, eventType, span)));
  let total: Stats = EMPTY_STATS;
  for (const buckets of results) {
    for (const { state } of buckets) total = addStats(total, value(state));
  }
  return total;
}

export function checkGetManySize(n: number): void {
  if (n > MAX_GET_MANY_KEYS) {
    throw new TallyError('TOO_LARGE', `getMany of ${n} keys, limit ${MAX_GET_MANY_KEYS}`);
  }
}

export function checkBatchSize(n: number): void {
  if (n > MAX_WRITE_BATCH_ENTRIES) {
    throw new TallyError('TOO_LARGE', `write batch of ${n} entries, limit ${MAX_WRITE_BATCH_ENTRIES}`);
  }
}

export function checkMetaValue(value: Uint8Array): void {
  if (value.byteLength > MAX_META_VALUE_BYTES) {
    throw new TallyError('TOO_LARGE', `meta value of ${value.byteLength} bytes, limit ${MAX_META_VALUE_BYTES}`);
  }
}

export function checkScanLimit(limit: number): void {
  assert(
    Number.isSafeInteger(limit) && limit >= 1 && limit <= MAX_META_SCAN_ENTRIES,
    `meta scan limit ${limit}, must be 1..${MAX_META_SCAN_ENTRIES}`,
  );
}

export function notOpen(): TallyError {
  return new TallyError('NOT_READY', 'store is not open');
}
