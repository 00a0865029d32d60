/**
 * Drives N membership cores over the simulated network and clock: starts, crashes (SIGKILL: the
 * peers' connections drop), restarts with a new generation, pauses (SIGSTOP, or an event-loop
 * stall: inputs wait and then arrive late), graceful leaves.
 *
 * Why: membership is only interesting with many nodes and faults; this runs hundreds of simulated
 * node-minutes a second, and one seed replays a run. It plays the node process's part: it ticks
 * each core every `tickIntervalMs` on the node's own (skewed) clock, routes `send` effects through
 * SimNetwork, turns a send to a crashed node into `connectionLost` (connection refused), and logs
 * every `statusChanged` so tests can check what each node believed and when.
 * Not here: assertions (membership.test.ts), real sockets.
 */

import xxhash from 'xxhash-wasm';
import type { Hash64 } from '../../protocol/hash-ring.js';
import { defaultConfig, validateConfig, type MembershipConfig } from '../../cluster/membership-config.js';
import { Membership, type MembershipEffect, type StatusReason } from '../../cluster/membership.js';
import { Prng } from '../../cluster/prng.js';
import { Lifecycle, validateGossipMessage, type GossipMessage } from '../../protocol/gossip.js';
import { EventQueue, SimNetwork, defaultNetworkOptions, type NetworkOptions } from './network.js';

const { h64 } = await xxhash();

/** Node clocks read wall-clock-like values (generations are start times in ms). */
const EPOCH_MS = 1_700_000_000_000;

/** xxhash64 with a cache: hundreds of cores derive the same tokens; hash once per string. */
export function memoized(hash: Hash64): Hash64 {
  const cache = new Map<string, bigint>();
  return (s) => {
    let h = cache.get(s);
    if (h === undefined) {
      h = hash(s);
      // Ring checksums hash long one-off strings; keep only the short token inputs.
      if (s.length < 100) cache.set(s, h);
    }
    return h;
  };
}

export interface ClusterSimOptions {
  seed: number;
  nodes: number;
  /** The first `seedCount` nodes are seeds. */
  seedCount?: number;
  zones?: readonly string[];
  config?: Partial<MembershipConfig>;
  network?: Partial<NetworkOptions>;
  /** Run every delivered message through validateGossipMessage (slower; checks the wire shapes). */
  validateWire?: boolean;
  /** Each node's clock is off the simulated time by up to this much, either way. */
  clockSkewMs?: number;
  /** Each tick comes up to this much late (timer jitter). */
  tickJitterMs?: number;
}

export interface StatusEvent {
  atMs: number;
  observer: string;
  subject: string;
  up: boolean;
  reason: StatusReason;
}

export class SimNode {
  core: Membership | undefined;
  /** Bumped at every start and crash, so that events of a dead incarnation are dropped. */
  incarnation = 0;
  pausedUntilMs = 0;
  lastGeneration = 0;
  /** Whether a graceful leave was its last act. */
  left = false;

  constructor(
    readonly id: string,
    readonly address: string,
    readonly zone: string,
    readonly clockOffsetMs: number,
  ) {}

  get alive(): boolean {
    return this.core !== undefined && !this.left;
  }
}

export class ClusterSim {
  readonly queue = new EventQueue();
  readonly rng: Prng;
  readonly net: SimNetwork<GossipMessage>;
  readonly config: MembershipConfig;
  readonly nodes: SimNode[] = [];
  readonly statusLog: StatusEvent[] = [];
  /** Called for every status change as it happens (tests check invariants here). */
  onStatus: ((e: StatusEvent) => void) | undefined;
  private readonly byId = new Map<string, SimNode>();
  private readonly byAddress = new Map<string, SimNode>();
  private readonly hash64 = memoized(h64);
  private readonly tickJitterMs: number;
  private readonly validateWire: boolean;

