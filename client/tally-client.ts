/**
 * The Tally client library.
 *
 * Ring-aware: it learns the members and the replication factor from any node (`topology`), keeps
 * them fresh, computes each key's replicas with the same ring the nodes use, and sends each event
 * to a replica of its key — the first one it believes up and responsive — so a write needs no extra
 * hop. It holds one connection per node it talks to.
 *
 * Every call validates its input at once (the same checks the node runs), so a bad event fails at
 * the call with BAD_REQUEST. Concurrent calls are batched per coordinator and consistency level:
 * events from calls made together (or, under load, within `lingerMs`) travel in one `count` frame
 * with a batch id, and a call resolves once every frame holding its events is acknowledged — that
 * is, durable on as many replicas as its consistency level asks. A frame that may have been applied
 * (TIMEOUT, a dropped connection, PARTIAL_WRITE, INTERNAL) is sent again only to the same node with
 * the same batch id, which the node never counts twice, until `timeoutMs` runs out; a frame refused
 * before anything was applied is sent again with backoff and jitter: to the same node after
 * OVERLOADED, routed again (possibly to another replica) after NOT_READY, UNAVAILABLE or a
 * connection that could not be opened. Each node gets at most a window of events in flight
 * (client/write-window.ts); frames past it wait in the client, and fail with OVERLOADED, unsent,
 * if no room comes within `busyWaitMs`. If a node refuses
 * a shared frame as malformed, each call in it is sent again alone, so one bad call cannot fail its
 * neighbours. A call whose frames were partly acknowledged fails with PARTIAL_WRITE.
 * Reads are batched the same way; a read not answered within `readHedgeMs` is also asked of another
 * node (the first answer wins), and a node with a request unanswered for `slowAfterMs` gets no new
 * work until it answers, so one frozen node costs a read milliseconds, not seconds.
 */
import xxhash from 'xxhash-wasm';
// The protocol's modules one by one, not its index: the client loads none of the peer protocol.
import { ErrorCode, TallyError } from '../protocol/errors.js';
import { HashRing, tokensFor, type Hash64 } from '../protocol/hash-ring.js';
import { MAX_EVENTS_PER_BATCH, MAX_FRAME_BYTES, MAX_QUERIES_PER_GET, MAX_VIDEO_ID_BYTES } from '../protocol/limits.js';
import {
  Consistency,
  eventsIn,
  type EventTuple,
  type QueryTuple,
  type Reply,
  type RepairSummary,
  type StatsTuple,
  type TopologyMember,
} from '../protocol/messages.js';
import { checkEvent, checkName, checkQuery, parseAddress } from '../protocol/validate.js';
import { rangeExpired, rangeStats, type EventStats } from '../protocol/range-stats.js';
import { Connection, MAX_PENDING_PER_CONNECTION, type ClientTls, type ConnectionAuth, type Outgoing } from './connection.js';
import { NoRoom, WriteWindow } from './write-window.js';

export interface ClientOptions {
  /** Nodes to learn the cluster from, as host:port. Any node can serve any request. */
  nodes: string[];
  /** How long a call may take in all, retries included. */
  timeoutMs?: number;
  /** How long a write or read waits for others to share its frame. */
  lingerMs?: number;
  /** Default consistency level of writes and reads. */
  consistency?: Consistency;
  /** Retries of a request refused before anything was applied. */
  maxRetries?: number;
  connectTimeoutMs?: number;
  /** A read not answered in this time is also asked of another node. */
  readHedgeMs?: number;
  /** A node with a request unanswered this long gets no new work until it answers. */
  slowAfterMs?: number;
  /** How often the members and ring are fetched again. */
  topologyRefreshMs?: number;
  /**
   * `ring` (default): each key to a replica of it. `direct`: everything to the first listed node
   * that answers, which coordinates or forwards (to ask one node in particular, e.g. at `one`);
   * status and topology too are asked of the listed nodes only, never another member.
   */
  routing?: 'ring' | 'direct';
  /**
   * How long a write may wait in the client for room at a busy node before it fails with
   * OVERLOADED, nothing of it applied. The client keeps as many events in flight to a node as it
   * lately took (a window that grows while the node acknowledges and halves when it refuses);
   * frames past it wait, in order.
   */
  busyWaitMs?: number;
  /** The client token, when the nodes need one (`tally start --client-token`). */
  token?: string;
  /** Speak TLS (`wss://`): `true` to trust the system's CAs, or `{ ca }` with the CA's PEM. */
  tls?: ClientTls;
}

export type TimeInput = number | Date;

export interface WriteOptions {
  /** Event time; default now. */
  timestamp?: TimeInput;
  consistency?: Consistency;
}

export interface ReadOptions {
  consistency?: Consistency;
  /**
   * Where an edge of the range is past retention (its minutes, or hours, have expired): with
   * `true`, count over the largest range inside it that is kept (`getStats` reports which);
   * otherwise `getCount` and `getViewsCount` fail with RANGE_EXPIRED rather than return a count
   * of another range. `getStats` always answers, with the range it covers.
   */
  clip?: boolean;
}

const CONSISTENCIES: readonly string[] = Object.values(Consistency);

/** A consistency level a caller gave, by the name the caller gave it (`consistency`, not the wire's `cl`). */
function checkConsistencyOption(x: unknown): Consistency | undefined {
  if (x === undefined) return undefined;
  if (typeof x !== 'string' || !CONSISTENCIES.includes(x)) throw new TallyError(ErrorCode.BAD_REQUEST, `consistency must be one of ${CONSISTENCIES.join(', ')}, got ${JSON.stringify(x)}`);
  return x as Consistency;
}

function callConsistency(opts: { consistency?: Consistency } | undefined): Consistency | undefined {
  return checkConsistencyOption(opts?.consistency);
}

/**
 * Options the client cannot run with are refused at connect, not met later as a deadline already
 * passed (timeoutMs -1 read as "cannot connect within -1 ms") or as every call refused.
 */
