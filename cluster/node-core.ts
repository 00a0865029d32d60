/**
 * The whole of one node's logic, without I/O: membership, the ring, the write and read
 * coordinators, the replica side of both, group commit, hints, read repair, batch dedupe, and the
 * rebuild of a node that starts on an empty store (its peers send it its ranges before reads count
 * it).
 *
 * Its one entry is `step(input, nowMs)`, in the shape of etcd-io/raft's `Step`/`Ready`: an input
 * (a client request, a peer message, a store result, a tick) goes in; out comes a `Ready` of what
 * to persist, what to load or scan from the store, what to send, what to answer, and when to step
 * again. The core sends only what is already durable: slots are shipped to replicas, and replicas
 * acknowledge, only when the `persisted` input says the commit holding them is in the store. So a
 * driver may carry out a Ready's parts in any order. One driver (node/driver.ts) runs it on real
 * sockets, LevelDB and one timer; the simulator (test/sim/) runs the same core on a simulated
 * network, store and clock.
 *
 * Writes: the coordinator (a replica of the key) adds the events to its own slot of each bucket,
 * commits, then sends the slots' new absolute values to the other replicas, batched per peer per
 * commit; the write is acknowledged once W replicas hold it durably. A replica that is down, or
 * does not acknowledge in time, gets a hint: "this bucket is dirty for node X", kept durably,
 * coalesced per bucket, replayed as the bucket's current state once X is up. Because slots are
 * absolute and merged by a join, every send, hint and repair may repeat.
 * Reads: the coordinator asks R replicas for every slot of the query's buckets, joins them per
 * slot, sums, and sends each replica that was behind what it missed (read repair; for `quorum` and
 * `all` the answer waits for those repairs, so no later read at that level sees less). A replica
 * slower than `speculativeRetryMs` is joined by another.
 * Anti-entropy: every `repairIntervalMs` a node compares hash trees with its next peer over the keys
 * they share and each sends the other the slots under the leaves that differ (cluster/anti-entropy.ts),
 * healing what hints and read repair missed: a hint lost with a wiped disk, a key nobody reads.
 * Not here: sockets, LevelDB, timers, the clock, the generation (the driver passes it), key layout.
 */
import { assert, ErrorCode } from '../protocol/errors.js';
import { Lifecycle } from '../protocol/gossip.js';
import type { Hash64 } from '../protocol/hash-ring.js';
import { Consistency, eventsIn, type EventTuple, type QueryTuple, type RepairSummary, type StatsTuple } from '../protocol/messages.js';
import {
  AE_BRANCHES_PER_MESSAGE,
  MAX_BUCKETS_PER_READ,
  MAX_SLOTS_PER_MESSAGE,
  MAX_SPANS_PER_READ,
  PeerMessageType,
  type DataMessage,
  type PeerMessage,
  type SlotRecord,
  type SpanSlot,
  type SpanTuple,
} from '../protocol/peer.js';
import { encodeFrame } from '../protocol/codec.js';
import { differingBranches, differingLeaves, leafOf, MerkleTree, slotHash } from './anti-entropy.js';
import { checkEvents, DAMAGED, foldEvents, type Slot } from './bucket-state.js';
import type { MembershipConfig } from './membership-config.js';
import { Membership, type KnownPeer, type MemberView, type MembershipEffect } from './membership.js';
import type { Rng } from './prng.js';
import { HintTable } from './hint-table.js';
import { halveRead, mergeRead, planSpans } from './read-plan.js';
import { replicasNeeded, type ReplicationConfig } from './replication-config.js';
import { answerableRange, describeRetention, expiryCutoff, isExpired } from './retention.js';
import { noStarts, WrittenFilter, WRITTEN_FILTER_BYTES, type StartsByResolution } from './written-filter.js';
import { CommitSlots, idOf, SlotTable, type BucketRef, type SlotEntry, type SlotKey } from './slot-table.js';
import { bucketStart, RESOLUTION_MS, RESOLUTIONS_OF_EVENT, type Resolution } from './time-buckets.js';

/** Who gets the answer of a write or read: a client request (by the driver's handle) or a peer's forward. */
export type ReplyTo = { client: number } | { peer: string; id: number };

export type CoreInput =
  | { kind: 'tick' }
  | { kind: 'write'; req: number; events: EventTuple[]; cl: Consistency; batch?: string }
  | { kind: 'read'; req: number; queries: QueryTuple[]; cl: Consistency }
  /** `tally repair`: compare with every peer now, one after another; answered with the round's figures. */
  | { kind: 'repair'; req: number }
  /** `tally decommission` (this node leaves the ring for good) or `tally removenode <node>`: answered once it has begun. */
  | { kind: 'move'; req: number; op: 'decommission' | 'removenode'; node?: string }
  /** A validated message from peer `from` (the id its authenticated hello named). */
  | { kind: 'peer'; from: string; msg: PeerMessage }
  /** Our connection to `peer` dropped, or could not be opened. */
  | { kind: 'connectionLost'; peer: string }
  /** A message the transport dropped instead of sending. */
  | { kind: 'sendFailed'; to: string; msg: PeerMessage }
  /** The result of a `loads` entry: each key's stored slot, in order (undefined: none stored). */
  | { kind: 'loaded'; load: number; slots: (Slot | undefined | typeof DAMAGED)[] }
  | { kind: 'loadFailed'; load: number; message: string; code?: ErrorCode }
  /** The result of a `scans` entry: every stored slot in its spans. */
  | { kind: 'scanned'; scan: number; slots: SpanSlot[] }
  | { kind: 'scanFailed'; scan: number; message: string; code?: ErrorCode }
  /** The result of a `walks` entry: the next stored slots in key order, and where to go on (undefined: the end). */
  | { kind: 'walked'; walk: number; entries: SlotEntry[]; next: string | undefined }
  | { kind: 'walkFailed'; walk: number; message: string }
  | { kind: 'persisted'; persist: number }
  | { kind: 'persistFailed'; persist: number; message: string; code?: ErrorCode };

export interface BatchRecord {
  batch: string;
  atMs: number;
  /** A forward record: per replica list (ids joined by commas), the actor of the replica the batch's events for it went to. */
  forwardedTo?: [replicas: string, targetActor: string][];
  /** The topology checksum when the batch was first taken: a retry on another ring cannot be told from a new batch. */
  ring?: string;
}

/** The key a batch record is kept under: forward records apart (batch ids hold no spaces). */
export function batchRecordKey(r: { batch: string; forwardedTo?: unknown }): string {
  return r.forwardedTo === undefined ? r.batch : `${r.batch} >`;
}

export interface JournalRecord {
  key: string;
  refs: BucketRef[];
}

export interface HintRecord {
  node: string;
  ref: BucketRef;
  atMs: number;
}

/** One atomic store batch: slots, hints and batch ids together, so none is durable without the others. */
export interface PersistBatch {
  id: number;
  slots: CommitSlots;
  hintsPut: HintRecord[];
  hintsDelete: { node: string; ref: BucketRef }[];
  /** Applied batch ids; with `forwardedTo`, a batch this node sent on, and to which replicas. */
  batchesPut: BatchRecord[];
  /** Keys of `batchesPut` records: the batch id, or `${id} >` for a forward record. */
  batchesDelete: string[];
  /**
   * The buckets whose own slots this commit changes, kept until every other replica has them or a
   * hint for them: a node that dies between its commit and its sends (or before a frozen peer's
   * timeout) turns them into hints when it starts again, so no replica misses them for good.
   */
  journalPut: JournalRecord[];
  journalDelete: string[];
  /**
   * Per resolution, the newest bucket start of any slot the store will hold once this commit is
   * durable, when it grew: kept with the commit, so a restarted node knows which buckets its store
   * cannot hold yet (see cluster/written-filter.ts).
   */
  written?: StartsByResolution;
  sync: boolean;
  /**
   * Made while an earlier commit was still being written: its slots' values may hold that
   * commit's events, whose batch ids went with that commit. So it is written only if that one was
   * (the store fails it otherwise, with that one's error): were it to land alone, a crash would
   * leave events on disk whose batch ids are not, and a client's retry would count them twice.
   */
  afterInFlight: boolean;
}

export type CoreReply =
  | {
      ok: true;
      n?: number;
      stats?: StatsTuple[];
      /** Set when retention moved an edge of some query: per query, the `[from, to)` it was answered over. */
      answered?: [number, number][];
      repair?: RepairRound;
      moved?: string;
    }
  | { ok: false; code: ErrorCode; message: string };

export interface Ready {
  /** At most one commit is under way; the next comes after its `persisted`. */
  persist: PersistBatch | undefined;
  loads: { id: number; keys: SlotKey[] }[];
  scans: { id: number; spans: SpanTuple[] }[];
  /** Walks of the whole store in key order, from after `after`, at most `limit` slots (to rebuild a peer). */
  walks: { id: number; after: string | undefined; limit: number }[];
  /** Delete every slot of `res` whose UTC day ended at or before `cutoffMs` (retention.ts): its buckets have expired. */
  expire: { res: 'm' | 'h'; cutoffMs: number }[];
  send: { to: string; address: string; msg: PeerMessage }[];
  replies: { req: number; reply: CoreReply }[];
  /** Addresses of members that came up: keep a link open to each. */
  connect: string[];
  /** The ring's members changed: keep these for the next start (see MembershipInit.knownPeers). */
  knownPeers: KnownPeer[] | undefined;
  /** This node has been sent all its ranges: keep that, so a restart does not rebuild again, nor stop rebuilding before this. */
  rebuilt: boolean;
  /** This node's actor is off the ring for good (decommissioned, or removed by a peer): why. Record it and stop. */
  removed: string | undefined;
  log: string[];
  /** Step again (with a tick) at this time at the latest. */
  deadlineMs: number;
}

export interface NodeCoreInit {
  self: { id: string; address: string; zone: string };
  actor: string;
  membership: MembershipConfig;
  replication: ReplicationConfig;
  rng: Rng;
  hash64: Hash64;
  nowMs: number;
  generation: number;
  bootstrapped: boolean;
  /** The other members known when the node last ran. */
  knownPeers?: readonly KnownPeer[];
  /** The node starts on an empty store and joins a cluster that may hold data: it must be sent its ranges. */
  rebuilding?: boolean;
  /** Hints and applied batch ids found in the store at start. */
  hints?: readonly HintRecord[];
  batches?: readonly BatchRecord[];
  /** Replication journal records found in the store at start (see PersistBatch.journalPut). */
  journal?: readonly JournalRecord[];
  /**
   * Per resolution, the newest bucket start the store may hold (PersistBatch.written as last kept).
   * Unknown: every bucket may be stored, so every slot not in memory is read before it changes.
   */
  writtenBefore?: StartsByResolution;
}

/** How often a peer that finished sending a rebuilding node its ranges says so again while it still rebuilds. */
const STREAM_DONE_REPEAT_MS = 1_000;
/** A decommissioned node stops once every live peer knows it left, or after this long. */
const DECOMMISSION_ANNOUNCE_MS = 10_000;
/** Most forwards remembered per generation (see NodeCore.forwardsTaken): ~1 MB of keys. */
const MAX_FORWARDS_REMEMBERED = 20_000;

/** Slots read from the store per page of a walk (a rebuild, a repair). */
const STREAM_PAGE_SLOTS = 4_096;
/**
 * Pages a stream sends ahead of their acknowledgements: one page at a time left the link idle
 * while the receiver committed (~24,000 slots/s); four keep it busy within the per-peer bound.
 */
const STREAM_PAGES_IN_FLIGHT = 4;
/** Repair sessions started by other nodes that this node takes part in at once (each holds a 512 KB tree). */
const MAX_INBOUND_REPAIRS = 2;
/**
 * A repair session that has not moved on for this long is given up (its peer died, restarted or is
 * cut off). Both sides walk at the same pace, but their stores may differ in size many times over
 * (a node that lost most of its keys, one that holds ranges it no longer replicates), so a side
 * still walking says so every REPAIR_PROGRESS_MS, and the other waits on.
 */
const REPAIR_IDLE_TIMEOUT_MS = 10_000;
/** How often a side still walking its store tells the other it is (well within REPAIR_IDLE_TIMEOUT_MS). */
const REPAIR_PROGRESS_MS = 2_500;
/**
 * On-demand repair rounds (`tally repair`) a node holds at once, the one under way included; one
 * more is refused OVERLOADED. Each compares with every peer, one after another, so more would
 * only wait, holding their callers, long after those gave up.
 */
export const MAX_REPAIR_ROUNDS = 4;
/** An on-demand round asks a busy peer again after this long, this many times at most (a minute). */
const BUSY_RETRY_MS = 250;
const MAX_BUSY_RETRIES = 240;
/** Own damaged slots remembered, at most; past it the disk is not trusted and every write is refused. */
const MAX_DAMAGED_OWN = 10_000;
/**
 * Group commits under way at once: the next is made while the last is written and synced. The
 * store writes them one after another, in order (a later commit's slots hold at least the earlier
 * one's values, so written out of order they could lower a slot on disk).
 */
const MAX_COMMITS_IN_FLIGHT = 2;
/** Hint puts, hint deletes and journal deletes a commit takes at most, each (the store takes 200,000 entries a commit). */
const MAX_HINT_OPS_PER_COMMIT = 40_000;

/** `first` then `rest`, as a new array, without spreading either into a call. */
function prepend<T>(first: readonly T[], rest: readonly T[]): T[] {
  const out: T[] = [];
  for (const x of first) out.push(x);
  for (const x of rest) out.push(x);
  return out;
}

/** After a failed commit the next one waits this long, doubling up to the most. */
const MIN_COMMIT_BACKOFF_MS = 50;
const MAX_COMMIT_BACKOFF_MS = 1_000;
/** How often timeouts and speculative retries are looked at while requests are in flight. */
const TIMER_RESOLUTION_MS = 5;
/** Replica lists remembered per ring (one per video id seen lately). */
const MAX_CACHED_PLACEMENTS = 100_000;
/** Bytes of a replication message at most, estimated; frames are 1 MiB. */
const MAX_REPL_MESSAGE_BYTES = 512 * 1024;
/** msgpack overhead of a slot record besides its strings. */
const SLOT_RECORD_OVERHEAD_BYTES = 48;

/** Codes of failures after which nothing of the request was applied. */
const NOTHING_APPLIED: ReadonlySet<ErrorCode> = new Set([ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED, ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE, ErrorCode.NOT_READY]);

type Outcome = { ok: true; n: number } | { ok: false; code: ErrorCode; message: string };

/** A client write as received: its local part and the parts forwarded to other replicas. */
interface WriteRequest {
  replyTo: ReplyTo;
  events: number;
  /** Event tuples in it (the work it brings, whatever their counts). */
  tuples: number;
  parts: number;
  outcomes: Outcome[];
}

/** An own slot a write adds to, and what it adds. */
interface SlotDelta {
  key: SlotKey;
  delta: Slot;
}

/** The part of a write this node coordinates as a replica. */
interface WriteOp {
  request: WriteRequest;
  /** Own slots it changes (or, for a repeated batch, rewrites). */
  keys: SlotKey[];
  deltas: SlotDelta[];
  batch: string | undefined;
  /** The topology checksum it was placed under. */
  ring: string;
  need: number;
  /** The distinct replica lists of its keys; each must have `need` replicas holding it. */
  groups: string[][];
  acked: Set<string>;
  deadlineMs: number;
  n: number;
  done: boolean;
  /** Its events are in our slots (or, repeated, its slots are marked to be written again): it waits on commits and acks only. */
  applied?: boolean;
}

/**
 * One peer of a commit being replicated: messages not yet acknowledged; `failed` once one of them
 * failed (its slots hinted); `partial` when some of the commit's slots for it were hinted at once
 * for want of room. Either way it counts for none of the commit's writes, but the commit's journal
 * record stays until its sent messages are acknowledged or fail.
 */
interface ReplPeer {
  left: number;
  failed: boolean;
  partial: boolean;
}

interface ReadQuery {
  /**
   * Every replica, in the order to ask them: those usable when the read began first. One that is
   * down or rebuilding is asked only once it is usable (a node restarted a moment ago may be marked
   * down for a second and be back while the read still waits).
   */
  replicas: string[];
  /** The lists a quorum is needed of (see Placement.groups). */
  groups: string[][];
  spans: SpanTuple[];
  asked: string[];
  /** Per replica: messages still to come back, and what came. */
  pending: Map<string, number>;
  slots: Map<string, SpanSlot[]>;
  complete: string[];
  /** Replicas that answered with an error. */
  failed: Set<string>;
}

interface ReadOp {
  replyTo: ReplyTo;
  need: number;
  queries: ReadQuery[];
  /** Per query, the range answered, when retention moved an edge of any. */
  answered: [number, number][] | undefined;
  deadlineMs: number;
  speculateAtMs: number;
  repairsPending: number;
  stats: StatsTuple[] | undefined;
  done: boolean;
}

/**
 * A replication message awaiting its ack. Past `deadlineMs` (replAckTimeoutMs after sending) it
 * fails and its slots are hinted, except that a commit's or hint replay's message to a peer the
 * failure detector still holds up is waited for again, up to replAckMaxWaitMs after `sentMs`.
 */
type ReplOut = { peer: string; sentMs: number; deadlineMs: number } & (
  | { kind: 'commit'; commit: number; refs: BucketRef[] }
  | { kind: 'hint'; round: { left: number; hints: { key: string; seq: number }[] } }
  | { kind: 'repair'; op: ReadOp }
  | { kind: 'stream'; page: StreamPage }
);

/** A page of a stream whose messages are not all acknowledged yet. */
interface StreamPage {
  job: StreamJob;
  /** The job's generation when it was sent: after a failure the job starts again, and older pages are void. */
  gen: number;
  /** Where its walk started: a failure starts the stream again from the oldest page not acknowledged. */
  startAfter: string | undefined;
  left: number;
}

