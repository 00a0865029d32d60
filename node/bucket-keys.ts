/**
 * The storage key of a bucket, and the key ranges that a span scan or an expiry covers.
 *
 * Layout (`\x00` separates fields; ids are validated upstream to hold no control characters, and
 * `encodeKey` asserts it):
 *   d \0 {videoId} \0 {eventType} \0 {dayHex}
 *   h \0 {dayHex} \0 {videoId} \0 {eventType} \0 {hourHex}
 *   m \0 {dayHex} \0 {videoId} \0 {eventType} \0 {minuteHex}
 *   z \0 {metaKey}
 * Timestamps are 12-digit zero-padded lowercase hex, so byte order is time order and every range
 * below has both bounds sharing the same prefix up to the timestamp. Because a range's bounds share
 * that prefix and the rest is ASCII, UTF-8 byte order (LevelDB) and UTF-16 code-unit order (a JS
 * string compare) select the same keys, so the in-memory store behaves exactly like LevelDB.
 * Pure: strings in, strings out; no I/O.
 */

import { assert } from '../protocol/errors.js';
import { bucketStart, DAY_MS, isAligned, isResolution, type Resolution, type Span } from '../cluster/time-buckets.js';

export interface BucketKey {
  videoId: string;
  eventType: string;
  res: Resolution;
  /** Start of the bucket, aligned to `res`. */
  start: number;
}

export interface KeyRange {
  gte: string;
  lt: string;
}

export const KEY_SEPARATOR = '\x00';
/** 16^12 ms is past the year 10,000; fixed width keeps lexicographic order equal to time order. */
export const KEY_TIMESTAMP_HEX_DIGITS = 12;
export const MAX_KEY_TIMESTAMP_MS = 16 ** KEY_TIMESTAMP_HEX_DIGITS - 1;
/** Prefix of the small metadata values (hints, ring state). */
export const META_PREFIX = `z${KEY_SEPARATOR}`;
export const MAX_META_KEY_LENGTH = 512;
/** Meta keys are printable ASCII, so `prefix + '\x7f'` bounds a prefix scan. */
const META_KEY_PATTERN = /^[\x20-\x7e]*$/;
const META_PREFIX_END = '\x7f';
const HEX_PATTERN = /^[0-9a-f]{12}$/;

export function hexTime(ms: number): string {
  assert(
    Number.isSafeInteger(ms) && ms >= 0 && ms <= MAX_KEY_TIMESTAMP_MS,
    `timestamp ${ms} cannot be a key (0..${MAX_KEY_TIMESTAMP_MS})`,
  );
  return ms.toString(16).padStart(KEY_TIMESTAMP_HEX_DIGITS, '0');
}

function parseHexTime(hex: string | undefined): number | undefined {
  if (hex === undefined || !HEX_PATTERN.test(hex)) return undefined;
  return parseInt(hex, 16);
}

function checkId(what: string, id: string): void {
  assert(typeof id === 'string' && !id.includes(KEY_SEPARATOR), `${what} must be a string without \\x00`);
}

function seriesPrefix(res: Resolution, dayStart: number, videoId: string, eventType: string): string {
  checkId('videoId', videoId);
  checkId('eventType', eventType);
  const S = KEY_SEPARATOR;
  return res === 'd'
    ? `d${S}${videoId}${S}${eventType}${S}`
    : `${res}${S}${hexTime(dayStart)}${S}${videoId}${S}${eventType}${S}`;
}

export function encodeKey(key: BucketKey): string {
  assert(isResolution(key.res), `bad resolution ${String(key.res)}`);
  assert(isAligned(key.start, key.res), `bucket start ${key.start} is not aligned to '${key.res}'`);
  return seriesPrefix(key.res, bucketStart(key.start, 'd'), key.videoId, key.eventType) + hexTime(key.start);
}