function checkClientOptions(opts: ClientOptions): void {
  const bad = (m: string): TallyError => new TallyError(ErrorCode.BAD_REQUEST, m);
  const show = (x: unknown): string => (typeof x === 'number' ? String(x) : JSON.stringify(x) ?? String(x));
  checkConsistencyOption(opts.consistency);
  for (const k of ['timeoutMs', 'connectTimeoutMs', 'readHedgeMs', 'slowAfterMs', 'topologyRefreshMs', 'busyWaitMs'] as const) {
    const v = opts[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v > 0)) throw bad(`${k} must be a number of milliseconds above 0, got ${show(v)}`);
  }
  if (opts.lingerMs !== undefined && !(typeof opts.lingerMs === 'number' && Number.isFinite(opts.lingerMs) && opts.lingerMs >= 0)) {
    throw bad(`lingerMs must be a number of milliseconds from 0, got ${show(opts.lingerMs)}`);
  }
  if (opts.maxRetries !== undefined && !(Number.isSafeInteger(opts.maxRetries) && opts.maxRetries >= 0)) throw bad(`maxRetries must be a whole number from 0, got ${show(opts.maxRetries)}`);
  if (opts.routing !== undefined && opts.routing !== 'ring' && opts.routing !== 'direct') throw bad(`routing must be ring or direct, got ${show(opts.routing)}`);
}

const EVENT_FIELDS: readonly string[] = ['videoId', 'eventType', 'timestamp', 'value', 'count'];

/**
 * An event is an object of EventInput's fields and no other: a misspelt one (`evenType`,
 * `timestmap`) would otherwise be left out and its default counted in its place, as HTTP refuses.
 */
/** Event i of a call of `of` events, as a message names it: made only when one is refused. */
function eventName(i: number, of: number): string {
  return of === 1 ? 'the event' : `event ${i + 1}`;
}

function checkEventFields(e: unknown, i: number, of: number): void {
  if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new TallyError(ErrorCode.BAD_REQUEST, `${eventName(i, of)} must be an object { videoId, eventType?, timestamp?, value?, count? }`);
  for (const k in e) {
    if (Object.hasOwn(e, k) && !EVENT_FIELDS.includes(k)) throw new TallyError(ErrorCode.BAD_REQUEST, `${eventName(i, of)} has an unknown field ${JSON.stringify(k)}; the fields are ${EVENT_FIELDS.join(', ')}`);
  }
  // A null where a value was meant (a column with no value, a measurement that failed) would
  // otherwise count a view, or a value of 1: refused, as a field left out is what takes a default.
  for (const k of EVENT_FIELDS) {
    if ((e as Record<string, unknown>)[k] === null) throw new TallyError(ErrorCode.BAD_REQUEST, `${eventName(i, of)}: ${k} is null; leave it out for its default, or give a value`);
  }
}

export interface EventInput {
  videoId: string;
  /** Default "view". */
  eventType?: string;
  /** Default now. */
  timestamp?: TimeInput;
  /** Default 1. */
  value?: number;
  /** This many identical events; default 1. */
  count?: number;
}

export type { EventStats };

export const VIEW = 'view';

const DEFAULTS = {
  timeoutMs: 10_000, // above a node's own 4 s write timeout, so its TIMEOUT can be retried once; short enough to notice a dead cluster
  lingerMs: 1, // one millisecond turns a burst of calls into one frame at little latency
  consistency: Consistency.QUORUM,
  maxRetries: 6, // with backoff from 20 ms doubling: about 2.5 s of retrying in all
  connectTimeoutMs: 3_000,
  readHedgeMs: 20, // replicas answer in 1-2 ms; 20 ms is far in the tail, and cheap to double
  slowAfterMs: 250, // a live node answers within a commit or two; a quarter second means trouble
  topologyRefreshMs: 5_000, // membership changes are seen within a few seconds
  busyWaitMs: 2_500, // as long as a refused frame is retried (maxRetries backoffs from 20 ms)
};
const RETRY_BASE_MS = 20;
/** Bytes of a frame kept free for the envelope and msgpack headers when packing events. */
const FRAME_MARGIN_BYTES = 1024;
/** msgpack overhead of one event tuple besides its two strings: headers, float64s, ints. */
const EVENT_OVERHEAD_BYTES = 32;
/**
 * Events gathered into one frame, at most (the protocol takes up to MAX_EVENTS_PER_BATCH). A node
 * applies a frame in one go on its one thread, about 10 µs an event under load: a frame of 10,000
 * held every read behind it for ~100 ms. One of 2,000 holds them ~20 ms, and costs the node
 * nothing measurable in throughput. One node at 25,000 events/s with a reader of 30-day counts,
 * runs in turn: read p99 45.1 and 27.9 ms with frames of up to 10,000, 31.3 and 24.0 with 2,000.
 */
export const MAX_EVENTS_PER_FRAME = Math.min(2_000, MAX_EVENTS_PER_BATCH);
/**
 * A node's write window (client/write-window.ts), in events: one node takes up to 40,000 events at
 * once by default (`maxInFlightEvents`), which the window finds within a few round trips from its
 * start, and it never shrinks below one full frame.
 */
const WRITE_WINDOW = { initial: 20_000, min: MAX_EVENTS_PER_FRAME, max: 200_000, maxWaiting: 200_000 };
/** Codes after which the node applied nothing of the frame. */
const NOTHING_APPLIED: ReadonlySet<string> = new Set([ErrorCode.OVERLOADED, ErrorCode.NOT_READY, ErrorCode.UNAVAILABLE]);
/**
 * Codes after which the frame may or may not have been applied. STORAGE_FULL too: the node keeps
 * the events in memory and writes them once space returns.
 */
const OUTCOME_UNKNOWN: ReadonlySet<string> = new Set([ErrorCode.TIMEOUT, ErrorCode.CONNECTION_CLOSED, ErrorCode.PARTIAL_WRITE, ErrorCode.INTERNAL, ErrorCode.STORAGE_FULL]);


/** `what` names the time in a message; with `index`, it is an event's (`event 3: timestamp`), named only if wrong. */
function toMs(t: TimeInput | undefined, what: string, fallback: number, index?: number): number {
  if (t === undefined) return fallback;
  const ms = t instanceof Date ? t.getTime() : t;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    const name = index === undefined ? what : `event ${index + 1}: ${what}`;
    throw new TallyError(ErrorCode.BAD_REQUEST, `${name} must be epoch milliseconds or a Date, got ${String(t)}`);
  }
  return ms;
}

/** A range's start or end: required, as 0 in its place would count from (or to) 1970. */
function boundMs(t: TimeInput, what: string): number {
  if (t === undefined) throw new TallyError(ErrorCode.BAD_REQUEST, `${what} is missing: give epoch milliseconds or a Date`);
  return toMs(t, what, 0);
}

function asTallyError(err: unknown): TallyError {
  return err instanceof TallyError ? err : new TallyError(ErrorCode.INTERNAL, String(err));
}

/** The end of a write that an earlier attempt may have applied, whatever the last attempt said. */
function unknownOutcome(e: TallyError): TallyError {
  return new TallyError(OUTCOME_UNKNOWN.has(e.code) ? e.code : ErrorCode.TIMEOUT, `the write may have been applied by an earlier attempt and could not be confirmed (last: ${e.code}: ${e.message}); its outcome is unknown`, { cause: e });
}