  constructor(readonly options: ClusterSimOptions) {
    this.rng = new Prng(options.seed);
    const zones = options.zones ?? ['zone-a', 'zone-b', 'zone-c'];
    const seedCount = options.seedCount ?? Math.min(3, options.nodes);
    // Clocks up to 4 minutes apart: far more than NTP allows, within the 10 minutes a generation may lead.
    const skew = options.clockSkewMs ?? 240_000;
    for (let i = 0; i < options.nodes; i++) {
      const id = `n${String(i + 1).padStart(3, '0')}`;
      const node = new SimNode(id, `10.0.${i >> 8}.${i & 255}:7000`, zones[i % zones.length] as string, EPOCH_MS + (this.rng.next() * 2 - 1) * skew);
      this.nodes.push(node);
      this.byId.set(id, node);
      this.byAddress.set(node.address, node);
    }
    this.config = validateConfig({
      ...defaultConfig(),
      seeds: this.nodes.slice(0, seedCount).map((n) => n.address),
      ...options.config,
    });
    this.tickJitterMs = options.tickJitterMs ?? 2;
    this.validateWire = options.validateWire ?? false;
    this.net = new SimNetwork<GossipMessage>(
      this.queue,
      this.rng.fork(),
      { ...defaultNetworkOptions(), ...options.network },
      (from, to, msg) => this.deliver(from, to, msg),
    );
  }

  get nowMs(): number {
    return this.queue.nowMs;
  }

