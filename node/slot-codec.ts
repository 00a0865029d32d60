/**
 * The stored bytes of a slot, a hint and a batch id: small msgpack arrays with their own packer,
 * so settings made elsewhere never change our bytes. Decoding never trusts what it reads: anything
 * it did not write is INTERNAL "corrupt", never a wrong number.
 *
 * A slot carries a checksum: a marker byte (0xc1, which msgpack never uses), the CRC-32 of its key
 * and value, then the msgpack value. A flipped bit anywhere in the value, or a value under another
 * key, is found on read and never served (`SlotDamaged`); a slot written before checksums (a bare
 * msgpack array) still reads.
 */
import { Packr, Unpackr } from 'msgpackr';
import { crc32 } from 'node:zlib';
import { MAX_SLOT_VALUE, type Slot } from '../cluster/bucket-state.js';
import type { BatchRecord, JournalRecord } from '../cluster/node-core.js';
import type { BucketRef } from '../cluster/slot-table.js';
import { isAligned, isResolution } from '../cluster/time-buckets.js';
import { checkShape } from '../protocol/codec.js';
import { TallyError } from '../protocol/errors.js';
import type { StartsByResolution } from '../cluster/written-filter.js';

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false });

const CHECKSUMMED = 0xc1;
const HEADER_BYTES = 5;

/**
 * Where a slot is encoded: its key's UTF-8, then its msgpack value, so one CRC covers both
 * (crc32(key ‖ value) = crc32(value, crc32(key))). A commit encodes tens of thousands of slots;
 * this is a third cheaper than packing and checking key and value apart.
 */
const scratch = Buffer.allocUnsafe(64 * 1024);
/** A key longer than this (in UTF-16 units) might not fit the scratch buffer in UTF-8; keys are far shorter. */
const MAX_SCRATCH_KEY_CHARS = (scratch.length - 64) / 3;

/** msgpack of a number >= 0, as msgpackr writes it: the shortest unsigned integer, else a float64. */
function packNumber(buf: Buffer, at: number, x: number): number {
  if (Number.isInteger(x) && x >= 0 && x <= 0xffff_ffff) {
    if (x < 0x80) {
      buf[at] = x;
      return at + 1;
    }
    if (x < 0x100) {
      buf[at] = 0xcc;
      buf[at + 1] = x;
      return at + 2;
    }
    if (x < 0x1_0000) {
      buf[at] = 0xcd;
      buf.writeUInt16BE(x, at + 1);
      return at + 3;
    }
    buf[at] = 0xce;
    buf.writeUInt32BE(x, at + 1);
    return at + 5;
  }
  buf[at] = 0xcb;
  buf.writeDoubleBE(x, at + 1);
  return at + 9;
}

/** A slot's stored bytes under `key`: marker, CRC-32 of key and value, value (msgpack [count, sum, min, max]). */
export function encodeSlot(key: string, s: Slot): Uint8Array {
  return new Uint8Array(encodeSlotValuesTransient(key, s.count, s.sum, s.min, s.max));
}

/** The most bytes a slot's value takes: marker, CRC, and a fixarray of four float64s. */
const MAX_VALUE_BYTES = HEADER_BYTES + 1 + 4 * 9;
const valueOut = Buffer.allocUnsafe(MAX_VALUE_BYTES);

/** Views of `buf`'s first n bytes, each made once (keys and values are of a few lengths). */
function prefixViews(buf: Buffer): (n: number) => Uint8Array {
  const views: Uint8Array[] = [];
  return (n) => (views[n] ??= new Uint8Array(buf.buffer, buf.byteOffset, n));
}
const scratchView = prefixViews(scratch);
const valueView = prefixViews(valueOut);

/**
 * `encodeSlot` of a slot given by its values (a commit keeps them in columns), in bytes that stay
 * as they are only until the next call: for a writer that copies them at once (LevelDB's batch
 * does, as it is given each entry). A commit of 20,000 slots made a buffer for each, and a tenth of
 * what a loaded node allocates went to them.
 */
