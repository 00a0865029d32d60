/**
 * Phi-accrual failure detection over heartbeat arrivals, one window per peer.
 *
 * Why: a fixed timeout is either slow or jumpy. Phi (Hayashibara et al.; Cassandra's
 * FailureDetector, akka's PhiAccrualFailureDetector) learns each peer's arrival rhythm and says
 * how unlikely the current silence is: phi = -log10(P(silence this long | the peer is alive)).
 * We follow akka's shape: arrival intervals are modelled as a normal distribution whose mean is
 * raised by an acceptable pause (an event-loop or GC stall of the peer is not a death) and whose
 * std dev has a floor (a perfectly regular peer would otherwise be convicted by one late beat).
 * A new peer starts from a first-heartbeat estimate, so one arrival is enough to judge.
 *
 * Arrivals come from gossip: an arrival is a newer heartbeat version of the peer, however it got
 * here. Two kinds of evidence shorten the wait:
 * - `connectionLost`: a dropped connection convicts the peer unless, within a grace period, it
 *   answers something sent after the drop (`connectionRestored`, which the caller decides).
 *   Relayed heartbeats and messages that may have been in flight do not clear it: they may be
 *   the last words of a dead process still travelling.
 * - `forgive(pauseMs)`: our own stall (our ticks came late) is credited to every peer: silence we
 *   could not hear is not evidence.
 * An interval that spans a down verdict, or a restart (`newIncarnation`), is an outage and is not
 * added to the window, so one outage does not make the detector slow for the next one.
 *
 * Pure: the caller passes nowMs. Not here: who the peers are, gossip, or what to do on a verdict.
 */

import { assert } from '../protocol/errors.js';

export interface PhiDetectorConfig {
  /** Phi at or above which a peer is down. */
  phiThreshold: number;
  /** Floor of the std dev of arrival intervals. */
  minStdDevMs: number;
  /** Added to the mean interval: silence this long beyond the mean is normal. */
  acceptableHeartbeatPauseMs: number;
  /** Assumed mean interval before any has been measured (std dev: a quarter of it). */
  firstHeartbeatEstimateMs: number;
  /** Intervals kept per peer. */
  arrivalWindowSize: number;
  /**
   * A newer heartbeat sooner than this after the last one counted is not an arrival: a change the
   * peer pushed at once (see Membership.noteRing), not its next round's heartbeat. 0: every one is.
   */
  minArrivalIntervalMs: number;
  /** After a dropped connection, how long the peer has to talk to us before it is down. */
  connectionLostGraceMs: number;
}

