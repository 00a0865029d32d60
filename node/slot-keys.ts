/**
 * The storage keys of a node: one key per slot (bucket × actor), hints, applied batch ids and
 * small metadata values, and the key ranges that a span scan, a token-range walk or an expiry
 * covers.
 *
 * Layout (`\x00` separates fields; ids are validated upstream to hold no control characters):
 *   d \0 {token} \0 {videoId} \0 {eventType} \0 {dayHex} \0 {actor}
 *   h \0 {dayHex} \0 {token} \0 {videoId} \0 {eventType} \0 {hourHex} \0 {actor}
 *   m \0 {dayHex} \0 {token} \0 {videoId} \0 {eventType} \0 {minuteHex} \0 {actor}
 *   x \0 {node} \0 {res} \0 {startHex} \0 {videoId} \0 {eventType}      a hint: bucket dirty for node
 *   y \0 {batchId}                                                       an applied batch id
 *   j \0 {generationHex}-{commitHex}                                     a commit's replication journal
 *   z \0 {metaKey}                                                       small metadata
 * `token` is xxhash64(videoId) as 16 hex digits, the key's place on the ring: a walk of one
 * token range (anti-entropy, streaming a range to a new node) is one contiguous run of day keys
 * and, for hours and minutes, one per retained UTC day. Days come first for hours and minutes so
 * expiring old fine-grained data stays one range delete. Timestamps are 12 hex digits, so byte
 * order is time order. One key per slot means an own-slot add writes its slot alone, and a merge
 * from another replica writes only the slots that changed: no write reads a whole bucket back.
 * Because every range below has both bounds sharing a prefix up to an ASCII part, UTF-8 byte order
 * (LevelDB) and UTF-16 code-unit order (a JS string compare) select the same keys, so the
 * in-memory store behaves exactly like LevelDB. Pure: strings in, strings out.
 */
import { assert } from '../protocol/errors.js';
import type { Hash64 } from '../protocol/hash-ring.js';
import type { SpanTuple } from '../protocol/peer.js';
import type { BucketRef, SlotKey } from '../cluster/slot-table.js';
import { bucketStart, DAY_MS, isAligned, isResolution, RESOLUTION_MS, type Resolution } from '../cluster/time-buckets.js';

export interface KeyRange {
  gte: string;
  lt: string;
}

/** A span's range of one day partition (or of the days), and how many buckets it covers. */
export interface SpanRange extends KeyRange {
  buckets: number;
}

const S = '\x00';
/** 16^12 ms is past the year 10,000; fixed width keeps lexicographic order equal to time order. */
export const KEY_TIMESTAMP_HEX_DIGITS = 12;
export const MAX_KEY_TIMESTAMP_MS = 16 ** KEY_TIMESTAMP_HEX_DIGITS - 1;
export const HINT_PREFIX = `x${S}`;
export const BATCH_PREFIX = `y${S}`;
export const JOURNAL_PREFIX = `j${S}`;
export const META_PREFIX = `z${S}`;
export const MAX_META_KEY_LENGTH = 512;
const META_KEY_PATTERN = /^[\x20-\x7e]*$/;
const HEX_PATTERN = /^[0-9a-f]{12}$/;

/** Recent timestamps' hex: a commit writes the same few bucket starts many times, and V8's radix-16 `toString` is slow. */
const hexCache = new Map<number, string>();
const HEX_CACHE_SIZE = 4_096;

export function hexTime(ms: number): string {
  let hex = hexCache.get(ms);
  if (hex !== undefined) return hex;
  assert(Number.isSafeInteger(ms) && ms >= 0 && ms <= MAX_KEY_TIMESTAMP_MS, `timestamp ${ms} cannot be a key (0..${MAX_KEY_TIMESTAMP_MS})`);
  hex = ms.toString(16).padStart(KEY_TIMESTAMP_HEX_DIGITS, '0');
  if (hexCache.size >= HEX_CACHE_SIZE) hexCache.clear();
  hexCache.set(ms, hex);
  return hex;
}

function parseHexTime(hex: string | undefined): number | undefined {
  if (hex === undefined || !HEX_PATTERN.test(hex)) return undefined;
  return parseInt(hex, 16);
}

function checkId(what: string, id: string): void {
  assert(typeof id === 'string' && id.length > 0 && !id.includes(S), `${what} must be a non-empty string without \\x00`);
}

