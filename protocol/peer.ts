/**
 * Every message one node sends another, as one union with one discriminant `t`, and validation of
 * a decoded one.
 *
 * Gossip (gossip.ts) keeps membership; the rest carries data:
 * - `repl`: absolute slot values of buckets (a coordinator's own slot after a group commit, a hint
 *   replayed, a read repair). The receiver joins them (max per field), persists them, and answers
 *   `repl-ack` with the same id once they are durable. Joining is idempotent, so a `repl` may be
 *   sent any number of times.
 * - `read`: bucket spans of series; answered `read-reply` with every stored slot of them.
 * - `fwd`: a client write sent on to a replica of its keys by a node that holds none of them;
 *   answered `fwd-reply` once the replica has met the write's consistency level, or failed.
 * - `stream-done`: to a rebuilding node, every slot of its ranges the sender holds has been sent.
 * - `ae-req`, `ae-tree`, `ae-leaves`, `ae-leaves-reply`: anti-entropy (cluster/anti-entropy.ts);
 *   two replicas compare hash trees of the keys they share, then send each other the slots under
 *   the leaves that differ as `repl`.
 * Ids are chosen by the sender and only mean something to it; a reply echoes its request's id.
 * Validation returns fresh objects holding only the known fields, so the core never keeps a
 * reference to whatever else a frame carried.
 */
import { ErrorCode, TallyError, isErrorCode } from './errors.js';
import { GossipMessageType, validateGossipMessage, type GossipMessage } from './gossip.js';
import {
  MAX_ERROR_MESSAGE_CHARS,
  MAX_EVENT_TYPE_BYTES,
  MAX_EVENTS_PER_BATCH,
  MAX_REQUEST_ID,
  MAX_TIME_MS,
  MAX_VIDEO_ID_BYTES,
} from './limits.js';
import { Consistency, type EventTuple } from './messages.js';
import { checkArray, checkEvent, checkInt, checkName, checkNumber, checkObject, checkBatchId, checkTuple } from './validate.js';

export const PeerMessageType = {
  ...GossipMessageType,
  REPL: 'repl',
  REPL_ACK: 'repl-ack',
  READ: 'read',
  READ_REPLY: 'read-reply',
  FORWARD: 'fwd',
  FORWARD_REPLY: 'fwd-reply',
  STREAM_DONE: 'stream-done',
  MOVE_DONE: 'move-done',
  AE_REQ: 'ae-req',
  AE_TREE: 'ae-tree',
  AE_LEAVES: 'ae-leaves',
  AE_LEAVES_REPLY: 'ae-leaves-reply',
} as const;

/** Bucket resolutions on the wire: minute, hour, day. */
export const WIRE_RESOLUTIONS = ['m', 'h', 'd'] as const;
export type WireResolution = (typeof WIRE_RESOLUTIONS)[number];
const RES_WIDTH_MS: Record<WireResolution, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Longest actor id (`${nodeId}#${epoch}`). */
export const MAX_ACTOR_BYTES = 128;
/** Most slots in one `repl` or `read-reply`: with the longest ids, still under MAX_FRAME_BYTES. */
export const MAX_SLOTS_PER_MESSAGE = 1_500;
/** Most spans one `read` asks for. */
export const MAX_SPANS_PER_READ = 64;
/** Most buckets the spans of one `read` may cover, so its reply fits a frame. */
export const MAX_BUCKETS_PER_READ = 1_024;
/** Anti-entropy's hash tree (cluster/anti-entropy.ts): branches, leaves under each, 32-bit words per 64-bit hash. */
export const AE_BRANCHES = 256;
export const AE_LEAVES_PER_BRANCH = 256;
export const AE_WORDS_PER_HASH = 2;
/** Branches whose leaf hashes one `ae-leaves` carries (16 × 256 × 2 numbers, ~40 KB). */
export const AE_BRANCHES_PER_MESSAGE = 16;
/** Largest slot count or sum on the wire: the safe integers, as stored. */
const MAX_SLOT_VALUE = Number.MAX_SAFE_INTEGER;

/** One actor's slot of one bucket: [videoId, eventType, res, start, actor, count, sum, min, max]. */
export type SlotRecord = [
  videoId: string,
  eventType: string,
  res: WireResolution,
  start: number,
  actor: string,
  count: number,
  sum: number,
  min: number,
  max: number,
];
/** A run of one series' buckets of one resolution, starts in [start, end): [videoId, eventType, res, start, end]. */
export type SpanTuple = [videoId: string, eventType: string, res: WireResolution, start: number, end: number];
/** A slot found in a span of a read: [spanIndex, start, actor, count, sum, min, max]. */
export type SpanSlot = [span: number, start: number, actor: string, count: number, sum: number, min: number, max: number];

