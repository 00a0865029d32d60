/**
 * Drives N composed node cores (cluster/node-core.ts) — the same code the real node runs — over the
 * simulated network and clock, each with a simulated store, and simulated clients that write and
 * read through them. It plays the driver's part: it carries out each Ready (persists and loads
 * after a store delay, sends through SimNetwork, replies after a network delay) and steps the core
 * again at its deadline.
 *
 * The store keeps what a commit wrote once the commit's delay has passed (a LevelDB write survives a
 * process crash once it resolves); a crash drops everything still in flight. Faults: crashes with
 * restarts on the same data (same actor, a newer generation), wiped disks (a new actor), pauses
 * (SIGSTOP), and all of SimNetwork's (loss, duplication, reordering, partitions).
 * Not here: the checks (replication.test.ts).
 */
import xxhash from 'xxhash-wasm';
import { DAMAGED, type Slot } from '../../cluster/bucket-state.js';
import { defaultConfig as defaultMembershipConfig, validateConfig } from '../../cluster/membership-config.js';
import { batchRecordKey, NodeCore, type RepairRound, type BatchRecord, type CoreInput, type CoreReply, type HintRecord, type JournalRecord, type Ready } from '../../cluster/node-core.js';
import type { KnownPeer } from '../../cluster/membership.js';
import { Prng } from '../../cluster/prng.js';
import { defaultReplicationConfig, validateReplicationConfig, type ReplicationConfig } from '../../cluster/replication-config.js';
import { bucketId, type BucketRef } from '../../cluster/slot-table.js';
import { noStarts, type StartsByResolution } from '../../cluster/written-filter.js';
import { DAY_MS } from '../../cluster/time-buckets.js';
import type { Consistency, EventTuple, QueryTuple } from '../../protocol/messages.js';
import { validatePeerMessage, type PeerMessage, type SpanSlot } from '../../protocol/peer.js';
import { ErrorCode } from '../../protocol/errors.js';
import { memoized } from './cluster-sim.js';
import { EventQueue, SimNetwork, defaultNetworkOptions, type NetworkOptions } from './network.js';

const { h64 } = await xxhash();

/** Node clocks read wall-clock-like values (generations are start times in ms). */
export const EPOCH_MS = 1_700_000_000_000;

/** A node's durable state: what its store holds. */
export class SimDisk {
  /** series key (videoId\0eventType\0res) → start → actor → slot */
  readonly series = new Map<string, Map<number, Map<string, Slot>>>();
  readonly hints = new Map<string, HintRecord>();
  readonly batches = new Map<string, BatchRecord>();
  epoch = 1;
  lastGeneration = 0;
  knownPeers: KnownPeer[] = [];
  /** Set when the store is made empty with others to join; cleared when the node says it is rebuilt. */
  rebuilding: boolean | undefined;
  readonly journal = new Map<string, JournalRecord>();
  /** The newest bucket start per resolution the store may hold (PersistBatch.written). */
  written: StartsByResolution = noStarts();
  /** Slots whose bytes no longer check (`bucketId\0actor`): a load says DAMAGED, a scan fails, a walk skips them. */
  readonly damaged = new Set<string>();

  put(ref: BucketRef, actor: string, slot: Slot): void {
    this.damaged.delete(`${bucketId(ref)}\u0000${actor}`);
    const key = `${ref.videoId}\u0000${ref.eventType}\u0000${ref.res}`;
    let s = this.series.get(key);
    if (s === undefined) this.series.set(key, (s = new Map()));
    let b = s.get(ref.start);
    if (b === undefined) s.set(ref.start, (b = new Map()));
    b.set(actor, { ...slot });
  }

  get(ref: BucketRef, actor: string): Slot | undefined {
    if (this.damaged.has(`${bucketId(ref)}\u0000${actor}`)) throw new Error('read of a damaged slot: use load()');
    return this.series.get(`${ref.videoId}\u0000${ref.eventType}\u0000${ref.res}`)?.get(ref.start)?.get(actor);
  }

  /** The count of a bucket as this disk holds it: its slots' counts summed over every actor. */
  count(ref: BucketRef): number {
    let n = 0;
    for (const slot of this.series.get(`${ref.videoId}\u0000${ref.eventType}\u0000${ref.res}`)?.get(ref.start)?.values() ?? []) n += slot.count;
    return n;
  }