const D_HEAD = `d${S}`;
/** The start of a minute or hour key: resolution and day partition (a handful in use at once). */
const partitionHeads: Record<'m' | 'h', Map<number, string>> = { m: new Map(), h: new Map() };
function partitionHead(res: 'm' | 'h', day: number): string {
  const heads = partitionHeads[res];
  let head = heads.get(day);
  if (head === undefined) {
    if (heads.size >= 64) heads.clear();
    heads.set(day, (head = `${res}${S}${hexTime(day)}${S}`));
  }
  return head;
}

export class SlotKeys {
  /** The last video's token: a commit's slots come grouped by video (its minute, hour and day). */
  private lastVideo: string | undefined;
  private lastToken = '';
  /** Key parts kept from the call before: the series (token, video, event type), and per resolution slotKey's start and actor. */
  private tailVideo: string | undefined;
  private tailType: string | undefined;
  private tail = '';
  private readonly ends: Record<Resolution, { start: number; actor: string; text: string }> = {
    m: { start: -1, actor: '', text: '' },
    h: { start: -1, actor: '', text: '' },
    d: { start: -1, actor: '', text: '' },
  };

  constructor(private readonly hash64: Hash64) {}

  /** The ring position of a video id, as 16 hex digits. */
  token(videoId: string): string {
    if (videoId !== this.lastVideo) {
      this.lastToken = this.hash64(videoId).toString(16).padStart(16, '0');
      this.lastVideo = videoId;
    }
    return this.lastToken;
  }

  /** Everything before the bucket's start: one series' buckets of `res` in the day partition `day`. */
  seriesPrefix(res: Resolution, day: number, videoId: string, eventType: string): string {
    return (res === 'd' ? D_HEAD : partitionHead(res, day)) + this.series(videoId, eventType);
  }

  /** The series' part of a key (token, video, event type), kept from the call before when it is the same series. */
  private series(videoId: string, eventType: string): string {
    if (videoId !== this.tailVideo || eventType !== this.tailType) {
      checkId('videoId', videoId);
      checkId('eventType', eventType);
      this.tail = `${this.token(videoId)}${S}${videoId}${S}${eventType}${S}`;
      this.tailVideo = videoId;
      this.tailType = eventType;
    }
    return this.tail;
  }

  bucketKey(ref: BucketRef): string {
    assert(isResolution(ref.res), `bad resolution ${String(ref.res)}`);
    assert(isAligned(ref.start, ref.res), `bucket start ${ref.start} is not aligned to '${ref.res}'`);
    return this.seriesPrefix(ref.res, bucketStart(ref.start, 'd'), ref.videoId, ref.eventType) + hexTime(ref.start);
  }

  /**
   * `bucketKey(ref)`, NUL, the actor: the series prefix, then the start and actor, each part kept
   * from the slot before when it is the same (a commit keys tens of thousands of slots, a video's
   * minute, hour and day in turn, with one actor), since every string joined is one more object
   * for the collector.
   */
  slotKey(key: SlotKey): string {
    const ref = key.ref;
    return this.slotKeyOf(ref.videoId, ref.eventType, ref.res, ref.start, key.actor);
  }

  /** `slotKey` of a slot given by its parts (a commit keeps them in columns). */
  slotKeyOf(videoId: string, eventType: string, res: Resolution, start: number, actor: string): string {
    assert(isResolution(res), `bad resolution ${String(res)}`);
    assert(isAligned(start, res), `bucket start ${start} is not aligned to '${res}'`);
    const prefix = this.seriesPrefix(res, bucketStart(start, 'd'), videoId, eventType);
    let end = this.ends[res];
    if (end.start !== start || end.actor !== actor) {
      checkId('actor', actor);
      end = this.ends[res] = { start, actor, text: `${hexTime(start)}${S}${actor}` };
    }
    return prefix + end.text;
  }

  /** The key ranges of one span's slots, ascending: one for days, one per UTC day for hours and minutes. */
  spanRanges(span: SpanTuple): SpanRange[] {
    const [videoId, eventType, res, start, end] = span;
    assert(isAligned(start, res) && isAligned(end, res), `span [${start}, ${end}) is not aligned to '${res}'`);
    if (start >= end) return [];
    const width = RESOLUTION_MS[res];
    if (res === 'd') {
      const prefix = this.seriesPrefix('d', 0, videoId, eventType);
      return [{ gte: prefix + hexTime(start), lt: prefix + hexTime(end), buckets: (end - start) / width }];
    }
    const ranges: SpanRange[] = [];
    for (let day = bucketStart(start, 'd'); day < end; day += DAY_MS) {
      const prefix = this.seriesPrefix(res, day, videoId, eventType);
      const from = Math.max(start, day);
      const to = Math.min(end, day + DAY_MS);
      ranges.push({ gte: prefix + hexTime(from), lt: prefix + hexTime(to), buckets: (to - from) / width });
    }
    return ranges;
  }
}