/** A walk of the whole store whose slots that pass `filter` go to `peer`, a page at a time (see runStream). */
class StreamJob {
  /** Where the next page is walked from. */
  after: string | undefined = undefined;
  /** Under way: a page being walked or pages not yet acknowledged. */
  busy = false;
  walking = false;
  /** The walk has reached the end of the store. */
  walkDone = false;
  /** Pages sent, not yet acknowledged, in walk order (at most STREAM_PAGES_IN_FLIGHT). */
  readonly pending: StreamPage[] = [];
  gen = 0;
  finished = false;
  cancelled = false;
  nextPageMs = 0;
  touchedMs = 0;
  slots = 0;
  bytes = 0;

  constructor(
    readonly peer: string,
    readonly filter: (e: SlotEntry) => boolean,
    /** Slots walked per second at most; 0: as fast as the peer acknowledges. */
    readonly slotsPerSecond: number,
    readonly onDone: () => void,
    /** A page was not acknowledged; `busy` is false again. */
    readonly onFail: () => void,
    /** Counted in the node's repair figures. */
    readonly repair: boolean,
  ) {}

  cancel(): void {
    this.cancelled = true;
  }
}

/** One anti-entropy comparison with one peer, on either side. */
interface RepairSession {
  peer: string;
  /** The initiator's id for it. */
  id: number;
  initiator: boolean;
  tree: MerkleTree;
  /** This side's walk is done: `tree` holds everything it shares with the peer. */
  hashed: boolean;
  /** The initiator: the peer's branch hashes, once they came. */
  theirs: number[] | undefined;
  /**
   * The initiator: the branches of the `ae-leaves` sent and not yet answered. A reply counts once,
   * however often the network delivers it.
   */
  awaiting: Set<number>;
  /** The initiator: the `last` branches, sent once every other `ae-leaves` is answered. */
  lastBranches: number[] | undefined;
  leaves: Set<number>;
  push: StreamJob | undefined;
  deadlineMs: number;
  round: RepairRoundState | undefined;
  ended: boolean;
}

/** An on-demand round under way: peers still to compare with, a peer that was busy retried a little later. */
interface RepairRoundState {
  queue: string[];
  round: RepairRound;
  done: (r: RepairRound) => void;
  notBeforeMs: number;
  retries: number;
}

/** What one on-demand repair round (`tally repair`) did: a session with each peer. */
export type RepairRound = RepairSummary;

interface Commit {
  id: number;
  slots: CommitSlots;
  ops: WriteOp[];
  /** Incoming replications (and local repairs) to acknowledge once durable. */
  acks: { peer: string; id: number }[];
  forwards: { request: WriteRequest; to: string; msg: DataMessage & { t: 'fwd' } }[];
  localRepairs: ReadOp[];
  batch: PersistBatch;
}


/**
 * A key's replicas. While members leave the ring for good, a key whose replicas change has two
 * groups, those on the ring now and those on the ring without the leavers, and every read and
 * write needs a quorum of each (joint quorums, as in Raft's joint consensus): a coordinator that
 * has not heard of the change yet and one that has seen it finish both meet every such quorum.
 * While a new member is sent its ranges, a write also needs a quorum of the replicas the key had
 * without it (`prior`), where a coordinator that has not heard of it yet reads.
 */
interface Placement {
  /** On the ring as it is. */
  natural: string[];
  /** Each list a read and a write needs a quorum of: `[natural]`, or `[natural, without the leavers]`. */
  groups: string[][];
  /** While members rebuild: the replicas on the ring without them, if they differ (see above). */
  prior: string[] | undefined;
  /** Every replica of any group or of `prior`, natural first: where a write goes. */
  all: string[];
  /** Replicas the key moves to: in the second group but not the first. */
  gaining: string[];
}

/** The lists a write needs `need` replicas of: the groups, and `prior` when it can hold that many. */
function writeGroups(p: Placement, need: number): string[][] {
  return p.prior !== undefined && p.prior.length >= need ? [...p.groups, p.prior] : p.groups;
}

/** A ring change under way (members leaving for good), as this node takes part in it. */
interface MoveState {
  /** The sorted ids leaving (`Membership.leavers`), `@` the checksum of the ring they leave. */
  key: string;
  /** Per new replica: the stream of what it gains from this node's store. */
  streams: Map<string, StreamJob>;
  /** The streams are made (none, when no other member gains anything: this node is done at once). */
  streaming: boolean;
  /** Every stream is done: when the word went to the node driving the change. */
  doneSentMs: number;
  /** At the node driving it: the members that have sent everything they hold of the moving ranges. */
  doneFrom: Set<string>;
  /** When the driver took the leavers off the ring; the change is over once every peer agrees. */
  finishedMs: number | undefined;
  waitingLogged: string;
}

export interface CoreStats {
  rf: number;
  hints: Record<string, { pending: number; dropped: number; expired: number }>;
  writes: { inFlight: number; acked: number; failed: number; timedOut: number };
  reads: { inFlight: number; served: number; speculative: number; repairs: number; timedOut: number };
  replication: { sent: number; acked: number; hinted: number; received: number };
  commits: { commits: number; slotsWritten: number; failed: number };
  dedupe: { entries: number; repeats: number };
  slots: { cached: number; dirty: number; loaded: number; knownAbsent: number; filterBytes: number };
  /** Anti-entropy sessions this node started, and what all sessions it took part in sent. */
  repair: Omit<RepairSummary, 'peers'> & { running: number };
  /** Members leaving the ring for good, and this node's streams of their ranges to the new replicas. */
  ringChange: { leaving: string[]; streams: Record<string, { slots: number; bytes: number; done: boolean }>; doneFrom: string[] } | undefined;
}

function emptyReady(): Ready {
  return { persist: undefined, loads: [], scans: [], walks: [], expire: [], send: [], replies: [], connect: [], knownPeers: undefined, rebuilt: false, removed: undefined, log: [], deadlineMs: Number.POSITIVE_INFINITY };
}

function spanOf(ref: BucketRef): SpanTuple {
  return [ref.videoId, ref.eventType, ref.res, ref.start, ref.start + RESOLUTION_MS[ref.res]];
}

function slotRecord(e: SlotEntry): SlotRecord {
  return [e.ref.videoId, e.ref.eventType, e.ref.res, e.ref.start, e.actor, e.slot.count, e.slot.sum, e.slot.min, e.slot.max];
}

function fromRecord(r: SlotRecord): SlotEntry {
  return { ref: { videoId: r[0], eventType: r[1], res: r[2], start: r[3] }, actor: r[4], slot: { count: r[5], sum: r[6], min: r[7], max: r[8] } };
}

/** Every group of the query's key has `need` replicas that answered it. */
function readSatisfied(q: ReadQuery, need: number): boolean {
  return q.groups.every((g) => g.filter((r) => q.complete.includes(r)).length >= need);
}

function failure(code: ErrorCode, message: string): Outcome {
  return { ok: false, code, message };
}

export class NodeCore {
  readonly membership: Membership;
  readonly actor: string;
  private readonly id: string;
  private readonly cfg: ReplicationConfig;
  private readonly tickIntervalMs: number;
  private readonly memberExpiryMs: number;
  private readonly table = new SlotTable();
  private readonly writtenFilter: WrittenFilter;
  /** Per resolution, the newest bucket start handed to a commit, and the newest kept durably. */
  private readonly writtenMax: StartsByResolution;
  private writtenKept: StartsByResolution;
  private out: Ready = emptyReady();
  private now: number;
  private nextMembershipTickMs: number;
  private nextHintReplayMs: number;
  private msgSeq: number;
  private ioSeq = 0;
  private commitSeq = 0;

  // Group commit.
  private commitDueMs = Number.POSITIVE_INFINITY;
  private commitNotBeforeMs = 0;
  private commitBackoffMs = 0;
  private lastCommitError: string | undefined;
  private lastCommitErrorLoggedMs = 0;
  /**
   * Group commits under way, oldest first, at most MAX_COMMITS_IN_FLIGHT. The store writes them in
   * this order (node/store.ts), so they are durable, and reported, in it.
   */
  private inFlightCommits: Commit[] = [];
  private nextOps: WriteOp[] = [];
  private nextAcks: { peer: string; id: number }[] = [];
  private nextLocalRepairs: ReadOp[] = [];
  private pendingHintsPut: HintRecord[] = [];
  private pendingHintsDelete: { node: string; ref: BucketRef }[] = [];
  private pendingBatchesPut: BatchRecord[] = [];
  private pendingBatchesDelete: string[] = [];
  /**
   * Commits durable here whose own slots are still being replicated: per peer, the messages not
   * yet acknowledged (ReplPeer); the writes that wait on them; the journal record to delete once
   * every peer has acknowledged or been hinted.
   */
  private readonly replicating = new Map<number, { ops: WriteOp[]; peers: Map<string, ReplPeer>; journal: string | undefined }>();
  private pendingJournalDelete: string[] = [];

  // Loads and scans under way.
  private readonly loads = new Map<number, { keys: SlotKey[]; waiters: (() => void)[] }>();
  private readonly loading = new Map<string, number>();
  /**
   * Slots being read, per video: a missing slot of a video with none being read needs no slot id
   * made to look it up in `loading` (one string per slot, while any read is under way).
   */
  private readonly loadingOfVideo = new Map<string, number>();
  private readonly scans = new Map<number, (slots: SpanSlot[] | undefined, message?: string, code?: ErrorCode) => void>();

  // Coordinators.
  private readonly writes = new Set<WriteOp>();
  private writeRequests = 0;
  /** Event tuples of the write requests being coordinated. */
  private writeTuples = 0;
  private readonly forwards = new Map<number, { request: WriteRequest; to: string; deadlineMs: number }>();
  /** Retention: when expired days are deleted again, and the cutoff each resolution was last swept to. */
  private nextSweepMs = 0;
  private readonly sweptBefore = { m: Number.NEGATIVE_INFINITY, h: Number.NEGATIVE_INFINITY };
  private readonly reads = new Set<ReadOp>();
  private inFlightQueries = 0;
  private readonly readsOut = new Map<number, { op: ReadOp; node: string; spans: SpanTuple[]; parts: [query: number, span: number][] }>();
  private readonly replOut = new Map<number, ReplOut>();
  private readonly replInFlight = new Map<string, number>();
  /** Rebuilding peers this node is sending its ranges to: per peer, its generation and the stream. */
  private readonly streams = new Map<string, { generation: number; job: StreamJob; doneSentMs: number }>();
  /** Walk pages held back by pacing. */
  private deferred: { atMs: number; run: () => void }[] = [];
  // Anti-entropy.
  private readonly hash64: Hash64;
  private repairOut: RepairSession | undefined;
  private readonly repairsIn = new Map<string, RepairSession>();
  private readonly repairRounds: RepairRoundState[] = [];
  private nextRepairMs: number;
  private repairTurn = 0;
  private readonly walks = new Map<number, (entries: SlotEntry[] | undefined, next: string | undefined) => void>();
  /** While this node rebuilds: the peers that have sent it everything they hold of its ranges. */
  private readonly streamedFrom = new Set<string>();
  /** Peers that left a read unanswered past `speculativeRetryMs`, until they are heard from again. */
  private readonly slowPeers = new Map<string, number>();

  /** Our own slots found damaged on disk (slotId): writes to them wait for a replica's copy. */
  private readonly damagedOwn = new Set<string>();
  private storageBroken = false;

  // Hints and dedupe.
  private readonly hints: HintTable;
  private readonly replaying = new Set<string>();
  private readonly batches = new Map<string, number>();
  /**
   * Forwarded writes taken lately, as `sender NUL message id`, in two generations of a write
   * timeout each: a copy of a forward that the network repeats is not taken again. Refused with
   * nothing applied (a replica down, say), a write leaves no batch id behind, and a copy taken a
   * moment later, once the replica was back, was applied after its sender had been told nothing
   * was (a simulation's quorum read saw 2 more than attempted).
   */
  private forwardsTaken = new Set<string>();
  private forwardsTakenBefore = new Set<string>();
  private forwardsTakenSinceMs = 0;
  /** Batches this node sent on to other replicas, and to which one per video id (see onClientWrite). */
  private readonly forwardedTo = new Map<string, { atMs: number; targets: Map<string, string>; ring: string | undefined; unsaved?: number }>();
  /** Per applied batch id, the topology checksum it was applied under (see BatchRecord.ring). */
  private readonly batchRings = new Map<string, string>();
  /** Forwards waiting for the commit that makes their batch's forward record durable. */
  private nextForwards: { request: WriteRequest; to: string; msg: DataMessage & { t: 'fwd' } }[] = [];

  // Placement.
  private placementRing: unknown;
  private placementPending: unknown;
  private placementPrior: unknown;
  private readonly placements = new Map<string, Placement>();
  /** The video placed last, and its placement (two fields, not an object made per call). */
  private lastPlacedVideo: string | undefined;
  private lastPlacement: Placement | undefined;
  /** With one ring, placements by token index (HashRing.indexOf). */
  private readonly placementsAt = new Map<number, Placement>();
  /** Since when every live peer has gossiped the topology checksum `agreedOn` (see topologyStable). */
  private agreedSinceMs: number | undefined;
  private agreedOn = '';
  /** Members leaving the ring for good: this node's part in moving their ranges (see driveMoves). */
  private move: MoveState | undefined;
  /** When this node finished its decommission (it stops once every peer knows, or after DECOMMISSION_ANNOUNCE_MS). */
  private decommissionedMs: number | undefined;

  /** When ids given up early were last said (see expireBatches). */
  private dedupeWarnedMs = Number.NEGATIVE_INFINITY;
  private readonly counters = {
    writesAcked: 0, writesFailed: 0, writesTimedOut: 0, readsServed: 0, speculative: 0, repairs: 0, readsTimedOut: 0,
    slotsLoaded: 0, replSent: 0, replAcked: 0, hinted: 0, replReceived: 0, commits: 0, slotsWritten: 0, commitsFailed: 0, repeats: 0,
    repairSessions: 0, repairInSync: 0, repairFailed: 0, repairLeavesDiffered: 0, repairSlotsSent: 0, repairBytesSent: 0,
  };

  constructor(init: NodeCoreInit) {
    assert(init.actor.startsWith(`${init.self.id}#`), 'the actor is the node id and an epoch');
    this.id = init.self.id;
    this.actor = init.actor;
    this.cfg = init.replication;
    this.hash64 = init.hash64;
    this.hints = new HintTable(init.replication.maxHintsPerNode, init.replication.hintWindowMs);
    const before = init.writtenBefore ?? { m: Number.POSITIVE_INFINITY, h: Number.POSITIVE_INFINITY, d: Number.POSITIVE_INFINITY };
    this.writtenFilter = new WrittenFilter(before, Math.floor(init.replication.writtenFilterBytes / WRITTEN_FILTER_BYTES));
    this.writtenMax = { ...before };
    // Nothing kept by this run yet: its first commit keeps the starts, so a store that had none gets them.
    this.writtenKept = noStarts();
    this.tickIntervalMs = init.membership.tickIntervalMs;
    this.memberExpiryMs = init.membership.memberExpiryMs;
    this.now = init.nowMs;
    this.membership = new Membership({
      self: { ...init.self, actor: init.actor },
      config: init.membership,
      rng: init.rng,
      hash64: init.hash64,
      nowMs: init.nowMs,
      generation: init.generation,
      bootstrapped: init.bootstrapped,
      knownPeers: init.knownPeers ?? [],
      rebuilding: init.rebuilding ?? false,
    });
    // Ids of our messages start at a random point, so a reply meant for an earlier life is unlikely to match.
    this.msgSeq = Math.floor(init.rng.next() * 0x7fff_ffff);
    this.nextMembershipTickMs = init.nowMs;
    this.nextHintReplayMs = init.nowMs;
    // The first comparison after start waits a whole interval: the node's own hints and rebuild go first.
    this.nextRepairMs = init.nowMs + init.replication.repairIntervalMs;
    for (const h of init.hints ?? []) this.addHint(h.node, h.ref, h.atMs, false);
    // Commits whose replication this node did not see through before it stopped: every other
    // replica gets a hint for their buckets (replaying to one that has them changes nothing).
    for (const j of init.journal ?? []) {
      for (const ref of j.refs) for (const r of this.placementOf(ref.videoId).all) if (r !== this.id) this.addHint(r, ref, init.nowMs, true);
      this.pendingJournalDelete.push(j.key);
    }
    for (const b of init.batches ?? []) {
      if (b.forwardedTo === undefined) {
        this.batches.set(b.batch, b.atMs);
        if (b.ring !== undefined) this.batchRings.set(b.batch, b.ring);
      } else {
        this.forwardedTo.set(b.batch, { atMs: b.atMs, targets: new Map(b.forwardedTo), ring: b.ring });
      }
    }
  }

  /** One input in, what to do about it out. */
  step(input: CoreInput, nowMs: number): Ready {
    this.out = emptyReady();
    this.now = Math.max(this.now, nowMs);
    switch (input.kind) {
      case 'tick':
        break;
      case 'write':
        this.onClientWrite({ client: input.req }, input.events, input.cl, input.batch);
        break;
      case 'read':
        this.onClientRead({ client: input.req }, input.queries, input.cl);
        break;
      case 'repair':
        this.requestRepair(input.req);
        break;
      case 'move':
        this.requestMove(input.req, input.op, input.node);
        break;
      case 'peer':
        this.onPeer(input.from, input.msg);
        break;
      case 'connectionLost':
        this.applyMembership(this.membership.connectionLost(input.peer, this.now));
        break;
      case 'sendFailed':
        this.onSendFailed(input.to, input.msg);
        break;
      case 'loaded':
        this.onLoaded(input.load, input.slots);
        break;
      case 'loadFailed':
        this.onLoadFailed(input.load, input.message, input.code);
        break;
      case 'scanned':
        this.onScanned(input.scan, input.slots, undefined);
        break;
      case 'scanFailed':
        this.onScanned(input.scan, undefined, input.message, input.code);
        break;
      case 'walked':
        this.onWalked(input.walk, input.entries, input.next);
        break;
      case 'walkFailed':
        this.onWalked(input.walk, undefined, undefined);
        this.out.log.push(`error INTERNAL: a walk of the store failed: ${input.message}`);
        break;
      case 'persisted':
        this.onPersisted(input.persist);
        break;
      case 'persistFailed':
        this.onPersistFailed(input.persist, input.message, input.code);
        break;
    }
    this.onTimers();
    this.maybeCommit();
    this.out.deadlineMs = this.nextDeadline();
    return this.out;
  }

