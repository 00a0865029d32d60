/**
 * Configuration of gossip, failure detection and the ring: one place, a reason beside every
 * default, relationships checked once at start.
 *
 * The defaults are designed for these targets on a loopback cluster: SIGKILL of a node (its
 * connections drop) → down everywhere within 3 s; SIGSTOP (no drop) → down within 10 s; SIGCONT →
 * up within 5 s; no false down with event-loop stalls of a few hundred ms; 5 nodes from one seed
 * all up within 5 s. test/sim/membership.test.ts checks each against the simulator; the numbers
 * below come from test/sim/detector-stats.test.ts (SIM_STATS=1). In a 5-node sim: SIGKILL seen
 * everywhere in 1.75 s, SIGSTOP in 5.7 s (worst of 60: 7.5 s; 6.7 s, worst 8.8 s, in a cluster
 * started 6 s before), SIGCONT in one network delay.
 *
 * Not here: the node's own settings (port, data dir, ws limits); the node composes this in.
 */

import { TallyError } from '../protocol/errors.js';
import { MAX_VNODES } from '../protocol/gossip.js';
import { parseAddress } from '../protocol/validate.js';
import { DEFAULT_VNODES } from '../protocol/hash-ring.js';
import type { PhiDetectorConfig } from './phi-detector.js';

/** The design's bound: each node gossips with no more than 3 others a round. */
export const MAX_GOSSIP_PEERS_PER_ROUND = 3;
/** Most seed addresses a node is given. */
export const MAX_SEEDS = 64;
/** Largest arrival window per peer (memory: 8 bytes an interval, per peer). */
export const MAX_ARRIVAL_WINDOW_SIZE = 10_000;

export interface MembershipConfig extends PhiDetectorConfig {
  /** Addresses to contact to join. Used for discovery only; a node in this list is a seed. */
  seeds: string[];
  gossipIntervalMs: number;
  /** How often the node calls `tick`; also the yardstick for noticing our own stalls. */
  tickIntervalMs: number;
  /** Live peers gossiped with each round, chosen by shuffled round-robin. */
  livePeersPerRound: number;
  /** Cap on peers contacted per round: the live ones, maybe one believed down, maybe one seed. */
  maxGossipPeersPerRound: number;
  /** A gap between inputs longer than this is our own stall; the excess is forgiven to all peers. */
  localPauseThresholdMs: number;
  /** Virtual-node tokens of this node. Must stay the same for the life of its data. */
  vnodes: number;
  /** States whose generation is further than this ahead of our clock are dropped. */
  maxGenerationAheadMs: number;
  /** A member that is down and whose state has not advanced for this long is forgotten. */
  memberExpiryMs: number;
  /** A node that hears from no live peer this long after its start serves with the ring it has. */
  settleTimeoutMs: number;
}

export function defaultConfig(): MembershipConfig {
  return {
    // A single node with no seeds is a cluster of one; a real deployment lists 2-3 seeds.
    seeds: [],
    // The design's figure: each node gossips every second.
    gossipIntervalMs: 1000,
    // Four checks a round: a verdict lands within 250 ms of its deadline, at negligible cost.
    tickIntervalMs: 250,
    // With one, a node whose own exchange failed and that nobody happened to call hears nothing
    // that round; at 10% loss a few such rounds in a row convicted live peers (4 false downs in
    // 3000 node-minutes of a 100-node sim). Two: none, and SIGSTOP is seen in 5.7 s (worst 7.5 s)
    // instead of 7.0 s (worst 8.8 s) in a 5-node sim, for one more exchange a round.
    livePeersPerRound: 2,
    // The design's "no more than 3 others": two live, plus a down peer or a seed now and then.
    maxGossipPeersPerRound: 3,
    // Four ticks late is a stall of ours; shorter ones are covered by the acceptable pause.
    localPauseThresholdMs: 1000,
    // Cassandra's and akka's default (10^-8 odds that a live peer is this late, by the model).
    phiThreshold: 8,
    // A floor for a perfectly regular peer (a 2-node cluster): one late beat must not convict.
    // Relayed arrivals jitter more than this (std dev of hundreds of ms in every sim), so in a
    // cluster of more than two it rarely binds.
    minStdDevMs: 250,
    // A peer's event-loop or GC stall of up to ~2 s is not a death. It also absorbs the heavy tail
    // of relayed arrivals that the normal model underrates (the worst intervals in a 100-node sim
    // sat 5-7 std devs above the mean).
    acceptableHeartbeatPauseMs: 2000,
    // Err high, as Cassandra's fd_initial_value does: a member's first intervals carry the relay
    // lag of a cluster still converging. At 1000, three 100-node starts at 10% loss convicted 8
    // live members; at 2000, none. Not higher: the estimate also slows verdicts in a young
    // cluster (SIGSTOP 6 s after a 5-node start: seen in 6.7 s, worst 8.8 s; at 3000: 9.1 s, worst
    // 10.6 s). It leaves the window after ESTIMATE_RETIRED_AFTER_SAMPLES real intervals.
    firstHeartbeatEstimateMs: 2000,
    // ~3 minutes of arrivals at about one a second: smooth, yet adapts to a changed rhythm.
    arrivalWindowSize: 200,
    // Half a round: a member pushes a changed ring at once, between its rounds (as a version of
    // its state, which is what a heartbeat is). Counted, the pushes of a 50-node cluster starting
    // up (a ring change with every member learnt) convicted live members 8-9 s in, at 10% loss,
    // in 4 of 25 simulations; with the floor, none in 52.
    minArrivalIntervalMs: 500,
    // A dropped link gets a probe at once; 1.5 s covers a reconnect and a stalled round trip, and
    // with a 250 ms tick a killed node is down everywhere ~1.75 s after its connections drop.
    connectionLostGraceMs: 1500,
    // Measured in scripts/ring-balance.ts; see DEFAULT_VNODES.
    vnodes: DEFAULT_VNODES,
    // A generation is its member's start time, and clocks kept by NTP differ by far less than ten
    // minutes; a state further ahead is corrupt or forged, and taking it would hide that member's
    // real states until our clock caught up (Cassandra allows a year: a forged state lasts a year).
    maxGenerationAheadMs: 10 * 60 * 1000,
    // Only a member bumps its own heartbeat, so a state that has not advanced for this long is of a
    // member no node has seen alive since: forget it if it is off the ring (Cassandra keeps dead
    // states for 3 days too; one on the ring stays until removed). A member that comes back after
    // that joins again with its new generation.
    memberExpiryMs: 3 * 24 * 60 * 60 * 1000,
    // A live seed answers in the first round or two; ten rounds means nobody is there to ask.
    settleTimeoutMs: 10_000,
  };
}