  node(id: string): SimNode {
    const node = this.byId.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  get ids(): string[] {
    return this.nodes.map((n) => n.id);
  }

  aliveNodes(): SimNode[] {
    return this.nodes.filter((n) => n.alive);
  }

  /** Starts (or restarts) `id` now: a new core with a new, higher generation. */
  start(id: string): void {
    const node = this.node(id);
    node.incarnation++;
    node.left = false;
    node.pausedUntilMs = 0;
    const localNow = this.localNow(node);
    const restarted = node.lastGeneration > 0;
    const generation = Math.max(Math.floor(localNow), node.lastGeneration + 1);
    node.lastGeneration = generation;
    node.core = new Membership({
      self: { id: node.id, address: node.address, zone: node.zone },
      config: this.config,
      rng: this.rng.fork(),
      hash64: this.hash64,
      nowMs: localNow,
      generation,
      bootstrapped: restarted,
    });
    this.scheduleTick(node, node.incarnation, this.nowMs + this.rng.next() * this.config.tickIntervalMs);
  }

  /** Starts every node, spread uniformly over `spreadMs`, in random order. */
  startAll(spreadMs = 0): void {
    for (const node of this.nodes) {
      this.queue.schedule(this.nowMs + this.rng.next() * spreadMs, () => this.start(node.id));
    }
  }

  /**
   * SIGKILL: the process is gone; every peer that can still reach it sees its connection drop.
   * What the process sent just before may still land after that: the drop is reported on our own
   * link to it, its messages come over its link to us, and the two are not ordered.
   */
  crash(id: string): void {
    const node = this.node(id);
    node.core = undefined;
    node.incarnation++;
    for (const other of this.nodes) {
      if (other === node || this.net.isBlocked(id, other.id)) continue;
      this.queue.schedule(this.nowMs + this.net.delayMs(), () => this.connectionLost(other, id));
    }
  }

  /**
   * A network blip that resets `id`'s connections while it runs: it and every peer see their
   * links to each other drop (each reconnect fails for as long as a partition blocks it).
   */
  dropLinks(id: string): void {
    const node = this.node(id);
    for (const other of this.nodes) {
      if (other === node || other.core === undefined) continue;
      this.queue.schedule(this.nowMs + this.net.delayMs(), () => this.connectionLost(other, id));
      this.queue.schedule(this.nowMs + this.net.delayMs(), () => this.connectionLost(node, other.id));
    }
  }

  /** SIGSTOP for `ms` (or an event-loop stall): no connection drops; inputs wait until it resumes. */
  pause(id: string, ms: number): void {
    const node = this.node(id);
    node.pausedUntilMs = Math.max(node.pausedUntilMs, this.nowMs + ms);
  }

  /** Graceful stop: announce `left`, then the process exits (its connections close too). */
  leave(id: string): void {
    const node = this.node(id);
    const core = node.core;
    if (core === undefined) return;
    this.apply(node, core.leave(this.localNow(node)));
    node.left = true;
    node.core = undefined;
    node.incarnation++;
  }

  /** `tally decommission` on `id`: its state says it leaves the ring for good. */
  decommission(id: string): void {
    const node = this.node(id);
    if (node.core !== undefined) this.apply(node, node.core.decommission());
  }

  run(ms: number): void {
    this.queue.runUntil(this.nowMs + ms);
  }

  /** Runs until `done()` holds, checking every `everyMs`; returns the time it took, or undefined. */
  runUntil(done: () => boolean, maxMs: number, everyMs = 100): number | undefined {
    const start = this.nowMs;
    while (this.nowMs - start <= maxMs) {
      if (done()) return this.nowMs - start;
      this.run(everyMs);
    }
    return undefined;
  }

  /** Every alive node knows every node in `ids` and sees exactly the alive ones as up. */
  agreesOn(ids: readonly string[] = this.ids): boolean {
    const alive = new Set(this.aliveNodes().map((n) => n.id));
    for (const observer of this.aliveNodes()) {
      const core = observer.core as Membership;
      for (const id of ids) {
        if (id === observer.id) continue;
        if (core.stateOf(id) === undefined || core.isUp(id) !== alive.has(id)) return false;
      }
    }
    return true;
  }

  /**
   * All alive nodes compute the same ring, and every alive node sees every alive one `normal` and
   * gossiping that same ring checksum (so `tally status` would show no disagreement).
   */
  ringsAgree(): boolean {
    const alive = this.aliveNodes();
    const checksums = new Set(alive.map((n) => (n.core as Membership).ring().checksum()));
    if (checksums.size !== 1) return false;
    const [checksum] = checksums;
    return alive.every((o) =>
      alive.every((n) => {
        const state = (o.core as Membership).stateOf(n.id);
        return state?.lifecycle === Lifecycle.NORMAL && state.ringChecksum === checksum;
      }),
    );
  }

  /** Time on `node`'s own clock. */
  localNow(node: SimNode): number {
    return this.nowMs + node.clockOffsetMs;
  }

  private scheduleTick(node: SimNode, incarnation: number, atMs: number): void {
    this.queue.schedule(atMs, () =>
      this.onNode(node, incarnation, (core) => {
        this.apply(node, core.tick(this.localNow(node)));
        const next = this.nowMs + this.config.tickIntervalMs + this.rng.next() * this.tickJitterMs;
        this.scheduleTick(node, incarnation, next);
      }),
    );
  }

  private deliver(from: string, to: string, msg: GossipMessage): void {
    const node = this.node(to);
    const input = this.validateWire ? validateGossipMessage(structuredClone(msg)) : msg;
    this.onNode(node, node.incarnation, (core) => this.apply(node, core.receive(from, input, this.localNow(node))));
  }

  private connectionLost(node: SimNode, peer: string): void {
    this.onNode(node, node.incarnation, (core) => this.apply(node, core.connectionLost(peer, this.localNow(node))));
  }

  /** Runs `fn` on the node's core now, later if it is paused, never if that incarnation is gone. */
  private onNode(node: SimNode, incarnation: number, fn: (core: Membership) => void): void {
    if (node.incarnation !== incarnation || node.core === undefined) return;
    if (this.nowMs < node.pausedUntilMs) {
      this.queue.schedule(node.pausedUntilMs, () => this.onNode(node, incarnation, fn));
      return;
    }
    fn(node.core);
  }

  private apply(node: SimNode, effects: MembershipEffect[]): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'send': {
          const target = e.to.id !== undefined ? this.byId.get(e.to.id) : this.byAddress.get(e.to.address);
          if (target === undefined) break;
          if (this.validateWire) validateGossipMessage(e.msg);
          // Connection refused: the sender's transport reports a lost connection to that id.
          if (target.core === undefined && e.to.id !== undefined && !this.net.isBlocked(node.id, target.id)) {
            const incarnation = node.incarnation;
            const peer = e.to.id;
            this.queue.schedule(this.nowMs + this.net.delayMs(), () => {
              if (node.incarnation === incarnation) this.connectionLost(node, peer);
            });
          }
          this.net.send(node.id, target.id, e.msg);
          break;
        }
        case 'statusChanged': {
          const event: StatusEvent = { atMs: this.nowMs, observer: node.id, subject: e.id, up: e.up, reason: e.reason };
          this.statusLog.push(event);
          this.onStatus?.(event);
          break;
        }
        case 'ringChanged':
          break;
      }
    }
  }
}