  /** Stop coordinating: announce `leaving` (graceful stop). */
  startLeaving(nowMs: number): Ready {
    this.out = emptyReady();
    this.now = Math.max(this.now, nowMs);
    this.applyMembership(this.membership.startLeaving(this.now));
    this.out.deadlineMs = this.nextDeadline();
    return this.out;
  }

  /** Announce `left`; the core takes no more gossip. */
  leave(nowMs: number): Ready {
    this.out = emptyReady();
    this.now = Math.max(this.now, nowMs);
    this.applyMembership(this.membership.leave(this.now));
    this.out.deadlineMs = this.nextDeadline();
    return this.out;
  }

  /** Whether nothing awaits the store: no dirty slot, no commit under way. */
  get idle(): boolean {
    return this.table.dirtyCount === 0 && this.inFlightCommits.length === 0 && this.nextOps.length === 0 && this.nextAcks.length === 0;
  }

  /** The replicas of `videoId` on the ring, in preference order. */
  replicasOf(videoId: string): string[] {
    return this.placementOf(videoId).natural;
  }

  /** Where `videoId` lives: on the ring, and while members leave it, also on the ring without them. */
  private placementOf(videoId: string): Placement {
    const ring = this.membership.ring();
    const pending = this.membership.pendingRing();
    const prior = this.membership.priorRing();
    if (this.placementRing !== ring || this.placementPending !== pending || this.placementPrior !== prior) {
      this.placementRing = ring;
      this.placementPending = pending;
      this.placementPrior = prior;
      this.placements.clear();
      this.placementsAt.clear();
      this.lastPlacedVideo = undefined;
      this.lastPlacement = undefined;
    }
    // A request's events come grouped by video more often than not.
    if (videoId === this.lastPlacedVideo && this.lastPlacement !== undefined) return this.lastPlacement;
    let pl: Placement | undefined;
    if (pending === undefined && prior === undefined) {
      // One ring: keys of one token range share their placement, so it is kept per range, not per key.
      const at = ring.indexOf(videoId);
      pl = this.placementsAt.get(at);
      if (pl === undefined) {
        const natural = ring.preferenceListAt(at, this.cfg.rf);
        pl = { natural, groups: [natural], prior: undefined, all: [...natural], gaining: [] };
        this.placementsAt.set(at, pl);
      }
    } else {
      pl = this.placements.get(videoId);
      if (pl === undefined) {
        const natural = ring.preferenceList(videoId, this.cfg.rf);
        const differs = (l: string[] | undefined): l is string[] => l !== undefined && (l.length !== natural.length || l.some((r) => !natural.includes(r)));
        const next = pending?.preferenceList(videoId, this.cfg.rf);
        const before = prior?.preferenceList(videoId, this.cfg.rf);
        const groups = differs(next) ? [natural, next] : [natural];
        const all = [...natural];
        for (const l of [next, before]) if (differs(l)) for (const r of l) if (!all.includes(r)) all.push(r);
        pl = { natural, groups, prior: differs(before) ? before : undefined, all, gaining: differs(next) ? next.filter((r) => !natural.includes(r)) : [] };
        if (this.placements.size >= MAX_CACHED_PLACEMENTS) this.placements.clear();
        this.placements.set(videoId, pl);
      }
    }
    this.lastPlacedVideo = videoId;
    this.lastPlacement = pl;
    return pl;
  }

  /** Event tuples of the writes being coordinated, and the most it takes (maxInFlightEvents). */
  writeBacklog(): { events: number; limit: number } {
    return { events: this.writeTuples, limit: this.cfg.maxInFlightEvents };
  }

  view(nowMs: number): MemberView[] {
    return this.membership.view(nowMs);
  }

