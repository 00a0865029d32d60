/**
 * Wire types of the gossip messages, their size limits, and validation of a decoded one.
 *
 * Gossip is a Cassandra-style three-way exchange: the initiator sends SYN (its own state and a
 * digest of everything it knows), the receiver answers ACK (the states the initiator is behind on
 * and requests for the ones it is behind on itself), the initiator finishes with ACK2 (the states
 * requested). Messages are plain objects of strings, numbers and arrays so msgpack carries them
 * as they are.
 *
 * An endpoint state carries `vnodes`, not the tokens: tokens are derived from the node id
 * (cluster/hash-ring.ts `tokensFor`), so every node computes them, a message stays small, and a
 * restarted node keeps its tokens.
 *
 * Validation is for the edge: the node calls `validateGossipMessage` on every decoded frame (and
 * may call it before encoding). It returns a fresh object holding only the known fields, so the
 * core never keeps a reference to whatever else the frame carried. Names and addresses obey the
 * same rules as in every other frame (validate.ts). It does not check the semantics (whether a
 * state is newer than ours); that is the core's work.
 */

import { TallyError } from './errors.js';
import { MAX_NAME_BYTES, MAX_TIME_MS } from './limits.js';
import { checkArray, checkInt, checkName, checkObject, parseAddress } from './validate.js';

/** The lifecycle a node announces about itself; up/down is each observer's own verdict. */
export const Lifecycle = {
  /** New member, learning the cluster; not in the ring yet. */
  JOINING: 'joining',
  /** Serving; owns its tokens. */
  NORMAL: 'normal',
  /** Graceful stop in progress (draining); still up and still owns its tokens. */
  LEAVING: 'leaving',
  /** Stopped gracefully: peers mark it down at once. It keeps its tokens and comes back with them. */
  LEFT: 'left',
  /**
   * Leaving the ring for good (`tally decommission`): still up and still a replica of its ranges,
   * while every member streams the replicas that take them over what they hold of them.
   */
  DECOMMISSIONING: 'decommissioning',
  /** Off the ring for good (decommissioned, or removed by `tally removenode`); its actor never comes back. */
  REMOVED: 'removed',
} as const;
export type Lifecycle = (typeof Lifecycle)[keyof typeof Lifecycle];
const LIFECYCLES = new Set<string>(Object.values(Lifecycle));

export const GossipMessageType = {
  SYN: 'gossip-syn',
  ACK: 'gossip-ack',
  ACK2: 'gossip-ack2',
} as const;
export type GossipMessageType = (typeof GossipMessageType)[keyof typeof GossipMessageType];

/** Most members a message may describe in its digest list; also the most members a node tracks. */
export const MAX_GOSSIP_DIGESTS = 1024;
/**
 * Most endpoint states in one message (a typical state is ~130 bytes in msgpack, at most ~550);
 * a node further behind catches up over the next rounds.
 */
export const MAX_GOSSIP_STATES = 128;
/** Most virtual nodes one member may claim. */
export const MAX_VNODES = 1024;
/** A ring checksum: a 64-bit hash in lower-case hex, without leading zeros required. */
const RING_CHECKSUM_PATTERN = /^[0-9a-f]{1,16}$/;
// Ids and zones are bounded by MAX_NAME_BYTES and addresses by MAX_ADDRESS_BYTES (limits.ts),
// checked as every other name on the wire is (validate.ts). The largest valid gossip message, an
// ACK of 128 states and 1024 requests with every string at its longest, is ~190 KB in msgpack,
// well under MAX_FRAME_BYTES; a SYN of a 100-node cluster is ~5 KB.

/** "I know `id` at (generation, version)". In a request: "send me anything newer than this". */
export interface GossipDigest {
  id: string;
  generation: number;
  version: number;
}

/** Everything a node says about itself. (generation, version) orders a node's states totally. */
export interface EndpointState {
  id: string;
  /** Where peers connect to it, e.g. "127.0.0.1:7001". */
  address: string;
  zone: string;
  /** Start time of this incarnation in ms; strictly greater after every restart. */
  generation: number;
  /** The heartbeat version: bumped every gossip round and on every change of this state. */
  version: number;
  lifecycle: Lifecycle;
  /** Number of virtual-node tokens; the tokens themselves follow from `id` and this count. */
  vnodes: number;
  /** Checksum of the ring as this node computes it, so disagreement is visible in `tally status`. */
  ringChecksum: string;
  /**
   * The member started on an empty store (new, or its data was wiped) and is being sent its ranges
   * by its peers: writes go to it, reads do not count it until it is done. Absent when false.
   */
  rebuilding?: true;
  /** The member's actor (`${id}#${epoch}`): a new one after its data was wiped. */
  actor?: string;
  /** The member this node is taking off the ring for an operator (`tally removenode`), while the others re-replicate its ranges. */
  removing?: string;
}

export interface GossipSyn {
  t: typeof GossipMessageType.SYN;
  /**
   * The initiator's count of SYNs sent, echoed in the ACK: an ACK echoing a SYN sent after a
   * connection dropped proves the peer alive after the drop (data in flight from before cannot).
   */
  seq: number;
  /** The initiator's own current state: a heartbeat delivered in one hop, and its address. */
  sender: EndpointState;
  digests: GossipDigest[];
}