/** Why a peer is up or down in this detector's eyes. */
export const Verdict = {
  UP: 'up',
  /** Nothing has shown this peer alive yet (known only second-hand): not up until it does. */
  NO_HEARTBEAT: 'no-heartbeat',
  PHI: 'phi',
  CONNECTION_LOST: 'connection-lost',
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/** Intervals in a bounded ring buffer with running sums; O(1) per arrival. */
export class ArrivalWindow {
  private readonly intervals: Float64Array;
  private head = 0;
  private count = 0;
  private sum = 0;
  private sumOfSquares = 0;
  /** Samples since the sums were last recomputed from scratch (to stop rounding drift). */
  private sinceRecompute = 0;

  constructor(readonly capacity: number) {
    assert(Number.isSafeInteger(capacity) && capacity >= 2, `arrival window needs capacity >= 2, got ${capacity}`);
    this.intervals = new Float64Array(capacity);
  }

  add(intervalMs: number): void {
    assert(Number.isFinite(intervalMs) && intervalMs >= 0, `bad interval ${intervalMs}`);
    if (this.count === this.capacity) {
      const old = this.intervals[this.head] as number;
      this.sum -= old;
      this.sumOfSquares -= old * old;
    } else {
      this.count++;
    }
    this.intervals[this.head] = intervalMs;
    this.head = (this.head + 1) % this.capacity;
    this.sum += intervalMs;
    this.sumOfSquares += intervalMs * intervalMs;
    if (++this.sinceRecompute >= this.capacity) this.recompute();
  }

  /** Forgets the `n` oldest intervals. */
  dropOldest(n: number): void {
    for (let i = 0; i < n && this.count > 0; i++) {
      const oldest = this.intervals[(this.head - this.count + this.capacity) % this.capacity] as number;
      this.sum -= oldest;
      this.sumOfSquares -= oldest * oldest;
      this.count--;
    }
  }

  get size(): number {
    return this.count;
  }

  get meanMs(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }

  get stdDevMs(): number {
    if (this.count === 0) return 0;
    const mean = this.meanMs;
    return Math.sqrt(Math.max(0, this.sumOfSquares / this.count - mean * mean));
  }

  private recompute(): void {
    this.sum = 0;
    this.sumOfSquares = 0;
    for (let i = 1; i <= this.count; i++) {
      const x = this.intervals[(this.head - i + this.capacity) % this.capacity] as number;
      this.sum += x;
      this.sumOfSquares += x * x;
    }
    this.sinceRecompute = 0;
  }
}

/**
 * Real intervals after which the two first-heartbeat-estimate samples leave the window: until then
 * they keep a young window from trusting a handful of samples; after, a deliberately high estimate
 * would only inflate the mean and std dev and slow every verdict. At 4, a 100-node start at 10%
 * loss convicted a live member; at 8, one 50-node simulation at 10% loss (seed 846042668) had a
 * node convict a live peer 16 s in, on a window of about eight tight real intervals; at 16 and 20
 * none did, and detection times were the same as at 8 (test/sim/detector-stats.measure.ts:
 * SIGSTOP p50 5.65 s, p99 7.5; six seconds after a start p50 6.65, p99 8.8; no false downs).
 */
export const ESTIMATE_RETIRED_AFTER_SAMPLES = 16;

interface PeerRecord {
  window: ArrivalWindow;
  /** Estimate samples still in the window (the oldest ones). */
  estimateSamples: number;
  lastArrivalMs: number;
  /** When phi reaches the threshold, given the window and the last arrival. */
  phiDeadlineMs: number;
  /** Set by a dropped connection until the peer itself is heard from. */
  connectionLostAtMs: number | undefined;
}

const LN10 = Math.log(10);
/** Coefficients of akka's logistic approximation of the normal CDF. */
const LOGISTIC_A = 1.5976;
const LOGISTIC_B = 0.070566;

export class PhiAccrualDetector {
  private readonly peers = new Map<string, PeerRecord>();
  /** The standardised silence y at which phi equals the threshold (solved once). */
  private readonly thresholdY: number;

  constructor(private readonly config: PhiDetectorConfig) {
    assert(config.phiThreshold > 0, 'phi threshold must be positive');
    assert(config.minStdDevMs > 0, 'min std dev must be positive');
    this.thresholdY = solveThresholdY(config.phiThreshold);
  }

  /**
   * A heartbeat of `peer` arrived. `newIncarnation`: the peer restarted (new generation), so the
   * silence before this arrival is not a sample and any connection evidence is about the old
   * process.
   */
  heartbeat(peer: string, nowMs: number, newIncarnation = false): void {
    const record = this.peers.get(peer);
    if (record === undefined) {
      const window = new ArrivalWindow(this.config.arrivalWindowSize);
      const estimate = this.config.firstHeartbeatEstimateMs;
      window.add(estimate - estimate / 4);
      window.add(estimate + estimate / 4);
      const fresh: PeerRecord = {
        window,
        estimateSamples: 2,
        lastArrivalMs: nowMs,
        phiDeadlineMs: 0,
        connectionLostAtMs: undefined,
      };
      fresh.phiDeadlineMs = this.deadline(fresh);
      this.peers.set(peer, fresh);
      return;
    }
    if (newIncarnation) {
      record.connectionLostAtMs = undefined;
    } else if (nowMs - record.lastArrivalMs < this.config.minArrivalIntervalMs) {
      // As a sample it would teach the window intervals far shorter than the rounds', and a live
      // peer would be convicted once the changes stop.
      return;
    } else if (nowMs >= record.lastArrivalMs && this.verdict(peer, nowMs) === Verdict.UP) {
      const window = record.window;
      // A full window drops its oldest sample on add: an estimate sample while any remain.
      if (window.size === window.capacity && record.estimateSamples > 0) record.estimateSamples--;
      window.add(nowMs - record.lastArrivalMs);
      if (record.estimateSamples > 0 && window.size - record.estimateSamples >= ESTIMATE_RETIRED_AFTER_SAMPLES) {
        window.dropOldest(record.estimateSamples);
        record.estimateSamples = 0;
      }
    }
    record.lastArrivalMs = Math.max(record.lastArrivalMs, nowMs);
    record.phiDeadlineMs = this.deadline(record);
  }

  /**
   * A message came from `peer` itself. The first word from a peer starts its clock; later ones
   * are not arrivals (only a newer heartbeat version is, so that all arrivals measure the same
   * thing), nor do they clear a dropped connection: they may have been in flight before it.
   */
  /** Forgets everything about `peer` (a member that expired). */
  forget(peer: string): void {
    this.peers.delete(peer);
  }

  heardFrom(peer: string, nowMs: number): void {
    if (!this.peers.has(peer)) this.heartbeat(peer, nowMs);
  }

  /** The peer answered something sent after its connection dropped: it is alive after all. */
  connectionRestored(peer: string): void {
    const record = this.peers.get(peer);
    if (record !== undefined) record.connectionLostAtMs = undefined;
  }

  /** Our connection to `peer` dropped. Returns true if this is new evidence (none was pending). */
  connectionLost(peer: string, nowMs: number): boolean {
    const record = this.peers.get(peer);
    if (record === undefined || record.connectionLostAtMs !== undefined) return false;
    record.connectionLostAtMs = nowMs;
    return true;
  }

  /** Credit our own stall of `pauseMs` to every peer: we could not have heard them meanwhile. */
  forgive(pauseMs: number): void {
    if (pauseMs <= 0) return;
    for (const record of this.peers.values()) {
      record.lastArrivalMs += pauseMs;
      record.phiDeadlineMs += pauseMs;
      if (record.connectionLostAtMs !== undefined) record.connectionLostAtMs += pauseMs;
    }
  }

  verdict(peer: string, nowMs: number): Verdict {
    const record = this.peers.get(peer);
    if (record === undefined) return Verdict.NO_HEARTBEAT;
    const lostAt = record.connectionLostAtMs;
    if (lostAt !== undefined && nowMs - lostAt >= this.config.connectionLostGraceMs) return Verdict.CONNECTION_LOST;
    return nowMs >= record.phiDeadlineMs ? Verdict.PHI : Verdict.UP;
  }

  /** Phi of `peer` now (0 for an unknown peer); for display, the verdict uses the same curve. */
  phi(peer: string, nowMs: number): number {
    const record = this.peers.get(peer);
    if (record === undefined) return 0;
    const { mean, stdDev } = this.model(record);
    const y = (nowMs - record.lastArrivalMs - mean) / stdDev;
    return phiOf(y);
  }

  lastHeartbeatAgeMs(peer: string, nowMs: number): number | undefined {
    const record = this.peers.get(peer);
    return record === undefined ? undefined : Math.max(0, nowMs - record.lastArrivalMs);
  }

  /** The time at which `peer` will be down if nothing more arrives; for scheduling and tests. */
  suspectAtMs(peer: string): number | undefined {
    const record = this.peers.get(peer);
    if (record === undefined) return undefined;
    const lostAt = record.connectionLostAtMs;
    return lostAt === undefined
      ? record.phiDeadlineMs
      : Math.min(record.phiDeadlineMs, lostAt + this.config.connectionLostGraceMs);
  }

  /** Mean and std dev of the arrival intervals in `peer`'s window (for status and tests). */
  stats(peer: string): { meanMs: number; stdDevMs: number; samples: number } | undefined {
    const record = this.peers.get(peer);
    if (record === undefined) return undefined;
    return { meanMs: record.window.meanMs, stdDevMs: record.window.stdDevMs, samples: record.window.size };
  }

  private model(record: PeerRecord): { mean: number; stdDev: number } {
    return {
      mean: record.window.meanMs + this.config.acceptableHeartbeatPauseMs,
      stdDev: Math.max(record.window.stdDevMs, this.config.minStdDevMs),
    };
  }

  private deadline(record: PeerRecord): number {
    const { mean, stdDev } = this.model(record);
    return record.lastArrivalMs + mean + this.thresholdY * stdDev;
  }
}

/** log10(1 + e^L) where L = y(a + b y²): akka's phi, written so it neither overflows nor rounds to 0. */
export function phiOf(y: number): number {
  const l = y * (LOGISTIC_A + LOGISTIC_B * y * y);
  return l > 0 ? (l + Math.log1p(Math.exp(-l))) / LN10 : Math.log1p(Math.exp(l)) / LN10;
}

/** The y ≥ 0 with phiOf(y) = threshold: Newton's method on the cubic y(a + b y²) = ln(10^θ - 1). */
function solveThresholdY(threshold: number): number {
  const target = threshold * LN10 + Math.log1p(-(10 ** -threshold));
  assert(target > 0, `phi threshold ${threshold} is too small to solve for`);
  let y = Math.cbrt(target / LOGISTIC_B);
  for (let i = 0; i < 50; i++) {
    const f = y * (LOGISTIC_A + LOGISTIC_B * y * y) - target;
    const step = f / (LOGISTIC_A + 3 * LOGISTIC_B * y * y);
    y -= step;
    if (Math.abs(step) < 1e-12) break;
  }
  return y;
}