  stats(): CoreStats {
    const hints = this.hints.stats();
    const k = this.counters;
    return {
      rf: this.cfg.rf,
      hints,
      writes: { inFlight: this.writeRequests, acked: k.writesAcked, failed: k.writesFailed, timedOut: k.writesTimedOut },
      reads: { inFlight: this.inFlightQueries, served: k.readsServed, speculative: k.speculative, repairs: k.repairs, timedOut: k.readsTimedOut },
      replication: { sent: k.replSent, acked: k.replAcked, hinted: k.hinted, received: k.replReceived },
      commits: { commits: k.commits, slotsWritten: k.slotsWritten, failed: k.commitsFailed },
      dedupe: { entries: this.batches.size, repeats: k.repeats },
      slots: { cached: this.table.size, dirty: this.table.dirtyCount, loaded: k.slotsLoaded, knownAbsent: this.writtenFilter.stats.skipped, filterBytes: this.writtenFilter.bytes },
      repair: {
        sessions: k.repairSessions,
        inSync: k.repairInSync,
        failed: k.repairFailed,
        leavesDiffered: k.repairLeavesDiffered,
        slotsSent: k.repairSlotsSent,
        bytesSent: k.repairBytesSent,
        running: (this.repairOut === undefined ? 0 : 1) + this.repairsIn.size,
      },
      ringChange:
        this.move === undefined
          ? undefined
          : {
              leaving: this.move.key.slice(0, this.move.key.indexOf('@')).split(','),
              streams: Object.fromEntries([...this.move.streams].map(([peer, job]) => [peer, { slots: job.slots, bytes: job.bytes, done: job.finished }])),
              doneFrom: [...this.move.doneFrom].sort(),
            },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Membership

  private applyMembership(effects: MembershipEffect[]): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'send':
          this.out.send.push({ to: e.to.id ?? '', address: e.to.address, msg: e.msg });
          break;
        case 'statusChanged': {
          this.out.log.push(`peer ${e.id} is ${e.up ? 'up' : 'down'} (${e.reason})`);
          const address = this.membership.stateOf(e.id)?.address;
          if (e.up && address !== undefined) this.out.connect.push(address);
          break;
        }
        case 'ringChanged':
          this.out.log.push(`ring changed: checksum ${e.checksum}`);
          this.out.knownPeers = this.membership.knownPeers();
          break;
        case 'memberExpired':
          this.out.log.push(`member ${e.id} forgotten: no node has seen it alive for ${Math.round(this.memberExpiryMs / 3_600_000)} h`);
          break;
        case 'membersFull':
          this.out.log.push(
            `error: member ${e.id} cannot be taken: this node knows ${e.known} members, the most it keeps, ${e.removed} of them taken off the ring for good ` +
              `(each kept so that its actor never comes back); ${e.id} will not be taken into the cluster by this node` +
              (e.more > 0 ? ` (${e.more} more refused since the last notice)` : ''),
          );
          break;
        case 'removed':
          this.out.log.push(`error: this node's actor ${this.actor} was taken off the ring for good (word from ${e.by}); it stops, and may join again only with an empty data directory`);
          this.out.removed = `it was removed from the cluster (tally removenode, word from ${e.by})`;
          break;
        case 'generationRaised':
          this.out.log.push(
            `an earlier process of this node (actor ${e.over.actor ?? 'unknown'}) was known in generation ${e.over.generation}, later than this one's start: ` +
              `this node moved to generation ${this.membership.generation} so peers take its state (its clock is behind the one the earlier process started by)`,
          );
          break;
        case 'identityConflict':
          this.out.log.push(
            `error: a newer state of this node's own id "${e.claimed.id}" came in (address ${e.claimed.address}, ` +
              `generation ${e.claimed.generation}, version ${e.claimed.version}): is another process running with --id ${e.claimed.id}? ` +
              (e.refuted ? 'Refuted with a newer generation.' : 'It has a newer generation, so peers follow it: stop the duplicate, then restart this node.'),
          );
          break;
      }
    }
  }

  private isUp(id: string): boolean {
    return this.membership.isUp(id);
  }

  /** Whether `ref` is past its retention now (never written, merged, repaired or served). */
  private expired(ref: BucketRef): boolean {
    return isExpired(ref, this.now, this.cfg.retention);
  }

  /**
   * Deletes expired days: at once when another day expires, and again every
   * `retentionSweepIntervalMs` for slots that were on their way to the store when it ran.
   */
  private sweepExpired(): void {
    const again = this.now >= this.nextSweepMs;
    if (again) this.nextSweepMs = this.now + this.cfg.retentionSweepIntervalMs;
    for (const res of ['m', 'h'] as const) {
      const cutoffMs = expiryCutoff(res, this.now, this.cfg.retention);
      if (cutoffMs === undefined) continue;
      const swept = this.sweptBefore[res];
      if (cutoffMs <= swept && !again) continue;
      this.sweptBefore[res] = cutoffMs;
      this.out.expire.push({ res, cutoffMs });
      if (cutoffMs > swept) {
        this.out.log.push(`retention (${describeRetention(this.cfg.retention)}): deleting ${res === 'm' ? 'minute' : 'hour'} buckets of the days before ${new Date(cutoffMs).toISOString().slice(0, 10)}`);
      }
    }
  }

  /** Whether a read may ask `id`: up, and not rebuilding (one takes writes, but may not hold what it should yet). */
  private readable(id: string): boolean {
    return this.isUp(id) && !this.membership.isRebuilding(id);
  }

  private send(to: string, msg: PeerMessage): boolean {
    const address = this.membership.stateOf(to)?.address;
    if (address === undefined) return false;
    this.out.send.push({ to, address, msg });
    return true;
  }

  private nextMsgId(): number {
    this.msgSeq = this.msgSeq >= 0xffff_fffe ? 1 : this.msgSeq + 1;
    return this.msgSeq;
  }

  // ---------------------------------------------------------------------------------------------
  // Writes: the receiving node

  /** A client request before gossip has settled is refused, having applied nothing. */
  private notSettled(replyTo: ReplyTo): boolean {
    if (this.membership.settled(this.now)) return false;
    const peer = this.membership.disagreeingPeer();
    const why = peer === undefined ? `${this.id} has just started and is still learning the ring from its peers` : `${this.id} and ${peer} place keys on different rings for a moment (a ring change is spreading)`;
    this.answer(replyTo, failure(ErrorCode.NOT_READY, `${why}; nothing was applied, retry shortly`));
    return true;
  }

  private onClientWrite(replyTo: ReplyTo, events: readonly EventTuple[], cl: Consistency, batch: string | undefined): void {
    if (this.notSettled(replyTo)) return;
    // A retry of a batch first taken on another ring: its events may now fall to other replicas,
    // which cannot know it was applied, so it could be counted twice. Its outcome stays unknown.
    if (batch !== undefined) {
      const ring = this.batchRings.get(batch) ?? this.forwardedTo.get(batch)?.ring;
      if (ring !== undefined && ring !== this.membership.topologyChecksum()) {
        return this.answer(replyTo, failure(ErrorCode.TIMEOUT, `the ring has changed since this batch was first sent; a retry could count it twice, so it is not taken again; its first outcome stays unknown`));
      }
    }
    const n = eventsIn(events);
    const need = replicasNeeded(cl, this.cfg.rf);
    const local: EventTuple[] = [];
    /** The placement of each of `local`'s events, found here once for coordinate. */
    const localPlacements: Placement[] = [];
    const forwards = new Map<string, EventTuple[]>();
    /** Replica list → the actor of the replica its events go to, for the forward record. */
    const chosen = new Map<string, string>();
    const forwarded = 'peer' in replyTo;
    // Check every part before applying any, so a refusal applies nothing.
    const checked = new Set<Placement>();
    for (const e of events) {
      const placement = this.placementOf(e[0]);
      if (!checked.has(placement)) {
        checked.add(placement);
        for (const group of writeGroups(placement, need)) {
          const up = group.filter((r) => this.isUp(r)).length;
          if (group.length < need || up < need) {
            const why = group.length < need
              ? `the cluster has ${group.length} replica${group.length === 1 ? '' : 's'} for ${JSON.stringify(e[0])} (rf ${this.cfg.rf}, ${this.membership.ring().members.length} nodes on the ring)`
              : `${up} of its ${group.length} replicas are up (down: ${group.filter((r) => !this.isUp(r)).join(', ')})`;
            return this.answer(replyTo, failure(ErrorCode.UNAVAILABLE, `consistency ${cl} needs ${need} replicas of ${JSON.stringify(e[0])}; ${why}; nothing was applied`));
          }
        }
      }
      // Only a replica on the ring coordinates: the extra replicas of a change come and go without
      // the topology checksum changing, and a retry must find the batch id where it was applied.
      if (placement.natural.includes(this.id)) {
        local.push(e);
        localPlacements.push(placement);
      } else if (forwarded) {
        if (batch !== undefined && this.batches.has(batch)) {
          return this.answer(replyTo, failure(ErrorCode.TIMEOUT, `${this.id} took this batch before but is no longer a replica of ${JSON.stringify(e[0])} (the ring changed); its outcome is unknown`));
        }
        return this.answer(replyTo, failure(ErrorCode.UNAVAILABLE, `${this.id} is not a replica of ${JSON.stringify(e[0])} (the rings of the two nodes differ); nothing was applied`));
      } else {
        // A retry of a batch goes where the batch went before: that replica's dedupe is what
        // keeps it from counting twice. If it is down, the outcome stays unknown until it is back.
        const beforeActor = batch === undefined ? undefined : this.forwardedTo.get(batch)?.targets.get(placement.natural.join(','));
        const before = beforeActor?.slice(0, beforeActor.lastIndexOf('#'));
        if (before !== undefined && !this.isUp(before)) {
          return this.answer(replyTo, failure(ErrorCode.TIMEOUT, `this batch was sent on to ${before} before, which is down now; its outcome is unknown until ${before} is back: retry later with the same batch id`));
        }
        // A replica whose actor is not known yet cannot be pinned: pick one whose is.
        const target = before ?? (placement.natural.find((r) => this.isUp(r) && this.membership.stateOf(r)?.actor !== undefined) as string | undefined);
        if (target === undefined) {
          return this.answer(replyTo, failure(ErrorCode.UNAVAILABLE, `no replica of ${JSON.stringify(e[0])} is known well enough to send the write on to yet; nothing was applied`));
        }
        chosen.set(placement.natural.join(','), beforeActor ?? (this.membership.stateOf(target)?.actor as string));
        let list = forwards.get(target);
        if (list === undefined) forwards.set(target, (list = []));
        list.push(e);
      }
    }
    if (local.length > 0) {
      const most = local.length * RESOLUTIONS_OF_EVENT.length;
      if (this.table.dirtyCount + most > this.cfg.maxDirtySlots) {
        return this.answer(replyTo, failure(ErrorCode.OVERLOADED, `${this.table.dirtyCount} slots await the next group commit and this request may add ${most}, the limit is ${this.cfg.maxDirtySlots}; nothing was applied, retry with backoff`));
      }
    }
    if (this.writeRequests >= this.cfg.maxInFlightWrites) {
      return this.answer(replyTo, failure(ErrorCode.OVERLOADED, `${this.writeRequests} writes are being coordinated, the limit is ${this.cfg.maxInFlightWrites}; nothing was applied, retry with backoff`));
    }
    // Taking more than the node can finish well within the write timeout only turns refusals into
    // timeouts: work done for callers who have given up, and memory held meanwhile.
    if (this.writeTuples > 0 && this.writeTuples + events.length > this.cfg.maxInFlightEvents) {
      return this.answer(replyTo, failure(ErrorCode.OVERLOADED, `${this.writeTuples} events are being written, the limit is ${this.cfg.maxInFlightEvents}; nothing was applied, retry with backoff`));
    }
    // A batch's forward targets are recorded durably before it is sent on, so even after a crash
    // of this node a retry goes to the replica that may have applied it.
    let record = false;
    if (batch !== undefined && forwards.size > 0) {
      let f = this.forwardedTo.get(batch);
      if (f === undefined) this.forwardedTo.set(batch, (f = { atMs: this.now, targets: new Map(), ring: this.membership.topologyChecksum() }));
      for (const [replicas, target] of chosen) {
        if (f.targets.get(replicas) !== target) {
          f.targets.set(replicas, target);
          record = true;
        }
      }
      if (record) {
        this.pendingBatchesPut.push(f.ring === undefined ? { batch, atMs: f.atMs, forwardedTo: [...f.targets] } : { batch, atMs: f.atMs, forwardedTo: [...f.targets], ring: f.ring });
        f.unsaved = (f.unsaved ?? 0) + 1;
        this.noteDirty();
      }
      // A retry while the record is still on its way to the disk (a commit under way, or failed
      // and to be made again) waits for it too: sent now, a crash before the record lands would
      // leave a restarted node free to send the batch to another replica, which counts it again.
      if ((f.unsaved ?? 0) > 0) record = true;
    }
    const request: WriteRequest = { replyTo, events: n, tuples: events.length, parts: (local.length > 0 ? 1 : 0) + forwards.size, outcomes: [] };
    this.writeRequests++;
    this.writeTuples += events.length;
    if (local.length > 0) this.coordinate(request, local, localPlacements, need, batch);
    for (const [target, part] of forwards) {
      const msg: DataMessage & { t: 'fwd' } = { t: PeerMessageType.FORWARD, id: 0, events: part, cl };
      if (batch !== undefined) {
        msg.batch = `${batch}>${this.id}`;
        const pinned = this.forwardedTo.get(batch)?.targets.get(this.placementOf(part[0]![0]).natural.join(','));
        if (pinned !== undefined) msg.actor = pinned;
      }
      if (record) this.nextForwards.push({ request, to: target, msg });
      else this.forwardNow(request, target, msg);
    }
  }

  private forwardNow(request: WriteRequest, to: string, msg: DataMessage & { t: 'fwd' }): void {
    msg.id = this.nextMsgId();
    this.forwards.set(msg.id, { request, to, deadlineMs: this.now + this.cfg.writeTimeoutMs });
    this.send(to, msg);
  }

  /** One part of a write request is settled; the request is answered once all are. */
  private settlePart(request: WriteRequest, outcome: Outcome): void {
    request.outcomes.push(outcome);
    if (request.outcomes.length < request.parts) return;
    this.writeRequests--;
    this.writeTuples -= request.tuples;
    const failed = request.outcomes.filter((o): o is Extract<Outcome, { ok: false }> => !o.ok);
    if (failed.length === 0) {
      this.counters.writesAcked++;
      return this.answer(request.replyTo, { ok: true, n: request.events });
    }
    this.counters.writesFailed++;
    const first = failed[0] as Extract<Outcome, { ok: false }>;
    if (failed.length < request.outcomes.length) {
      return this.answer(request.replyTo, failure(ErrorCode.PARTIAL_WRITE, `part of the batch was acknowledged and part failed (${first.code}: ${first.message}); a retry with the same batch id is never counted twice`));
    }
    // Every part failed: say "unknown" if any part may have been applied, else why nothing was.
    this.answer(request.replyTo, failed.find((f) => !NOTHING_APPLIED.has(f.code)) ?? first);
  }

  private answer(replyTo: ReplyTo, o: Outcome | { ok: true; stats: StatsTuple[]; answered?: [number, number][] }): void {
    if ('client' in replyTo) {
      this.out.replies.push({ req: replyTo.client, reply: o.ok ? ('stats' in o ? o : { ok: true, n: o.n }) : o });
    } else if (o.ok) {
      this.send(replyTo.peer, { t: PeerMessageType.FORWARD_REPLY, id: replyTo.id });
    } else {
      this.send(replyTo.peer, { t: PeerMessageType.FORWARD_REPLY, id: replyTo.id, code: o.code, message: o.message });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Writes: the coordinating replica

  private coordinate(request: WriteRequest, events: readonly EventTuple[], placements: readonly Placement[], need: number, batch: string | undefined): void {
    // Deltas by video, then a short list: no key string is made per event.
    const byVideo = new Map<string, SlotDelta[]>();
    const list: SlotDelta[] = [];
    const groups = new Set<string[]>();
    let n = 0;
    let lastVideo: string | undefined;
    let lastDeltas: SlotDelta[] = [];
    for (let e = 0; e < events.length; e++) {
      const [videoId, eventType, ts, value, count] = events[e] as EventTuple;
      if (videoId !== lastVideo) {
        for (const g of writeGroups(placements[e] as Placement, need)) groups.add(g);
        let mine = byVideo.get(videoId);
        if (mine === undefined) byVideo.set(videoId, (mine = []));
        lastVideo = videoId;
        lastDeltas = mine;
      }
      n += count;
      // Each bucket's delta is made (or added to) directly: this loop allocates only for slots the
      // request has not touched yet, where a write made most of its garbage.
      checkEvents(value, count);
      for (let i = 0; i < RESOLUTIONS_OF_EVENT.length; i++) {
        const res = RESOLUTIONS_OF_EVENT[i] as Resolution;
        const start = bucketStart(ts, res);
        let d: SlotDelta | undefined;
        for (let j = 0; j < lastDeltas.length; j++) {
          const x = lastDeltas[j] as SlotDelta;
          const r = x.key.ref;
          if (r.start === start && r.res === res && r.eventType === eventType) {
            d = x;
            break;
          }
        }
        if (d !== undefined) {
          foldEvents(d.delta, value, count);
          continue;
        }
        const ref: BucketRef = { videoId, eventType, res, start };
        // A late event counts in the buckets still kept (its day's, for ever), not in expired ones.
        if (this.expired(ref)) continue;
        const fresh = { key: { ref, actor: this.actor }, delta: { count, sum: value * count, min: value, max: value } };
        lastDeltas.push(fresh);
        list.push(fresh);
      }
    }
    const op: WriteOp = {
      request,
      keys: list.map((d) => d.key),
      deltas: list,
      batch,
      ring: this.membership.topologyChecksum(),
      need,
      groups: [...groups],
      acked: new Set(),
      deadlineMs: this.now + this.cfg.writeTimeoutMs,
      n,
      done: false,
    };
    this.writes.add(op);
    this.applyWhenLoaded(op.keys, () => this.applyWrite(op));
  }

  private applyWrite(op: WriteOp): void {
    if (op.done) return;
    // Our own slot of a bucket is damaged on disk: adding to it from nothing would lose every
    // increment it held. Refused until repair brings our slot back from a replica that holds it.
    const damaged = this.storageBroken || this.damagedOwn.size > 0 ? op.keys.find((k) => this.storageBroken || this.damagedOwn.has(idOf(k))) : undefined;
    if (damaged !== undefined) {
      return this.finishWrite(op, failure(ErrorCode.STORAGE_DAMAGED, `${this.id}'s stored slot of ${JSON.stringify(damaged.ref.videoId)}/${JSON.stringify(damaged.ref.eventType)} (${damaged.ref.res} ${new Date(damaged.ref.start).toISOString()}) is damaged; nothing was applied; anti-entropy brings it back from the other replicas`));
    }
    // Decided here, not on arrival: a duplicate that arrives while the first copy waits for its
    // loads waits behind it (waiters run in order) and finds it applied.
    if (op.batch !== undefined && this.batches.has(op.batch)) {
      // Applied before (maybe before a crash, its ack lost): ship its buckets' current state again.
      this.counters.repeats++;
      for (const k of op.keys) this.table.rewrite(k);
    } else {
      const over = this.table.addDeltas(this.actor, op.deltas);
      if (over !== undefined) {
        return this.finishWrite(op, failure(ErrorCode.BAD_REQUEST, `the ${over.res} bucket at ${new Date(over.start).toISOString()} of ${JSON.stringify(over.videoId)}/${JSON.stringify(over.eventType)} would pass the largest count or sum a slot holds (2^53 - 1); nothing was applied`));
      }
      if (op.batch !== undefined) {
        this.batches.set(op.batch, this.now);
        this.batchRings.set(op.batch, op.ring);
        this.pendingBatchesPut.push({ batch: op.batch, atMs: this.now, ring: op.ring });
      }
    }
    op.applied = true;
    // Its slots are in the table now; the keys and deltas would only outlive the young generation
    // while the op waits for its commit and acks.
    op.keys = [];
    op.deltas = [];
    this.nextOps.push(op);
    this.noteDirty();
  }

  private finishWrite(op: WriteOp, outcome: Outcome): void {
    if (op.done) return;
    op.done = true;
    this.writes.delete(op);
    this.settlePart(op.request, outcome);
  }

  /** A write's replicas so far: done once every group of it has `need` replicas holding it. */
  private checkWrite(op: WriteOp): void {
    if (op.done) return;
    for (const g of op.groups) {
      let have = 0;
      for (const r of g) if (op.acked.has(r)) have++;
      if (have < op.need) return;
    }
    this.finishWrite(op, { ok: true, n: op.n });
  }

  // ---------------------------------------------------------------------------------------------
  // Loads: slots must be in the table before they change

  private applyWhenLoaded(keys: readonly SlotKey[], then: () => void): void {
    const missing = this.table.missing(keys);
    if (missing.length === 0) return then();
    let waiting = 0;
    const fresh: SlotKey[] = [];
    const loadIds = new Set<number>();
    for (const k of missing) {
      // A slot the store cannot hold is absent: no read.
      if (this.loading.size === 0 || !this.loadingOfVideo.has(k.ref.videoId) || !this.loading.has(idOf(k))) {
        if (!this.writtenFilter.mayExist(k.ref, k.actor)) {
          this.table.loaded(k, undefined);
          continue;
        }
      }
      const id = idOf(k);
      const under = this.loading.get(id);
      if (under !== undefined) loadIds.add(under);
      else fresh.push(k);
    }
    if (fresh.length === 0 && loadIds.size === 0) return then();
    if (fresh.length > 0) {
      const id = ++this.ioSeq;
      for (const k of fresh) {
        const sid = idOf(k);
        if (!this.loading.has(sid)) this.loadingOfVideo.set(k.ref.videoId, (this.loadingOfVideo.get(k.ref.videoId) ?? 0) + 1);
        this.loading.set(sid, id);
      }
      this.loads.set(id, { keys: fresh, waiters: [] });
      this.out.loads.push({ id, keys: fresh });
      loadIds.add(id);
    }
    const done = (): void => {
      if (--waiting > 0) return;
      // A slot loaded for us may have been trimmed since; then load again.
      this.applyWhenLoaded(keys, then);
    };
    for (const id of loadIds) {
      waiting++;
      this.loads.get(id)?.waiters.push(done);
    }
  }

  /** Whether the forward `key` is new (and now taken), not a copy of one taken in the last one or two write timeouts. */
  private takeForward(key: string): boolean {
    if (this.now - this.forwardsTakenSinceMs >= this.cfg.writeTimeoutMs || this.forwardsTaken.size >= MAX_FORWARDS_REMEMBERED) {
      this.forwardsTakenBefore = this.forwardsTaken;
      this.forwardsTaken = new Set();
      this.forwardsTakenSinceMs = this.now;
    }
    if (this.forwardsTaken.has(key) || this.forwardsTakenBefore.has(key)) return false;
    this.forwardsTaken.add(key);
    return true;
  }

  /** `k` (slot id `sid`) is no longer being read. */
  private doneLoading(k: SlotKey, sid: string): void {
    if (!this.loading.delete(sid)) return;
    const left = (this.loadingOfVideo.get(k.ref.videoId) ?? 1) - 1;
    if (left > 0) this.loadingOfVideo.set(k.ref.videoId, left);
    else this.loadingOfVideo.delete(k.ref.videoId);
  }

  private onLoaded(id: number, slots: readonly (Slot | undefined | typeof DAMAGED)[]): void {
    const load = this.loads.get(id);
    if (load === undefined) return;
    this.loads.delete(id);
    assert(slots.length === load.keys.length, 'a load answers every key it asked for');
    this.counters.slotsLoaded += slots.length;
    load.keys.forEach((k, i) => {
      const sid = idOf(k);
      this.doneLoading(k, sid);
      const slot = slots[i];
      if (slot !== DAMAGED) return this.table.loaded(k, slot);
      // Another actor's slot is joined over by whatever a replica sends; our own must not be added to.
      this.table.loaded(k, undefined);
      if (k.actor === this.actor && !this.damagedOwn.has(sid)) {
        // So many that this disk is not to be trusted: every write is refused from here on.
        if (this.damagedOwn.size >= MAX_DAMAGED_OWN) this.storageBroken = true;
        else this.damagedOwn.add(sid);
        this.out.log.push(`error STORAGE_DAMAGED: ${this.id}'s own slot of ${k.ref.videoId}/${k.ref.eventType} (${k.ref.res} ${k.ref.start}) is damaged on disk; writes to it are refused until a replica's copy repairs it`);
      }
    });
    for (const w of load.waiters) w();
  }

  private onLoadFailed(id: number, message: string, code: ErrorCode | undefined): void {
    const load = this.loads.get(id);
    if (load === undefined) return;
    this.loads.delete(id);
    for (const k of load.keys) this.doneLoading(k, idOf(k));
    // A damaged database says so (the node is to be rebuilt); any other failure is the node's own.
    const failed = code === ErrorCode.STORAGE_DAMAGED ? code : ErrorCode.INTERNAL;
    this.out.log.push(`error ${failed}: store read failed: ${message}`);
    // Fail whatever waited on it: writes that did nothing yet, and replications (unacked; the sender hints).
    // By slot, not by key object: a write that found the slot already being read waits on this read
    // with keys of its own.
    const slots = new Set(load.keys.map((k) => idOf(k)));
    for (const op of [...this.writes]) {
      if (op.applied !== true && op.keys.some((k) => slots.has(idOf(k)))) {
        this.finishWrite(op, failure(failed, `store read failed: ${message}; nothing was applied`));
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Group commit

  private noteDirty(): void {
    if (this.commitDueMs === Number.POSITIVE_INFINITY) this.commitDueMs = this.now + this.cfg.commitDelayMs;
  }

  private maybeCommit(): void {
    const inFlight = this.inFlightCommits.length;
    if (inFlight >= MAX_COMMITS_IN_FLIGHT) return;
    const work =
      this.table.dirtyCount > 0 || this.nextOps.length > 0 || this.nextAcks.length > 0 || this.nextLocalRepairs.length > 0 || this.nextForwards.length > 0 ||
      this.pendingHintsPut.length > 0 || this.pendingHintsDelete.length > 0 || this.pendingBatchesPut.length > 0 || this.pendingBatchesDelete.length > 0 ||
      this.pendingJournalDelete.length > 0;
    if (!work) {
      this.commitDueMs = Number.POSITIVE_INFINITY;
      return;
    }
    if (this.commitDueMs === Number.POSITIVE_INFINITY) this.commitDueMs = this.now + this.cfg.commitDelayMs;
    // After a failed commit, the next waits (the store may be full or gone; retrying every 2 ms helps nobody).
    if (this.now < this.commitNotBeforeMs) {
      this.commitDueMs = Math.max(this.commitDueMs, this.commitNotBeforeMs);
      return;
    }
    if (this.table.dirtyCount < this.cfg.commitAtDirty && this.now < this.commitDueMs) return;
    // A second commit while one is under way only once it has a share of a full one: it is made
    // (keys, checksums, the LevelDB batch) while the first is written and synced, time this
    // thread would otherwise spend waiting; a small one would only add a sync.
    if (inFlight > 0 && this.table.dirtyCount < this.cfg.commitAtDirty / 4) return;
    const id = ++this.commitSeq;
    const slots = this.table.takeDirty(id);
    // The filter learns of every slot before the store may hold it: once, at its first commit
    // since it came into the table (one held as the store had it is in the store already).
    let written: StartsByResolution | undefined;
    const own: BucketRef[] = [];
    for (let i = 0; i < slots.length; i++) {
      const res = slots.resolutions[i] as Resolution;
      const start = slots.starts[i] as number;
      if (slots.first[i] === 1) this.writtenFilter.writtenAt(slots.videoIds[i] as string, slots.eventTypes[i] as string, res, start, slots.actors[i] as string);
      if (start > this.writtenMax[res]) this.writtenMax[res] = start;
      if (this.cfg.rf > 1 && slots.actors[i] === this.actor) own.push(slots.ref(i));
    }
    if (this.writtenMax.m > this.writtenKept.m || this.writtenMax.h > this.writtenKept.h || this.writtenMax.d > this.writtenKept.d) written = { ...this.writtenMax };
    const journalPut = own.length > 0 ? [{ key: `${this.membership.startGeneration.toString(16)}-${id.toString(16)}`, refs: own }] : [];
    // Hints come and go by the hundred thousand at times (a journal replayed at a start, a burst
    // expiring together): at most MAX_HINT_OPS_PER_COMMIT of each a commit, the rest next. New
    // hints wait for the deletes queued before them: the store applies a commit's deletes first,
    // so a bucket hinted again after its old hint went would lose the new hint to a later commit.
    const hintsDelete = this.pendingHintsDelete.splice(0, MAX_HINT_OPS_PER_COMMIT);
    const hintsPut = this.pendingHintsDelete.length === 0 ? this.pendingHintsPut.splice(0, MAX_HINT_OPS_PER_COMMIT) : [];
    // A journal record goes with the last of the hints made before it was let go, never ahead of
    // them: killed between the two commits, the node would have lost both the record and the hints.
    const journalDelete = this.pendingHintsPut.length === 0 ? this.pendingJournalDelete.splice(0, MAX_HINT_OPS_PER_COMMIT) : [];
    const batch: PersistBatch = {
      id,
      slots,
      hintsPut,
      hintsDelete,
      batchesPut: this.pendingBatchesPut,
      batchesDelete: this.pendingBatchesDelete,
      journalPut,
      journalDelete,
      sync: this.cfg.fsync,
      afterInFlight: inFlight > 0,
    };
    if (written !== undefined) batch.written = written;
    this.pendingBatchesPut = [];
    this.pendingBatchesDelete = [];
    if (this.pendingHintsPut.length > 0 || this.pendingHintsDelete.length > 0 || this.pendingJournalDelete.length > 0) this.noteDirty();
    this.inFlightCommits.push({ id, slots, ops: this.nextOps, acks: this.nextAcks, forwards: this.nextForwards, localRepairs: this.nextLocalRepairs, batch });
    this.nextForwards = [];
    this.nextOps = [];
    this.nextAcks = [];
    this.nextLocalRepairs = [];
    this.commitDueMs = Number.POSITIVE_INFINITY;
    const empty = slots.length === 0 && batch.written === undefined && batch.hintsPut.length === 0 && batch.hintsDelete.length === 0 && batch.batchesPut.length === 0 && batch.batchesDelete.length === 0 && batch.journalDelete.length === 0;
    if (empty) this.onPersisted(id); // nothing to write: what waited on it was durable already
    else this.out.persist = batch;
  }

  /** The oldest commit under way, if it is `id` (the store reports them in order), taken off the list. */
  private settleCommit(id: number): Commit | undefined {
    const c = this.inFlightCommits[0];
    if (c === undefined || c.id !== id) {
      assert(!this.inFlightCommits.some((x) => x.id === id), `commit ${id} was reported out of order`);
      return undefined;
    }
    this.inFlightCommits.shift();
    return c;
  }

  private onPersisted(id: number): void {
    const c = this.settleCommit(id);
    if (c === undefined) return;
    this.commitBackoffMs = 0;
    this.lastCommitError = undefined;
    if (c.batch.written !== undefined) this.writtenKept = c.batch.written;
    for (const b of c.batch.batchesPut) {
      const f = b.forwardedTo === undefined ? undefined : this.forwardedTo.get(b.batch);
      if (f?.unsaved !== undefined && f.unsaved > 0) f.unsaved--;
    }
    this.table.committed(id, c.slots, true);
    this.counters.commits++;
    this.counters.slotsWritten += c.slots.length;
    for (const a of c.acks) this.send(a.peer, { t: PeerMessageType.REPL_ACK, id: a.id });
    for (const f of c.forwards) this.forwardNow(f.request, f.to, f.msg);
    for (const op of c.localRepairs) this.repairDone(op);
    // Ship our own slots' new values to the other replicas of their keys.
    const perPeer = new Map<string, SlotEntry[]>();
    // Whatever the RF: while the ring changes, a key's replicas include those taking it over.
    for (let i = 0; i < c.slots.length; i++) {
      if (c.slots.actors[i] !== this.actor) continue;
      let s: SlotEntry | undefined;
      for (const r of this.placementOf(c.slots.videoIds[i] as string).all) {
        if (r === this.id) continue;
        let list = perPeer.get(r);
        if (list === undefined) perPeer.set(r, (list = []));
        list.push((s ??= c.slots.entry(i)));
      }
    }
    const peers = new Map<string, ReplPeer>();
    for (const [peer, slots] of perPeer) {
      if (!this.isUp(peer)) {
        for (const s of slots) this.addHint(peer, s.ref, this.now, true);
        continue;
      }
      let messages = 0;
      // A chunk hinted for want of room means the peer will not hold all of this commit, so it
      // cannot count for the commit's writes, whatever it acknowledges of the rest.
      let hinted = false;
      for (const chunk of this.chunkSlots(slots)) {
        if ((this.replInFlight.get(peer) ?? 0) >= this.cfg.maxReplInFlightPerPeer) {
          for (const s of chunk) this.addHint(peer, s.ref, this.now, true);
          hinted = true;
          continue;
        }
        const msgId = this.nextMsgId();
        this.replOut.set(msgId, { kind: 'commit', peer, commit: id, refs: chunk.map((s) => s.ref), sentMs: this.now, deadlineMs: this.now + this.cfg.replAckTimeoutMs });
        this.replInFlight.set(peer, (this.replInFlight.get(peer) ?? 0) + 1);
        this.counters.replSent++;
        this.send(peer, { t: PeerMessageType.REPL, id: msgId, slots: chunk.map(slotRecord) });
        messages++;
      }
      if (messages > 0) peers.set(peer, { left: messages, failed: false, partial: hinted });
    }
    const ops = c.ops.filter((op) => !op.done);
    for (const op of ops) {
      op.acked.add(this.id);
      this.checkWrite(op);
    }
    const journal = c.batch.journalPut[0]?.key;
    this.replicating.set(id, { ops: ops.filter((op) => !op.done), peers, journal });
    this.maybeReplicated(id);
    this.table.trim(this.cfg.maxCachedSlots);
  }

  /**
   * When every peer of a commit has acknowledged all of it or failed (its slots hinted, the hints
   * going into the next commit), the commit's journal record goes with that next commit.
   */
  private maybeReplicated(commit: number): void {
    const rep = this.replicating.get(commit);
    if (rep === undefined) return;
    for (const p of rep.peers.values()) if (!p.failed && p.left > 0) return;
    this.replicating.delete(commit);
    if (rep.journal !== undefined) {
      this.pendingJournalDelete.push(rep.journal);
      this.noteDirty();
    }
  }

  private onPersistFailed(id: number, message: string, code: ErrorCode = ErrorCode.INTERNAL): void {
    const c = this.settleCommit(id);
    if (c === undefined) return;
    this.counters.commitsFailed++;
    this.commitBackoffMs = Math.min(MAX_COMMIT_BACKOFF_MS, Math.max(MIN_COMMIT_BACKOFF_MS, this.commitBackoffMs * 2));
    this.commitNotBeforeMs = this.now + this.commitBackoffMs;
    // The same failure again and again is logged once a backoff period at most.
    if (message !== this.lastCommitError || this.now - this.lastCommitErrorLoggedMs >= MAX_COMMIT_BACKOFF_MS) {
      this.out.log.push(`error INTERNAL: group commit failed: ${message}`);
      this.lastCommitError = message;
      this.lastCommitErrorLoggedMs = this.now;
    }
    // The slots stay in memory, dirty: the next commit writes them. Hints and batch ids go with it.
    this.table.committed(id, c.slots, false);
    // Put back first, in their order (a loop: spreading 100,000 items overflows the stack).
    this.pendingHintsPut = prepend(c.batch.hintsPut, this.pendingHintsPut);
    this.pendingHintsDelete = prepend(c.batch.hintsDelete, this.pendingHintsDelete);
    this.pendingBatchesPut = prepend(c.batch.batchesPut, this.pendingBatchesPut);
    this.pendingBatchesDelete = prepend(c.batch.batchesDelete, this.pendingBatchesDelete);
    this.pendingJournalDelete = prepend(c.batch.journalDelete, this.pendingJournalDelete);
    for (const op of c.ops) {
      this.finishWrite(op, failure(code === ErrorCode.STORAGE_FULL ? code : ErrorCode.INTERNAL, `group commit failed: ${message}; the events are kept in memory and written with the next commit, so the outcome is unknown`));
    }
    for (const a of c.acks) this.send(a.peer, { t: PeerMessageType.REPL_ACK, id: a.id, code: ErrorCode.INTERNAL });
    for (const f of c.forwards) this.settlePart(f.request, failure(ErrorCode.INTERNAL, `could not record where the batch goes: ${message}; that part was not sent`));
    for (const op of c.localRepairs) this.failRead(op, failure(ErrorCode.INTERNAL, `read repair could not be written: ${message}`));
  }

  /** Slots in messages of at most MAX_SLOTS_PER_MESSAGE and about MAX_REPL_MESSAGE_BYTES. */
  private chunkSlots(slots: readonly SlotEntry[]): SlotEntry[][] {
    const out: SlotEntry[][] = [];
    let chunk: SlotEntry[] = [];
    let bytes = 0;
    for (const s of slots) {
      const b = s.ref.videoId.length * 3 + s.ref.eventType.length * 3 + s.actor.length + SLOT_RECORD_OVERHEAD_BYTES;
      if (chunk.length >= MAX_SLOTS_PER_MESSAGE || bytes + b > MAX_REPL_MESSAGE_BYTES) {
        out.push(chunk);
        chunk = [];
        bytes = 0;
      }
      chunk.push(s);
      bytes += b;
    }
    if (chunk.length > 0) out.push(chunk);
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Peer messages

  private onPeer(from: string, msg: PeerMessage): void {
    // Anything from a peer shows it is answering again.
    if (this.slowPeers.size > 0) this.slowPeers.delete(from);
    switch (msg.t) {
      case PeerMessageType.SYN:
      case PeerMessageType.ACK:
      case PeerMessageType.ACK2:
        return this.applyMembership(this.membership.receive(from, msg, this.now));
      case PeerMessageType.REPL:
        return this.onRepl(from, msg.id, msg.slots.map(fromRecord));
      case PeerMessageType.REPL_ACK:
        return this.onReplAck(from, msg.id, msg.code);
      case PeerMessageType.READ:
        return this.onPeerRead(from, msg.id, msg.spans);
      case PeerMessageType.READ_REPLY:
        return this.onReadReply(from, msg.id, msg.slots, msg.code);
      case PeerMessageType.FORWARD:
        if (msg.actor !== undefined && msg.actor !== this.actor) {
          // Meant for the actor before this one (whose data is gone): it may have applied it.
          return this.answer({ peer: from, id: msg.id }, failure(ErrorCode.TIMEOUT, `${this.id} is a new actor (${this.actor}, not ${msg.actor}): it cannot tell whether it applied this batch before; the outcome is unknown`));
        }
        // A copy of one taken already: its answer went with the first (a second would be ignored).
        if (!this.takeForward(`${from}\u0000${msg.id}`)) return;
        return this.onClientWrite({ peer: from, id: msg.id }, msg.events, msg.cl, msg.batch);
      case PeerMessageType.STREAM_DONE:
        if (msg.generation === this.membership.generation && this.membership.isRebuilding(this.id) && !this.streamedFrom.has(from)) {
          this.streamedFrom.add(from);
          this.out.log.push(`rebuild: ${from} has sent everything it holds of this node's ranges`);
        }
        return;
      case PeerMessageType.MOVE_DONE:
        if (this.move !== undefined && msg.leaving === this.move.key && !this.move.doneFrom.has(from)) {
          this.move.doneFrom.add(from);
          this.out.log.push(`ring change: ${from} has sent the new replicas of ${msg.leaving}'s ranges everything it holds of them`);
        }
        return;
      case PeerMessageType.AE_REQ:
        return this.onRepairRequest(from, msg.id);
      case PeerMessageType.AE_TREE:
        return this.onRepairTree(from, msg.id, msg.hashes, msg.code);
      case PeerMessageType.AE_LEAVES:
        return this.onRepairLeaves(from, msg.id, msg.branches, msg.hashes, msg.last);
      case PeerMessageType.AE_LEAVES_REPLY:
        return this.onRepairLeavesReply(from, msg.id, msg.branches, msg.hashes);
      case PeerMessageType.FORWARD_REPLY: {
        const f = this.forwards.get(msg.id);
        if (f === undefined || f.to !== from) return;
        this.forwards.delete(msg.id);
        return this.settlePart(f.request, msg.code === undefined ? { ok: true, n: 0 } : failure(msg.code, `${from}: ${msg.message ?? ''}`));
      }
    }
  }

  /** Slots from another replica (or ourselves, for a read repair): join, commit, then ack. */
  private onRepl(from: string, id: number, incoming: SlotEntry[], localRepair?: ReadOp): void {
    this.counters.replReceived++;
    // Every path that brings slots (replication, hints, read repair, streams, anti-entropy) comes
    // here: an expired bucket is dropped, so none of them brings one back after the sweep.
    const slots = incoming.filter((s) => !this.expired(s.ref));
    const keys = slots.map((s) => ({ ref: s.ref, actor: s.actor }));
    this.applyWhenLoaded(keys, () => {
      for (const s of slots) {
        this.table.join(s);
        // A replica's copy of our own damaged slot: it is whole again (at what was last replicated).
        if (this.damagedOwn.size > 0 && this.damagedOwn.delete(idOf(s))) this.out.log.push(`repair: ${this.id}'s own slot of ${s.ref.videoId}/${s.ref.eventType} is whole again, from ${from}`);
      }
      if (localRepair !== undefined) this.nextLocalRepairs.push(localRepair);
      else this.nextAcks.push({ peer: from, id });
      this.noteDirty();
    });
  }

  private onReplAck(from: string, id: number, code: ErrorCode | undefined): void {
    const r = this.replOut.get(id);
    if (r === undefined || r.peer !== from) return;
    this.replOut.delete(id);
    this.replInFlight.set(from, Math.max(0, (this.replInFlight.get(from) ?? 1) - 1));
    if (code !== undefined) return this.replFailed(r);
    this.counters.replAcked++;
    switch (r.kind) {
      case 'commit': {
        const rep = this.replicating.get(r.commit);
        const peer = rep?.peers.get(from);
        if (rep === undefined || peer === undefined || peer.failed) return;
        peer.left--;
        if (peer.left > 0) return;
        // Every message of this commit reached `from`: unless part of it was hinted instead of
        // sent, it holds every write of the commit.
        if (!peer.partial) {
          for (const op of rep.ops) {
            op.acked.add(from);
            this.checkWrite(op);
          }
          rep.ops = rep.ops.filter((op) => !op.done);
        }
        this.maybeReplicated(r.commit);
        return;
      }
      case 'hint': {
        // Every message of the replay round is in: its hints go, unless renewed meanwhile.
        if (--r.round.left > 0) return;
        for (const h of r.round.hints) {
          const ref = this.hints.clear(from, h.key, h.seq);
          if (ref !== undefined) this.pendingHintsDelete.push({ node: from, ref });
        }
        this.replaying.delete(from);
        this.noteDirty();
        return;
      }
      case 'repair':
        return this.repairDone(r.op);
      case 'stream':
        if (--r.page.left === 0) this.streamPageDone(r.page);
        return;
    }
  }

  /** A replication message was dropped, refused or not acknowledged in time. */
  private replFailed(r: ReplOut): void {
    switch (r.kind) {
      case 'commit': {
        for (const ref of r.refs) this.addHint(r.peer, ref, this.now, true);
        const peer = this.replicating.get(r.commit)?.peers.get(r.peer);
        // One lost message of the commit: that peer cannot count for its writes, whatever else it acks.
        if (peer !== undefined) peer.failed = true;
        this.maybeReplicated(r.commit);
        return;
      }
      case 'hint':
        this.replaying.delete(r.peer);
        return;
      case 'repair':
        return this.failRead(r.op, failure(ErrorCode.TIMEOUT, `read repair of ${r.peer} was not acknowledged in time`));
      case 'stream': {
        const job = r.page.job;
        if (job.cancelled || r.page.gen !== job.gen) return;
        return this.streamFailed(job);
      }
    }
  }

  private onSendFailed(to: string, msg: PeerMessage): void {
    switch (msg.t) {
      case PeerMessageType.REPL: {
        const r = this.replOut.get(msg.id);
        if (r === undefined || r.peer !== to) return;
        this.replOut.delete(msg.id);
        this.replInFlight.set(to, Math.max(0, (this.replInFlight.get(to) ?? 1) - 1));
        return this.replFailed(r);
      }
      case PeerMessageType.FORWARD: {
        const f = this.forwards.get(msg.id);
        if (f === undefined) return;
        this.forwards.delete(msg.id);
        return this.settlePart(f.request, failure(ErrorCode.UNAVAILABLE, `could not send the write on to ${to}; nothing was applied`));
      }
      case PeerMessageType.READ: {
        // Never sent: the replica is replaced now rather than at the speculative threshold.
        const r = this.readsOut.get(msg.id);
        if (r === undefined || r.node !== to) return;
        return this.onReadReply(to, msg.id, [], ErrorCode.UNAVAILABLE, 'the message could not be sent to it');
      }
      case PeerMessageType.AE_REQ:
      case PeerMessageType.AE_LEAVES:
        if (this.repairOut?.peer === to && this.repairOut.id === msg.id) this.endRepair(this.repairOut, 'failed');
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Reads: the replica side

  private onPeerRead(from: string, id: number, spans: SpanTuple[]): void {
    // Being sent our ranges, we may not hold what we should: a peer that asks has not heard yet
    // (our rebuild reaches it by gossip), and must ask another replica.
    if (this.membership.isRebuilding(this.id)) {
      this.send(from, { t: PeerMessageType.READ_REPLY, id, slots: [], code: ErrorCode.NOT_READY });
      return;
    }
    this.scan(spans, (slots, message, code) => {
      if (slots === undefined) {
        this.out.log.push(`error ${code ?? ErrorCode.INTERNAL}: a read for ${from} failed in the store: ${message ?? ''}`);
        this.send(from, { t: PeerMessageType.READ_REPLY, id, slots: [], code: code ?? ErrorCode.INTERNAL });
      } else if (slots.length > MAX_SLOTS_PER_MESSAGE) {
        this.send(from, { t: PeerMessageType.READ_REPLY, id, slots: [], code: ErrorCode.TOO_LARGE });
      } else {
        this.counters.readsServed++;
        this.send(from, { t: PeerMessageType.READ_REPLY, id, slots });
      }
    });
  }

  private scan(spans: SpanTuple[], done: (slots: SpanSlot[] | undefined, message?: string, code?: ErrorCode) => void): void {
    const id = ++this.ioSeq;
    this.scans.set(id, done);
    this.out.scans.push({ id, spans });
  }

  private onScanned(id: number, slots: SpanSlot[] | undefined, message: string | undefined, code?: ErrorCode): void {
    const done = this.scans.get(id);
    if (done === undefined) return;
    this.scans.delete(id);
    done(slots, message, code);
  }

  // ---------------------------------------------------------------------------------------------
  // Reads: the coordinator

  private onClientRead(replyTo: ReplyTo, queries: readonly QueryTuple[], cl: Consistency): void {
    if (this.notSettled(replyTo)) return;
    const need = replicasNeeded(cl, this.cfg.rf);
    if (this.inFlightQueries + queries.length > this.cfg.maxInFlightQueries) {
      return this.answer(replyTo, failure(ErrorCode.OVERLOADED, `${this.inFlightQueries} queries are being answered, the limit is ${this.cfg.maxInFlightQueries}; retry with backoff`));
    }
    const op: ReadOp = {
      replyTo,
      need,
      queries: [],
      deadlineMs: this.now + this.cfg.readTimeoutMs,
      speculateAtMs: this.now + this.cfg.speculativeRetryMs,
      repairsPending: 0,
      stats: undefined,
      answered: undefined,
      done: false,
    };
    const usable = (r: string): boolean => this.readable(r);
    const ranges = queries.map(([, , start, end]) => answerableRange(start, end, this.now, this.cfg.retention));
    if (ranges.some((r) => r.clipped)) op.answered = ranges.map((r) => [r.from, r.to]);
    for (const [qi, [videoId, eventType]] of queries.entries()) {
      const placement = this.placementOf(videoId);
      for (const replicas of placement.groups) {
        const up = replicas.filter(usable);
        if (replicas.length < need || up.length < need) {
          return this.answer(replyTo, failure(ErrorCode.UNAVAILABLE, `consistency ${cl} needs ${need} replicas of ${JSON.stringify(videoId)}; ${up.length} of its ${replicas.length} replicas are up and not rebuilding${up.length < replicas.length ? ` (not: ${replicas.filter((r) => !usable(r)).join(', ')})` : ''}`));
        }
      }
      const up = placement.all.filter(usable);
      // Over the range retention still covers (the query's own unless an edge has expired).
      const range = ranges[qi] as { from: number; to: number };
      const spans = planSpans(videoId, eventType, range.from, range.to, this.now);
      // Ourselves first when we hold it (no network hop), then the others in ring order, those
      // that lately left a read unanswered past the speculative threshold last (as Cassandra's
      // dynamic snitch), so a frozen replica costs only the first reads that met it; last, those
      // not usable now, for speculation to ask should they come back while the read waits.
      const peers = up.filter((r) => r !== this.id);
      const order = [
        ...(up.includes(this.id) ? [this.id] : []),
        ...peers.filter((r) => !this.slowPeers.has(r)),
        ...peers.filter((r) => this.slowPeers.has(r)),
        ...placement.all.filter((r) => !up.includes(r)),
      ];
      op.queries.push({ replicas: order, groups: placement.groups, spans, asked: [], pending: new Map(), slots: new Map(), complete: [], failed: new Set() });
    }
    this.inFlightQueries += queries.length;
    this.reads.add(op);
    const ask = new Map<string, number[]>();
    op.queries.forEach((q, qi) => {
      // In order, each replica that some group still lacks: `need` of them, or a few more while a
      // key's replicas change (a quorum of each group).
      const asked: string[] = [];
      for (const r of q.replicas) {
        if (!usable(r)) continue;
        if (!q.groups.some((g) => g.includes(r) && g.filter((x) => asked.includes(x)).length < need)) continue;
        asked.push(r);
        let list = ask.get(r);
        if (list === undefined) ask.set(r, (list = []));
        list.push(qi);
      }
    });
    for (const [node, qs] of ask) this.askReplica(op, node, qs);
  }

  /** Sends `node` the spans of queries `qs` of `op`, in messages within the read limits. */
  private askReplica(op: ReadOp, node: string, qs: readonly number[]): void {
    const messages: { spans: SpanTuple[]; parts: [number, number][] }[] = [];
    let cur: { spans: SpanTuple[]; parts: [number, number][] } | undefined;
    let buckets = 0;
    for (const qi of qs) {
      const q = op.queries[qi] as ReadQuery;
      q.asked.push(node);
      q.slots.set(node, []);
      q.spans.forEach((span, si) => {
        const b = (span[4] - span[3]) / RESOLUTION_MS[span[2]];
        if (cur === undefined || cur.spans.length >= MAX_SPANS_PER_READ || buckets + b > MAX_BUCKETS_PER_READ) {
          cur = { spans: [], parts: [] };
          messages.push(cur);
          buckets = 0;
        }
        cur.spans.push(span);
        cur.parts.push([qi, si]);
        buckets += b;
      });
    }
    for (const m of messages) this.sendRead(op, node, m.spans, m.parts);
    // A query with no spans (an empty range) is complete at once.
    for (const qi of qs) {
      const q = op.queries[qi] as ReadQuery;
      if ((q.pending.get(node) ?? 0) === 0 && !q.complete.includes(node)) q.complete.push(node);
    }
    this.maybeFinishRead(op);
  }

  /** Asks `node` for `spans` (each standing for the query and span beside it in `parts`) of `op`, in one message. */
  private sendRead(op: ReadOp, node: string, spans: SpanTuple[], parts: [number, number][]): void {
    this.countAwaited(op, node, parts, 1);
    const id = this.nextMsgId();
    this.readsOut.set(id, { op, node, spans, parts });
    if (node === this.id) this.scan(spans, (slots, message, code) => this.onReadReply(this.id, id, slots ?? [], slots === undefined ? (code ?? ErrorCode.INTERNAL) : undefined, message));
    else this.send(node, { t: PeerMessageType.READ, id, spans });
  }

  /** Counts one more (`by` 1) or one fewer (-1) message from `node` that each query of `parts` awaits. */
  private countAwaited(op: ReadOp, node: string, parts: readonly [number, number][], by: 1 | -1): void {
    for (const qi of new Set(parts.map(([qi]) => qi))) {
      const q = op.queries[qi] as ReadQuery;
      q.pending.set(node, (q.pending.get(node) ?? 0) + by);
    }
  }

  private onReadReply(from: string, id: number, slots: readonly SpanSlot[], code: ErrorCode | undefined, message?: string): void {
    const r = this.readsOut.get(id);
    if (r === undefined || r.node !== from) return;
    this.readsOut.delete(id);
    const op = r.op;
    if (op.done) return;
    const halves = code === ErrorCode.TOO_LARGE ? halveRead(r.spans, r.parts) : undefined;
    if (halves !== undefined) {
      // Its slots would not fit one reply (many actors per bucket): the same replica is asked
      // again in two halves, each standing in for this message in what its queries await.
      for (const [spans, parts] of halves) this.sendRead(op, from, spans, parts);
      this.countAwaited(op, from, r.parts, -1);
      return;
    }
    if (code !== undefined) {
      // A replica that cannot answer is replaced by another at once; when too few are left to meet
      // the level, the read fails now, with the replica's reason, rather than at its timeout.
      const short: number[] = [];
      for (const [qi] of r.parts) {
        const q = op.queries[qi] as ReadQuery;
        if (q.failed.has(from)) continue;
        q.failed.add(from);
        if (q.groups.some((g) => g.filter((r) => q.replicas.includes(r) && !q.failed.has(r)).length < op.need)) {
          return this.failRead(op, failure(code, `${from} could not answer the read${message === undefined ? '' : `: ${message}`}`));
        }
        if (!readSatisfied(q, op.need) && !short.includes(qi)) short.push(qi);
      }
      this.askMore(op, short);
      return;
    }
    const touched = new Set<number>();
    for (const [qi] of r.parts) touched.add(qi);
    for (const s of slots) {
      const part = r.parts[s[0]];
      const span = r.spans[s[0]];
      if (part === undefined || span === undefined) continue;
      // Only the buckets asked for: anything else a replica says is neither counted nor repaired.
      if (s[1] < span[3] || s[1] >= span[4] || s[1] % RESOLUTION_MS[span[2]] !== 0) continue;
      const q = op.queries[part[0]] as ReadQuery;
      // Re-index the slot by the span's index within its query.
      q.slots.get(from)?.push([part[1], s[1], s[2], s[3], s[4], s[5], s[6]]);
    }
    for (const qi of touched) {
      const q = op.queries[qi] as ReadQuery;
      const left = (q.pending.get(from) ?? 1) - 1;
      q.pending.set(from, left);
      if (left === 0 && !q.complete.includes(from)) q.complete.push(from);
    }
    this.maybeFinishRead(op);
  }

  private maybeFinishRead(op: ReadOp): void {
    if (op.done || op.stats !== undefined) return;
    if (!op.queries.every((q) => readSatisfied(q, op.need))) return;
    const stats: StatsTuple[] = [];
    for (const q of op.queries) {
      const answers = new Map(q.complete.map((node) => [node, q.slots.get(node) ?? []]));
      const read = mergeRead(q.spans, answers);
      stats.push(read.stats);
      if (op.need < 2) continue;
      // Read repair: each responder gets what it lacked, and the answer waits for it.
      for (const [node, missing] of read.repairs) {
        if (missing.length === 0) continue;
        this.counters.repairs++;
        for (const chunk of this.chunkSlots(missing)) {
          op.repairsPending++;
          if (node === this.id) {
            this.onRepl(this.id, 0, chunk, op);
          } else {
            const id = this.nextMsgId();
            this.replOut.set(id, { kind: 'repair', peer: node, op, sentMs: this.now, deadlineMs: this.now + this.cfg.replAckTimeoutMs });
            this.replInFlight.set(node, (this.replInFlight.get(node) ?? 0) + 1);
            this.send(node, { t: PeerMessageType.REPL, id, slots: chunk.map(slotRecord) });
          }
        }
      }
    }
    op.stats = stats;
    if (op.repairsPending === 0) this.finishRead(op);
  }

  private repairDone(op: ReadOp): void {
    op.repairsPending--;
    if (op.repairsPending === 0 && op.stats !== undefined) this.finishRead(op);
  }

  private finishRead(op: ReadOp): void {
    if (op.done) return;
    op.done = true;
    this.reads.delete(op);
    this.inFlightQueries -= op.queries.length;
    this.answer(op.replyTo, op.answered === undefined ? { ok: true, stats: op.stats as StatsTuple[] } : { ok: true, stats: op.stats as StatsTuple[], answered: op.answered });
  }

  private failRead(op: ReadOp, outcome: Outcome): void {
    if (op.done) return;
    op.done = true;
    this.reads.delete(op);
    this.inFlightQueries -= op.queries.length;
    this.answer(op.replyTo, outcome);
  }

  /**
   * Speculative retry: each query still short of answers asks one more replica, if one is usable
   * now, and those it is waiting on are marked slow.
   */
  private speculate(op: ReadOp): void {
    const short: number[] = [];
    op.queries.forEach((q, qi) => {
      if (readSatisfied(q, op.need)) return;
      for (const node of q.asked) if (node !== this.id && !q.complete.includes(node) && !q.failed.has(node)) this.slowPeers.set(node, this.now);
      short.push(qi);
    });
    if (this.askMore(op, short)) this.counters.speculative++;
  }

  /** Queries `qs` of `op` each ask one replica they have not asked yet, if one is up. */
  private askMore(op: ReadOp, qs: readonly number[]): boolean {
    const ask = new Map<string, number[]>();
    for (const qi of qs) {
      const q = op.queries[qi] as ReadQuery;
      // One not asked yet, of a group still short of answers.
      const short = q.groups.filter((g) => g.filter((r) => q.complete.includes(r)).length < op.need);
      const next = q.replicas.find((r) => !q.asked.includes(r) && short.some((g) => g.includes(r)) && this.readable(r));
      if (next === undefined) continue;
      let list = ask.get(next);
      if (list === undefined) ask.set(next, (list = []));
      list.push(qi);
    }
    for (const [node, qs2] of ask) this.askReplica(op, node, qs2);
    return ask.size > 0;
  }

  // ---------------------------------------------------------------------------------------------
  // Hints

  private addHint(node: string, ref: BucketRef, atMs: number, persist: boolean): void {
    // A renewed hint is stored already (a restamped one again, with its new time); a dropped one
    // is counted by the table.
    const outcome = this.hints.add(node, ref, atMs);
    if ((outcome !== 'added' && outcome !== 'restamped') || !persist) return;
    if (outcome === 'added') this.counters.hinted++;
    this.pendingHintsPut.push({ node, ref, atMs });
    this.noteDirty();
  }

  /** Replays hints to members that are up; drops expired ones and those of members gone for good. */
  private replayHints(): void {
    for (const h of this.hints.expire(this.now)) this.pendingHintsDelete.push(h);
    for (const node of this.hints.nodes) {
      if (this.membership.stateOf(node) === undefined || this.membership.isRemoved(node)) {
        this.out.log.push(`dropping ${this.hintsForget(node)} hints for ${node}: it is no longer a member`);
        continue;
      }
      if (!this.isUp(node) || this.replaying.has(node) || this.membership.stateOf(node)?.lifecycle === Lifecycle.LEFT) continue;
      const batch = this.hints.oldest(node, Math.min(this.cfg.hintReplayBuckets, MAX_SPANS_PER_READ));
      this.replaying.add(node);
      this.scan(batch.map((b) => spanOf(b.ref)), (slots) => {
        if (slots === undefined || !this.isUp(node)) {
          this.replaying.delete(node);
          return;
        }
        const entries: SlotEntry[] = slots.map(([span, start, actor, count, sum, min, max]) => {
          const ref = (batch[span] as { ref: BucketRef }).ref;
          return { ref: { ...ref, start }, actor, slot: { count, sum, min, max } };
        });
        if (entries.length === 0) {
          // Nothing stored for them (expired meanwhile): the hints go.
          for (const b of batch) {
            const ref = this.hints.clear(node, b.key, b.seq);
            if (ref !== undefined) this.pendingHintsDelete.push({ node, ref });
          }
          this.replaying.delete(node);
          this.noteDirty();
          return;
        }
        const chunks = this.chunkSlots(entries);
        const round = { left: chunks.length, hints: batch.map((b) => ({ key: b.key, seq: b.seq })) };
        for (const chunk of chunks) {
          const id = this.nextMsgId();
          this.replOut.set(id, { kind: 'hint', peer: node, round, sentMs: this.now, deadlineMs: this.now + this.cfg.replAckTimeoutMs });
          this.replInFlight.set(node, (this.replInFlight.get(node) ?? 0) + 1);
          this.send(node, { t: PeerMessageType.REPL, id, slots: chunk.map(slotRecord) });
        }
      });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Rebuilding: a node that starts on an empty store is sent its ranges by its peers

  private driveRebuilds(): void {
    // The sending side: every rebuilding member that is up gets everything we hold of its ranges,
    // once every coordinator places keys as we do (a new member's keys were written to its ring
    // predecessors until then) and the writes they coordinated before have had their time. A
    // cluster being formed, too small before for any quorum, had no such writes to wait for.
    const before = this.membership.ring().members.filter((m) => !this.membership.isRebuilding(m)).length;
    const stable = this.topologyStable() || before < replicasNeeded(Consistency.QUORUM, this.cfg.rf);
    for (const member of this.membership.ring().members) {
      if (member === this.id || !this.membership.isRebuilding(member) || !this.isUp(member)) continue;
      const generation = this.membership.stateOf(member)?.generation ?? 0;
      let st = this.streams.get(member);
      if (st === undefined || st.generation !== generation) {
        if (!stable) continue;
        st?.job.cancel();
        const stream = { generation, doneSentMs: 0, job: undefined as unknown as StreamJob };
        // Its ranges on the ring, and while members leave it, those it takes over from them: a
        // node wiped while a change streamed it what it gains is not sent that again by the change.
        stream.job = new StreamJob(member, (e) => this.placementOf(e.ref.videoId).all.includes(member), 0, () => {
          stream.doneSentMs = this.now;
          this.send(member, { t: PeerMessageType.STREAM_DONE, generation });
          this.out.log.push(`rebuild: sent ${member} everything this node holds of its ranges (${stream.job.slots} slots)`);
        }, () => {
          // The page goes again from the same place on a later round.
        }, false);
        st = stream;
        this.streams.set(member, st);
        this.out.log.push(`rebuild: sending ${member} its ranges`);
      }
      if (st.job.busy) continue;
      // Done already: say so again every second while it still rebuilds (the first word may be lost).
      if (!st.job.finished) this.runStream(st.job);
      else if (this.now - st.doneSentMs >= STREAM_DONE_REPEAT_MS) {
        st.doneSentMs = this.now;
        this.send(member, { t: PeerMessageType.STREAM_DONE, generation: st.generation });
      }
    }
    for (const [member, st] of this.streams) {
      if (this.membership.isRebuilding(member) && !this.membership.isRemoved(member)) continue;
      st.job.cancel();
      this.streams.delete(member);
    }
    // The receiving side: done once every other member on the ring that is not rebuilding itself
    // has sent everything (a member that is down holds up the rebuild: it may hold the only copy),
    // but for one being removed (`tally removenode`, so down): what it held is given up for lost,
    // and its removal waits for this rebuild, so waiting for it would hold both up for ever (two
    // members dead at once, one brought back empty so the other's removal can end). A member
    // decommissioning is alive, if down for a moment, and may hold the only copy: it is waited for.
    if (this.membership.isRebuilding(this.id) && this.membership.settled(this.now)) {
      const leavers = this.membership.leavers();
      const removed = (m: string): boolean => leavers.includes(m) && !this.isUp(m) && this.moverOf(m) !== m;
      const missing = this.membership.ring().members.filter((m) => m !== this.id && !this.membership.isRebuilding(m) && !this.streamedFrom.has(m) && !removed(m));
      if (missing.length === 0) {
        this.membership.doneRebuilding();
        this.out.rebuilt = true;
        this.out.log.push('rebuild: done; reads count this node again');
      }
    }
  }

  /**
   * Whether `writeTimeoutMs` have passed since every live peer was first seen gossiping the
   * topology checksum this node computes (since it last changed): no coordinator places keys on an
   * older ring any more, and every write one coordinated on an older ring has been acknowledged (so
   * is on its replicas' disks) or failed.
   */
  private topologyStable(): boolean {
    const checksum = this.membership.topologyChecksum();
    // A change of the ring as this node computes it starts the wait again; a peer that disagrees
    // later without such a change is one that has just (re)started, which does not coordinate
    // until it agrees (settled), so it does not start the wait again.
    if (this.agreedOn !== checksum) {
      this.agreedOn = checksum;
      this.agreedSinceMs = undefined;
    }
    if (this.agreedSinceMs === undefined && this.membership.settled(this.now) && this.membership.agreed()) this.agreedSinceMs = this.now;
    return this.agreedSinceMs !== undefined && this.now - this.agreedSinceMs >= this.cfg.writeTimeoutMs;
  }

  // ---------------------------------------------------------------------------------------------
  // Ring changes: members leaving for good (tally decommission, tally removenode)
  //
  // While a member leaves, a key whose replicas change is read and written with a quorum of its
  // replicas on the ring and a quorum of those on the ring without the leaver (Placement). Once
  // every coordinator knows (topologyStable), every member streams each new replica what it gains
  // from its store, and tells the node driving the change (the leaver, or the member removing it)
  // when all of it is acknowledged. With every ring member done, the driver takes the leaver off the
  // ring; the new replicas hold what any quorum of the old ones held, and every write since.

  private requestMove(req: number, op: 'decommission' | 'removenode', node: string | undefined): void {
    const refuse = (code: ErrorCode, message: string): void => void this.out.replies.push({ req, reply: { ok: false, code, message } });
    if (!this.membership.settled(this.now) || this.membership.isRebuilding(this.id)) return refuse(ErrorCode.NOT_READY, `${this.id} is still joining the ring or being rebuilt`);
    const ring = this.membership.ring().members;
    // Who is to leave, checked first: a wrong id is the answer, whatever else stands in the way.
    const target = node ?? '';
    const state = this.membership.stateOf(target);
    if (op === 'removenode') {
      if (target === this.id) return refuse(ErrorCode.BAD_REQUEST, `${target} is this node: to take a live node off the ring, decommission it`);
      if (state === undefined || !ring.includes(target)) return refuse(ErrorCode.BAD_REQUEST, `${JSON.stringify(target)} is not a member of the ring (members: ${ring.join(', ')})`);
      if (this.isUp(target)) return refuse(ErrorCode.BAD_REQUEST, `${target} is up: decommission it instead (tally decommission --node ${state.address}), or stop it first`);
    }
    const leaving = this.membership.leavers();
    // A member that died while it decommissioned may be removed instead, by a live member that
    // drives the rest: else its peers would hold it as leaving, every ring change waiting, until
    // it came back. So may one whose remover died before the removal ended (brought back, the
    // remover would have forgotten it, and its own rebuild would wait for the member being
    // removed, for good). The streams under way go on: the same member leaves the same ring.
    const mover = leaving.length === 1 && leaving[0] === target ? this.moverOf(target) : undefined;
    const takeover =
      op === 'removenode' && mover !== undefined && mover !== this.id && (mover === target ? state?.lifecycle === Lifecycle.DECOMMISSIONING : !this.isUp(mover));
    if (leaving.length > 0 && !takeover) return refuse(ErrorCode.UNAVAILABLE, `${leaving.join(', ')} ${leaving.length === 1 ? 'is' : 'are'} leaving the ring; one ring change at a time: retry once it is done (tally status shows it)`);
    // A member that died while being rebuilt may itself be removed: reads do not count it yet, so
    // it holds nothing the others need, and nothing else would ever end its rebuild.
    const rebuilding = ring.filter((m) => this.membership.isRebuilding(m) && !(op === 'removenode' && m === target));
    if (rebuilding.length > 0) return refuse(ErrorCode.UNAVAILABLE, `${rebuilding.join(', ')} ${rebuilding.length === 1 ? 'is' : 'are'} still being sent ${rebuilding.length === 1 ? 'its' : 'their'} ranges; one ring change at a time: retry once that is done`);
    if (ring.length - 1 < this.cfg.rf) return refuse(ErrorCode.BAD_REQUEST, `the ring has ${ring.length} members; without one it would have fewer than the ${this.cfg.rf} replicas each key needs (rf ${this.cfg.rf})`);
    if (op === 'decommission') {
      if (this.membership.lifecycle !== Lifecycle.NORMAL) return refuse(ErrorCode.BAD_REQUEST, `${this.id} is ${this.membership.lifecycle}, not normal: only a normal member can be decommissioned`);
      this.applyMembership(this.membership.decommission());
      this.out.log.push(`ring change: ${this.id} is decommissioning: its ranges go to their new replicas, then it leaves the ring for good and stops`);
      this.out.replies.push({ req, reply: { ok: true, moved: `${this.id} is decommissioning: once its ranges are on their new replicas it leaves the ring and stops` } });
      return;
    }
    this.membership.startRemoving(target);
    this.out.log.push(`ring change: removing ${target}: the other members re-replicate its ranges, then it leaves the ring for good`);
    // With RF 1 no other member holds what it held: its ranges go on, empty of what it alone counted.
    const lost = this.cfg.rf === 1 ? `; with rf 1 no other member holds its ranges, so what it alone held is gone` : '';
    this.out.replies.push({ req, reply: { ok: true, moved: `removing ${target}: once the others hold its ranges again it leaves the ring for good${lost}` } });
  }

  /**
   * The member driving the removal of `leaver`: the member removing it, or else the leaver itself
   * (decommissioning; one that died doing so may be removed by another, which then drives it).
   * Of two removing it (the first died, and another took the removal over), the first that is up.
   */
  private moverOf(leaver: string): string | undefined {
    let down: string | undefined;
    for (const m of this.membership.view(this.now)) {
      if (this.membership.stateOf(m.id)?.removing !== leaver) continue;
      if (this.isUp(m.id)) return m.id;
      down ??= m.id;
    }
    if (down !== undefined) return down;
    if (this.membership.stateOf(leaver)?.lifecycle === Lifecycle.DECOMMISSIONING) return leaver;
    return undefined;
  }

  private driveMoves(): void {
    const leavers = this.membership.leavers();
    // The change as this node sees it: who leaves, and the ring they leave (a node that joins
    // meanwhile changes who gains what, so every stream starts again).
    const key = leavers.length === 0 ? '' : `${leavers.join(',')}@${this.membership.ring().checksum()}`;
    const removing = this.membership.removing;
    // The removal this node drove is over (the leaver is off the ring) once every peer agrees.
    if (removing !== undefined && this.membership.isRemoved(removing) && this.membership.agreed()) {
      this.membership.clearRemoving();
      this.out.log.push(`ring change: ${removing} is off the ring on every live member`);
    }
    if (this.move !== undefined && this.move.key !== key) {
      for (const job of this.move.streams.values()) job.cancel();
      this.move = undefined;
    }
    // Our own decommission is over: off the ring; stop once every live peer knows it (or after a while).
    if (this.membership.lifecycle === Lifecycle.REMOVED) {
      if (this.out.removed === undefined && (this.membership.agreed() || this.now - (this.decommissionedMs ?? this.now) >= DECOMMISSION_ANNOUNCE_MS)) {
        this.out.removed = 'it was decommissioned';
      }
      return;
    }
    if (leavers.length === 0) return;
    // Changes begun at once on different members (each checks only the changes it has heard of)
    // may together leave fewer members than RF: the one whose leaver sorts last gives way, told by
    // the member driving it; the others go on (leavers are sorted, so every member picks the same).
    const ringSize = this.membership.ring().members.length;
    const last = leavers[leavers.length - 1] as string;
    if (leavers.length > 1 && ringSize - leavers.length < this.cfg.rf && this.moverOf(last) === this.id) {
      if (last === this.id) this.applyMembership(this.membership.cancelDecommission());
      else this.membership.clearRemoving();
      this.out.log.push(`ring change: ${leavers.join(', ')} leaving at once would leave ${ringSize - leavers.length} members, fewer than rf ${this.cfg.rf}: ${last} stays (ask again once the others are done)`);
      return;
    }
    if (this.move === undefined) {
      this.move = { key, streams: new Map(), streaming: false, doneSentMs: 0, doneFrom: new Set(), finishedMs: undefined, waitingLogged: '' };
      this.out.log.push(`ring change: ${leavers.join(', ')} leaving the ring; keys whose replicas change are read and written at a quorum of the old and of the new replicas`);
    }
    const move = this.move;
    const pending = this.membership.pendingRing();
    if (pending === undefined || !this.membership.ring().members.includes(this.id)) return;
    // Sending: once every coordinator writes to the new replicas as well, each of them gets what it gains from our store.
    if (!move.streaming && this.topologyStable()) {
      move.streaming = true;
      for (const gainer of pending.members) {
        if (gainer === this.id) continue;
        const job = new StreamJob(gainer, (e) => this.placementOf(e.ref.videoId).gaining.includes(gainer), 0, () => {
          this.out.log.push(`ring change: sent ${gainer} what it takes over from ${leavers.join(', ')} (${job.slots} slots, ${job.bytes} bytes)`);
        }, () => {
          // The page goes again from the same place on a later round.
        }, false);
        move.streams.set(gainer, job);
      }
      this.out.log.push(
        move.streams.size === 0
          ? `ring change: no other member takes over anything from ${leavers.join(', ')}: nothing to stream from here`
          : `ring change: streaming to ${[...move.streams.keys()].join(', ')} what they take over from ${leavers.join(', ')}`,
      );
    }
    if (!move.streaming) return;
    let allDone = true;
    for (const job of move.streams.values()) {
      if (!job.finished) allDone = false;
      if (!job.busy && !job.finished && this.isUp(job.peer)) this.runStream(job);
    }
    if (!allDone) return;
    // Done: say so to each driver (again every second: the first word may be lost).
    if (this.now - move.doneSentMs >= STREAM_DONE_REPEAT_MS) {
      move.doneSentMs = this.now;
      for (const leaver of leavers) {
        const mover = this.moverOf(leaver);
        if (mover === this.id) move.doneFrom.add(this.id);
        else if (mover !== undefined) this.send(mover, { t: PeerMessageType.MOVE_DONE, leaving: key });
      }
    }
    // Driving: every ring member but a leaver that is down has sent everything; take the leavers off.
    const mine = leavers.filter((l) => this.moverOf(l) === this.id);
    if (mine.length === 0 || move.finishedMs !== undefined) return;
    const ringNow = this.membership.ring().members;
    const senders = ringNow.filter((m) => !(leavers.includes(m) && !this.isUp(m)));
    const missing = senders.filter((m) => !move.doneFrom.has(m));
    // A node joining meanwhile must be done first: what it gains from the leaver comes by this
    // change's streams. Not a leaver that was being rebuilt when it died (requestMove).
    const joining = ringNow.filter((m) => this.membership.isRebuilding(m) && !leavers.includes(m));
    if (missing.length > 0 || joining.length > 0) {
      const down = missing.filter((m) => m !== this.id && !this.isUp(m));
      const note = down.length > 0 ? `waiting for ${down.join(', ')} (down) to send what it holds of the moving ranges` : '';
      if (note !== '' && note !== move.waitingLogged) this.out.log.push(`ring change: ${note}`);
      move.waitingLogged = note;
      return;
    }
    move.finishedMs = this.now;
    for (const leaver of mine) {
      if (leaver === this.id) {
        this.decommissionedMs = this.now;
        this.applyMembership(this.membership.finishDecommission());
        this.out.log.push(`ring change: ${this.id} has left the ring for good; it stops once every live peer knows`);
      } else {
        this.membership.markRemoved(leaver);
        const dropped = this.hintsForget(leaver);
        this.out.log.push(`ring change: ${leaver} is off the ring for good; its ranges are on their new replicas${dropped > 0 ? `; dropping ${dropped} hints for it` : ''}`);
      }
    }
  }

  /** Drops every hint for `node` (it left the ring for good), from memory and, with the next commit, from the store; returns how many. */
  private hintsForget(node: string): number {
    const refs = this.hints.forget(node);
    for (const ref of refs) this.pendingHintsDelete.push({ node, ref });
    if (refs.length > 0) this.noteDirty();
    return refs.length;
  }

  // ---------------------------------------------------------------------------------------------
  // Streams: the slots of a walk of the store that pass a filter, sent to one peer page by page

  /**
   * Starts (or starts again) a stream: pages of the store are walked and what passes the filter is
   * sent, up to STREAM_PAGES_IN_FLIGHT pages ahead of the acknowledgements; done when the walk has
   * reached the end and every page is acknowledged.
   */
  private runStream(job: StreamJob): void {
    job.busy = true;
    job.walkDone = false;
    this.walkStreamPage(job);
  }

  private walkStreamPage(job: StreamJob): void {
    if (job.walking || job.walkDone || job.cancelled || job.pending.length >= STREAM_PAGES_IN_FLIGHT) return;
    job.walking = true;
    const gen = job.gen;
    const startAfter = job.after;
    this.walkStore(startAfter, STREAM_PAGE_SLOTS, job.nextPageMs, (entries, next) => {
      if (job.cancelled || gen !== job.gen) return; // started again meanwhile: this walk is void
      job.walking = false;
      job.touchedMs = this.now;
      if (entries === undefined) return this.streamFailed(job);
      if (job.slotsPerSecond > 0) job.nextPageMs = this.now + (entries.length * 1000) / job.slotsPerSecond;
      job.after = next;
      if (next === undefined) job.walkDone = true;
      const theirs = entries.filter(job.filter);
      if (theirs.length > 0) this.sendStreamPage(job, theirs, gen, startAfter);
      this.streamProgress(job);
    }, () => !job.cancelled && gen === job.gen);
  }

  private sendStreamPage(job: StreamJob, slots: SlotEntry[], gen: number, startAfter: string | undefined): void {
    const chunks = this.chunkSlots(slots);
    const page: StreamPage = { job, gen, startAfter, left: chunks.length };
    job.pending.push(page);
    for (const chunk of chunks) {
      const msgId = this.nextMsgId();
      this.replOut.set(msgId, { kind: 'stream', peer: job.peer, page, sentMs: this.now, deadlineMs: this.now + this.cfg.replAckTimeoutMs });
      this.replInFlight.set(job.peer, (this.replInFlight.get(job.peer) ?? 0) + 1);
      const msg: PeerMessage = { t: PeerMessageType.REPL, id: msgId, slots: chunk.map(slotRecord) };
      const bytes = encodeFrame(msg).length;
      job.slots += chunk.length;
      job.bytes += bytes;
      if (job.repair) {
        this.counters.repairSlotsSent += chunk.length;
        this.counters.repairBytesSent += bytes;
      }
      this.send(job.peer, msg);
    }
  }

  /** Every message of `page` was acknowledged. */
  private streamPageDone(page: StreamPage): void {
    const job = page.job;
    if (job.cancelled || page.gen !== job.gen) return;
    const i = job.pending.indexOf(page);
    if (i >= 0) job.pending.splice(i, 1);
    job.touchedMs = this.now;
    this.streamProgress(job);
  }

  /** Walk on, or, with the walk at its end and every page acknowledged, finish. */
  private streamProgress(job: StreamJob): void {
    if (job.walkDone && job.pending.length === 0 && !job.walking) {
      job.busy = false;
      job.finished = true;
      job.onDone();
      return;
    }
    this.walkStreamPage(job);
  }

  /** A walk or a page failed: everything from the oldest page not acknowledged goes again, later. */
  private streamFailed(job: StreamJob): void {
    if (job.pending.length > 0) job.after = (job.pending[0] as StreamPage).startAfter;
    job.pending.length = 0;
    job.gen++;
    job.walking = false;
    job.walkDone = false;
    job.busy = false;
    job.onFail();
  }

  /** One page of a walk of the whole store, not before `notBeforeMs` (pacing). */
  private walkStore(after: string | undefined, limit: number, notBeforeMs: number, done: (entries: SlotEntry[] | undefined, next: string | undefined) => void, alive: () => boolean): void {
    this.later(notBeforeMs, () => {
      // Ended while the page waited for its turn: no walk (and the deferred entry goes with it).
      if (!alive()) return;
      const id = ++this.ioSeq;
      this.walks.set(id, done);
      this.out.walks.push({ id, after, limit });
    });
  }

  private onWalked(id: number, entries: SlotEntry[] | undefined, next: string | undefined): void {
    const done = this.walks.get(id);
    if (done === undefined) return;
    this.walks.delete(id);
    done(entries, next);
  }

  private later(atMs: number, run: () => void): void {
    if (atMs <= this.now) run();
    else this.deferred.push({ atMs, run });
  }

  // ---------------------------------------------------------------------------------------------
  // Anti-entropy: replicas compare hash trees of the keys they share and send each other the slots
  // under the leaves that differ (cluster/anti-entropy.ts). A node starts one session at a time,
  // with its peers in turn, every `repairIntervalMs`; it takes part in at most
  // MAX_INBOUND_REPAIRS started by others. Walks are paced at `repairSlotsPerSecond`.

  /** Compare with every peer now, one after another; the reply holds the round's figures. */
  private requestRepair(req: number): void {
    if (!this.mayRepair()) {
      this.out.replies.push({ req, reply: { ok: false, code: ErrorCode.NOT_READY, message: `${this.id} is still joining the ring or being rebuilt; repair it once it is done` } });
      return;
    }
    if (this.repairRounds.length >= MAX_REPAIR_ROUNDS) {
      this.out.replies.push({ req, reply: { ok: false, code: ErrorCode.OVERLOADED, message: `${this.id} has ${this.repairRounds.length} repair rounds waiting or under way, the most it holds; retry once they are done` } });
      return;
    }
    const peers = this.repairPeers();
    const round: RepairRound = { peers: peers.length, sessions: 0, inSync: 0, failed: 0, leavesDiffered: 0, slotsSent: 0, bytesSent: 0 };
    const done = (r: RepairRound): void => void this.out.replies.push({ req, reply: { ok: true, repair: r } });
    if (peers.length === 0) done(round);
    else this.repairRounds.push({ queue: peers, round, done, notBeforeMs: this.now, retries: 0 });
  }

  /** Members this node compares with: up, not rebuilding (a rebuild streams them everything). */
  private repairPeers(): string[] {
    return this.membership.ring().members.filter((m) => m !== this.id && this.isUp(m) && !this.membership.isRebuilding(m));
  }

  /** Whether this node may compare now: it knows the ring, and it is not rebuilding (its store would look empty). */
  private mayRepair(): boolean {
    return this.membership.settled(this.now) && !this.membership.isRebuilding(this.id);
  }

  private driveRepair(): void {
    // A session's push moving on (pages acknowledged) keeps it alive, however long the walk.
    const idle = (s: RepairSession): boolean => this.now >= Math.max(s.deadlineMs, (s.push?.touchedMs ?? 0) + REPAIR_IDLE_TIMEOUT_MS);
    for (const [key, s] of this.repairsIn) if (idle(s) || !this.isUp(s.peer)) this.endRepair(s, 'failed', key);
    const out = this.repairOut;
    if (out !== undefined && (idle(out) || !this.isUp(out.peer))) this.endRepair(out, 'failed');
    if (this.repairOut !== undefined || !this.mayRepair()) return;
    const asked = this.repairRounds[0];
    let peer: string | undefined;
    if (asked !== undefined) {
      if (this.now < asked.notBeforeMs) return;
      peer = asked.queue.shift();
      if (peer === undefined) return;
    } else {
      if (this.now < this.nextRepairMs || this.cfg.repairIntervalMs === 0) return;
      this.nextRepairMs = this.now + this.cfg.repairIntervalMs;
      const peers = this.repairPeers();
      if (peers.length === 0) return;
      peer = peers[this.repairTurn++ % peers.length] as string;
      // Already comparing with us: this turn is theirs.
      if ([...this.repairsIn.values()].some((r) => r.peer === peer)) return;
    }
    const s = this.newRepair(peer, this.nextMsgId(), true);
    s.round = asked;
    this.repairOut = s;
    this.send(peer, { t: PeerMessageType.AE_REQ, id: s.id });
    this.hashShared(s);
  }

  private newRepair(peer: string, id: number, initiator: boolean): RepairSession {
    return { peer, id, initiator, tree: new MerkleTree(), hashed: false, theirs: undefined, awaiting: new Set(), lastBranches: undefined, leaves: new Set(), push: undefined, deadlineMs: this.now + REPAIR_IDLE_TIMEOUT_MS, round: undefined, ended: false };
  }

  /** Whether a slot's key is on both this node and `peer` (by this node's ring). */
  private shared(peer: string): (e: SlotEntry) => boolean {
    return (e) => {
      if (this.expired(e.ref)) return false;
      const r = this.replicasOf(e.ref.videoId);
      return r.includes(peer) && r.includes(this.id);
    };
  }

  /** The tree leaf of a video id; a walk meets a series' slots one after another, so the last is kept. */
  private leafOfVideo(): (videoId: string) => number {
    let lastVideo: string | undefined;
    let lastLeaf = 0;
    return (videoId) => {
      if (videoId !== lastVideo) {
        lastVideo = videoId;
        lastLeaf = leafOf(this.hash64(videoId));
      }
      return lastLeaf;
    };
  }

  /** Walks the whole store, paced, hashing the slots shared with the session's peer into its tree. */
  private hashShared(s: RepairSession): void {
    const shared = this.shared(s.peer);
    const leaf = this.leafOfVideo();
    const walk = { after: undefined as string | undefined, nextPageMs: this.now, toldMs: this.now };
    const startedMs = this.now;
    const page = (): void => {
      this.walkStore(walk.after, STREAM_PAGE_SLOTS, walk.nextPageMs, (entries, next) => {
        if (s.ended) return;
        if (entries === undefined) return this.endRepair(s, 'failed');
        s.deadlineMs = this.now + REPAIR_IDLE_TIMEOUT_MS;
        walk.nextPageMs = this.now + (entries.length * 1000) / this.cfg.repairSlotsPerSecond;
        for (const e of entries) {
          if (shared(e)) s.tree.add(leaf(e.ref.videoId), slotHash(this.hash64, e));
        }
        if (next !== undefined) {
          walk.after = next;
          // Still walking: said with the message of the next step that carries nothing (no branches),
          // which the other side takes as a sign of life only.
          if (this.now - walk.toldMs >= REPAIR_PROGRESS_MS) {
            walk.toldMs = this.now;
            if (s.initiator) this.send(s.peer, { t: PeerMessageType.AE_LEAVES, id: s.id, branches: [], hashes: [], last: false });
            else this.send(s.peer, { t: PeerMessageType.AE_LEAVES_REPLY, id: s.id, branches: [], hashes: [] });
          }
          return page();
        }
        s.hashed = true;
        // The other side walks at the same pace; a store larger than ours takes it longer.
        s.deadlineMs = this.now + REPAIR_IDLE_TIMEOUT_MS + (this.now - startedMs);
        if (s.initiator) this.compareBranches(s);
        else this.send(s.peer, { t: PeerMessageType.AE_TREE, id: s.id, hashes: s.tree.branches() });
      }, () => !s.ended);
    };
    page();
  }

  /** The initiator holds both trees' branches: send its leaves under those that differ. */
  private compareBranches(s: RepairSession): void {
    if (!s.hashed || s.theirs === undefined || s.ended) return;
    const branches = differingBranches(s.tree.branches(), s.theirs);
    if (branches.length === 0) {
      this.send(s.peer, { t: PeerMessageType.AE_LEAVES, id: s.id, branches: [], hashes: [], last: true });
      return this.endRepair(s, 'inSync');
    }
    // The peer starts sending its slots on `last`, with the leaves it knows of then: so `last` goes
    // only once every other message is answered, which a message that arrives late, after it,
    // could not be (it would have no say in what the peer sends).
    const lastFrom = Math.floor((branches.length - 1) / AE_BRANCHES_PER_MESSAGE) * AE_BRANCHES_PER_MESSAGE;
    s.lastBranches = branches.slice(lastFrom);
    for (let i = 0; i < lastFrom; i += AE_BRANCHES_PER_MESSAGE) this.sendLeaves(s, branches.slice(i, i + AE_BRANCHES_PER_MESSAGE), false);
    this.sendLastLeaves(s);
  }

  private sendLeaves(s: RepairSession, branches: number[], last: boolean): void {
    for (const b of branches) s.awaiting.add(b);
    this.send(s.peer, { t: PeerMessageType.AE_LEAVES, id: s.id, branches, hashes: s.tree.leavesOf(branches), last });
  }

  /** The `last` leaves, once every other `ae-leaves` is answered. */
  private sendLastLeaves(s: RepairSession): void {
    if (s.awaiting.size > 0 || s.lastBranches === undefined) return;
    const branches = s.lastBranches;
    s.lastBranches = undefined;
    this.sendLeaves(s, branches, true);
  }

  private onRepairRequest(from: string, id: number): void {
    const key = `${from}\0${id}`;
    if (this.repairsIn.has(key)) return;
    // A peer starts a new comparison only once its last one ended: ours of that one is stale.
    for (const [k, old] of this.repairsIn) if (old.peer === from) this.endRepair(old, 'failed', k);
    if (!this.mayRepair()) return void this.send(from, { t: PeerMessageType.AE_TREE, id, hashes: [], code: ErrorCode.NOT_READY });
    // One comparison per pair at a time: two at once would send the same slots twice.
    const busy = this.repairsIn.size >= MAX_INBOUND_REPAIRS || this.repairOut?.peer === from;
    if (busy) {
      // Both started one with the other: the smaller id's goes on, the other gives way.
      const yieldToThem = this.repairOut?.peer === from && this.repairsIn.size < MAX_INBOUND_REPAIRS && from < this.id;
      if (!yieldToThem) return void this.send(from, { t: PeerMessageType.AE_TREE, id, hashes: [], code: ErrorCode.OVERLOADED });
      this.endRepair(this.repairOut as RepairSession, 'busy');
    }
    const s = this.newRepair(from, id, false);
    this.repairsIn.set(key, s);
    this.hashShared(s);
  }

  private onRepairTree(from: string, id: number, hashes: number[], code: ErrorCode | undefined): void {
    const s = this.repairOut;
    // A repeated tree (the network may deliver a message twice) would compare, and send, again.
    if (s === undefined || s.peer !== from || s.id !== id || s.theirs !== undefined) return;
    if (code !== undefined) return this.endRepair(s, code === ErrorCode.OVERLOADED ? 'busy' : 'failed');
    s.theirs = hashes;
    s.deadlineMs = this.now + REPAIR_IDLE_TIMEOUT_MS;
    this.compareBranches(s);
  }

  /** The initiator's leaves: answer with ours, note the leaves that differ, and on the last, send ours under them. */
  private onRepairLeaves(from: string, id: number, branches: number[], hashes: number[], last: boolean): void {
    const key = `${from}\0${id}`;
    const s = this.repairsIn.get(key);
    // Sending already: a repeated message changes nothing (its reply went with the first).
    if (s === undefined || !s.hashed || s.push !== undefined) return;
    // None and not the last: the initiator is still walking its store (see hashShared).
    s.deadlineMs = Math.max(s.deadlineMs, this.now + REPAIR_IDLE_TIMEOUT_MS);
    if (branches.length > 0) {
      const mine = s.tree.leavesOf(branches);
      this.send(from, { t: PeerMessageType.AE_LEAVES_REPLY, id, branches, hashes: mine });
      for (const leaf of differingLeaves(branches, mine, hashes)) s.leaves.add(leaf);
    }
    if (last) this.pushLeaves(s, key);
  }

  private onRepairLeavesReply(from: string, id: number, branches: number[], hashes: number[]): void {
    const s = this.repairOut;
    if (s === undefined || s.peer !== from || s.id !== id) return;
    // None: the peer is still walking its store (see hashShared).
    if (branches.length === 0) return void (s.deadlineMs = Math.max(s.deadlineMs, this.now + REPAIR_IDLE_TIMEOUT_MS));
    // Each reply once: one delivered twice must not stand in for one still on its way.
    if (!branches.every((b) => s.awaiting.has(b))) return;
    s.deadlineMs = this.now + REPAIR_IDLE_TIMEOUT_MS;
    for (const b of branches) s.awaiting.delete(b);
    for (const leaf of differingLeaves(branches, s.tree.leavesOf(branches), hashes)) s.leaves.add(leaf);
    if (s.awaiting.size > 0) return;
    if (s.lastBranches !== undefined) return this.sendLastLeaves(s);
    this.pushLeaves(s);
  }

  /** Sends the peer every shared slot under the leaves that differ; the session ends when it has them. */
  private pushLeaves(s: RepairSession, key?: string): void {
    if (s.initiator) this.counters.repairLeavesDiffered += s.leaves.size;
    if (s.leaves.size === 0) return this.endRepair(s, 'inSync', key);
    const shared = this.shared(s.peer);
    const leaf = this.leafOfVideo();
    s.push = new StreamJob(
      s.peer,
      (e) => s.leaves.has(leaf(e.ref.videoId)) && shared(e),
      this.cfg.repairSlotsPerSecond,
      () => this.endRepair(s, 'repaired', key),
      () => this.endRepair(s, 'failed', key),
      true,
    );
    this.runStream(s.push);
  }

  /** `busy`: the peer was comparing already; nothing happened, and a round asks it again shortly. */
  private endRepair(s: RepairSession, how: 'inSync' | 'repaired' | 'failed' | 'busy', key?: string): void {
    if (s.ended) return;
    s.ended = true;
    s.push?.cancel();
    if (key !== undefined || !s.initiator) {
      this.repairsIn.delete(key ?? `${s.peer}\0${s.id}`);
      return;
    }
    this.repairOut = undefined;
    const r = s.round;
    if (how === 'busy') {
      if (r !== undefined && r.retries < MAX_BUSY_RETRIES) {
        r.retries++;
        r.queue.push(s.peer);
        r.notBeforeMs = this.now + BUSY_RETRY_MS;
        return;
      }
      how = 'failed';
      if (r === undefined) return;
    }
    this.counters.repairSessions++;
    if (how === 'inSync') this.counters.repairInSync++;
    if (how === 'failed') this.counters.repairFailed++;
    if (how !== 'inSync') this.out.log.push(`repair with ${s.peer}: ${how === 'failed' ? 'failed or timed out; it runs again later' : `${s.leaves.size} leaves differed, sent ${s.push?.slots ?? 0} slots (${s.push?.bytes ?? 0} bytes)`}`);
    if (r === undefined) return;
    r.round.sessions++;
    if (how === 'inSync') r.round.inSync++;
    if (how === 'failed') r.round.failed++;
    r.round.leavesDiffered += s.leaves.size;
    r.round.slotsSent += s.push?.slots ?? 0;
    r.round.bytesSent += s.push?.bytes ?? 0;
    if (r.queue.length === 0 && this.repairRounds[0] === r) {
      this.repairRounds.shift();
      r.done(r.round);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Time

  private onTimers(): void {
    if (this.now >= this.nextMembershipTickMs) {
      this.applyMembership(this.membership.tick(this.now));
      this.nextMembershipTickMs = this.now + this.tickIntervalMs;
      this.expireBatches();
      this.sweepExpired();
    }
    if (this.now >= this.nextHintReplayMs) {
      this.nextHintReplayMs = this.now + this.cfg.hintReplayIntervalMs;
      if (this.hints.size > 0) this.replayHints();
      this.driveRebuilds();
      this.driveMoves();
      this.driveRepair();
    }
    if (this.deferred.length > 0) {
      const due = this.deferred.filter((d) => d.atMs <= this.now);
      if (due.length > 0) {
        this.deferred = this.deferred.filter((d) => d.atMs > this.now);
        for (const d of due) d.run();
      }
    }
    for (const [id, r] of this.replOut) {
      if (this.now < r.deadlineMs) continue;
      // A replica still up but behind on its commits (under load) acks late. Hinting what it is
      // about to acknowledge would only add work where there is too much already (a hint is a
      // store write now, a scan and a resend later), and its late ack would no longer count for
      // the writes waiting on it. So it is waited for, while the failure detector holds it up. So
      // are a stream's pages: given up at the first timeout, a stream to such a replica started
      // again from the same page for ever and never ended (nor did a repair or a ring change).
      if (r.kind !== 'repair' && this.isUp(r.peer) && this.now < r.sentMs + this.cfg.replAckMaxWaitMs) {
        r.deadlineMs = Math.min(this.now + this.cfg.replAckTimeoutMs, r.sentMs + this.cfg.replAckMaxWaitMs);
        continue;
      }
      this.replOut.delete(id);
      this.replInFlight.set(r.peer, Math.max(0, (this.replInFlight.get(r.peer) ?? 1) - 1));
      this.replFailed(r);
    }
    for (const op of this.writes) {
      if (this.now >= op.deadlineMs) {
        this.counters.writesTimedOut++;
        this.finishWrite(op, failure(ErrorCode.TIMEOUT, `the write met ${op.acked.size} of the ${op.need} replicas it needs within ${this.cfg.writeTimeoutMs} ms; it is durable on those and may reach the others, so its outcome is unknown`));
      }
    }
    for (const [id, f] of this.forwards) {
      if (this.now < f.deadlineMs) continue;
      this.forwards.delete(id);
      this.settlePart(f.request, failure(ErrorCode.TIMEOUT, `${f.to} did not answer the forwarded write within ${this.cfg.writeTimeoutMs} ms; its outcome is unknown`));
    }
    for (const op of this.reads) {
      if (this.now >= op.deadlineMs) {
        this.counters.readsTimedOut++;
        this.failRead(op, failure(ErrorCode.TIMEOUT, `the read did not hear from ${op.need} replicas within ${this.cfg.readTimeoutMs} ms`));
      } else if (this.now >= op.speculateAtMs && op.stats === undefined) {
        // Again each `speculativeRetryMs` while the read waits: the one asked last may be as
        // unresponsive as the first, and a replica not usable before may be back.
        this.speculate(op);
        op.speculateAtMs = this.now + this.cfg.speculativeRetryMs;
      }
    }
    for (const [id, r] of this.readsOut) if (r.op.done) this.readsOut.delete(id);
  }

  private expireBatches(): void {
    for (const [batch, f] of this.forwardedTo) {
      if (this.forwardedTo.size <= this.cfg.maxDedupeEntries && this.now - f.atMs <= this.cfg.dedupeWindowMs) break;
      this.forwardedTo.delete(batch);
      this.pendingBatchesDelete.push(batchRecordKey({ batch, forwardedTo: [...f.targets] }));
      this.noteDirty();
    }
    let youngest = Number.POSITIVE_INFINITY;
    for (const [batch, atMs] of this.batches) {
      if (this.batches.size <= this.cfg.maxDedupeEntries && this.now - atMs <= this.cfg.dedupeWindowMs) break;
      if (this.now - atMs <= this.cfg.dedupeWindowMs) youngest = Math.min(youngest, this.now - atMs);
      this.batches.delete(batch);
      this.batchRings.delete(batch);
      this.pendingBatchesDelete.push(batch);
      this.noteDirty();
    }
    // Ids given up for room before their time: a client's retry of one would be applied again.
    // Said at most once a minute, with how young the youngest such id was.
    if (youngest !== Number.POSITIVE_INFINITY && this.now - this.dedupeWarnedMs >= 60_000) {
      this.dedupeWarnedMs = this.now;
      this.out.log.push(`warn: applied batch ids are given up at the cap of ${this.cfg.maxDedupeEntries} before their ${this.cfg.dedupeWindowMs} ms, the youngest ${Math.round(youngest)} ms old: more batches come than it holds; a client retry later than that would count twice`);
    }
  }

  private nextDeadline(): number {
    // A commit under way: the next starts on the slots that come in or on its `persisted`, not at a
    // time (see maybeCommit).
    // A periodic job that fell due in a step that was not a tick (a stop, say) runs at the next tick.
    const periodic = Math.max(this.nextHintReplayMs, this.now + 1);
    let d = Math.min(Math.max(this.nextMembershipTickMs, this.now + 1), this.inFlightCommits.length === 0 ? this.commitDueMs : Number.POSITIVE_INFINITY);
    const changing = this.membership.leavers().length > 0 || this.membership.removing !== undefined || this.membership.lifecycle === Lifecycle.REMOVED;
    if (changing || this.hints.size > 0 || this.streams.size > 0 || this.membership.isRebuilding(this.id) || this.membership.ring().members.some((m) => this.membership.isRebuilding(m))) {
      d = Math.min(d, periodic);
    }
    // Anti-entropy: the next session, the idle timeouts of those under way, paced walk pages.
    if (this.repairRounds.length > 0 || this.repairOut !== undefined || this.repairsIn.size > 0) d = Math.min(d, periodic);
    else if (this.cfg.repairIntervalMs > 0) d = Math.min(d, Math.max(this.nextRepairMs, periodic));
    for (const x of this.deferred) d = Math.min(d, Math.max(x.atMs, this.now + 1));
    if (this.writes.size > 0 || this.reads.size > 0 || this.replOut.size > 0 || this.forwards.size > 0) d = Math.min(d, this.now + TIMER_RESOLUTION_MS);
    assert(d > this.now || d === this.commitDueMs, 'the next deadline lies ahead');
    return d;
  }
}