export interface ReplMessage {
  t: typeof PeerMessageType.REPL;
  id: number;
  slots: SlotRecord[];
}
export interface ReplAckMessage {
  t: typeof PeerMessageType.REPL_ACK;
  id: number;
  /** Absent when the slots are durable; otherwise why they are not. */
  code?: ErrorCode;
}
export interface ReadMessage {
  t: typeof PeerMessageType.READ;
  id: number;
  spans: SpanTuple[];
}
export interface ReadReplyMessage {
  t: typeof PeerMessageType.READ_REPLY;
  id: number;
  slots: SpanSlot[];
  code?: ErrorCode;
}
export interface ForwardMessage {
  t: typeof PeerMessageType.FORWARD;
  id: number;
  events: EventTuple[];
  cl: Consistency;
  /** The client's batch id, extended with the forwarder's id, for the replica's dedupe. */
  batch?: string;
  /** The actor this must reach: a replica that is a new actor since (its data wiped) refuses it. */
  actor?: string;
}
export interface ForwardReplyMessage {
  t: typeof PeerMessageType.FORWARD_REPLY;
  id: number;
  /** Absent on success. */
  code?: ErrorCode;
  message?: string;
}

/** To a rebuilding node: every slot the sender holds of the receiver's ranges has been sent and acknowledged. */
export interface StreamDoneMessage {
  t: typeof PeerMessageType.STREAM_DONE;
  /** The receiver's generation the stream was for. */
  generation: number;
}

/**
 * To the node driving a ring change (the member decommissioning, or the one removing another):
 * every slot the sender holds of the ranges that change hands has been sent to, and acknowledged
 * by, each replica that takes them over. `leaving` names the change: the sorted ids leaving, `@`
 * the checksum of the ring they leave.
 */
export interface MoveDoneMessage {
  t: typeof PeerMessageType.MOVE_DONE;
  leaving: string;
}

/** Anti-entropy, to a replica sharing keys with the sender: hash what you hold of them and send me your branch hashes. */
export interface AeRequestMessage {
  t: typeof PeerMessageType.AE_REQ;
  id: number;
}
/** The replica's branch hashes (AE_BRANCHES × AE_WORDS_PER_HASH numbers), or why it will not compare now. */
export interface AeTreeMessage {
  t: typeof PeerMessageType.AE_TREE;
  id: number;
  hashes: number[];
  code?: ErrorCode;
}
/**
 * The initiator's leaf hashes under branches that differ (AE_LEAVES_PER_BRANCH × AE_WORDS_PER_HASH
 * numbers per branch); the replica answers `ae-leaves-reply` with its own for the same branches.
 * `last`: no more follow; each side then sends the other its slots under the leaves that differ.
 * A `last` with no branches: the trees agree. Neither `last` nor branches (and, from the replica,
 * an `ae-leaves-reply` with no branches): the sender is still walking its store; wait on.
 */
export interface AeLeavesMessage {
  t: typeof PeerMessageType.AE_LEAVES;
  id: number;
  branches: number[];
  hashes: number[];
  last: boolean;
}
export interface AeLeavesReplyMessage {
  t: typeof PeerMessageType.AE_LEAVES_REPLY;
  id: number;
  branches: number[];
  hashes: number[];
}

export type DataMessage =
  | ReplMessage
  | ReplAckMessage
  | ReadMessage
  | ReadReplyMessage
  | ForwardMessage
  | ForwardReplyMessage
  | StreamDoneMessage
  | MoveDoneMessage
  | AeRequestMessage
  | AeTreeMessage
  | AeLeavesMessage
  | AeLeavesReplyMessage;
export type PeerMessage = GossipMessage | DataMessage;

const GOSSIP_TYPES = new Set<string>(Object.values(GossipMessageType));
const CONSISTENCIES = new Set<string>(Object.values(Consistency));

function bad(message: string): TallyError {
  return new TallyError(ErrorCode.BAD_REQUEST, message);
}

function checkRes(x: unknown, what: string): WireResolution {
  if (x !== 'm' && x !== 'h' && x !== 'd') throw bad(`${what} must be one of m, h, d`);
  return x;
}

