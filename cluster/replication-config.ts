/**
 * Configuration of the data path — replication, group commit, hints, dedupe, bounds — in one place,
 * a reason beside every default, relationships checked once at start. The node composes it with
 * the membership config (membership-config.ts) and its own settings (node/config.ts).
 */
import { TallyError } from '../protocol/errors.js';
import { MAX_EVENTS_PER_BATCH, MAX_REPLICATION_FACTOR } from '../protocol/limits.js';
import { defaultRetention, validateRetention, type Retention } from './retention.js';
import { RESOLUTIONS_OF_EVENT } from './time-buckets.js';

export interface ReplicationConfig {
  /** Replicas of every key. The same on every member (checked in the peer hello). */
  rf: number;
  /** How long the first dirty slot waits for others to join its group commit (0: none; what comes in while a commit is under way joins the next). */
  commitDelayMs: number;
  /** Dirty slots that start a commit at once rather than after the delay. */
  commitAtDirty: number;
  /** Dirty slots awaiting a commit, at most; past it writes get OVERLOADED. Also the largest commit. */
  maxDirtySlots: number;
  /** Clean slots kept in memory, so adds and joins of hot buckets need no read of the store. */
  maxCachedSlots: number;
  /** Memory for the filters that let writes skip reading back slots that cannot be stored (cluster/written-filter.ts). */
  writtenFilterBytes: number;
  /** A coordinator answers TIMEOUT (outcome unknown) if a write has not met its level by then. */
  writeTimeoutMs: number;
  /** A coordinator answers TIMEOUT if a read has not met its level by then. */
  readTimeoutMs: number;
  /** A replica that has not answered a read in this time is replaced by another (rapid read protection). */
  speculativeRetryMs: number;
  /**
   * A replica that has not acknowledged replicated slots in this time gets a hint for them, once
   * the failure detector holds it down; while it holds it up, not before replAckMaxWaitMs.
   */
  replAckTimeoutMs: number;
  /** The longest a replicated commit (or hint replay, or stream page) waits for the ack of a replica that is up. */
  replAckMaxWaitMs: number;
  /** Replication messages awaiting an ack from one peer, at most; past it, slots become hints. */
  maxReplInFlightPerPeer: number;
  /** Client write requests being coordinated, at most; past it: OVERLOADED. */
  maxInFlightWrites: number;
  /** Events (tuples) of the write requests being coordinated, at most; past it: OVERLOADED. */
  maxInFlightEvents: number;
  /** Range queries being answered, at most; past it: OVERLOADED. */
  maxInFlightQueries: number;
  /** Hinted buckets kept per target node; past it, new hints are counted as dropped. */
  maxHintsPerNode: number;
  /** Hints older than this are dropped (and counted): repair, not hints, heals longer outages. */
  hintWindowMs: number;
  /** How often hints are replayed to members that are up. */
  hintReplayIntervalMs: number;
  /** Buckets replayed to one node per replay round. */
  hintReplayBuckets: number;
  /** How long applied batch ids are remembered, so a retry is never counted twice. */
  dedupeWindowMs: number;
  /** Applied batch ids remembered, at most (the oldest go first). */
  maxDedupeEntries: number;
  /** fsync every group commit. */
  fsync: boolean;
  /** How often this node starts an anti-entropy comparison with its next peer; 0: only on demand. */
  repairIntervalMs: number;
  /** Slots an anti-entropy walk reads per second at most, so repair never crowds out live traffic. */
  repairSlotsPerSecond: number;
  /** How long minute and hour buckets are kept (retention.ts). The same on every member (checked in the peer hello). */
  retention: Retention;
  /** How often expired days are deleted again, beside the sweep each time a day expires (catching slots that were in flight then). */
  retentionSweepIntervalMs: number;
}