function backoffMs(attempt: number): number {
  const b = RETRY_BASE_MS * 2 ** Math.min(attempt, 10);
  return b / 2 + Math.random() * b;
}

/** One write call: settled once every frame holding some of its events has been answered. */
interface Call {
  /** The call's event entries, and the events they stand for (each entry's `count`). */
  entries: number;
  events: number;
  pendingFrames: number;
  ackedEntries: number;
  ackedEvents: number;
  error: TallyError | undefined;
  deadlineMs: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** The events of one call inside a frame. */
interface Part {
  call: Call;
  events: EventTuple[];
  /** Why an earlier frame holding these events was refused, nothing of it applied. */
  refused?: TallyError;
}

interface WriteBatch {
  address: string;
  cl: Consistency;
  events: number;
  bytes: number;
  parts: Part[];
}

interface ReadWaiter {
  query: QueryTuple;
  deadlineMs: number;
  /** `answered`: the range the node counted over, when retention moved an edge of some query of its batch. */
  resolve: (s: StatsTuple, answered: [number, number] | undefined) => void;
  reject: (e: Error) => void;
}

interface ReadBatch {
  address: string;
  cl: Consistency;
  waiters: ReadWaiter[];
}

/** A node the client talks to. */
interface Link {
  address: string;
  conn: Connection | undefined;
  connecting: Promise<Connection> | undefined;
  /** After a failed connect, not tried again for new work before this. */
  downUntilMs: number;
  failures: number;
  /** A read to it went unanswered past `readHedgeMs`: no new work until that request ends. */
  suspect: boolean;
  /** Requests sent to it awaiting replies (at most MAX_PENDING_PER_CONNECTION), and those waiting for one of those places. */
  inFlight: number;
  slotWaiters: SlotWaiter[];
}

interface SlotWaiter {
  resolve: () => void;
  reject: (err: TallyError) => void;
  timer: NodeJS.Timeout;
}

/** Requests that may wait for a place among a node's MAX_PENDING_PER_CONNECTION; past it, refused at once. */
export const MAX_SLOT_WAITERS = 10_000;

interface Topology {
  rf: number;
  ring: HashRing;
  /** Member id → address, for members believed up. */
  up: Map<string, string>;
  addresses: Map<string, string>;
  /**
   * Preference lists by token index, made as keys need them: keys of one index share one (a few
   * hundred per node), where a list made per event was a fifth of what the client allocated.
   */
  lists: (readonly string[] | undefined)[];
}

/** The ids of `videoId`'s replicas, in preference order. */
function replicaIdsOf(t: Topology, videoId: string): readonly string[] {
  const i = t.ring.indexOf(videoId);
  if (i < 0) return [];
  let list = t.lists[i];
  if (list === undefined) t.lists[i] = list = t.ring.preferenceListAt(i, t.rf);
  return list;
}

let batchCounter = 0;
/** A batch id unique to this process and call: random prefix, counter. */
const BATCH_PREFIX = `${Math.random().toString(36).slice(2, 10)}${Date.now().toString(36)}`;
function newBatchId(): string {
  batchCounter = (batchCounter + 1) % Number.MAX_SAFE_INTEGER;
  return `${BATCH_PREFIX}:${batchCounter.toString(36)}`;
}

export class TallyClient {
  private readonly opts: Required<Omit<ClientOptions, 'token' | 'tls'>> & { auth: ConnectionAuth };
  private readonly links = new Map<string, Link>();
  /** Connections a node said bye on, awaiting their last replies (they close themselves then). */
  private readonly retiring = new Set<Connection>();
  private topology: Topology | undefined;
  private hash64: Hash64 | undefined;
  private readonly writes = new Map<string, WriteBatch>();
  /** Per node address: the events in flight to it and the frames waiting for room. */
  private readonly windows = new Map<string, WriteWindow>();
  private readonly reads = new Map<string, ReadBatch>();
  private flushTimer: (() => void) | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Requests sent and not answered, per client; callers past the bound wait their turn. */
  /** Topology refreshes begun, and the latest whose answer was taken. */
  private topologyAsked = 0;
  private topologyApplied = 0;
  /** Requests awaiting replies, from every node. */
  private inFlight = 0;
  /** Retries sleeping their backoff: close() wakes them, to end as it failed them. */
  private readonly sleepers = new Set<() => void>();
  private seedIndex: number;

  private constructor(opts: ClientOptions) {
    if (!Array.isArray(opts.nodes) || opts.nodes.length === 0) {
      throw new TallyError(ErrorCode.BAD_REQUEST, 'nodes must list at least one host:port');
    }
    // A malformed address is the caller's mistake (BAD_REQUEST), not a node that is unavailable.
    for (const address of opts.nodes) parseAddress(address, 'a node address');
    checkClientOptions(opts);
    this.opts = {
      nodes: [...opts.nodes],
      timeoutMs: opts.timeoutMs ?? DEFAULTS.timeoutMs,
      lingerMs: opts.lingerMs ?? DEFAULTS.lingerMs,
      consistency: opts.consistency ?? DEFAULTS.consistency,
      maxRetries: opts.maxRetries ?? DEFAULTS.maxRetries,
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      readHedgeMs: opts.readHedgeMs ?? DEFAULTS.readHedgeMs,
      slowAfterMs: opts.slowAfterMs ?? DEFAULTS.slowAfterMs,
      topologyRefreshMs: opts.topologyRefreshMs ?? DEFAULTS.topologyRefreshMs,
      busyWaitMs: opts.busyWaitMs ?? DEFAULTS.busyWaitMs,
      routing: opts.routing ?? 'ring',
      auth: { token: opts.token, tls: opts.tls },
    };
    this.seedIndex = Math.floor(Math.random() * this.opts.nodes.length);
  }

  /** Connects to one of `nodes` (trying each in turn), learns the cluster, and returns a ready client. */
  static async connect(opts: ClientOptions): Promise<TallyClient> {
    const client = new TallyClient(opts);
    client.hash64 = (await xxhash()).h64;
    await client.refreshTopology(true);
    client.refreshTimer = setInterval(() => void client.refreshTopology(false).catch(() => {}), client.opts.topologyRefreshMs);
    client.refreshTimer.unref();
    return client;
  }

  /** The original design's call: one view of `videoId`, now or at `opts.timestamp`. */
  countViewEvent(videoId: string, opts?: WriteOptions): Promise<void> {
    return this.countEvent(videoId, VIEW, opts);
  }