function checkStart(x: unknown, res: WireResolution, what: string): number {
  const start = checkInt(x, what, 0, MAX_TIME_MS);
  if (start % RES_WIDTH_MS[res] !== 0) throw bad(`${what} ${start} is not aligned to '${res}'`);
  return start;
}

function checkSlotFields(count: unknown, sum: unknown, min: unknown, max: unknown, what: string): [number, number, number, number] {
  const c = checkInt(count, `${what} count`, 1, MAX_SLOT_VALUE);
  const s = checkNumber(sum, `${what} sum`, 0, MAX_SLOT_VALUE);
  const lo = checkNumber(min, `${what} min`, 0, Number.MAX_VALUE);
  const hi = checkNumber(max, `${what} max`, 0, Number.MAX_VALUE);
  if (lo > hi) throw bad(`${what}: min ${lo} is above max ${hi}`);
  return [c, s, lo, hi];
}

export function checkSlotRecord(x: unknown, what: string): SlotRecord {
  const r = checkTuple(x, what, 9, '[videoId, eventType, res, start, actor, count, sum, min, max]');
  const res = checkRes(r[2], `${what}[2] (res)`);
  return [
    checkName(r[0], `${what}[0] (videoId)`, MAX_VIDEO_ID_BYTES),
    checkName(r[1], `${what}[1] (eventType)`, MAX_EVENT_TYPE_BYTES),
    res,
    checkStart(r[3], res, `${what}[3] (start)`),
    checkName(r[4], `${what}[4] (actor)`, MAX_ACTOR_BYTES),
    ...checkSlotFields(r[5], r[6], r[7], r[8], what),
  ];
}

function checkSpan(x: unknown, what: string): SpanTuple {
  const r = checkTuple(x, what, 5, '[videoId, eventType, res, start, end]');
  const res = checkRes(r[2], `${what}[2] (res)`);
  const start = checkStart(r[3], res, `${what}[3] (start)`);
  const end = checkStart(r[4], res, `${what}[4] (end)`);
  if (end < start) throw bad(`${what}: end ${end} is before start ${start}`);
  return [checkName(r[0], `${what}[0] (videoId)`, MAX_VIDEO_ID_BYTES), checkName(r[1], `${what}[1] (eventType)`, MAX_EVENT_TYPE_BYTES), res, start, end];
}

/** Buckets a span covers. */
export function spanTupleLength(s: SpanTuple): number {
  return (s[4] - s[3]) / RES_WIDTH_MS[s[2]];
}

function checkSpanSlot(x: unknown, what: string, spans: number): SpanSlot {
  const r = checkTuple(x, what, 7, '[span, start, actor, count, sum, min, max]');
  return [
    checkInt(r[0], `${what}[0] (span)`, 0, spans - 1),
    checkInt(r[1], `${what}[1] (start)`, 0, MAX_TIME_MS),
    checkName(r[2], `${what}[2] (actor)`, MAX_ACTOR_BYTES),
    ...checkSlotFields(r[3], r[4], r[5], r[6], what),
  ];
}

function optionalCode(x: unknown, what: string): ErrorCode | undefined {
  if (x === undefined) return undefined;
  if (!isErrorCode(x)) throw bad(`${what} must be an error code`);
  return x;
}

function checkHashes(x: unknown, what: string, length: number): number[] {
  const a = checkArray(x, what, length);
  if (a.length !== length) throw bad(`${what} must hold ${length} numbers, not ${a.length}`);
  return a.map((v, i) => checkInt(v, `${what}[${i}]`, 0, 0xffff_ffff));
}

/** Distinct branch indexes, ascending, and their leaf hashes. */
function checkLeaves(o: Record<string, unknown>, what: string): { branches: number[]; hashes: number[] } {
  const branches = checkArray(o['branches'], `${what}.branches`, AE_BRANCHES_PER_MESSAGE).map((b, i) => checkInt(b, `${what}.branches[${i}]`, 0, AE_BRANCHES - 1));
  for (let i = 1; i < branches.length; i++) if ((branches[i] as number) <= (branches[i - 1] as number)) throw bad(`${what}.branches must be ascending and distinct`);
  return { branches, hashes: checkHashes(o['hashes'], `${what}.hashes`, branches.length * AE_LEAVES_PER_BRANCH * AE_WORDS_PER_HASH) };
}

function id(o: Record<string, unknown>, what: string): number {
  return checkInt(o['id'], `${what}.id`, 0, MAX_REQUEST_ID);
}

/**
 * A clean copy of a decoded peer message, or a TallyError naming the first thing wrong. `spansOf`
 * gives, for a `read-reply`, how many spans the matching `read` asked for (the receiver knows);
 * without it span indexes are only checked to be small integers.
 */