  /** What a load of the slot finds. */
  load(ref: BucketRef, actor: string): Slot | undefined | typeof DAMAGED {
    return this.damaged.has(`${bucketId(ref)}\u0000${actor}`) ? DAMAGED : this.series.get(`${ref.videoId}\u0000${ref.eventType}\u0000${ref.res}`)?.get(ref.start)?.get(actor);
  }

  /** Every readable slot of every bucket, as `bucketId\0actor` → slot. */
  /** Deletes every slot of `res` whose UTC day ended at or before `cutoffMs`, as the store's expireBefore. */
  expireBefore(res: 'm' | 'h', cutoffMs: number): void {
    const firstKept = Math.floor(cutoffMs / DAY_MS) * DAY_MS;
    for (const [key, s] of this.series) {
      if (!key.endsWith(`\u0000${res}`)) continue;
      for (const start of [...s.keys()]) if (start < firstKept) s.delete(start);
    }
  }

  all(): Map<string, Slot> {
    const out = new Map<string, Slot>();
    for (const [key, s] of this.series) {
      const [videoId, eventType, res] = key.split('\u0000') as [string, string, BucketRef['res']];
      for (const [start, b] of s) {
        for (const [actor, slot] of b) {
          const id = `${bucketId({ videoId, eventType, res, start })}\u0000${actor}`;
          if (!this.damaged.has(id)) out.set(id, slot);
        }
      }
    }
    return out;
  }
}

export interface SimNodeState {
  id: string;
  address: string;
  zone: string;
  core: NodeCore | undefined;
  disk: SimDisk;
  incarnation: number;
  pausedUntilMs: number;
  tickAtMs: number;
  /** Group commits under way (the core has at most two); they reach the disk in order. */
  commitsInFlight: number;
  /** When the last commit under way reaches the disk: the next one lands after it. */
  commitDoneAtMs: number;
  /** Commits the core made while another was under way. */
  pipelinedCommits: number;
  /** The next store read of a slot of this video fails, as a disk error would. */
  failLoadOf?: string;
  /** The code that read fails with (none: as an unknown error). */
  failLoadCode?: ErrorCode;
  /** The next this many commits handed to the store fail, as on a full disk (nothing of them written). */
  failCommits?: number;
  /** The last commit to reach the disk failed: one made on top of it (afterInFlight) fails too, as in the store. */
  lastCommitFailed?: boolean;
  /** Why the node stopped for good (decommissioned, or removed by a peer); never started again. */
  removed?: string;
  /** Each of its commits takes this long (a node behind under load), instead of the store delay. */
  commitDelayMs?: number;
}

export interface ReplicationSimOptions {
  seed: number;
  nodes: number;
  rf?: number;
  network?: Partial<NetworkOptions>;
  replication?: Partial<ReplicationConfig>;
  /** Store operations take between these (ms). */
  storeDelayMs?: [number, number];
  /** The nodes' clocks start at this time (default EPOCH_MS). */
  startMs?: number;
}

export type RequestOutcome = { kind: 'reply'; reply: CoreReply } | { kind: 'lost' };

export class ReplicationSim {
  readonly queue = new EventQueue();
  readonly rng: Prng;
  readonly net: SimNetwork<PeerMessage>;
  readonly nodes: SimNodeState[] = [];
  readonly replication: ReplicationConfig;
  /** The nodes' clock at simulated time 0. */
  readonly epochMs: number;
  private readonly membership = validateConfig({ ...defaultMembershipConfig(), vnodes: 16 });
  private readonly hash64 = memoized(h64);
  private readonly byId = new Map<string, SimNodeState>();
  private readonly storeDelay: [number, number];
  private nextReq = 1;
  /** Client requests awaiting a reply: req → (node incarnation, callback). */
  private readonly pending = new Map<number, { node: SimNodeState; incarnation: number; done: (o: RequestOutcome) => void }>();
  readonly log: string[] = [];
  /** Links whose sender drops what it sends (`from>to` → until when), see backOff. */
  private readonly backoffs = new Map<string, number>();

