/**
 * The wire messages between clients and nodes (and, for the hello, between nodes).
 *
 * One WebSocket binary message carries one msgpack-encoded message. Requests carry an `id`
 * chosen by the sender; the reply carries the same id. Events and queries are tuples rather than
 * objects: a batch of 10,000 events is then a compact array, and the field order is fixed here.
 * Peer-to-peer messages (gossip, replication) are defined next to the core that speaks them.
 */
import type { ErrorCode } from './errors.js';

export const Consistency = { ONE: 'one', QUORUM: 'quorum', ALL: 'all' } as const;
export type Consistency = (typeof Consistency)[keyof typeof Consistency];

export const Role = { CLIENT: 'client', PEER: 'peer' } as const;
export type Role = (typeof Role)[keyof typeof Role];

/** One event, or `count` identical ones: [videoId, eventType, timestampMs, value, count]. */
export type EventTuple = [videoId: string, eventType: string, timestampMs: number, value: number, count: number];

/** The events a list of tuples counts (each tuple's `count`). */
export function eventsIn(events: readonly EventTuple[]): number {
  let n = 0;
  for (const e of events) n += e[4];
  return n;
}
/** One range query, `[startMs, endMs)` read to the minute (start truncated, end rounded up): [videoId, eventType, startMs, endMs]. */
export type QueryTuple = [videoId: string, eventType: string, startMs: number, endMs: number];
/** The aggregate of a range: [count, sum, min, max]; min and max are null when count is 0. */
export type StatsTuple = [count: number, sum: number, min: number | null, max: number | null];

export interface HelloMessage {
  t: 'hello';
  /** Protocol version the sender speaks. */
  v: number;
  role: Role;
  /** Peers only: the cluster name both ends must share. */
  cluster?: string;
  /** Peers only: the sender's node id. */
  nodeId?: string;
  /** Peers only: a fresh random challenge (hex) the acceptor must prove the cluster secret over. */
  nonce?: string;
  /** Peers only: the sender's replication factor; both ends must agree. */
  rf?: number;
  /** Peers only: days minute and hour buckets are kept (0: for ever); both ends must agree. */
  retention?: [minuteDays: number, hourDays: number];
  /** Clients only: the client token, when the node needs one. */
  token?: string;
  /** Peers only: the sender's actor and announced address, so a second node with a live node's id is refused. */
  actor?: string;
  address?: string;
}

export interface WelcomeMessage {
  t: 'welcome';
  v: number;
  nodeId: string;
  zone: string;
  cluster: string;
  /**
   * The node's actor (`${nodeId}#${epoch}`): a new one after its data was wiped. A client retries a
   * write whose outcome is unknown only at the same actor, whose batch ids are the ones it keeps.
   */
  actor?: string;
  /** To a peer: the acceptor's own challenge, and its proof over both nonces. */
  nonce?: string;
  proof?: string;
}

/**
 * A node that is stopping, to each client: it answers every request it has had or still gets (those
 * it no longer takes with NOT_READY, nothing applied), and the client sends nothing more on this
 * connection and closes it once its last reply came. No request is then lost in the close, where its
 * outcome would be unknown.
 */
export interface ByeMessage {
  t: 'bye';
  message: string;
}

/** A peer's answer to the welcome's challenge; the link carries nothing else until it checks. */
export interface AuthMessage {
  t: 'auth';
  proof: string;
}

export interface CountRequest {
  t: 'count';
  id: number;
  events: EventTuple[];
  cl?: Consistency;
  /**
   * The client's id of this batch. A node keeps the ids it applied for a while (durably, with the
   * data), so a retry with the same id is never counted twice.
   */
  batch?: string;
}

export interface GetRequest {
  t: 'get';
  id: number;
  queries: QueryTuple[];
  cl?: Consistency;
}

export interface PingRequest {
  t: 'ping';
  id: number;
}

export interface StatusRequest {
  t: 'status';
  id: number;
}

/** The members and ring settings, so a client can send each key to one of its replicas. */
export interface TopologyRequest {
  t: 'topology';
  id: number;
}

/** Anti-entropy now (`tally repair`): the node compares with each peer in turn and answers when done. */
export interface RepairRequest {
  t: 'repair';
  id: number;
}

/**
 * A change of the ring (`tally decommission`, `tally removenode`): `decommission` streams the
 * ranges of the node asked away and then takes it off the ring for good; `removenode` does the same
 * for `node`, a member that is down, from the copies the others hold. Answered once it has begun.
 */
export interface MoveRequest {
  t: 'move';
  id: number;
  op: 'decommission' | 'removenode';
  node?: string;
}

export type ClientRequest = CountRequest | GetRequest | PingRequest | StatusRequest | TopologyRequest | RepairRequest | MoveRequest;

export interface AckReply {
  t: 'ack';
  id: number;
  /** Events stored (the sum of the tuples' counts). */
  n: number;
}

export interface ResultReply {
  t: 'result';
  id: number;
  stats: StatsTuple[];
  /**
   * Present when retention moved an edge of some query inward (its minutes or hours at that edge
   * have expired): per query, the `[from, to)` its figures cover.
   */
  answered?: [from: number, to: number][];
}

export interface PongReply {
  t: 'pong';
  id: number;
  nowMs: number;
}

export interface StatusReply {
  t: 'status';
  id: number;
  status: unknown;
}

export interface ErrorReply {
  t: 'error';
  /** The id of the request this answers, or null when the frame was too broken to tell. */
  id: number | null;
  code: ErrorCode;
  message: string;
}

/** A member as a client needs it: where it is, and what places its tokens on the ring. */
export interface TopologyMember {
  id: string;
  address: string;
  zone: string;
  vnodes: number;
  /** Whether the answering node believes it up. */
  up: boolean;
  /** Whether its tokens are on the ring. */
  inRing: boolean;
}

export interface TopologyReply {
  t: 'topology';
  id: number;
  /** Replication factor of the cluster. */
  rf: number;
  members: TopologyMember[];
}

/** What a repair round did: a comparison with each of `peers`. */
export interface RepairSummary {
  peers: number;
  sessions: number;
  /** Comparisons that found the two trees equal. */
  inSync: number;
  /** Comparisons that did not finish (a peer down, busy or too slow); the schedule runs them again. */
  failed: number;
  /** Token leaves that differed, summed over the comparisons this node started. */
  leavesDiffered: number;
  /** Slots and bytes this node sent its peers in the round. */
  slotsSent: number;
  bytesSent: number;
}

export interface RepairReply {
  t: 'repair';
  id: number;
  repair: RepairSummary;
}

/** A ring change has begun; `message` says what happens next. */
export interface MoveReply {
  t: 'move';
  id: number;
  message: string;
}

export type Reply = AckReply | ResultReply | PongReply | StatusReply | TopologyReply | RepairReply | MoveReply | ErrorReply;