export function encodeSlotValuesTransient(key: string, count: number, sum: number, min: number, max: number): Uint8Array {
  if (key.length > MAX_SCRATCH_KEY_CHARS) {
    const body = packr.pack([count, sum, min, max]);
    const out = Buffer.allocUnsafe(HEADER_BYTES + body.length);
    out[0] = CHECKSUMMED;
    out.writeUInt32BE(crc32(body, crc32(key)), 1);
    out.set(body, HEADER_BYTES);
    return out;
  }
  const keyBytes = scratch.write(key, 0, 'utf8');
  scratch[keyBytes] = 0x94; // fixarray of 4
  let end = packNumber(scratch, keyBytes + 1, count);
  end = packNumber(scratch, end, sum);
  end = packNumber(scratch, end, min);
  end = packNumber(scratch, end, max);
  const length = HEADER_BYTES + end - keyBytes;
  valueOut[0] = CHECKSUMMED;
  valueOut.writeUInt32BE(crc32(scratchView(end)), 1);
  // By hand: Buffer's copy of a range made a view of it each time.
  for (let from = keyBytes, to = HEADER_BYTES; from < end; from++, to++) valueOut[to] = scratch[from] as number;
  return valueView(length);
}

/** A stored slot whose bytes do not match their checksum or do not decode: damaged on disk. */
export class SlotDamaged extends TallyError {
  constructor(readonly key: string, detail: string) {
    super('STORAGE_DAMAGED', `stored slot ${JSON.stringify(key)} is damaged (${detail}); it is not served, and repair brings it back from the other replicas`);
  }
}

function corrupt(what: string, detail: string, cause?: unknown): TallyError {
  return new TallyError('INTERNAL', `corrupt ${what}: ${detail}`, cause === undefined ? undefined : { cause });
}

/**
 * `bytesChecked`: a checksum showed these are bytes Tally wrote. Others have their shape walked
 * first (checkShape), so a damaged length never has the decoder allocate what is not there.
 */
function unpack(bytes: Uint8Array, what: string, bytesChecked = false): unknown {
  try {
    if (!bytesChecked) checkShape(bytes);
    return unpackr.unpack(bytes);
  } catch (err) {
    throw corrupt(what, 'not msgpack', err);
  }
}

function isNonNegativeFinite(x: unknown): x is number {
  return typeof x === 'number' && Number.isFinite(x) && x >= 0;
}

/** The slot stored under `key`; throws SlotDamaged if its bytes are not what was written there. */
export function decodeSlot(key: string, bytes: Uint8Array): Slot {
  let body = bytes;
  if (bytes[0] === CHECKSUMMED) {
    if (bytes.length < HEADER_BYTES + 1) throw new SlotDamaged(key, 'cut short');
    body = bytes.subarray(HEADER_BYTES);
    const stored = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
    if (stored !== crc32(body, crc32(key))) throw new SlotDamaged(key, 'checksum mismatch');
  }
  try {
    return decodeSlotBody(body, body !== bytes);
  } catch (err) {
    throw new SlotDamaged(key, (err as Error).message);
  }
}

function decodeSlotBody(bytes: Uint8Array, bytesChecked: boolean): Slot {
  const raw = unpack(bytes, 'slot', bytesChecked);
  if (!Array.isArray(raw) || raw.length !== 4) throw corrupt('slot', 'not [count, sum, min, max]');
  const [count, sum, min, max] = raw as unknown[];
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1) throw corrupt('slot', 'count must be a positive safe integer');
  if (!isNonNegativeFinite(sum) || sum > MAX_SLOT_VALUE || !isNonNegativeFinite(min) || !isNonNegativeFinite(max) || min > max) {
    throw corrupt('slot', 'sum, min, max must be finite, >= 0, min <= max');
  }
  return { count, sum, min, max };
}

/** A time in ms (a hint's or a batch id's age). */
export function encodeTime(ms: number): Uint8Array {
  return new Uint8Array(packr.pack(ms));
}