/** Returns `config` if every value and relationship holds; throws a TallyError (BAD_REQUEST, TOO_LARGE for an over-long seed) otherwise. */
export function validateConfig(config: MembershipConfig): MembershipConfig {
  const fail = (message: string): never => {
    throw new TallyError('BAD_REQUEST', `membership config: ${message}`);
  };
  const positive = (name: keyof MembershipConfig): number => {
    const v = config[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(`${name} must be a positive number, got ${String(v)}`);
    return v as number;
  };
  const integer = (name: keyof MembershipConfig, min: number, max: number): number => {
    const v = config[name];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      fail(`${name} must be an integer in ${min}..${max}, got ${String(v)}`);
    }
    return v as number;
  };

  if (!Array.isArray(config.seeds)) fail('seeds must be an array of addresses');
  if (config.seeds.length > MAX_SEEDS) fail(`${config.seeds.length} seeds, the limit is ${MAX_SEEDS}`);
  for (const s of config.seeds) parseAddress(s, 'membership config: seed');
  const gossipIntervalMs = positive('gossipIntervalMs');
  const tickIntervalMs = positive('tickIntervalMs');
  const localPauseThresholdMs = positive('localPauseThresholdMs');
  const pauseMs = positive('acceptableHeartbeatPauseMs');
  positive('minStdDevMs');
  positive('firstHeartbeatEstimateMs');
  const minArrival = config.minArrivalIntervalMs;
  if (!Number.isFinite(minArrival) || minArrival < 0) fail(`minArrivalIntervalMs must be a finite number >= 0, got ${String(minArrival)}`);
  // At a round or more, a live member's every other heartbeat would not count.
  if (minArrival >= gossipIntervalMs) fail(`minArrivalIntervalMs (${minArrival}) must be below gossipIntervalMs (${gossipIntervalMs})`);
  positive('connectionLostGraceMs');
  positive('maxGenerationAheadMs');
  positive('memberExpiryMs');
  positive('settleTimeoutMs');
  const threshold = positive('phiThreshold');
  const maxPeers = integer('maxGossipPeersPerRound', 1, MAX_GOSSIP_PEERS_PER_ROUND);
  const livePeers = integer('livePeersPerRound', 1, MAX_GOSSIP_PEERS_PER_ROUND);
  integer('arrivalWindowSize', 2, MAX_ARRIVAL_WINDOW_SIZE);
  integer('vnodes', 1, MAX_VNODES);

  if (livePeers > maxPeers) fail(`livePeersPerRound (${livePeers}) exceeds maxGossipPeersPerRound (${maxPeers})`);
  if (threshold < 1) fail(`phiThreshold ${threshold} would convict on ordinary jitter; use 1 or more`);
  if (tickIntervalMs > gossipIntervalMs) {
    fail(`tickIntervalMs (${tickIntervalMs}) must not exceed gossipIntervalMs (${gossipIntervalMs})`);
  }
  if (localPauseThresholdMs <= tickIntervalMs) {
    fail(`localPauseThresholdMs (${localPauseThresholdMs}) must exceed tickIntervalMs (${tickIntervalMs}), or every tick looks like a stall`);
  }
  if (pauseMs < gossipIntervalMs) {
    fail(`acceptableHeartbeatPauseMs (${pauseMs}) must be at least gossipIntervalMs (${gossipIntervalMs}): one missed round is not a death`);
  }
  return config;
}