export function defaultReplicationConfig(): ReplicationConfig {
  return {
    // Three copies: one node down still leaves a quorum of two, and a copy in each of three zones.
    rf: 3,
    // None: a commit starts as soon as there is something to write, and what comes in while it is
    // made, written and synced waits for the next (commits are pipelined), so commits grow with the
    // load by themselves. 2 ms here cost 256 callers of single events a fifth of their events/s
    // (31,145 and 32,168 against 39,465 and 39,514, one node, in turn): each round of their calls
    // waited it out once the commit before had drained. Full load was the same either way.
    commitDelayMs: 0,
    // About 2 MB of batch: large enough to amortise, small enough to stay fast.
    commitAtDirty: 20_000,
    // Two full requests of distinct keys (3 slots an event) beside a commit under way: ~20 MB.
    maxDirtySlots: 60_000,
    // Current minute, hour and day of ~60,000 active series at a few actors each: ~60 MB.
    maxCachedSlots: 200_000,
    // 16 filters of 1 MiB: the current day, hour and minutes, and some before.
    writtenFilterBytes: 16 * 1024 * 1024,
    // Well under the client's 10 s, so the client hears TIMEOUT from the node and can retry it there.
    writeTimeoutMs: 4_000,
    readTimeoutMs: 4_000,
    // A replica answers a read in 1-2 ms on a LAN; 20 ms is far in its tail (p99 of replica reads
    // under load measured ~8 ms), so a frozen replica costs a read ~20 ms, not seconds.
    speculativeRetryMs: 20,
    // A live replica acks within a commit or two (ms); a second means it is down or frozen.
    replAckTimeoutMs: 1_000,
    // A replica that is up but loaded past its capacity acks in seconds; hinting it then doubles
    // its work. A connection lost with messages on it is the case this bounds.
    replAckMaxWaitMs: 10_000,
    // With up to 1,500 slots a message, ~400,000 slots unacknowledged to one peer before hinting.
    maxReplInFlightPerPeer: 256,
    // Twice the in-flight requests of a client's connection (1,024) a few times over.
    maxInFlightWrites: 8_192,
    // About a second of a node's work at tens of thousands of events/s: well inside the 4 s write
    // timeout, so a node at capacity refuses at once rather than time out what it took.
    maxInFlightEvents: 40_000,
    // Twenty full get requests; each query is a handful of LevelDB seeks.
    maxInFlightQueries: 20_000,
    // Hours of writes to a few thousand hot series; ~100 bytes each in memory and on disk.
    maxHintsPerNode: 200_000,
    // Cassandra's max_hint_window: three hours of outage are healed by hints.
    hintWindowMs: 3 * 60 * 60 * 1000,
    // Fifty rounds a second at most (one round per node waits for the ack of the last).
    hintReplayIntervalMs: 20,
    // 64 buckets a round: up to ~3,000 buckets/s per node, without crowding out live traffic.
    hintReplayBuckets: 64,
    // A client retries within its deadline (seconds); ten minutes covers a slow restart of ours too.
    dedupeWindowMs: 10 * 60 * 1000,
    // Ten minutes of 150 batches/s.
    maxDedupeEntries: 100_000,
    // The LevelDB log survives a process crash without fsync; power loss needs it.
    fsync: false,
    // Each node compares with one peer a minute, so with n nodes a pair is compared every ~(n-1)/2
    // minutes from either side: divergence that hints and read repair missed lives minutes, not
    // until an operator runs a repair (Cassandra) — at the cost of one paced walk a minute.
    repairIntervalMs: 60_000,
    // A walk page of 4,096 slots every ~40 ms: a store of a million slots is compared in ~10 s,
    // and a page's read stays a small share of the event loop.
    repairSlotsPerSecond: 100_000,
    retention: defaultRetention(),
    // An empty range delete is one seek; an hour bounds how long a straggler outlives its day.
    retentionSweepIntervalMs: 60 * 60 * 1000,
  };
}

/** Replicas a consistency level needs, for replication factor `rf`. */
export function replicasNeeded(cl: 'one' | 'quorum' | 'all', rf: number): number {
  return cl === 'one' ? 1 : cl === 'all' ? rf : Math.floor(rf / 2) + 1;
}

/** Returns `c` if every value and relationship holds; throws BAD_REQUEST naming the first that does not. */
export function validateReplicationConfig(c: ReplicationConfig): ReplicationConfig {
  const fail = (m: string): never => {
    throw new TallyError('BAD_REQUEST', `replication config: ${m}`);
  };
  const int = (k: keyof ReplicationConfig, min: number, max = Number.MAX_SAFE_INTEGER): void => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) fail(`${k} must be an integer in [${min}, ${max}], got ${String(v)}`);
  };
  int('rf', 1, MAX_REPLICATION_FACTOR);
  int('commitDelayMs', 0, 1000);
  int('commitAtDirty', 1);
  int('maxDirtySlots', MAX_EVENTS_PER_BATCH * RESOLUTIONS_OF_EVENT.length, 65_536);
  int('maxCachedSlots', 1);
  int('writtenFilterBytes', 0);
  int('writeTimeoutMs', 1);
  int('readTimeoutMs', 1);
  int('speculativeRetryMs', 1);
  int('replAckTimeoutMs', 1);
  int('replAckMaxWaitMs', 1);
  int('maxReplInFlightPerPeer', 1);
  int('maxInFlightWrites', 1);
  int('maxInFlightEvents', 1);
  int('maxInFlightQueries', 1);
  int('maxHintsPerNode', 0);
  int('hintWindowMs', 1);
  int('hintReplayIntervalMs', 1);
  int('hintReplayBuckets', 1, 64);
  int('dedupeWindowMs', 1);
  int('maxDedupeEntries', 1);
  int('repairIntervalMs', 0);
  // A page (4,096 slots) must take well under a repair session's 10 s idle timeout.
  int('repairSlotsPerSecond', 1_000);
  int('retentionSweepIntervalMs', 1_000);
  validateRetention(c.retention);
  if (c.commitAtDirty > c.maxDirtySlots) fail(`commitAtDirty (${c.commitAtDirty}) must not exceed maxDirtySlots (${c.maxDirtySlots})`);
  if (c.speculativeRetryMs >= c.readTimeoutMs) fail('speculativeRetryMs must be below readTimeoutMs');
  if (c.replAckMaxWaitMs < c.replAckTimeoutMs) fail('replAckMaxWaitMs must not be below replAckTimeoutMs');
  if (c.replAckTimeoutMs >= c.writeTimeoutMs) fail('replAckTimeoutMs must be below writeTimeoutMs, so a slow replica is hinted while the write can still succeed');
  return c;
}
