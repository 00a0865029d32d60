/**
 * Frame validation: every kind of bad input is refused with a stable code and a message that
 * names the field and what was wrong; good frames come through unchanged.
 */
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../helpers/random.js';
import {
  parseTimeText,
  checkShape,
  decodeFrame,
  encodeFrame,
  MAX_EVENTS_PER_BATCH,
  MAX_FRAME_BYTES,
  MAX_QUERIES_PER_GET,
  MAX_VIDEO_ID_BYTES,
  MIN_EVENT_TIME_MS,
  MAX_EVENT_FUTURE_SKEW_MS,
  TallyError,
  MAX_FRAME_DEPTH,
  validateHello,
  validateRequest,
  requestIdOf,
} from '../../protocol/index.js';

const NOW = Date.UTC(2026, 10, 26, 12);
const ok = ['v1', 'view', NOW - 1000, 1, 1];

function refusal(x: unknown, nowMs = NOW): { code: string; message: string } {
  try {
    validateRequest(x, nowMs);
  } catch (err) {
    expect(err).toBeInstanceOf(TallyError);
    return { code: (err as TallyError).code, message: (err as TallyError).message };
  }
  throw new Error(`accepted ${JSON.stringify(x)}`);
}

describe('validateRequest', () => {
  it('passes good requests through unchanged', () => {
    const count = { t: 'count', id: 1, events: [ok], cl: 'all' };
    expect(validateRequest(count, NOW)).toEqual(count);
    const get = { t: 'get', id: 2, queries: [['v1', 'view', 0, NOW]] };
    expect(validateRequest(get, NOW)).toEqual(get);
    expect(validateRequest({ t: 'ping', id: 0 }, NOW)).toEqual({ t: 'ping', id: 0 });
  });

  it.each([
    ['an unknown type', { t: 'delete', id: 1 }, 'BAD_REQUEST', /unknown message type t="delete"/],
    ['a non-map frame', [1, 2], 'BAD_REQUEST', /request must be a map/],
    ['a missing id', { t: 'ping' }, 'BAD_REQUEST', /^id must be an integer/],
    ['a negative id', { t: 'ping', id: -1 }, 'BAD_REQUEST', /^id must be an integer/],
    ['an unknown field', { t: 'ping', id: 1, x: 1 }, 'BAD_REQUEST', /unknown field "x"/],
    ['events not an array', { t: 'count', id: 1, events: 'x' }, 'BAD_REQUEST', /events must be an array/],
    ['no events', { t: 'count', id: 1, events: [] }, 'BAD_REQUEST', /must not be empty/],
    ['a short tuple', { t: 'count', id: 1, events: [['v', 'view', NOW]] }, 'BAD_REQUEST', /event 1 must be \[videoId/],
    ['a long tuple', { t: 'count', id: 1, events: [['v', 'view', NOW, 1, 1, 1]] }, 'BAD_REQUEST', /^event 1 must be \[videoId, eventType, timestampMs, value, count\], got 6 items$/],
    ['a long query', { t: 'get', id: 1, queries: [['v', 'view', 0, 1, 2]] }, 'BAD_REQUEST', /^query 1 must be \[videoId, eventType, startMs, endMs\], got 5 items$/],
    ['a numeric videoId', { t: 'count', id: 1, events: [[5, 'view', NOW, 1, 1]] }, 'BAD_REQUEST', /^event 1: videoId must be a string, got 5$/],
    ['an empty eventType', { t: 'count', id: 1, events: [['v', '', NOW, 1, 1]] }, 'BAD_REQUEST', /^event 1: event type must not be empty$/],
    ['a control character', { t: 'count', id: 1, events: [['v\u0000x', 'view', NOW, 1, 1]] }, 'BAD_REQUEST', /control characters/],
    ['a NaN value', { t: 'count', id: 1, events: [['v', 'view', NOW, Number.NaN, 1]] }, 'BAD_REQUEST', /^event 1: value must be a finite number in \[0, 1000000000\], got not a number$/],
    ['an infinite value', { t: 'count', id: 1, events: [['v', 'view', NOW, Infinity, 1]] }, 'BAD_REQUEST', /event 1: value .* got Infinity/],
    ['a negative value', { t: 'count', id: 1, events: [['v', 'view', NOW, -1, 1]] }, 'BAD_REQUEST', /event 1: value must be a finite number in \[0,/],
    ['a zero count', { t: 'count', id: 1, events: [['v', 'view', NOW, 1, 0]] }, 'BAD_REQUEST', /event 1: count must be an integer in \[1,/],
    ['a fractional count', { t: 'count', id: 1, events: [['v', 'view', NOW, 1, 1.5]] }, 'BAD_REQUEST', /event 1: count .* got 1\.5/],
    ['seconds for milliseconds', { t: 'count', id: 1, events: [['v', 'view', 1_700_000_000, 1, 1]] }, 'BAD_REQUEST', /^event 1: time 1970-01-20T16:13:20\.000Z is before 2000-01-01T00:00:00\.000Z, the earliest Tally takes \(is it in seconds rather than milliseconds\?\)$/],
    ['a time far in the future', { t: 'count', id: 1, events: [['v', 'view', NOW + MAX_EVENT_FUTURE_SKEW_MS + 1, 1, 1]] }, 'BAD_REQUEST', /^event 1: time 2026-11-27T12:00:00\.001Z is after 2026-11-27T12:00:00\.000Z, more than 24 hours ahead of the clock \(2026-11-26T12:00:00\.000Z\)$/],
    ['a bad consistency', { t: 'count', id: 1, events: [ok], cl: 'most' }, 'BAD_REQUEST', /cl must be one of one, quorum, all/],
    ["a batch id with '>' (a forwarded batch's separator)", { t: 'count', id: 1, events: [ok], batch: 'c1:1>n1' }, 'BAD_REQUEST', /^batch must be 1-160 printable ASCII characters other than '>', got "c1:1>n1"$/],
    ['an over-long batch id', { t: 'count', id: 1, events: [ok], batch: 'c'.repeat(161) }, 'BAD_REQUEST', /^batch must be 1-160 printable ASCII characters/],
    ['an inverted range', { t: 'get', id: 1, queries: [['v', 'view', 10, 5]] }, 'BAD_REQUEST', /^query 1: the range ends \(1970-01-01T00:00:00\.005Z\) before it starts \(1970-01-01T00:00:00\.010Z\)$/],
    ['a string bound', { t: 'get', id: 1, queries: [['v', 'view', '0', 5]] }, 'BAD_REQUEST', /^query 1: range start must be whole epoch milliseconds, got "0"$/],
    ['an over-long videoId', { t: 'count', id: 1, events: [['x'.repeat(MAX_VIDEO_ID_BYTES + 1), 'view', NOW, 1, 1]] }, 'TOO_LARGE', /^event 1: videoId is 257 bytes, the limit is 256$/],
    ['multi-byte characters over the limit', { t: 'count', id: 1, events: [['é'.repeat(129), 'view', NOW, 1, 1]] }, 'TOO_LARGE', /258 bytes/],
    ['too many events', { t: 'count', id: 1, events: Array(MAX_EVENTS_PER_BATCH + 1).fill(ok) }, 'TOO_LARGE', /events has 10001 items, the limit is 10000/],
    ['too many queries', { t: 'get', id: 1, queries: Array(MAX_QUERIES_PER_GET + 1).fill(['v', 'view', 0, 1]) }, 'TOO_LARGE', /queries has 1001 items/],
  ])('refuses %s', (_what, frame, code, message) => {
    const r = refusal(frame);
    expect(r.code).toBe(code);
    expect(r.message).toMatch(message);
  });

  it('accepts the earliest allowed event time and refuses the one before it', () => {
    expect(validateRequest({ t: 'count', id: 1, events: [['v', 'view', MIN_EVENT_TIME_MS, 0, 1]] }, NOW)).toBeTruthy();
    expect(refusal({ t: 'count', id: 1, events: [['v', 'view', MIN_EVENT_TIME_MS - 1, 0, 1]] }).code).toBe('BAD_REQUEST');
  });

  it('recovers the request id of a bad frame when there is one', () => {
    expect(requestIdOf({ t: 'count', id: 42, events: 'x' })).toBe(42);
    expect(requestIdOf({ t: 'count', id: 'x' })).toBeNull();
    expect(requestIdOf('junk')).toBeNull();
  });
});

describe('validateHello', () => {
  it('requires the cluster and node id of a peer', () => {
    expect(validateHello({ t: 'hello', v: 1, role: 'client' })).toEqual({ t: 'hello', v: 1, role: 'client' });
    expect(() => validateHello({ t: 'hello', v: 1, role: 'peer' })).toThrow(/hello.cluster must be a string/);
    expect(() => validateHello({ t: 'ping', id: 1 })).toThrow(/first message must be a hello/);
    expect(() => validateHello({ t: 'hello', v: 1, role: 'admin' })).toThrow(/hello.role must be one of/);
  });
});

describe('codec', () => {
  it('round-trips frames and refuses broken, trailing and oversize ones', () => {
    const m = { t: 'count', id: 3, events: [['v', 'view', NOW, 2.5, 1]] };
    expect(decodeFrame(encodeFrame(m))).toEqual(m);
    expect(() => decodeFrame(Buffer.alloc(0))).toThrow(/frame is empty/);
    expect(() => decodeFrame(encodeFrame(m).subarray(0, 5))).toThrow(/not one valid MessagePack value/);
    expect(() => decodeFrame(Buffer.concat([encodeFrame(m), Buffer.from([1])]))).toThrow(/not one valid MessagePack value/);
    try {
      decodeFrame(Buffer.alloc(MAX_FRAME_BYTES + 1));
      throw new Error('accepted');
    } catch (err) {
      expect((err as TallyError).code).toBe('TOO_LARGE');
    }
  });

  it('names what a decoded value is when it is not what a field takes: a timestamp, binary data, a map', () => {
    expect(() => validateRequest(decodeFrame(encodeFrame(new Date(0))))).toThrow(/^request must be a map, got a timestamp$/);
    expect(() => validateRequest(decodeFrame(encodeFrame(Buffer.from('abc'))))).toThrow(/^request must be a map, got 3 bytes of binary data$/);
    expect(() => validateRequest(decodeFrame(encodeFrame({ t: 'ping', id: { n: 1 } })))).toThrow(/^id must be an integer in \[0, 4294967295\], got a map$/);
  });
});

describe('a frame\'s shape, walked before it is decoded', () => {
  const refused = (bytes: Buffer): string => {
    try {
      decodeFrame(bytes);
    } catch (err) {
      expect((err as TallyError).code).toBe('BAD_REQUEST');
      return (err as Error).message;
    }
    throw new Error('accepted');
  };

  it('refuses headers that declare more elements than the frame has bytes, however they nest', () => {
    // Ten bytes a fuzz run sent a node: an array32 of 27,940,291 elements. msgpackr made the
    // array before reading one, and the node died out of heap.
    expect(refused(Buffer.from('dd01aa55c316bebeba09', 'hex'))).toMatch(/27940291 values are owed and 5 bytes are left at byte 0/);
    expect(refused(Buffer.from('df7fffffff', 'hex'))).toMatch(/4294967294 values are owed/);
    // A chain of array16 headers, each declaring 65,535: every one alone fits what is left, but
    // what they owe together does not by the 16th.
    const chain = Buffer.alloc(MAX_FRAME_BYTES - 3);
    for (let i = 0; i + 3 <= chain.length; i += 3) chain.set([0xdc, 0xff, 0xff], i);
    expect(refused(chain)).toMatch(/1048545 values are owed and 1048525 bytes are left at byte 45/);
    // Many arrays side by side, each whole but owing more than the rest of the frame holds.
    expect(refused(Buffer.from('93' + '9f'.repeat(3), 'hex'))).toMatch(/values are owed/);
  });

  it(`refuses nesting past ${MAX_FRAME_DEPTH}, a value cut short, trailing bytes and a byte that begins no value`, () => {
    expect(decodeFrame(Buffer.from('91'.repeat(MAX_FRAME_DEPTH) + 'c0', 'hex'))).toBeDefined();
    expect(refused(Buffer.from('91'.repeat(MAX_FRAME_DEPTH + 1) + 'c0', 'hex'))).toMatch(new RegExp(`nests deeper than ${MAX_FRAME_DEPTH}`));
    expect(refused(Buffer.from('db0000ffff41', 'hex'))).toMatch(/ends inside a value/);
    expect(refused(Buffer.from('c5ff', 'hex'))).toMatch(/ends inside a length/);
    expect(refused(Buffer.from('0102', 'hex'))).toMatch(/1 byte follows the value/);
    expect(refused(Buffer.from('c1', 'hex'))).toMatch(/byte 0xc1 begins no value/);
    // Extensions: undefined and a timestamp are taken; a record definition, a Set (which reads the
    // value after it) and the rest are not.
    expect(decodeFrame(Buffer.from('92d40000d6ff00000000', 'hex'))).toEqual([undefined, new Date(0)]);
    expect(refused(Buffer.from('92d4730091c0', 'hex'))).toMatch(/extension type 115 is not one Tally uses/);
    expect(refused(Buffer.from('d47201', 'hex'))).toMatch(/extension type 114/);
    expect(refused(Buffer.from('c70265ffff', 'hex'))).toMatch(/extension type 101/);
  });

  it('accepts every value msgpackr writes, of every type and length class', () => {
    const rand = seededRandom(20261127);
    let budget = 0; // values a frame may still hold, so nesting stays small
    let bytesLeft = 0; // and bytes of strings and binaries
    const value = (depth: number): unknown => {
      budget -= 1;
      const k = Math.floor(rand() * (depth >= 6 || budget <= 0 ? 8 : 11));
      const len = [0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536][Math.floor(rand() * 10)] as number;
      const items = (): number => Math.max(0, Math.min(len, budget));
      switch (k) {
        case 0: return null;
        case 1: return rand() < 0.5;
        case 2: return Math.floor((rand() - 0.5) * 2 ** (1 + Math.floor(rand() * 63)));
        case 3: return rand() * 1e6;
        case 4: {
          const chars = Math.max(0, Math.min(Math.floor(len / 2), bytesLeft));
          bytesLeft -= 2 * chars;
          return 'é'.repeat(chars);
        }
        case 5: {
          const n = Math.max(0, Math.min(len, bytesLeft));
          bytesLeft -= n;
          return Buffer.alloc(n, 7);
        }
        case 6: return Number.MAX_SAFE_INTEGER;
        case 7: return -(2 ** 40);
        case 8: return Array.from({ length: items() }, () => value(depth + 1));
        case 9: return Object.fromEntries(Array.from({ length: Math.min(items(), 40) }, (_, i) => [`k${i}`, value(depth + 1)]));
        default: return Array.from({ length: Math.min(items(), 20) }, () => value(depth + 1));
      }
    };
    for (let i = 0; i < 300; i++) {
      budget = 3_000;
      bytesLeft = 150_000;
      const v = value(0);
      const bytes = encodeFrame(v);
      if (bytes.length > MAX_FRAME_BYTES) continue;
      expect(() => checkShape(bytes)).not.toThrow();
      // Decoded and packed again, the same bytes (a deep equal of large buffers is slow).
      expect(encodeFrame(decodeFrame(bytes)).equals(bytes)).toBe(true);
    }
    // The 32-bit length classes (msgpackr writes no map32; the header is made by hand).
    const wide = Array.from({ length: 65_536 }, (_, i) => i % 3);
    expect(decodeFrame(encodeFrame(wide))).toEqual(wide);
    expect(decodeFrame(Buffer.from('df00000001a16b' + 'dd00000002c0c3', 'hex'))).toEqual({ k: [null, true] });
    // The frames Tally sends: a full batch of events and a full get.
    const events = Array.from({ length: MAX_EVENTS_PER_BATCH }, (_, i) => [`video-${i}`, 'view', NOW + i, 1.5, 1]);
    expect(decodeFrame(encodeFrame({ t: 'count', id: 1, events }))).toEqual({ t: 'count', id: 1, events });
    const queries = Array.from({ length: MAX_QUERIES_PER_GET }, (_, i) => [`video-${i}`, 'view', 0, NOW]);
    expect(decodeFrame(encodeFrame({ t: 'get', id: 2, queries }))).toEqual({ t: 'get', id: 2, queries });
  });
});

describe('parseTimeText', () => {
  it('reads epoch ms, dates and date-times (UTC without a zone), and refuses times that do not exist', () => {
    expect(parseTimeText('0')).toBe(0);
    // A date without its dashes is refused, not read as 20,261,126 ms after 1970; other digits are ms.
    expect(parseTimeText('20261126')).toBeNaN();
    expect(parseTimeText('19700101')).toBeNaN();
    expect(parseTimeText('20261332')).toBe(20_261_332);
    expect(parseTimeText('12345678')).toBe(12_345_678);
    expect(parseTimeText('1795737600000')).toBe(1_795_737_600_000);
    expect(parseTimeText('2026-11-26')).toBe(Date.UTC(2026, 10, 26));
    expect(parseTimeText('2026-11-26T10:00')).toBe(Date.UTC(2026, 10, 26, 10));
    expect(parseTimeText('2026-11-26 10:00:30.5Z')).toBe(Date.UTC(2026, 10, 26, 10, 0, 30, 500));
    expect(parseTimeText('2026-11-26T10:00+0100')).toBe(Date.UTC(2026, 10, 26, 9));
    for (const bad of ['2026-02-30', '2026-02-29', '2026-13-01', '2026-11-26T24:00', '2026-11-26T10:60', 'yesterday', '']) {
      expect([bad, parseTimeText(bad)]).toEqual([bad, NaN]);
    }
    expect(parseTimeText('2028-02-29')).toBe(Date.UTC(2028, 1, 29));
  });
});