export interface GossipAck {
  t: typeof GossipMessageType.ACK;
  /** The `seq` of the SYN this answers. */
  seq: number;
  /** States the initiator is behind on (or does not know). */
  states: EndpointState[];
  /** States the responder is behind on: what it has, so the initiator sends what is newer. */
  requests: GossipDigest[];
}

export interface GossipAck2 {
  t: typeof GossipMessageType.ACK2;
  states: EndpointState[];
}

export type GossipMessage = GossipSyn | GossipAck | GossipAck2;

/**
 * Returns a clean copy of a decoded gossip message, or throws a TallyError naming the first thing
 * wrong: BAD_REQUEST for a wrong shape, type or value, TOO_LARGE for a name or list over its limit
 * (as every other frame's validation does).
 */
export function validateGossipMessage(x: unknown): GossipMessage {
  const o = checkObject(x, 'gossip message');
  switch (o['t']) {
    case GossipMessageType.SYN:
      return {
        t: GossipMessageType.SYN,
        seq: count(o['seq'], 'gossip-syn.seq'),
        sender: validateEndpointState(o['sender'], 'gossip-syn.sender'),
        digests: list(o['digests'], 'gossip-syn.digests', MAX_GOSSIP_DIGESTS, validateDigest),
      };
    case GossipMessageType.ACK:
      return {
        t: GossipMessageType.ACK,
        seq: count(o['seq'], 'gossip-ack.seq'),
        states: list(o['states'], 'gossip-ack.states', MAX_GOSSIP_STATES, validateEndpointState),
        requests: list(o['requests'], 'gossip-ack.requests', MAX_GOSSIP_DIGESTS, validateDigest),
      };
    case GossipMessageType.ACK2:
      return {
        t: GossipMessageType.ACK2,
        states: list(o['states'], 'gossip-ack2.states', MAX_GOSSIP_STATES, validateEndpointState),
      };
    default:
      throw new TallyError('BAD_REQUEST', `gossip message: unknown type ${JSON.stringify(o['t']) ?? 'undefined'}`);
  }
}

export function validateEndpointState(x: unknown, where = 'endpoint state'): EndpointState {
  const o = checkObject(x, where);
  const lifecycle = o['lifecycle'];
  if (typeof lifecycle !== 'string' || !LIFECYCLES.has(lifecycle)) {
    throw new TallyError('BAD_REQUEST', `${where}.lifecycle must be one of ${[...LIFECYCLES].join(', ')}, got ${JSON.stringify(lifecycle) ?? 'undefined'}`);
  }
  const address = o['address'];
  parseAddress(address, `${where}.address`);
  const ringChecksum = o['ringChecksum'];
  if (typeof ringChecksum !== 'string' || !RING_CHECKSUM_PATTERN.test(ringChecksum)) {
    throw new TallyError('BAD_REQUEST', `${where}.ringChecksum must be 1-16 lower-case hex digits`);
  }
  const rebuilding = o['rebuilding'];
  if (rebuilding !== undefined && rebuilding !== true) throw new TallyError('BAD_REQUEST', `${where}.rebuilding must be true or absent`);
  const state: EndpointState = {
    id: checkName(o['id'], `${where}.id`, MAX_NAME_BYTES),
    address: address as string,
    zone: checkName(o['zone'], `${where}.zone`, MAX_NAME_BYTES),
    generation: generationOf(o['generation'], `${where}.generation`),
    version: count(o['version'], `${where}.version`),
    lifecycle: lifecycle as Lifecycle,
    vnodes: checkInt(o['vnodes'], `${where}.vnodes`, 1, MAX_VNODES),
    ringChecksum,
  };
  if (rebuilding === true) state.rebuilding = true;
  if (o['actor'] !== undefined) state.actor = checkName(o['actor'], `${where}.actor`, 2 * MAX_NAME_BYTES);
  if (o['removing'] !== undefined) state.removing = checkName(o['removing'], `${where}.removing`, MAX_NAME_BYTES);
  return state;
}

function validateDigest(x: unknown, where: string): GossipDigest {
  const o = checkObject(x, where);
  return {
    id: checkName(o['id'], `${where}.id`, MAX_NAME_BYTES),
    generation: generationOf(o['generation'], `${where}.generation`),
    version: count(o['version'], `${where}.version`),
  };
}

function list<T>(x: unknown, where: string, max: number, item: (x: unknown, where: string) => T): T[] {
  return checkArray(x, where, max).map((v, i) => item(v, `${where}[${i}]`));
}

/**
 * Largest heartbeat version a node takes from others: a version is bumped about once a second,
 * so 2^48 is millions of years. Versions decode up to the safe integers, but the core drops a
 * state above this, so a node refuting a forged version with a higher one stays on the wire.
 */
export const MAX_GOSSIP_VERSION = 2 ** 48;

function count(x: unknown, where: string): number {
  return checkInt(x, where, 0, Number.MAX_SAFE_INTEGER);
}

/** A generation is a start time in ms: at most MAX_TIME_MS (2100-01-01). */
function generationOf(x: unknown, where: string): number {
  return checkInt(x, where, 0, MAX_TIME_MS);
}