  countEvent(videoId: string, eventType: string, opts?: WriteOptions): Promise<void> {
    return this.processEvent(videoId, eventType, 1, opts);
  }

  /** One event with a value (watch time, latency…); count, sum, min, max and avg are all kept. */
  processEvent(videoId: string, eventType: string, value: number, opts?: WriteOptions): Promise<void> {
    try {
      const now = Date.now();
      const e = checkEvent([videoId, eventType, toMs(opts?.timestamp, 'timestamp', now), value, 1], 'the event', now);
      return this.write([e], callConsistency(opts) ?? this.opts.consistency);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** A batch of events; resolves when all are durable, rejects if any part failed. */
  processEvents(events: EventInput[], opts?: { consistency?: Consistency }): Promise<void> {
    try {
      if (!Array.isArray(events)) throw new TallyError(ErrorCode.BAD_REQUEST, 'events must be an array');
      if (events.length === 0) return Promise.resolve();
      // Every node's window refusing at once: refused before any event is checked or routed. At
      // twice the load a node takes, half the calls are refused, and that work took the client's
      // CPU from the nodes on the same machine.
      const busy = this.busyEverywhere(events.length);
      if (busy !== undefined) return Promise.reject(busy);
      const now = Date.now();
      for (let i = 0; i < events.length; i++) checkEventFields(events[i], i, events.length);
      const tuples = events.map((e, i) =>
        checkEvent(
          [e?.videoId, e?.eventType ?? VIEW, toMs(e?.timestamp, 'timestamp', now, i), e?.value ?? 1, e?.count ?? 1],
          events.length === 1 ? 'the event' : 'event',
          now,
          events.length === 1 ? undefined : i,
        ),
      );
      return this.write(tuples, callConsistency(opts) ?? this.opts.consistency);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Views of `videoId` in [startTime, endTime): the start truncated to its minute, the end rounded up to its minute. */
  getViewsCount(videoId: string, startTime: TimeInput, endTime: TimeInput, opts?: ReadOptions): Promise<number> {
    return this.getCount(videoId, VIEW, startTime, endTime, opts);
  }

  async getCount(videoId: string, eventType: string, startTime: TimeInput, endTime: TimeInput, opts?: ReadOptions): Promise<number> {
    const q = checkQuery([videoId, eventType, boundMs(startTime, 'startTime'), boundMs(endTime, 'endTime')], 'the query');
    const stats = await this.statsOf(q, opts);
    if (stats.clipped && opts?.clip !== true) throw rangeExpired(q, stats, 'pass { clip: true } to accept it');
    return stats.count;
  }

  /** Count, sum, min, max and mean of the values of `videoId`'s `eventType` events in [startTime, endTime), and the range they cover. */
  async getStats(videoId: string, eventType: string, startTime: TimeInput, endTime: TimeInput, opts?: ReadOptions): Promise<EventStats> {
    return this.statsOf(checkQuery([videoId, eventType, boundMs(startTime, 'startTime'), boundMs(endTime, 'endTime')], 'the query'), opts);
  }

  private async statsOf(q: QueryTuple, opts: ReadOptions | undefined): Promise<EventStats> {
    const { stats, answered } = await this.read(q, callConsistency(opts) ?? this.opts.consistency);
    return rangeStats(q, stats, answered);
  }

  /** What a node reports of itself and its cluster (the `tally status` data): the first listed node that answers. */
  async status(): Promise<unknown> {
    const reply = await this.askAnySeed({ t: 'status' });
    return reply.t === 'status' ? reply.status : null;
  }

  /**
   * Anti-entropy now on the node at `address` (`tally repair`): it compares with each peer in turn
   * and answers when done, which on a large store takes minutes (walks are paced), hence the long
   * default deadline.
   */
  async repair(address: string, timeoutMs = 60 * 60 * 1000): Promise<RepairSummary> {
    const reply = await this.request(address, { t: 'repair' }, timeoutMs);
    if (reply.t !== 'repair') throw new TallyError(ErrorCode.INTERNAL, `${address} answered a repair with '${reply.t}'`);
    return reply.repair;
  }

  /**
   * A ring change (`tally decommission`, `tally removenode`): `decommission` is sent to the node
   * that leaves; `removenode` to any live node, naming a dead one. Answers once it has begun, with
   * what happens next; `tally status` shows its progress.
   */
  async changeRing(address: string, op: 'decommission' | 'removenode', node?: string, timeoutMs = 10_000): Promise<string> {
    const reply = await this.request(address, node === undefined ? { t: 'move', op } : { t: 'move', op, node }, timeoutMs);
    if (reply.t !== 'move') throw new TallyError(ErrorCode.INTERNAL, `${address} answered a ${op} with '${reply.t}'`);
    return reply.message;
  }

  /** The replicas of `videoId`, in the order the client tries them: [id, address][]. */
  replicasOf(videoId: string): { id: string; address: string; up: boolean }[] {
    // A key no write would take (empty, too long, not valid UTF-8) has no replicas to name.
    checkName(videoId, 'videoId', MAX_VIDEO_ID_BYTES);
    const t = this.topology;
    if (t === undefined) return [];
    return replicaIdsOf(t, videoId).map((id) => ({ id, address: t.addresses.get(id) ?? '', up: t.up.has(id) }));
  }

  /** Fails what is queued and closes every connection. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.refreshTimer !== undefined) clearInterval(this.refreshTimer);
    this.flushTimer?.();
    this.flushTimer = undefined;
    const err = new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed');
    for (const b of this.writes.values()) for (const part of b.parts) this.settlePart(part, err);
    for (const b of this.reads.values()) for (const w of b.waiters) w.reject(err);
    this.writes.clear();
    this.reads.clear();
    for (const w of this.windows.values()) w.close(err);
    for (const wake of [...this.sleepers]) wake();
    for (const link of this.links.values()) {
      link.conn?.close();
      for (const w of link.slotWaiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    }
    this.links.clear();
    for (const conn of this.retiring) conn.close();
    this.retiring.clear();
  }

  // ---------------------------------------------------------------------------------------------
  // Topology and routing

  /** Asks a node for the members and ring; with `required`, fails if no listed node answers. */
  private async refreshTopology(required: boolean): Promise<void> {
    // Refreshes may overlap (a timer, a bye, an unreachable node): an answer to an earlier one
    // that comes after a later one's is older news, and is dropped.
    const asked = ++this.topologyAsked;
    let reply: Reply;
    try {
      reply = await this.askAnySeed({ t: 'topology' });
    } catch (err) {
      if (required) throw err;
      return;
    }
    if (reply.t !== 'topology' || asked < this.topologyApplied) return;
    this.topologyApplied = asked;
    this.applyTopology(reply.rf, reply.members);
  }

  private applyTopology(rf: number, members: readonly TopologyMember[]): void {
    const hash = this.hash64 as Hash64;
    const inRing = members.filter((m) => m.inRing);
    if (inRing.length === 0) return;
    const ring = new HashRing(inRing.map((m) => ({ id: m.id, zone: m.zone, tokens: tokensFor(hash, m.id, m.vnodes) })), hash);
    this.topology = {
      rf,
      ring,
      up: new Map(members.filter((m) => m.up).map((m) => [m.id, m.address])),
      addresses: new Map(members.map((m) => [m.id, m.address])),
      lists: [],
    };
    this.forgetDeparted(new Set([...members.map((m) => m.address), ...this.opts.nodes]));
  }

  /**
   * Drops what the client keeps per node (its link, its write window) for addresses that are
   * neither members nor listed, once nothing is in flight to them: a long-lived client of a
   * cluster whose members come and go (new addresses each time) keeps one entry per member, not
   * one per address it ever used. An idle connection to such an address is closed.
   */
  private forgetDeparted(known: ReadonlySet<string>): void {
    for (const [address, link] of this.links) {
      // inFlight counts every request awaiting a reply on its connection (see request()).
      if (known.has(address) || link.inFlight > 0 || link.slotWaiters.length > 0 || link.connecting !== undefined) continue;
      link.conn?.close();
      this.links.delete(address);
    }
    for (const [address, w] of this.windows) {
      if (!known.has(address) && w.inFlight === 0 && w.waitingEvents === 0) this.windows.delete(address);
    }
  }

  /** One request to the listed nodes in turn (then, but with `direct` routing, any member), until one answers. */
  private async askAnySeed(body: Outgoing): Promise<Reply> {
    const members = this.opts.routing === 'direct' ? [] : [...(this.topology?.up.values() ?? [])];
    const candidates = [...new Set([...this.opts.nodes.slice(this.seedIndex), ...this.opts.nodes.slice(0, this.seedIndex), ...members])];
    const errors: TallyError[] = [];
    for (const address of candidates) {
      try {
        return await this.request(address, body, Math.min(this.opts.timeoutMs, 5_000));
      } catch (err) {
        errors.push(asTallyError(err));
        this.seedIndex = (this.seedIndex + 1) % this.opts.nodes.length;
      }
    }
    if (errors.length === 1) throw errors[0] as TallyError;
    const codes = new Set(errors.map((e) => e.code));
    throw new TallyError(codes.size === 1 ? (errors[0] as TallyError).code : ErrorCode.UNAVAILABLE, `no node answered: ${errors.map((e) => e.message).join('; ')}`);
  }

  /** How long the node at `address` has answered nothing while requests await it. */
  private silentForMs(address: string, nowMs: number): number {
    return this.links.get(address)?.conn?.silentForMs(nowMs) ?? 0;
  }

  /** Whether new work may go to `address` now: connected or connectable, and not stuck. */
  private usable(address: string, nowMs: number): boolean {
    const link = this.links.get(address);
    if (link === undefined) return true;
    if (link.suspect) return false;
    if (nowMs < link.downUntilMs) return false;
    return (link.conn?.oldestPendingAgeMs(nowMs) ?? 0) < this.opts.slowAfterMs;
  }

  /** The node to send `videoId`'s work to: its first replica that is up and usable, else any replica, else a seed. */
  private route(videoId: string, avoid?: string): string {
    const t = this.topology;
    const now = Date.now();
    if (this.opts.routing === 'direct') {
      // The listed nodes in order: the first that is usable, else the first not to avoid.
      const listed = this.opts.nodes;
      return listed.find((a) => a !== avoid && this.usable(a, now)) ?? listed.find((a) => a !== avoid) ?? (listed[0] as string);
    }
    if (t !== undefined) {
      const replicas = replicaIdsOf(t, videoId);
      for (const id of replicas) {
        const address = t.up.get(id);
        if (address !== undefined && address !== avoid && this.usable(address, now)) return address;
      }
      for (const id of replicas) {
        const address = t.up.get(id) ?? t.addresses.get(id);
        if (address !== undefined && address !== avoid) return address;
      }
    }
    return this.opts.nodes[this.seedIndex % this.opts.nodes.length] as string;
  }

  /**
   * Another node for a read of `videoId` than those in `tried`: a responsive replica if one is
   * left, else any responsive member, else any member not tried yet.
   */
  private alternative(videoId: string, tried: ReadonlySet<string>): string | undefined {
    const t = this.topology;
    if (t === undefined || this.opts.routing === 'direct') return this.opts.nodes.find((a) => !tried.has(a));
    const now = Date.now();
    const replicas = replicaIdsOf(t, videoId).map((id) => t.up.get(id)).filter((a): a is string => a !== undefined);
    const candidates = [...replicas, ...t.up.values()].filter((a) => !tried.has(a));
    return candidates.find((a) => this.usable(a, now)) ?? candidates[0];
  }

  // ---------------------------------------------------------------------------------------------
  // Writes

  private write(events: EventTuple[], cl: Consistency): Promise<void> {
    if (this.closed) return Promise.reject(new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
    return new Promise<void>((resolve, reject) => {
      const call: Call = { entries: events.length, events: eventsIn(events), pendingFrames: 0, ackedEntries: 0, ackedEvents: 0, error: undefined, deadlineMs: Date.now() + this.opts.timeoutMs, resolve, reject };
      this.enqueueEvents(call, events, cl);
    });
  }

  /** Routes each event to its coordinator's pending frame for `cl`. */
  private enqueueEvents(call: Call, events: readonly EventTuple[], cl: Consistency, avoid?: string, refused?: TallyError): void {
    if (this.closed) {
      // Events routed again after close() (a refusal that slept through it): nothing of them was applied.
      const part: Part = { call, events: [...events] };
      call.pendingFrames += 1;
      return this.settlePart(part, new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
    }
    // This call's part of each frame its events joined: one per node, and one more each time a
    // frame fills up, so a short list, not a map made per call.
    const frames: WriteBatch[] = [];
    const parts: EventTuple[][] = [];
    for (const e of events) {
      const address = this.route(e[0], avoid);
      const key = `${address}|${cl}`;
      const bytes = Buffer.byteLength(e[0]) + Buffer.byteLength(e[1]) + EVENT_OVERHEAD_BYTES;
      let b = this.writes.get(key);
      if (b !== undefined && (b.events >= MAX_EVENTS_PER_FRAME || b.bytes + bytes > MAX_FRAME_BYTES - FRAME_MARGIN_BYTES)) {
        this.writes.delete(key);
        this.sendWrite(b, newBatchId(), 0);
        b = undefined;
      }
      if (b === undefined) {
        b = { address, cl, events: 0, bytes: 0, parts: [] };
        this.writes.set(key, b);
      }
      const at = frames.indexOf(b);
      let part = parts[at];
      if (part === undefined) {
        frames.push(b);
        parts.push((part = []));
        b.parts.push(refused === undefined ? { call, events: part } : { call, events: part, refused });
        call.pendingFrames += 1;
      }
      part.push(e);
      b.events += 1;
      b.bytes += bytes;
    }
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    this.flushTimer ??= this.linger(() => {
      this.flushTimer = undefined;
      const writes = [...this.writes.values()];
      const reads = [...this.reads.values()];
      this.writes.clear();
      this.reads.clear();
      for (const b of writes) this.sendWrite(b, newBatchId(), 0);
      for (const b of reads) this.sendRead(b);
    });
  }

  /**
   * Sends a write frame once its node's window has room (client/write-window.ts), and settles its
   * parts. Refused with nothing applied: OVERLOADED goes to the same node again after backoff (its
   * window has halved meanwhile); NOT_READY and UNAVAILABLE route its events again (new frames, new
   * batch ids), away from a node that could not be reached. Outcome unknown: the same frame goes to
   * the same node with the same batch id, until the calls' deadline.
   */
  private sendWrite(b: WriteBatch, batch: string, attempt: number, uncertain = false, actor?: string): void {
    if (this.closed) {
      // A retry that slept through close(): it ends here, as what close() failed.
      const closed = new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed');
      for (const part of b.parts) this.settlePart(part, uncertain ? unknownOutcome(closed) : closed);
      return;
    }
    const deadline = Math.min(...b.parts.map((p) => p.call.deadlineMs));
    const now = Date.now();
    if (deadline <= now) return this.expire(b, uncertain);
    const win = this.windowOf(b.address);
    win.admit(b.events, uncertain ? deadline : Math.min(deadline, now + this.opts.busyWaitMs), now, uncertain).then(
      () => this.sendAdmitted(b, batch, attempt, uncertain, actor, deadline, win),
      (err: unknown) => {
        const e = asTallyError(err);
        if (!uncertain && !this.closed && e instanceof NoRoom && this.silentForMs(b.address, Date.now()) >= this.opts.slowAfterMs && deadline - Date.now() > RETRY_BASE_MS) {
          // It waited its whole time behind frames the node does not answer at all (a frozen
          // process, a cut link): never sent, it goes to another replica if its keys have one, or
          // waits its turn here again, until the call's deadline.
          for (const part of b.parts) {
            part.call.pendingFrames -= 1;
            this.enqueueEvents(part.call, part.events, b.cl, b.address, e);
          }
          return;
        }
        for (const part of b.parts) this.settlePart(part, uncertain ? unknownOutcome(e) : e);
      },
    );
  }

  /** The calls' deadline passed before `b` could be sent (again). */
  private expire(b: WriteBatch, uncertain: boolean): void {
    for (const part of b.parts) {
      // A frame sent before may have been applied. One never sent, or only refused, was not: its
      // events fail with the last refusal, whose code says nothing was applied.
      const err =
        uncertain || part.refused === undefined
          ? new TallyError(ErrorCode.TIMEOUT, `the write was not acknowledged within ${this.opts.timeoutMs} ms; whether it was applied is unknown`)
          : new TallyError(part.refused.code, `the write was refused until its ${this.opts.timeoutMs} ms ran out, and nothing of it was applied (last: ${part.refused.message})`);
      this.settlePart(part, err);
    }
  }

  private sendAdmitted(b: WriteBatch, batch: string, attempt: number, uncertain: boolean, actor: string | undefined, deadline: number, win: WriteWindow): void {
    const sentAt = Date.now();
    if (deadline <= sentAt) {
      win.done(b.events, 'other', sentAt, sentAt);
      return this.expire(b, uncertain);
    }
    const events = b.parts.length === 1 ? (b.parts[0] as Part).events : b.parts.flatMap((p) => p.events);
    // The actor that took the first attempt: a retry goes only to it. A node whose data was wiped
    // since is a new actor that does not know this batch id, and could count it twice.
    let sentTo = actor;
    let actorChanged = false;
    const sameActor = (a: string | undefined): void => {
      if (sentTo !== undefined && a !== sentTo) {
        actorChanged = true;
        throw new TallyError(ErrorCode.TIMEOUT, `${b.address} is a new actor (${a ?? 'unknown'}, was ${sentTo}): its data was replaced, so it cannot tell whether it applied this batch; the outcome is unknown`);
      }
      sentTo = a;
    };
    this.request(b.address, { t: 'count', events, cl: b.cl, batch }, deadline - sentAt, undefined, sameActor)
      .then((reply) => {
        // Anything but an ack breaks the protocol: not taken as one (INTERNAL, outcome unknown).
        if (reply.t !== 'ack') throw new TallyError(ErrorCode.INTERNAL, `${b.address} answered a count with '${reply.t}'`);
      })
      .then(
        () => {
          win.done(b.events, 'ok', sentAt, Date.now());
          for (const part of b.parts) this.settlePart(part, undefined);
        },
        async (err: unknown) => {
          const e = asTallyError(err);
          win.done(b.events, e.code === ErrorCode.OVERLOADED ? 'overloaded' : 'other', sentAt, Date.now());
          if (this.closed) {
            for (const part of b.parts) this.settlePart(part, uncertain ? unknownOutcome(e) : e);
            return;
          }
          if (uncertain) {
            // An earlier attempt may have been applied: whatever this one says, only the same node
            // with the same batch id may take the frame again, and a final failure is "unknown".
            if (Date.now() < deadline - RETRY_BASE_MS && e.code !== ErrorCode.BAD_REQUEST && e.code !== ErrorCode.TOO_LARGE && !actorChanged) {
              await this.sleep(backoffMs(Math.min(attempt, 4)));
              this.sendWrite(b, batch, attempt + 1, true, sentTo);
              return;
            }
            // Said as "unknown" whichever way the attempts ended (the node's own words are kept in it).
            for (const part of b.parts) this.settlePart(part, unknownOutcome(e));
            return;
          }
          if ((e.code === ErrorCode.BAD_REQUEST || e.code === ErrorCode.TOO_LARGE) && b.parts.length > 1) {
            // Refused before any of it was applied, and it holds several calls: each call alone, so only the one at fault fails.
            for (const part of b.parts) this.sendWrite({ ...b, parts: [part], events: part.events.length }, newBatchId(), 0);
            return;
          }
          const timeLeft = deadline - Date.now() > RETRY_BASE_MS;
          if (NOTHING_APPLIED.has(e.code) && attempt < this.opts.maxRetries && timeLeft) {
            for (const part of b.parts) part.refused = e;
            await this.sleep(backoffMs(attempt));
            if (e.code === ErrorCode.OVERLOADED) {
              // The node is the right one, only busy: the same frame, once there is room.
              this.sendWrite(b, newBatchId(), attempt + 1);
              return;
            }
            if (e.code === ErrorCode.UNAVAILABLE) void this.refreshTopology(false);
            // Nothing was applied: route the events again, away from this node if it could not be reached.
            const avoid = e.code === ErrorCode.UNAVAILABLE ? b.address : undefined;
            for (const part of b.parts) {
              part.call.pendingFrames -= 1;
              this.enqueueEvents(part.call, part.events, b.cl, avoid, e);
            }
            return;
          }
          if (OUTCOME_UNKNOWN.has(e.code) && timeLeft) {
            // It may have been applied: only this node with this batch id may take it again.
            await this.sleep(backoffMs(Math.min(attempt, 4)));
            this.sendWrite(b, batch, attempt + 1, true, sentTo);
            return;
          }
          for (const part of b.parts) this.settlePart(part, e);
        },
      );
  }

  /** The refusal every node's write window would give a frame of `events` at once, if each would (see WriteWindow.refuses). */
  private busyEverywhere(events: number): TallyError | undefined {
    let refusal: TallyError | undefined;
    for (const w of this.windows.values()) {
      refusal = w.refuses(events);
      if (refusal === undefined) return undefined;
    }
    return refusal;
  }

  private windowOf(address: string): WriteWindow {
    let w = this.windows.get(address);
    if (w === undefined) this.windows.set(address, (w = new WriteWindow(address, WRITE_WINDOW)));
    return w;
  }

  /**
   * One frame holding part of a call was answered. Once all are, the call resolves, or fails with
   * the first error (the first of unknown outcome, if any is) — or with PARTIAL_WRITE when some of its events are durable and some are not,
   * since retrying the whole call would count the durable ones twice.
   */
  private settlePart(part: Part, err: TallyError | undefined): void {
    const call = part.call;
    if (call.pendingFrames === 0) return;
    call.pendingFrames -= 1;
    if (err === undefined) {
      call.ackedEntries += part.events.length;
      call.ackedEvents += eventsIn(part.events);
    }
    // A frame that may have been applied outranks one refused with nothing applied: the call's
    // error must not say "nothing applied" of events that may count.
    else if (call.error === undefined || (!OUTCOME_UNKNOWN.has(call.error.code) && OUTCOME_UNKNOWN.has(err.code))) call.error = err;
    if (call.pendingFrames > 0) return;
    if (call.error === undefined) call.resolve();
    else if (call.ackedEntries === 0) call.reject(call.error);
    else {
      call.reject(
        new TallyError(
          ErrorCode.PARTIAL_WRITE,
          (call.events === call.entries
            ? `${call.ackedEvents} of ${call.events} events are durable`
            : `${call.ackedEntries} of ${call.entries} entries (${call.ackedEvents} of ${call.events} events, by their counts) are durable`) +
            `, the rest failed (${call.error.code}: ${call.error.message}); ` +
            'retrying the whole call would count the durable ones twice',
          { cause: call.error },
        ),
      );
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  private read(q: QueryTuple, cl: Consistency): Promise<{ stats: StatsTuple; answered: [number, number] | undefined }> {
    if (this.closed) return Promise.reject(new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
    return new Promise((resolve, reject) => {
      const address = this.route(q[0]);
      const key = `${address}|${cl}`;
      let b = this.reads.get(key);
      if (b !== undefined && b.waiters.length >= MAX_QUERIES_PER_GET) {
        this.reads.delete(key);
        this.sendRead(b);
        b = undefined;
      }
      if (b === undefined) this.reads.set(key, (b = { address, cl, waiters: [] }));
      b.waiters.push({ query: q, deadlineMs: Date.now() + this.opts.timeoutMs, resolve: (stats, answered) => resolve({ stats, answered }), reject });
      this.scheduleFlush();
    });
  }

  /**
   * Sends a get to its node; if no answer comes within `readHedgeMs`, or the node fails, asks
   * another (reads are idempotent), until one answers or the deadline passes.
   */
  private sendRead(b: ReadBatch): void {
    const queries = b.waiters.map((w) => w.query);
    const deadline = Math.min(...b.waiters.map((w) => w.deadlineMs));
    const tried = new Set<string>();
    let settled = false;
    let outstanding = 0;
    let lastError: TallyError | undefined;
    let attempts = 0;
    const finish = (stats: StatsTuple[] | undefined, err?: TallyError, answered?: [number, number][]): void => {
      if (settled) return;
      settled = true;
      clearInterval(hedge);
      b.waiters.forEach((w, i) => (stats === undefined ? w.reject(err as TallyError) : w.resolve(stats[i] as StatsTuple, answered?.[i])));
    };
    const ask = (address: string): void => {
      tried.add(address);
      outstanding++;
      attempts++;
      this.request(address, { t: 'get', queries, cl: b.cl }, Math.max(1, deadline - Date.now()), queries.length).then(
        (reply) => (reply.t === 'result' ? finish(reply.stats, undefined, reply.answered) : finish(undefined, new TallyError(ErrorCode.INTERNAL, 'unexpected reply to a read'))),
        async (err: unknown) => {
          outstanding--;
          lastError = asTallyError(err);
          if (settled) return;
          if (this.closed) return finish(undefined, new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
          const retryable = NOTHING_APPLIED.has(lastError.code) || OUTCOME_UNKNOWN.has(lastError.code);
          if (!retryable || attempts > this.opts.maxRetries || Date.now() >= deadline) {
            if (outstanding === 0) finish(undefined, lastError);
            return;
          }
          if (lastError.code === ErrorCode.OVERLOADED || lastError.code === ErrorCode.NOT_READY) await this.sleep(backoffMs(attempts));
          if (settled) return;
          if (this.closed) return finish(undefined, new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
          const next = this.alternative(queries[0]?.[0] ?? '', tried) ?? address;
          ask(next);
        },
      );
    };
    // A read not answered in time is also asked of another node, and again each `readHedgeMs`
    // while nodes are left; the first answer wins. A node that left it unanswered is suspect.
    let last = b.address;
    const hedge = setInterval(() => {
      if (settled) return;
      const link = this.links.get(last);
      if (link !== undefined) link.suspect = true;
      const next = this.alternative(queries[0]?.[0] ?? '', tried);
      if (next === undefined) return clearInterval(hedge);
      last = next;
      ask(next);
    }, this.opts.readHedgeMs);
    ask(b.address);
  }

  // ---------------------------------------------------------------------------------------------
  // Connections

  /**
   * One request to one node, over its connection (opened if need be), ended within `timeoutMs`
   * from now, the wait for the connection and for a place among the node's requests included; at
   * most MAX_PENDING_PER_CONNECTION await replies from one node. Not sent in time, it fails with a
   * code that says nothing was applied (UNAVAILABLE, OVERLOADED). `onActor` is told the actor the
   * node welcomed us as, before anything is sent; it may refuse (throw) to stop the request there.
   */
  private async request(address: string, body: Outgoing, timeoutMs: number, queries?: number, onActor?: (actor: string | undefined) => void): Promise<Reply> {
    const deadlineMs = Date.now() + timeoutMs;
    const conn = await this.within(this.connection(address), deadlineMs, () => new TallyError(ErrorCode.UNAVAILABLE, `cannot connect to ${address} within ${timeoutMs} ms; the request was not sent, nothing was applied`));
    onActor?.(conn.welcome.actor);
    const link = this.links.get(address);
    if (link === undefined) {
      // Closed, or forgotten as a departed member (forgetDeparted) just as it connected: not sent.
      if (this.closed) throw new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed');
      throw new TallyError(ErrorCode.UNAVAILABLE, `${address} is no longer a member; the request was not sent, nothing was applied`);
    }
    await this.acquireSlot(link, deadlineMs);
    try {
      const left = deadlineMs - Date.now();
      if (left <= 0) throw new TallyError(ErrorCode.OVERLOADED, `no place among the requests awaiting ${address} within ${timeoutMs} ms; the request was not sent, nothing was applied`);
      return await conn.request(body, left, queries);
    } finally {
      // It answered, or the request ended without an answer (a frozen node's requests time out
      // one by one, and its oldest unanswered keeps new work away meanwhile: see usable()).
      link.suspect = false;
      this.releaseSlot(link);
    }
  }

  /** `p`, or `late()` once `deadlineMs` passes first. */
  private within<T>(p: Promise<T>, deadlineMs: number, late: () => TallyError): Promise<T> {
    const left = deadlineMs - Date.now();
    if (left <= 0) {
      p.catch(() => {});
      return Promise.reject(late());
    }
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(late()), left);
      p.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  private connection(address: string): Promise<Connection> {
    if (this.closed) return Promise.reject(new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
    let link = this.links.get(address);
    if (link === undefined) {
      link = { address, conn: undefined, connecting: undefined, downUntilMs: 0, failures: 0, suspect: false, inFlight: 0, slotWaiters: [] };
      this.links.set(address, link);
    }
    if (link.conn?.isOpen === true) return Promise.resolve(link.conn);
    const l = link;
    // A connection the node said bye on still awaits its last replies; close() closes it too.
    if (l.conn !== undefined && !l.conn.isClosed) this.retiring.add(l.conn);
    l.conn = undefined;
    l.connecting ??= Connection.open(address, this.opts.connectTimeoutMs, this.opts.auth)
      .then(
        (conn) => {
          if (this.closed) {
            conn.close();
            throw new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed');
          }
          l.conn = conn;
          // A node that says it is stopping may be leaving the ring: learn where its keys go.
          conn.onBye = () => void this.refreshTopology(false).catch(() => {});
          conn.onClose = () => this.retiring.delete(conn);
          l.failures = 0;
          l.downUntilMs = 0;
          return conn;
        },
        (err: unknown) => {
          l.failures += 1;
          l.downUntilMs = Date.now() + Math.min(2_000, RETRY_BASE_MS * 2 ** l.failures);
          const e = asTallyError(err);
          // Nothing was sent: for the caller that is "unavailable", whatever the cause, unless retrying cannot help.
          throw e.code === ErrorCode.VERSION_MISMATCH || e.code === ErrorCode.UNAUTHORIZED ? e : new TallyError(ErrorCode.UNAVAILABLE, e.message, { cause: e });
        },
      )
      .finally(() => {
        l.connecting = undefined;
      });
    return l.connecting;
  }

  /**
   * Runs `flush` once calls have had a chance to join the frame, and returns a cancel function.
   * With nothing in flight the frame leaves at the end of this turn of the event loop (calls made
   * together still share it, and a lone call pays no linger); under load it waits `lingerMs`, so
   * frames fill up while earlier ones are answered.
   */
  private linger(flush: () => void): () => void {
    if (this.inFlight === 0) {
      const t = setImmediate(flush);
      return () => clearImmediate(t);
    }
    const t = setTimeout(flush, this.opts.lingerMs);
    return () => clearTimeout(t);
  }

  /** A retry's backoff: `ms`, or until close(). */
  private sleep(ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  /** A place among the requests awaiting `link`'s node, waited for until `deadlineMs`. */
  private acquireSlot(link: Link, deadlineMs: number): Promise<void> {
    if (link.inFlight < MAX_PENDING_PER_CONNECTION) {
      link.inFlight += 1;
      this.inFlight += 1;
      return Promise.resolve();
    }
    const notSent = (why: string): TallyError =>
      new TallyError(ErrorCode.OVERLOADED, `${MAX_PENDING_PER_CONNECTION} requests await replies from ${link.address} and ${link.slotWaiters.length} more wait to be sent; ${why}; the request was not sent, nothing was applied`);
    if (link.slotWaiters.length >= MAX_SLOT_WAITERS) return Promise.reject(notSent('no more may wait'));
    return new Promise<void>((resolve, reject) => {
      const waiter: SlotWaiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = link.slotWaiters.indexOf(waiter);
          if (i >= 0) link.slotWaiters.splice(i, 1);
          reject(notSent("none was free within the call's time"));
        }, Math.max(0, deadlineMs - Date.now())),
      };
      link.slotWaiters.push(waiter);
    });
  }

  /** A request to `link`'s node ended: its place goes to the next waiting, if one is. */
  private releaseSlot(link: Link): void {
    const next = link.slotWaiters.shift();
    if (next !== undefined) {
      clearTimeout(next.timer);
      next.resolve();
      return;
    }
    link.inFlight -= 1;
    this.inFlight -= 1;
  }
}
