/** Validation of every peer message: gossip, and the data messages of replication. */
import { describe, expect, test } from 'vitest';
import { TallyError } from '../../protocol/errors.js';
import { GossipMessageType, MAX_GOSSIP_DIGESTS, MAX_GOSSIP_STATES, MAX_VNODES, validateGossipMessage, type EndpointState } from '../../protocol/gossip.js';
import { MAX_BATCH_ID_BYTES, MAX_NAME_BYTES } from '../../protocol/limits.js';
import { AE_BRANCHES, AE_BRANCHES_PER_MESSAGE, AE_LEAVES_PER_BRANCH, MAX_BUCKETS_PER_READ, MAX_SLOTS_PER_MESSAGE, validatePeerMessage } from '../../protocol/peer.js';

const STATE: EndpointState = {
  id: 'node-1',
  address: '127.0.0.1:7001',
  zone: 'zone-a',
  generation: 1_700_000_000_000,
  version: 42,
  lifecycle: 'normal',
  vnodes: 128,
  ringChecksum: '0123456789abcdef',
};
const DIGEST = { id: 'node-2', generation: 1, version: 0 };

function rejects(x: unknown, code: 'BAD_REQUEST' | 'TOO_LARGE', pattern: RegExp): void {
  let caught: unknown;
  try {
    validateGossipMessage(x);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(TallyError);
  expect((caught as TallyError).code).toBe(code);
  expect((caught as TallyError).message).toMatch(pattern);
}

const ack2 = (state: Record<string, unknown>): unknown => ({ t: 'gossip-ack2', states: [state] });

describe('validateGossipMessage', () => {
  test('accepts each message type and returns a copy with only the known fields', () => {
    const syn = { t: GossipMessageType.SYN, seq: 3, sender: { ...STATE, extra: 1 }, digests: [DIGEST], junk: 'x' };
    const out = validateGossipMessage(syn);
    expect(out).toEqual({ t: 'gossip-syn', seq: 3, sender: STATE, digests: [DIGEST] });
    expect(out).not.toBe(syn);
    expect(validateGossipMessage({ t: 'gossip-ack', seq: 3, states: [STATE], requests: [DIGEST] })).toEqual({
      t: 'gossip-ack',
      seq: 3,
      states: [STATE],
      requests: [DIGEST],
    });
    expect(validateGossipMessage({ t: 'gossip-ack2', states: [] })).toEqual({ t: 'gossip-ack2', states: [] });
    // Names follow the rules of every other frame: any printable Unicode, IPv6 addresses.
    expect(validateGossipMessage(ack2({ ...STATE, zone: 'eu west (zürich)', address: '[::1]:7001' }))).toBeDefined();
  });

  test('rejects wrong shapes, types and values with BAD_REQUEST, naming what was wrong', () => {
    rejects(null, 'BAD_REQUEST', /gossip message must be a map, got null/);
    rejects([], 'BAD_REQUEST', /gossip message must be a map/);
    rejects({ t: 'gossip-nope' }, 'BAD_REQUEST', /unknown type "gossip-nope"/);
    rejects({ t: 'gossip-syn', seq: 1, sender: STATE, digests: {} }, 'BAD_REQUEST', /gossip-syn\.digests must be an array/);
    rejects({ t: 'gossip-syn', seq: 1, digests: [] }, 'BAD_REQUEST', /gossip-syn\.sender must be a map, got undefined/);
    rejects({ t: 'gossip-syn', sender: STATE, digests: [] }, 'BAD_REQUEST', /gossip-syn\.seq must be an integer/);
    rejects({ t: 'gossip-ack', seq: '1', states: [], requests: [] }, 'BAD_REQUEST', /gossip-ack\.seq must be an integer/);
    rejects({ t: 'gossip-ack', seq: 1, states: [{ ...STATE, version: -1 }], requests: [] }, 'BAD_REQUEST', /states\[0\]\.version must be an integer in \[0, \d+\], got -1/);
    rejects(ack2({ ...STATE, generation: 1.5 }), 'BAD_REQUEST', /generation/);
    rejects(ack2({ ...STATE, generation: 2 ** 60 }), 'BAD_REQUEST', /generation/);
    rejects({ t: 'gossip-ack', seq: 1, states: [], requests: [{ ...DIGEST, id: 7 }] }, 'BAD_REQUEST', /requests\[0\]\.id must be a string, got 7/);
    rejects(ack2({ ...STATE, lifecycle: 'gone' }), 'BAD_REQUEST', /lifecycle must be one of joining, normal, leaving, left, decommissioning, removed, got "gone"/);
    rejects(ack2({ ...STATE, id: '' }), 'BAD_REQUEST', /id must not be empty/);
    rejects(ack2({ ...STATE, zone: 'a\u0000b' }), 'BAD_REQUEST', /zone must not contain control characters/);
    rejects(ack2({ ...STATE, address: 'no-port' }), 'BAD_REQUEST', /address must be host:port/);
    rejects(ack2({ ...STATE, vnodes: 0 }), 'BAD_REQUEST', /vnodes must be an integer in \[1, 1024\], got 0/);
    rejects(ack2({ ...STATE, ringChecksum: 'XYZ' }), 'BAD_REQUEST', /ringChecksum must be 1-16 lower-case hex digits/);
  });

  test('rejects names and lists over their limits with TOO_LARGE', () => {
    rejects(ack2({ ...STATE, id: 'x'.repeat(MAX_NAME_BYTES + 1) }), 'TOO_LARGE', /id is 65 bytes, the limit is 64/);
    rejects(ack2({ ...STATE, vnodes: MAX_VNODES + 1 }), 'BAD_REQUEST', /vnodes/);
    rejects({ t: 'gossip-ack2', states: Array.from({ length: MAX_GOSSIP_STATES + 1 }, () => STATE) }, 'TOO_LARGE', /has 129 items, the limit is 128/);
    rejects(
      { t: 'gossip-syn', seq: 1, sender: STATE, digests: Array.from({ length: MAX_GOSSIP_DIGESTS + 1 }, () => DIGEST) },
      'TOO_LARGE',
      /has 1025 items, the limit is 1024/,
    );
  });
});

describe('validatePeerMessage', () => {
  const slot = ['v1', 'view', 'm', 1_700_000_040_000, 'n1#ab', 3, 6, 1, 3];
  test('passes gossip through its own validation and takes each data message', () => {
    expect(validatePeerMessage({ t: 'gossip-ack2', states: [], extra: 1 })).toEqual({ t: 'gossip-ack2', states: [] });
    expect(validatePeerMessage({ t: 'repl', id: 7, slots: [slot], junk: 1 })).toEqual({ t: 'repl', id: 7, slots: [slot] });
    expect(validatePeerMessage({ t: 'repl-ack', id: 7 })).toEqual({ t: 'repl-ack', id: 7 });
    expect(validatePeerMessage({ t: 'repl-ack', id: 7, code: 'INTERNAL' })).toEqual({ t: 'repl-ack', id: 7, code: 'INTERNAL' });
    expect(validatePeerMessage({ t: 'read', id: 1, spans: [['v1', 'view', 'h', 0, 3_600_000]] })).toMatchObject({ t: 'read' });
    expect(validatePeerMessage({ t: 'read-reply', id: 1, slots: [[0, 0, 'n1#ab', 1, 1, 1, 1]] }, () => 1)).toMatchObject({ t: 'read-reply' });
    expect(validatePeerMessage({ t: 'fwd', id: 2, events: [['v1', 'view', 1_700_000_000_000, 1, 1]], cl: 'quorum', batch: 'c1:1>n2' })).toMatchObject({ t: 'fwd', batch: 'c1:1>n2' });
    expect(validatePeerMessage({ t: 'fwd-reply', id: 2, code: 'TIMEOUT', message: 'late' })).toEqual({ t: 'fwd-reply', id: 2, code: 'TIMEOUT', message: 'late' });
  });

  test("a forwarded batch id has room for the longest client id and node id, and is the client's, '>' and the node's", () => {
    const fwd = (batch: string): unknown => validatePeerMessage({ t: 'fwd', id: 2, events: [['v1', 'view', 1_700_000_000_000, 1, 1]], cl: 'quorum', batch });
    const longest = `${'c'.repeat(MAX_BATCH_ID_BYTES)}>${'n'.repeat(MAX_NAME_BYTES)}`;
    expect(fwd(longest)).toMatchObject({ batch: longest });
    expect(() => fwd(`${longest}n`)).toThrow(/fwd.batch must be a client's batch id/);
    expect(() => fwd('c1:1')).toThrow(/fwd.batch must be a client's batch id/);
    expect(() => fwd('c1:1>n2>n3')).toThrow(/fwd.batch must be a client's batch id/);
  });

  test('refuses what could corrupt a replica or make it allocate without bound', () => {
    const rejects = (x: unknown, code: string, re: RegExp): void => {
      try {
        validatePeerMessage(x, () => 1);
      } catch (err) {
        expect(err).toBeInstanceOf(TallyError);
        expect((err as TallyError).code).toBe(code);
        expect((err as TallyError).message).toMatch(re);
        return;
      }
      throw new Error(`accepted ${JSON.stringify(x)}`);
    };
    rejects({ t: 'repl', id: 1, slots: [[...slot.slice(0, 5), 2 ** 53, 1, 1, 1]] }, 'BAD_REQUEST', /count must be an integer/);
    rejects({ t: 'repl', id: 1, slots: [[...slot.slice(0, 5), 1, -1, 1, 1]] }, 'BAD_REQUEST', /sum must be a finite number/);
    rejects({ t: 'repl', id: 1, slots: [[...slot.slice(0, 7), 5, 1]] }, 'BAD_REQUEST', /min 5 is above max 1/);
    rejects({ t: 'repl', id: 1, slots: [[...slot, 1]] }, 'BAD_REQUEST', /must be \[videoId, eventType, res, start, actor, count, sum, min, max\], got 10 items/);
    rejects({ t: 'read', id: 1, spans: [['v1', 'view', 'm', 0, 60_000, 1]] }, 'BAD_REQUEST', /must be \[videoId, eventType, res, start, end\], got 6 items/);
    rejects({ t: 'read-reply', id: 1, slots: [[0, 0, 'n1#ab', 1, 1, 1, 1, 1]] }, 'BAD_REQUEST', /must be \[span, start, actor, count, sum, min, max\], got 8 items/);
    rejects({ t: 'repl', id: 1, slots: [['v1', 'view', 'm', 1_700_000_040_001, 'n1#ab', 1, 1, 1, 1]] }, 'BAD_REQUEST', /not aligned/);
    rejects({ t: 'repl', id: 1, slots: [['v1', 'view', 'w', 0, 'n1#ab', 1, 1, 1, 1]] }, 'BAD_REQUEST', /res/);
    rejects({ t: 'repl', id: 1, slots: Array.from({ length: MAX_SLOTS_PER_MESSAGE + 1 }, () => slot) }, 'TOO_LARGE', /limit/);
    rejects({ t: 'read', id: 1, spans: [['v1', 'view', 'm', 0, 60_000 * (MAX_BUCKETS_PER_READ + 1)]] }, 'TOO_LARGE', /buckets/);
    rejects({ t: 'read-reply', id: 1, slots: [[1, 0, 'n1#ab', 1, 1, 1, 1]] }, 'BAD_REQUEST', /span/);
    rejects({ t: 'fwd', id: 1, events: [], cl: 'quorum' }, 'BAD_REQUEST', /must not be empty/);
    rejects({ t: 'fwd', id: 1, events: [['v1', 'view', 1_700_000_000_000, 1, 1]], cl: 'most' }, 'BAD_REQUEST', /cl/);
    rejects({ t: 'nope', id: 1 }, 'BAD_REQUEST', /unknown type t="nope"/);
  });

  test('takes anti-entropy messages only with whole hash lists of 32-bit words and ascending branches', () => {
    const branches = new Array<number>(AE_BRANCHES * 2).fill(7);
    const leaves = (n: number): number[] => new Array<number>(n * AE_LEAVES_PER_BRANCH * 2).fill(0xffff_ffff);
    expect(validatePeerMessage({ t: 'ae-req', id: 4, x: 1 })).toEqual({ t: 'ae-req', id: 4 });
    expect(validatePeerMessage({ t: 'ae-tree', id: 4, hashes: branches })).toEqual({ t: 'ae-tree', id: 4, hashes: branches });
    expect(validatePeerMessage({ t: 'ae-tree', id: 4, code: 'OVERLOADED' })).toEqual({ t: 'ae-tree', id: 4, hashes: [], code: 'OVERLOADED' });
    expect(validatePeerMessage({ t: 'ae-leaves', id: 4, branches: [3, 9], hashes: leaves(2), last: true })).toMatchObject({ branches: [3, 9], last: true });
    expect(validatePeerMessage({ t: 'ae-leaves-reply', id: 4, branches: [], hashes: [] })).toEqual({ t: 'ae-leaves-reply', id: 4, branches: [], hashes: [] });
    const rejects = (x: unknown, code: string, re: RegExp): void => {
      expect(() => validatePeerMessage(x)).toThrow(re);
      try {
        validatePeerMessage(x);
      } catch (err) {
        expect((err as TallyError).code).toBe(code);
      }
    };
    rejects({ t: 'ae-tree', id: 4, hashes: branches.slice(1) }, 'BAD_REQUEST', /must hold 512 numbers/);
    rejects({ t: 'ae-tree', id: 4, hashes: [...branches.slice(1), 2 ** 32] }, 'BAD_REQUEST', /hashes\[511\]/);
    rejects({ t: 'ae-leaves', id: 4, branches: [9, 3], hashes: leaves(2), last: true }, 'BAD_REQUEST', /ascending/);
    rejects({ t: 'ae-leaves', id: 4, branches: [AE_BRANCHES], hashes: leaves(1), last: true }, 'BAD_REQUEST', /branches\[0\]/);
    rejects({ t: 'ae-leaves', id: 4, branches: [1], hashes: leaves(2), last: true }, 'TOO_LARGE', /limit/);
    rejects({ t: 'ae-leaves', id: 4, branches: [1, 2], hashes: leaves(1), last: true }, 'BAD_REQUEST', /must hold/);
    rejects({ t: 'ae-leaves', id: 4, branches: [1], hashes: leaves(1) }, 'BAD_REQUEST', /last/);
    rejects({ t: 'ae-leaves-reply', id: 4, branches: Array.from({ length: AE_BRANCHES_PER_MESSAGE + 1 }, (_, i) => i), hashes: [] }, 'TOO_LARGE', /limit/);
  });
});