  constructor(readonly options: ReplicationSimOptions) {
    this.rng = new Prng(options.seed);
    this.epochMs = options.startMs ?? EPOCH_MS;
    // Small commits: a second commit starts while one is under way (at a quarter of this), as a
    // loaded node's do, so the simulated workloads run pipelined commits.
    this.replication = validateReplicationConfig({ ...defaultReplicationConfig(), commitAtDirty: 8, rf: options.rf ?? 3, ...options.replication });
    this.storeDelay = options.storeDelayMs ?? [0.2, 3];
    const zones = ['za', 'zb', 'zc'];
    for (let i = 0; i < options.nodes; i++) {
      const id = `n${i + 1}`;
      const node: SimNodeState = { id, address: `10.0.0.${i + 1}:7401`, zone: zones[i % zones.length] as string, core: undefined, disk: new SimDisk(), incarnation: 0, pausedUntilMs: 0, tickAtMs: Infinity, commitsInFlight: 0, commitDoneAtMs: 0, pipelinedCommits: 0 };
      this.nodes.push(node);
      this.byId.set(id, node);
    }
    // Two seeds, as a deployment lists: a seed whose disk is wiped finds the cluster through the other.
    this.membership.seeds = this.nodes.slice(0, 2).map((n) => n.address);
    this.net = new SimNetwork<PeerMessage>(this.queue, this.rng.fork(), { ...defaultNetworkOptions(), ...options.network }, (from, to, msg) => this.deliver(from, to, msg));
    this.queue.nowMs = 0;
  }

  get nowMs(): number {
    return this.queue.nowMs;
  }