/** Inverse of `encodeKey`; undefined for anything that is not a bucket key. */
export function decodeKey(str: string): BucketKey | undefined {
  const parts = str.split(KEY_SEPARATOR);
  const res = parts[0];
  let key: BucketKey;
  if (res === 'd' && parts.length === 4) {
    const start = parseHexTime(parts[3]);
    if (start === undefined) return undefined;
    key = { res, videoId: parts[1]!, eventType: parts[2]!, start };
  } else if ((res === 'h' || res === 'm') && parts.length === 5) {
    const day = parseHexTime(parts[1]);
    const start = parseHexTime(parts[4]);
    if (day === undefined || start === undefined) return undefined;
    if (bucketStart(start, 'd') !== day) return undefined;
    key = { res, videoId: parts[2]!, eventType: parts[3]!, start };
  } else {
    return undefined;
  }
  return isAligned(key.start, key.res) ? key : undefined;
}

/** Bucket start of a key made by `encodeKey`, read from its fixed-width tail. */
export function startOfKey(str: string): number {
  const start = parseHexTime(str.slice(-KEY_TIMESTAMP_HEX_DIGITS));
  assert(start !== undefined, 'not a bucket key');
  return start;
}

/**
 * The key ranges holding one series' buckets of `span`, ascending. One range for days; for hours
 * and minutes one per UTC day the span touches, because those keys are partitioned by day.
 */
export function spanKeyRanges(videoId: string, eventType: string, span: Span): KeyRange[] {
  assert(
    isAligned(span.start, span.res) && isAligned(span.end, span.res),
    `span [${span.start}, ${span.end}) is not aligned to '${span.res}'`,
  );
  if (span.start >= span.end) return [];
  if (span.res === 'd') {
    const prefix = seriesPrefix('d', 0, videoId, eventType);
    return [{ gte: prefix + hexTime(span.start), lt: prefix + hexTime(span.end) }];
  }
  const ranges: KeyRange[] = [];
  for (let day = bucketStart(span.start, 'd'); day < span.end; day += DAY_MS) {
    const prefix = seriesPrefix(span.res, day, videoId, eventType);
    const from = Math.max(span.start, day);
    const to = Math.min(span.end, day + DAY_MS);
    ranges.push({ gte: prefix + hexTime(from), lt: prefix + hexTime(to) });
  }
  return ranges;
}

/**
 * The one key range holding every bucket of `res` whose UTC day partition ends at or before
 * `cutoffMs`, or undefined when there is none.
 */
export function expiryKeyRange(res: 'm' | 'h', cutoffMs: number): KeyRange | undefined {
  assert(res === 'm' || res === 'h', `only minute and hour buckets expire, not '${String(res)}'`);
  assert(Number.isFinite(cutoffMs), `cutoff must be finite, got ${cutoffMs}`);
  // Partition D ends at D + DAY_MS <= cutoff  <=>  D < floorDay(cutoff).
  const firstKept = bucketStart(cutoffMs, 'd');
  if (firstKept <= 0) return undefined;
  const lo = `${res}${KEY_SEPARATOR}`;
  if (firstKept > MAX_KEY_TIMESTAMP_MS) return { gte: lo, lt: `${res}\x01` };
  return { gte: lo, lt: lo + hexTime(firstKept) };
}

export function checkMetaKey(key: string): void {
  assert(
    typeof key === 'string' && key.length <= MAX_META_KEY_LENGTH && META_KEY_PATTERN.test(key),
    `meta key must be printable ASCII of at most ${MAX_META_KEY_LENGTH} chars`,
  );
}

export function encodeMetaKey(key: string): string {
  checkMetaKey(key);
  return META_PREFIX + key;
}

export function decodeMetaKey(str: string): string {
  assert(str.startsWith(META_PREFIX), 'not a meta key');
  return str.slice(META_PREFIX.length);
}

/** All meta keys starting with `prefix`. */
export function metaPrefixRange(prefix: string): KeyRange {
  checkMetaKey(prefix);
  return { gte: META_PREFIX + prefix, lt: META_PREFIX + prefix + META_PREFIX_END };
}