/** The bucket start and actor of a slot key found in a span range. */
export function parseSlotTail(key: string, prefixLength: number): { start: number; actor: string } | undefined {
  const start = parseHexTime(key.slice(prefixLength, prefixLength + KEY_TIMESTAMP_HEX_DIGITS));
  if (start === undefined || key[prefixLength + KEY_TIMESTAMP_HEX_DIGITS] !== S) return undefined;
  const actor = key.slice(prefixLength + KEY_TIMESTAMP_HEX_DIGITS + 1);
  return actor.length > 0 && !actor.includes(S) ? { start, actor } : undefined;
}

/**
 * The one key range holding every slot of `res` whose UTC day partition ends at or before
 * `cutoffMs`, or undefined when there is none.
 */
export function expiryKeyRange(res: 'm' | 'h', cutoffMs: number): KeyRange | undefined {
  assert(res === 'm' || res === 'h', `only minute and hour buckets expire, not '${String(res)}'`);
  const firstKept = bucketStart(cutoffMs, 'd');
  if (firstKept <= 0) return undefined;
  const lo = `${res}${S}`;
  if (firstKept > MAX_KEY_TIMESTAMP_MS) return { gte: lo, lt: `${res}\x01` };
  return { gte: lo, lt: lo + hexTime(firstKept) };
}

export function hintKey(node: string, ref: BucketRef): string {
  checkId('node', node);
  checkId('videoId', ref.videoId);
  checkId('eventType', ref.eventType);
  return `${HINT_PREFIX}${node}${S}${ref.res}${S}${hexTime(ref.start)}${S}${ref.videoId}${S}${ref.eventType}`;
}

export function parseHintKey(key: string): { node: string; ref: BucketRef } | undefined {
  if (!key.startsWith(HINT_PREFIX)) return undefined;
  const parts = key.slice(HINT_PREFIX.length).split(S);
  if (parts.length !== 5) return undefined;
  const [node, res, hex, videoId, eventType] = parts as [string, string, string, string, string];
  const start = parseHexTime(hex);
  if (!isResolution(res) || start === undefined || !isAligned(start, res) || node === '' || videoId === '' || eventType === '') return undefined;
  return { node, ref: { videoId, eventType, res, start } };
}

export function journalKey(key: string): string {
  checkId('journal key', key);
  return JOURNAL_PREFIX + key;
}

export function batchKey(batch: string): string {
  checkId('batch', batch);
  return BATCH_PREFIX + batch;
}

export function checkMetaKey(key: string): void {
  assert(typeof key === 'string' && key.length <= MAX_META_KEY_LENGTH && META_KEY_PATTERN.test(key), `meta key must be printable ASCII of at most ${MAX_META_KEY_LENGTH} chars`);
}

export function metaKey(key: string): string {
  checkMetaKey(key);
  return META_PREFIX + key;
}

/** Meta keys starting with `prefix` (meta keys are printable ASCII, so \x7f bounds them). */
export function metaPrefixRange(prefix: string): KeyRange {
  checkMetaKey(prefix);
  return { gte: META_PREFIX + prefix, lt: META_PREFIX + prefix + '\x7f' };
}

/** Every key of a section (`x\0…` hints, `y\0…` batch ids). */
export function sectionRange(prefix: typeof HINT_PREFIX | typeof BATCH_PREFIX | typeof JOURNAL_PREFIX): KeyRange {
  return { gte: prefix, lt: `${prefix[0] as string}\x01` };
}

/** The slot a key made by `slotKey` names, or undefined for anything else. */
export function parseSlotKey(key: string): SlotKey | undefined {
  const parts = key.split(S);
  const res = parts[0];
  let videoId: string | undefined;
  let eventType: string | undefined;
  let hex: string | undefined;
  let actor: string | undefined;
  if (res === 'd' && parts.length === 6) [, , videoId, eventType, hex, actor] = parts;
  else if ((res === 'h' || res === 'm') && parts.length === 7) [, , , videoId, eventType, hex, actor] = parts;
  else return undefined;
  const start = parseHexTime(hex);
  if (start === undefined || !isResolution(res) || !isAligned(start, res) || !videoId || !eventType || !actor) return undefined;
  return { ref: { videoId, eventType, res, start }, actor };
}

/** The sections holding slots, in key order: days, hours, minutes. */
export const SLOT_SECTIONS: readonly KeyRange[] = [
  { gte: `d${S}`, lt: 'd\x01' },
  { gte: `h${S}`, lt: 'h\x01' },
  { gte: `m${S}`, lt: 'm\x01' },
];