  node(id: string): SimNodeState {
    const n = this.byId.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  alive(): SimNodeState[] {
    return this.nodes.filter((n) => n.core !== undefined);
  }

  actorOf(node: SimNodeState): string {
    return `${node.id}#${node.disk.epoch.toString(16).padStart(8, '0')}`;
  }

  /**
   * Starts (or restarts, on the same disk) a node. `clockOffsetMs` plays a node whose wall clock is
   * off: its generation is taken from that clock (the simulated time it steps by is not).
   */
  start(id: string, opts: { clockOffsetMs?: number } = {}): void {
    const node = this.node(id);
    node.incarnation++;
    node.pausedUntilMs = 0;
    node.commitsInFlight = 0;
    node.commitDoneAtMs = 0;
    node.lastCommitFailed = false;
    const now = this.epochMs + this.nowMs;
    const bootstrapped = node.disk.lastGeneration > 0;
    // As the real node: a new store joining through a seed other than itself is sent its ranges.
    node.disk.rebuilding ??= !bootstrapped && this.membership.seeds.some((a) => a !== node.address);
    const rebuilding = node.disk.rebuilding;
    const generation = Math.max(Math.floor(now + (opts.clockOffsetMs ?? 0)), node.disk.lastGeneration + 1);
    node.disk.lastGeneration = generation;
    node.core = new NodeCore({
      self: { id: node.id, address: node.address, zone: node.zone },
      actor: this.actorOf(node),
      membership: this.membership,
      replication: this.replication,
      rng: this.rng.fork(),
      hash64: this.hash64,
      nowMs: now,
      generation,
      bootstrapped,
      knownPeers: node.disk.knownPeers,
      rebuilding,
      hints: [...node.disk.hints.values()],
      batches: [...node.disk.batches.values()],
      journal: [...node.disk.journal.values()],
      writtenBefore: { ...node.disk.written },
    });
    node.tickAtMs = Infinity;
    this.step(node, { kind: 'tick' });
  }

  startAll(): void {
    for (const n of this.nodes) this.start(n.id);
  }

  /**
   * Runs until every live node sees every other up, none rebuilding, and all gossip the same ring
   * (a fresh cluster's later nodes are sent their ranges once the ring has been agreed for
   * writeTimeoutMs); fails after `limitMs`.
   */
  settle(limitMs = 30_000): void {
    const t0 = this.nowMs;
    const done = (): boolean => {
      const alive = this.alive();
      return alive.every((n) => n.core!.membership.agreed() && n.core!.membership.liveMembers().length === alive.length && alive.every((m) => !n.core!.membership.isRebuilding(m.id)));
    };
    while (!done()) {
      if (this.nowMs - t0 > limitMs) throw new Error(`the cluster did not settle within ${limitMs} ms`);
      this.run(100);
    }
  }

  /** SIGKILL: the process is gone, with everything in flight; peers see their connections drop. */
  crash(id: string): void {
    const node = this.node(id);
    node.core = undefined;
    node.incarnation++;
    for (const [req, p] of this.pending) {
      if (p.node === node) {
        this.pending.delete(req);
        p.done({ kind: 'lost' });
      }
    }
    for (const other of this.nodes) {
      if (other === node || other.core === undefined || this.net.isBlocked(other.id, id)) continue;
      this.queue.schedule(this.nowMs + this.net.delayMs(), () => this.onNode(other, other.incarnation, () => this.step(other, { kind: 'connectionLost', peer: id })));
    }
  }

  /** The disk is replaced by an empty one: the node comes back as a new actor that knows nothing. */
  wipe(id: string): void {
    const node = this.node(id);
    const epoch = node.disk.epoch + 1;
    node.disk = new SimDisk();
    node.disk.epoch = epoch;
  }

  /**
   * `from`'s transport drops what it is given for `to` until `untilMs` (a link backing off after
   * failed connects): each send is reported back to `from` as failed, as the real transport does.
   */
  backOff(from: string, to: string, untilMs: number): void {
    this.backoffs.set(`${from}>${to}`, untilMs);
  }

  pause(id: string, ms: number): void {
    const node = this.node(id);
    node.pausedUntilMs = Math.max(node.pausedUntilMs, this.nowMs + ms);
  }

  run(ms: number): void {
    this.queue.runUntil(this.nowMs + ms);
  }

  /** A client request to `id`; `done` gets the reply, or `lost` when the node dies first. */
  write(id: string, events: EventTuple[], cl: Consistency, batch: string | undefined, done: (o: RequestOutcome) => void): void {
    this.request(id, done, (req) => (batch === undefined ? { kind: 'write', req, events, cl } : { kind: 'write', req, events, cl, batch }));
  }

  /** `tally repair` on node `id`: a comparison with each peer, one after another. */
  repair(id: string, done: (round: RepairRound) => void, refused?: (code: string) => void): void {
    this.request(id, (o) => {
      if (o.kind === 'reply' && o.reply.ok && o.reply.repair !== undefined) done(o.reply.repair);
      else if (o.kind === 'reply' && !o.reply.ok) refused?.(o.reply.code);
    }, (req) => ({ kind: 'repair', req }));
  }

  /** Removes slots from a node's disk while it is down, as deleting keys from LevelDB offline would; returns how many went. */
  deleteSlots(id: string, pick: (key: string) => boolean): number {
    const node = this.node(id);
    if (node.core !== undefined) throw new Error(`${id} must be down to lose keys offline`);
    let n = 0;
    for (const [key, s] of node.disk.series) {
      for (const [start, b] of s) {
        for (const actor of [...b.keys()]) {
          if (!pick(`${key}\u0000${start}\u0000${actor}`)) continue;
          b.delete(actor);
          n++;
        }
        if (b.size === 0) s.delete(start);
      }
    }
    return n;
  }

  /** `tally decommission` (sent to the node leaving) or `tally removenode <node>`. */
  move(id: string, op: 'decommission' | 'removenode', node: string | undefined, done: (o: RequestOutcome) => void): void {
    this.request(id, done, (req) => (node === undefined ? { kind: 'move', req, op } : { kind: 'move', req, op, node }));
  }

  read(id: string, queries: QueryTuple[], cl: Consistency, done: (o: RequestOutcome) => void): void {
    this.request(id, done, (req) => ({ kind: 'read', req, queries, cl }));
  }

  private request(id: string, done: (o: RequestOutcome) => void, make: (req: number) => CoreInput): void {
    const node = this.node(id);
    const req = this.nextReq++;
    // The request crosses the network to the node; a dead node refuses the connection.
    this.queue.schedule(this.nowMs + this.net.delayMs(), () => {
      if (node.core === undefined) return done({ kind: 'reply', reply: { ok: false, code: 'UNAVAILABLE', message: 'connection refused' } });
      this.pending.set(req, { node, incarnation: node.incarnation, done });
      this.onNode(node, node.incarnation, () => this.step(node, make(req)));
    });
  }

  private deliver(from: string, to: string, msg: PeerMessage): void {
    const node = this.node(to);
    // Every message crosses the wire as the real one does: encoded, decoded and validated.
    const input = validatePeerMessage(structuredClone(msg));
    this.onNode(node, node.incarnation, () => this.step(node, { kind: 'peer', from, msg: input }));
  }

  /** Runs `fn` on the node now, later if it is paused, never if that incarnation is gone. */
  private onNode(node: SimNodeState, incarnation: number, fn: () => void): void {
    if (node.incarnation !== incarnation || node.core === undefined) return;
    if (this.nowMs < node.pausedUntilMs) {
      this.queue.schedule(node.pausedUntilMs, () => this.onNode(node, incarnation, fn));
      return;
    }
    fn();
  }

  private step(node: SimNodeState, input: CoreInput): void {
    const core = node.core;
    if (core === undefined) return;
    const ready = core.step(input, this.epochMs + this.nowMs);
    this.apply(node, ready);
  }

  private storeDelayMs(): number {
    const [lo, hi] = this.storeDelay;
    return lo + this.rng.next() * (hi - lo);
  }

  private apply(node: SimNodeState, ready: Ready): void {
    const inc = node.incarnation;
    const later = (fn: () => void): void => this.queue.schedule(this.nowMs + this.storeDelayMs(), () => this.onNode(node, inc, fn));
    if (ready.persist !== undefined) {
      if (node.commitsInFlight >= 2) throw new Error(`${node.id}: a third commit while two are under way`);
      if (node.commitsInFlight > 0) node.pipelinedCommits++;
      node.commitsInFlight++;
      const batch = ready.persist;
      const injected = (node.failCommits ?? 0) > 0;
      if (injected) node.failCommits = (node.failCommits ?? 0) - 1;
      // As the store: a commit is written after the one before it, never first.
      node.commitDoneAtMs = Math.max(this.nowMs + (node.commitDelayMs ?? this.storeDelayMs()), node.commitDoneAtMs + 0.01);
      this.queue.schedule(node.commitDoneAtMs, () => this.onNode(node, inc, () => {
        // As the store: one made on top of a commit that failed is not written either.
        const failure = injected ? 'simulated: the disk is full' : batch.afterInFlight && node.lastCommitFailed === true ? 'the commit before it failed' : undefined;
        node.lastCommitFailed = failure !== undefined;
        if (failure !== undefined) {
          node.commitsInFlight--;
          this.step(node, { kind: 'persistFailed', persist: batch.id, message: failure, code: ErrorCode.STORAGE_FULL });
          return;
        }
        const disk = node.disk;
        for (const s of batch.slots) {
          const loaded = disk.load(s.ref, s.actor);
          const cur = loaded === DAMAGED ? undefined : loaded;
          // A store write never lowers a slot: the core only ever writes joins of what it loaded.
          if (cur !== undefined && (s.slot.count < cur.count || s.slot.sum < cur.sum)) {
            throw new Error(`${node.id} lowered slot ${bucketId(s.ref)}/${s.actor} from ${cur.count} to ${s.slot.count}`);
          }
          disk.put(s.ref, s.actor, s.slot);
        }
        for (const h of batch.hintsDelete) disk.hints.delete(`${h.node}\u0000${bucketId(h.ref)}`);
        for (const h of batch.hintsPut) disk.hints.set(`${h.node}\u0000${bucketId(h.ref)}`, h);
        for (const b of batch.batchesDelete) disk.batches.delete(b);
        for (const b of batch.batchesPut) disk.batches.set(batchRecordKey(b), b);
        for (const j of batch.journalDelete) disk.journal.delete(j);
        for (const j of batch.journalPut) disk.journal.set(j.key, j);
        if (batch.written !== undefined) disk.written = { ...batch.written };
        node.commitsInFlight--;
        this.step(node, { kind: 'persisted', persist: batch.id });
      }));
    }
    for (const load of ready.loads) {
      if (node.failLoadOf !== undefined && load.keys.some((k) => k.ref.videoId === node.failLoadOf)) {
        node.failLoadOf = undefined;
        const code = node.failLoadCode;
        later(() => this.step(node, code === undefined ? { kind: 'loadFailed', load: load.id, message: 'simulated read error' } : { kind: 'loadFailed', load: load.id, message: 'simulated read error', code }));
        continue;
      }
      later(() => this.step(node, { kind: 'loaded', load: load.id, slots: load.keys.map((k) => node.disk.load(k.ref, k.actor)) }));
    }
    for (const scan of ready.scans) {
      later(() => {
        const out: SpanSlot[] = [];
        let damaged = false;
        scan.spans.forEach(([videoId, eventType, res, start, end], i) => {
          const s = node.disk.series.get(`${videoId}\u0000${eventType}\u0000${res}`);
          if (s === undefined) return;
          for (const t of [...s.keys()].sort((a, b) => a - b)) {
            if (t < start || t >= end) continue;
            for (const [actor, slot] of [...(s.get(t) as Map<string, Slot>)].sort()) {
              if (node.disk.damaged.has(`${bucketId({ videoId, eventType, res, start: t })}\u0000${actor}`)) damaged = true;
              out.push([i, t, actor, slot.count, slot.sum, slot.min, slot.max]);
            }
          }
        });
        this.step(node, damaged ? { kind: 'scanFailed', scan: scan.id, message: 'a stored slot is damaged', code: 'STORAGE_DAMAGED' } : { kind: 'scanned', scan: scan.id, slots: out });
      });
    }
    for (const walk of ready.walks) {
      later(() => {
        const all = node.disk.all();
        const keys = [...all.keys()].filter((k) => walk.after === undefined || k > walk.after).sort().slice(0, walk.limit);
        const entries = keys.map((k) => {
          const [res, start, videoId, eventType, actor] = k.split('\u0000') as [BucketRef['res'], string, string, string, string];
          return { ref: { videoId, eventType, res, start: Number(start) }, actor, slot: all.get(k) as Slot };
        });
        this.step(node, { kind: 'walked', walk: walk.id, entries, next: keys.length === walk.limit ? keys.at(-1) : undefined });
      });
    }
    for (const e of ready.expire) later(() => node.disk.expireBefore(e.res, e.cutoffMs));
    for (const s of ready.send) {
      const target = [...this.byId.values()].find((n) => n.address === s.address);
      if (target === undefined) continue;
      if ((this.backoffs.get(`${node.id}>${target.id}`) ?? -1) > this.nowMs) {
        const msg = s.msg;
        this.queue.schedule(this.nowMs, () => this.onNode(node, inc, () => this.step(node, { kind: 'sendFailed', to: target.id, msg })));
        continue;
      }
      this.net.send(node.id, target.id, s.msg);
      // A dead peer refuses the connection: the sender's transport reports the link lost.
      if (target.core === undefined && !this.net.isBlocked(node.id, target.id)) {
        this.queue.schedule(this.nowMs + this.net.delayMs(), () => this.onNode(node, inc, () => this.step(node, { kind: 'connectionLost', peer: target.id })));
      }
    }
    for (const r of ready.replies) {
      const p = this.pending.get(r.req);
      if (p === undefined) continue;
      this.pending.delete(r.req);
      this.queue.schedule(this.nowMs + this.net.delayMs(), () => p.done({ kind: 'reply', reply: r.reply }));
    }
    // Kept at once: a few bytes, written when the ring changes.
    if (ready.knownPeers !== undefined) node.disk.knownPeers = ready.knownPeers;
    if (ready.rebuilt) node.disk.rebuilding = false;
    // Off the ring for good: the process stops, as the node's does.
    if (ready.removed !== undefined && node.removed === undefined) {
      node.removed = ready.removed;
      this.queue.schedule(this.nowMs, () => {
        if (node.incarnation === inc) this.crash(node.id);
      });
    }
    for (const line of ready.log) this.log.push(`${this.nowMs.toFixed(0)} ${node.id}: ${line}`);
    const at = ready.deadlineMs - this.epochMs;
    if (Number.isFinite(at) && at < node.tickAtMs) {
      node.tickAtMs = at;
      this.queue.schedule(at, () => {
        if (node.incarnation !== inc) return;
        node.tickAtMs = Infinity;
        this.onNode(node, inc, () => this.step(node, { kind: 'tick' }));
      });
    }
  }
}

/**
 * Every replica of every bucket holds the same slots; returns what differs. With `strays`, a node
 * may hold buckets it no longer replicates (after the ring changed: nothing deletes them).
 */
export function divergence(sim: ReplicationSim, strays = false): string[] {
  const core = sim.alive()[0]?.core;
  if (core === undefined) return ['no node alive'];
  const disks = new Map(sim.nodes.map((n) => [n.id, n.disk.all()]));
  const keys = new Set<string>();
  for (const d of disks.values()) for (const k of d.keys()) keys.add(k);
  const out: string[] = [];
  for (const key of keys) {
    const videoId = key.split('\u0000')[2] as string;
    const replicas = core.replicasOf(videoId);
    const values = replicas.map((r) => JSON.stringify(disks.get(r)?.get(key) ?? null));
    if (new Set(values).size > 1) out.push(`${key.replaceAll('\u0000', '/')}: ${replicas.map((r, i) => `${r}=${values[i]}`).join(' ')}`);
    if (!strays) for (const [node, d] of disks) if (!replicas.includes(node) && d.has(key)) out.push(`${node} holds ${key} but is not its replica`);
  }
  return out;
}