export function decodeTime(bytes: Uint8Array): number {
  const raw = unpack(bytes, 'time');
  if (typeof raw !== 'number' || !Number.isSafeInteger(raw) || raw < 0) throw corrupt('time', 'not a non-negative integer');
  return raw;
}

/** A batch record: its time, and for a forward record the replicas the batch was sent on to. */
export function encodeBatchRecord(r: BatchRecord): Uint8Array {
  if (r.forwardedTo !== undefined) return new Uint8Array(packr.pack(r.ring === undefined ? [r.atMs, r.forwardedTo] : [r.atMs, r.forwardedTo, r.ring]));
  return new Uint8Array(packr.pack(r.ring === undefined ? r.atMs : [r.atMs, r.ring]));
}

/** Inverse of `encodeBatchRecord` for the record stored under `key` (see batchRecordKey). */
export function decodeBatchRecord(key: string, bytes: Uint8Array): BatchRecord {
  const time = (x: unknown, what: string): number => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw corrupt(what, 'bad time');
    return x;
  };
  if (!key.endsWith(' >')) {
    const raw = unpack(bytes, 'batch record');
    if (typeof raw === 'number') return { batch: key, atMs: time(raw, 'batch record') };
    if (!Array.isArray(raw) || raw.length !== 2 || typeof raw[1] !== 'string') throw corrupt('batch record', 'not atMs or [atMs, ring]');
    return { batch: key, atMs: time(raw[0], 'batch record'), ring: raw[1] };
  }
  const raw = unpack(bytes, 'forward record');
  const pair = (p: unknown): boolean => Array.isArray(p) && p.length === 2 && typeof p[0] === 'string' && typeof p[1] === 'string';
  if (!Array.isArray(raw) || (raw.length !== 2 && raw.length !== 3) || !Array.isArray(raw[1]) || !raw[1].every(pair) || (raw.length === 3 && typeof raw[2] !== 'string')) {
    throw corrupt('forward record', 'not [atMs, [replicas, target][], ring?]');
  }
  const atMs = time(raw[0], 'forward record');
  const record: BatchRecord = { batch: key.slice(0, -2), atMs, forwardedTo: raw[1] as [string, string][] };
  if (raw.length === 3) record.ring = raw[2] as string;
  return record;
}

/** A journal record's buckets: [videoId, eventType, res, start][]. */
export function encodeJournal(r: JournalRecord): Uint8Array {
  return new Uint8Array(packr.pack(r.refs.map((ref) => [ref.videoId, ref.eventType, ref.res, ref.start])));
}

export function decodeJournal(key: string, bytes: Uint8Array): JournalRecord {
  const raw = unpack(bytes, 'journal record');
  if (!Array.isArray(raw)) throw corrupt('journal record', 'not a list');
  const refs: BucketRef[] = raw.map((x: unknown) => {
    if (!Array.isArray(x) || x.length !== 4) throw corrupt('journal record', 'not [videoId, eventType, res, start]');
    const [videoId, eventType, res, start] = x as unknown[];
    if (typeof videoId !== 'string' || typeof eventType !== 'string' || !isResolution(res) || typeof start !== 'number' || !isAligned(start, res)) {
      throw corrupt('journal record', 'bad bucket');
    }
    return { videoId, eventType, res, start };
  });
  return { key, refs };
}

/** Per resolution, a bucket start (or ±Infinity): [m, h, d]. */
export function encodeStarts(s: StartsByResolution): Uint8Array {
  return new Uint8Array(packr.pack([s.m, s.h, s.d]));
}

export function decodeStarts(bytes: Uint8Array): StartsByResolution {
  const raw = unpack(bytes, 'bucket starts');
  if (!Array.isArray(raw) || raw.length !== 3 || !raw.every((x) => typeof x === 'number' && !Number.isNaN(x))) throw corrupt('bucket starts', 'not [m, h, d]');
  const [m, h, d] = raw as [number, number, number];
  return { m, h, d };
}