export function validatePeerMessage(x: unknown, spansOf?: (id: number) => number | undefined): PeerMessage {
  const o = checkObject(x, 'peer message');
  const t = o['t'];
  if (typeof t === 'string' && GOSSIP_TYPES.has(t)) return validateGossipMessage(o);
  switch (t) {
    case PeerMessageType.REPL:
      return { t, id: id(o, t), slots: checkArray(o['slots'], 'repl.slots', MAX_SLOTS_PER_MESSAGE).map((r, i) => checkSlotRecord(r, `repl.slots[${i}]`)) };
    case PeerMessageType.REPL_ACK: {
      const code = optionalCode(o['code'], 'repl-ack.code');
      return code === undefined ? { t, id: id(o, t) } : { t, id: id(o, t), code };
    }
    case PeerMessageType.READ: {
      const spans = checkArray(o['spans'], 'read.spans', MAX_SPANS_PER_READ).map((s, i) => checkSpan(s, `read.spans[${i}]`));
      const buckets = spans.reduce((a, s) => a + spanTupleLength(s), 0);
      if (buckets > MAX_BUCKETS_PER_READ) {
        throw new TallyError(ErrorCode.TOO_LARGE, `read covers ${buckets} buckets, the limit is ${MAX_BUCKETS_PER_READ}`);
      }
      return { t, id: id(o, t), spans };
    }
    case PeerMessageType.READ_REPLY: {
      const rid = id(o, t);
      const spans = spansOf?.(rid) ?? MAX_SPANS_PER_READ;
      const code = optionalCode(o['code'], 'read-reply.code');
      const slots = checkArray(o['slots'], 'read-reply.slots', MAX_SLOTS_PER_MESSAGE).map((r, i) => checkSpanSlot(r, `read-reply.slots[${i}]`, spans));
      return code === undefined ? { t, id: rid, slots } : { t, id: rid, slots, code };
    }
    case PeerMessageType.FORWARD: {
      const raw = checkArray(o['events'], 'fwd.events', MAX_EVENTS_PER_BATCH);
      if (raw.length === 0) throw bad('fwd.events must not be empty');
      const cl = o['cl'];
      if (typeof cl !== 'string' || !CONSISTENCIES.has(cl)) throw bad('fwd.cl must be a consistency level');
      const msg: ForwardMessage = { t, id: id(o, t), events: raw.map((e, i) => checkEvent(e, 'forwarded event', undefined, i)), cl: cl as Consistency };
      if (o['batch'] !== undefined) msg.batch = checkBatchId(o['batch'], 'fwd.batch', true);
      if (o['actor'] !== undefined) msg.actor = checkName(o['actor'], 'fwd.actor', MAX_ACTOR_BYTES);
      return msg;
    }
    case PeerMessageType.FORWARD_REPLY: {
      const code = optionalCode(o['code'], 'fwd-reply.code');
      if (code === undefined) return { t, id: id(o, t) };
      const message = typeof o['message'] === 'string' ? o['message'].slice(0, MAX_ERROR_MESSAGE_CHARS) : '';
      return { t, id: id(o, t), code, message };
    }
    case PeerMessageType.STREAM_DONE:
      return { t, generation: checkInt(o['generation'], 'stream-done.generation', 0, MAX_TIME_MS) };
    case PeerMessageType.MOVE_DONE:
      return { t, leaving: checkName(o['leaving'], 'move-done.leaving', 4096) };
    case PeerMessageType.AE_REQ:
      return { t, id: id(o, t) };
    case PeerMessageType.AE_TREE: {
      const code = optionalCode(o['code'], 'ae-tree.code');
      if (code !== undefined) return { t, id: id(o, t), hashes: [], code };
      return { t, id: id(o, t), hashes: checkHashes(o['hashes'], 'ae-tree.hashes', AE_BRANCHES * AE_WORDS_PER_HASH) };
    }
    case PeerMessageType.AE_LEAVES: {
      const last = o['last'];
      if (typeof last !== 'boolean') throw bad('ae-leaves.last must be a boolean');
      return { t, id: id(o, t), ...checkLeaves(o, t), last };
    }
    case PeerMessageType.AE_LEAVES_REPLY:
      return { t, id: id(o, t), ...checkLeaves(o, t) };
    default:
      throw bad(`peer message: unknown type t=${JSON.stringify(t) ?? 'undefined'}`);
  }
}
