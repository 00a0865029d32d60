/**
 * Cluster membership: gossip of endpoint states, up/down verdicts, and the ring they imply.
 *
 * Why: every node must learn who is in the cluster, who is alive and what the ring is, with no
 * master. Each gossip round a node bumps its heartbeat version and runs a Cassandra-style
 * SYN/ACK/ACK2 exchange with `livePeersPerRound` live peers (a shuffled round-robin, as SWIM
 * does), sometimes one it believes down and sometimes a seed, never more than
 * `maxGossipPeersPerRound`. Like Cassandra's Gossiper it probes a down peer with probability
 * down/(live+1) and a seed with probability seeds/(live+down+1), so the whole cluster calls on
 * each down node or seed about once a round whatever its size. For each node the state with the
 * newer (generation, version) wins, so a restarted node (higher generation) replaces its old
 * state and stays the same member. Seeds are only where a node without live peers looks first.
 *
 * Up/down is this node's own verdict (phi-detector.ts) over the arrivals of newer heartbeat
 * versions, sped up by dropped connections. A member starts down and comes up at its first sign
 * of life (a newer heartbeat, or a message from it): a state heard second-hand may be old news of
 * a dead node. A peer that announces `left` is down at once. The ring holds every member whose
 * lifecycle is normal, leaving or left, up or down: a stopped node keeps its tokens (its data is
 * there when it returns; writes meant for it become hints).
 *
 * Pure, in the shape of etcd-io/raft: inputs (`tick`, `receive`, `connectionLost`, `leave`) carry
 * nowMs and return effects (messages to send, status and ring changes) for the node to carry out.
 * Randomness comes from the injected Rng, hashing from the injected hash64.
 * Not here: sockets, timers, persisting the generation (the node passes
 * max(wall clock, last generation + 1)), removing a member for good, handing data off.
 */

import { assert } from '../protocol/errors.js';
import {
  GossipMessageType,
  Lifecycle,
  MAX_GOSSIP_DIGESTS,
  MAX_GOSSIP_STATES,
  MAX_GOSSIP_VERSION,
  type EndpointState,
  type GossipDigest,
  type GossipMessage,
  validateEndpointState,
} from '../protocol/gossip.js';
import { HashRing, tokensFor, type Hash64, type RingMember } from '../protocol/hash-ring.js';
import type { MembershipConfig } from './membership-config.js';
import { PhiAccrualDetector, Verdict } from './phi-detector.js';
import type { Rng } from './prng.js';

/** Most members a node tracks: the whole membership must fit in one digest list. */
export const MAX_MEMBERS = MAX_GOSSIP_DIGESTS;
/** How often a node says, at most, that it could not take a member because it knows MAX_MEMBERS. */
export const FULL_NOTICE_INTERVAL_MS = 60_000;
/** Most peers told directly when this node starts leaving or leaves; gossip tells the rest. */
export const MAX_ANNOUNCE_PEERS = 32;
/** Distinct claimants of our own id remembered, so each is reported once. */
const MAX_REPORTED_CLAIMS = 64;

export interface SelfInfo {
  id: string;
  /** This node's actor, gossiped so peers can tell a wiped member from its predecessor. */
  actor?: string;
  /** Where peers reach this node; compared with the seed list as a plain string. */
  address: string;
  zone: string;
}

/** Where to send: by id once known; a seed may be known only by its address. */
export interface PeerAddress {
  id?: string;
  address: string;
}

/** Why a peer is up or down: the detector's verdict, or its own announcement that it left. */
export type StatusReason = Verdict | typeof Lifecycle.LEFT;

export type MembershipEffect =
  | { kind: 'send'; to: PeerAddress; msg: GossipMessage }
  | { kind: 'statusChanged'; id: string; up: boolean; reason: StatusReason }
  | { kind: 'ringChanged'; checksum: string }
  /** A newer state of this node's own id came in: another process runs with our id, or a forgery. */
  | { kind: 'identityConflict'; claimed: EndpointState; refuted: boolean }
  /** An earlier process of this node, at its address, was known in a later generation: this node moved past it. */
  | { kind: 'generationRaised'; over: EndpointState }
  /** A member off the ring that no node has seen alive for `memberExpiryMs` is forgotten. */
  | { kind: 'memberExpired'; id: string }
  /**
   * A member unknown here could not be taken: this node knows MAX_MEMBERS already (`removed` of
   * them tombstones). At most once per FULL_NOTICE_INTERVAL_MS; `more`: other members refused since the last.
   */
  | { kind: 'membersFull'; id: string; known: number; removed: number; more: number }
  /** This node's own actor was taken off the ring for good (decommissioned or removed): it must stop. */
  | { kind: 'removed'; by: string };

/** One row of `tally status`, as this node sees it. Ownership comes from `ring()`. */
export interface MemberView {
  id: string;
  address: string;
  zone: string;
  self: boolean;
  status: 'up' | 'down';
  reason: StatusReason;
  lifecycle: Lifecycle;
  /** Being sent its ranges after starting on an empty store: reads do not count it yet. */
  rebuilding: boolean;
  generation: number;
  heartbeat: number;
  phi: number;
  /** Since the last newer heartbeat arrived (0 for self; -1 if none has arrived since this node started). */
  lastHeartbeatAgeMs: number;
  vnodes: number;
  ringChecksum: string;
}

export interface MembershipInit {
  self: SelfInfo;
  config: MembershipConfig;
  rng: Rng;
  hash64: Hash64;
  nowMs: number;
  /** This incarnation's start time in ms; strictly greater than any earlier one of this id. */
  generation: number;
  /** The node has been a member before (its data dir says so): it starts `normal`, not `joining`. */
  bootstrapped?: boolean;
  /**
   * The other members this node knew when it last ran (kept by the node): taken as states older
   * than any real one, so a restarted node places keys on the ring it left, calls on those
   * members as on any it believes down, and waits to hear from them before it serves (see `settled`).
   */
  knownPeers?: readonly KnownPeer[];
  /** The node starts on an empty store and must be sent its ranges before reads count it. */
  rebuilding?: boolean;
}

/** What a node keeps of another member across restarts. */
export interface KnownPeer {
  id: string;
  address: string;
  zone: string;
  vnodes: number;
  /**
   * The member was taken off the ring for good: its tombstone, kept so that its actor cannot come
   * back on its old data after every member has restarted (gossip alone would have forgotten it).
   */
  removed?: { actor?: string; generation: number };
}

/** Lifecycles whose tokens are on the ring. */
const IN_RING: ReadonlySet<Lifecycle> = new Set([Lifecycle.NORMAL, Lifecycle.LEAVING, Lifecycle.LEFT, Lifecycle.DECOMMISSIONING]);

/** Lifecycles of a member that is not running: peers mark it down at once and do not gossip with it. */
function gone(lifecycle: Lifecycle): boolean {
  return lifecycle === Lifecycle.LEFT || lifecycle === Lifecycle.REMOVED;
}

interface PeerStatus {
  up: boolean;
  reason: StatusReason;
}

export class Membership {
  readonly id: string;
  /** The generation this process started in (persisted by the node before it started: unique per start). */
  readonly startGeneration: number;
  private readonly config: MembershipConfig;
  private readonly rng: Rng;
  private readonly hash64: Hash64;
  private readonly detector: PhiAccrualDetector;
  /** Every known member's latest state, self included. States are never mutated, only replaced. */
  private readonly states = new Map<string, EndpointState>();
  /** Actors of earlier processes of ours this node moved its generation past (see applySelf). */
  private readonly raisedOver = new Set<string>();
  /** Claimants of our own id already reported (`generation#address`). */
  private readonly reportedClaims = new Set<string>();
  private readonly statuses = new Map<string, PeerStatus>();
  private readonly tokenCache = new Map<string, { vnodes: number; tokens: bigint[] }>();
  /** Seed addresses other than our own. */
  readonly otherSeeds: readonly string[];
  private cachedRing: HashRing | undefined;
  /** The members leaving the ring for good, and the ring without them; cached with the ring. */
  private cachedLeavers: { ids: string[]; ring: HashRing | undefined; checksum: string } | undefined;
  private cachedPrior: { of: HashRing; ring: HashRing | undefined } | undefined;
  private nextRoundAtMs: number;
  /** A shuffled cycle over the peers for choosing the live gossip target; see nextLivePeer. */
  private liveOrder: string[] = [];
  private liveCursor = 0;
  private lastInputMs: number;
  private readonly startedAtMs: number;
  /** When a changed ring was last pushed to peers outside a round (see noteRing). */
  private ringAnnouncedAtMs = Number.NEGATIVE_INFINITY;
  private ringToAnnounce = false;
  /** A live peer agreed on the ring with this node once (see settled()). */
  private heardRing = false;
  private stopped = false;
  /** SYNs sent so far; each SYN carries the count, and its ACK echoes it. */
  private synSeq = 0;
  /** When each member's state last advanced here (a newer state arrived); see expire(). */
  private readonly advancedAtMs = new Map<string, number>();
  /** For a peer whose connection dropped: `synSeq` at the drop. A later echo proves it alive. */
  private readonly lostAtSeq = new Map<string, number>();
  /** When each peer in `lostAtSeq` was last probed (see probeIfLost). */
  private readonly probedAtMs = new Map<string, number>();
  /**
   * Members forgotten (see expire), with the state they had and when: that state, relayed by a
   * peer that has not forgotten it yet, is not taken back (each node times the expiry from its own
   * last news, so without this they would hand it to each other for ever). At most MAX_MEMBERS,
   * each kept for memberExpiryMs.
   */
  private readonly forgotten = new Map<string, { generation: number; version: number; atMs: number }>();
  /** When a member was last refused for want of room (see `membersFull`), and the others refused since (at most MAX_MEMBERS). */
  private fullNoticeAtMs = Number.NEGATIVE_INFINITY;
  private readonly fullRefusedSince = new Set<string>();

  constructor(init: MembershipInit) {
    const { self, config } = init;
    assert(Number.isSafeInteger(init.generation) && init.generation >= 0, `bad generation ${init.generation}`);
    this.id = self.id;
    this.startGeneration = init.generation;
    this.config = config;
    this.rng = init.rng;
    this.hash64 = init.hash64;
    this.detector = new PhiAccrualDetector(config);
    this.otherSeeds = config.seeds.filter((s) => s !== self.address);
    const isSeed = this.otherSeeds.length < config.seeds.length;
    // A seed, a node with nobody to ask, or a node returning with its data does not wait to join.
    // Nor does a node that starts rebuilding (a new store: a new node, or one whose data was
    // wiped): reads do not count it until its peers have sent it its ranges, and writes should
    // reach it at once. Announced as joining, its tokens would leave the ring until it next heard
    // from a peer, moving its keys to other nodes for that moment.
    const joined = (init.bootstrapped ?? false) || isSeed || this.otherSeeds.length === 0 || init.rebuilding === true;
    // What we gossip must pass the checks every peer applies to it (a bad id fails here, at start).
    const initial = validateEndpointState(
      {
        id: self.id,
        address: self.address,
        zone: self.zone,
        generation: init.generation,
        version: 1,
        lifecycle: joined ? Lifecycle.NORMAL : Lifecycle.JOINING,
        vnodes: config.vnodes,
        ringChecksum: '0',
        ...(init.rebuilding === true ? { rebuilding: true } : {}),
        ...(self.actor !== undefined ? { actor: self.actor } : {}),
      },
      'this node',
    );
    this.states.set(self.id, initial);
    for (const p of init.knownPeers ?? []) {
      if (p.id === self.id || this.states.size >= MAX_MEMBERS) continue;
      // Generation 0, version 0: whatever the member itself says later is newer. A tombstone is
      // as it was gossiped: the highest version of its generation, and final for its actor.
      const { removed, ...peer } = p;
      const state = validateEndpointState(
        removed === undefined
          ? { ...peer, generation: 0, version: 0, lifecycle: Lifecycle.NORMAL, ringChecksum: '0' }
          : { ...peer, generation: removed.generation, version: MAX_GOSSIP_VERSION, lifecycle: Lifecycle.REMOVED, ringChecksum: '0', ...(removed.actor === undefined ? {} : { actor: removed.actor }) },
        'a known peer',
      );
      this.states.set(p.id, state);
      this.advancedAtMs.set(p.id, init.nowMs);
      // Down until heard from, and so called on by the rounds as any member believed down is: with
      // its seeds dead, a node that called only on them never found the members it knew.
      this.evaluate(p.id, init.nowMs, []);
    }
    this.updateSelf({ ringChecksum: this.topologyChecksum() });
    this.nextRoundAtMs = init.nowMs;
    this.lastInputMs = init.nowMs;
    this.startedAtMs = init.nowMs;
  }

  /** Call every `tickIntervalMs`: runs verdicts and, when due, a gossip round. */
  tick(nowMs: number): MembershipEffect[] {
    if (this.stopped) return [];
    this.noteInput(nowMs);
    const effects: MembershipEffect[] = [];
    for (const id of this.statuses.keys()) this.evaluate(id, nowMs, effects);
    this.expire(nowMs, effects);
    this.noteRing(effects, nowMs);
    if (nowMs >= this.nextRoundAtMs) {
      // Keep the phase; after a stall, start afresh rather than firing the missed rounds at once.
      this.nextRoundAtMs += this.config.gossipIntervalMs;
      if (this.nextRoundAtMs <= nowMs) this.nextRoundAtMs = nowMs + this.config.gossipIntervalMs;
      this.round(effects);
    }
    return effects;
  }

  /** A gossip message from peer `from` (the id its connection authenticated as). */
  receive(from: string, msg: GossipMessage, nowMs: number): MembershipEffect[] {
    if (this.stopped || from === this.id) return [];
    this.noteInput(nowMs);
    const effects: MembershipEffect[] = [];
    const touched = new Set<string>();
    switch (msg.t) {
      case GossipMessageType.SYN: {
        // The sender speaks for itself only; a SYN claiming another id is dropped.
        if (msg.sender.id !== from) return [];
        this.apply(msg.sender, nowMs, touched, effects);
        const ack = this.ackFor(msg.seq, msg.digests);
        // Answer at the address we hold for the sender: one it sent but we did not take (an old
        // state) must not make us open links to arbitrary addresses.
        const address = this.states.get(from)?.address ?? msg.sender.address;
        effects.push({ kind: 'send', to: { id: from, address }, msg: ack });
        break;
      }
      case GossipMessageType.ACK: {
        for (const s of msg.states) this.apply(s, nowMs, touched, effects);
        // An answer to a SYN sent after the connection dropped: the peer is alive after the drop.
        const lostAtSeq = this.lostAtSeq.get(from);
        if (lostAtSeq !== undefined && msg.seq > lostAtSeq) {
          this.detector.connectionRestored(from);
          this.lostAtSeq.delete(from);
          this.probedAtMs.delete(from);
        }
        const states = this.statesNewerThan(msg.requests);
        const address = this.states.get(from)?.address;
        if (states.length > 0 && address !== undefined) {
          effects.push({ kind: 'send', to: { id: from, address }, msg: { t: GossipMessageType.ACK2, states } });
        }
        break;
      }
      case GossipMessageType.ACK2:
        for (const s of msg.states) this.apply(s, nowMs, touched, effects);
        break;
    }
    if (this.states.has(from)) this.detector.heardFrom(from, nowMs);
    touched.add(from);
    if (this.self.lifecycle === Lifecycle.JOINING) this.updateSelf({ lifecycle: Lifecycle.NORMAL });
    for (const id of touched) this.evaluate(id, nowMs, effects);
    this.noteRing(effects, nowMs);
    return effects;
  }

  /**
   * Our connection to `peerId` dropped. Probes it at once; unless it answers a SYN sent after the
   * drop (its ACK echoes the SYN's seq) within `connectionLostGraceMs`, it is down. Call it for
   * every drop and failed reconnect; while a drop is pending, more calls change nothing.
   */
  connectionLost(peerId: string, nowMs: number): MembershipEffect[] {
    const state = this.states.get(peerId);
    if (this.stopped || peerId === this.id || state === undefined) return [];
    this.noteInput(nowMs);
    const effects: MembershipEffect[] = [];
    if (this.detector.connectionLost(peerId, nowMs)) {
      this.lostAtSeq.set(peerId, this.synSeq);
      this.probedAtMs.delete(peerId);
      this.probeIfLost(peerId, nowMs, effects);
    }
    this.evaluate(peerId, nowMs, effects);
    return effects;
  }

  /** Graceful stop begins (draining): announce `leaving`. Still up, still gossiping. */
  startLeaving(nowMs: number): MembershipEffect[] {
    if (this.stopped) return [];
    this.noteInput(nowMs);
    // Off the ring for good stays off: a stop never puts a removed node's tokens back.
    if (this.self.lifecycle !== Lifecycle.REMOVED) this.updateSelf({ lifecycle: Lifecycle.LEAVING });
    return this.announce();
  }

  /** Graceful stop: announce `left` so peers mark us down at once. Every later input is ignored. */
  leave(nowMs: number): MembershipEffect[] {
    if (this.stopped) return [];
    this.noteInput(nowMs);
    if (this.self.lifecycle !== Lifecycle.REMOVED) this.updateSelf({ lifecycle: Lifecycle.LEFT });
    this.stopped = true;
    return this.announce();
  }

  /** The other members to keep across a restart: those on the ring, and the tombstones of those taken off it for good. */
  knownPeers(): KnownPeer[] {
    const out: KnownPeer[] = [];
    for (const st of this.states.values()) {
      if (st.id === this.id) continue;
      const peer: KnownPeer = { id: st.id, address: st.address, zone: st.zone, vnodes: st.vnodes };
      if (IN_RING.has(st.lifecycle)) out.push(peer);
      else if (st.lifecycle === Lifecycle.REMOVED) out.push({ ...peer, removed: { generation: st.generation, ...(st.actor === undefined ? {} : { actor: st.actor }) } });
    }
    return out;
  }

  /** Every known member as this node sees it, sorted by id. */
  view(nowMs: number): MemberView[] {
    const rows: MemberView[] = [];
    for (const s of this.states.values()) {
      const isSelf = s.id === this.id;
      const status = this.statuses.get(s.id);
      const up = isSelf ? !this.stopped : (status?.up ?? false);
      rows.push({
        id: s.id,
        address: s.address,
        zone: s.zone,
        self: isSelf,
        status: up ? 'up' : 'down',
        reason: isSelf ? (this.stopped ? Lifecycle.LEFT : Verdict.UP) : (status?.reason ?? Verdict.NO_HEARTBEAT),
        lifecycle: s.lifecycle,
        rebuilding: s.rebuilding === true,
        generation: s.generation,
        heartbeat: s.version,
        phi: isSelf ? 0 : this.detector.phi(s.id, nowMs),
        lastHeartbeatAgeMs: isSelf ? 0 : (this.detector.lastHeartbeatAgeMs(s.id, nowMs) ?? -1),
        vnodes: s.vnodes,
        ringChecksum: s.ringChecksum,
      });
    }
    return rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Whether this node's view of the ring can be trusted to place keys: it has no one to ask (a
   * cluster of one), or some peer is up and every peer it sees up gossips the ring checksum it
   * computes itself. A node just (re)started knows only itself and its seeds, so it would think
   * itself a replica of keys it does not hold; it must not coordinate until gossip settles. After
   * `settleTimeoutMs` with no live peer it settles anyway, to serve what it can alone. A node whose
   * live peers gossip another ring is not settled either: a joint quorum covers two rings next to
   * each other, not a node that missed a whole change (partitioned, say) and coordinates on the ring
   * from before it.
   */
  settled(nowMs: number): boolean {
    if (this.stopped) return false;
    // A cluster of one: nobody to ask, nobody known (but members taken off the ring for good).
    if (this.otherSeeds.length === 0 && [...this.states.values()].every((s) => s.id === this.id || s.lifecycle === Lifecycle.REMOVED)) return true;
    if (this.disagreeingPeer() !== undefined) return false;
    // Once it has heard the ring from a peer, a node that loses every peer still knows it: it
    // answers what it can (UNAVAILABLE for a quorum it cannot meet), not NOT_READY.
    for (const status of this.statuses.values()) if (status.up) this.heardRing = true;
    return this.heardRing || nowMs - this.startedAtMs >= this.config.settleTimeoutMs;
  }

  /** A live peer whose ring differs from ours (see settled()), if any. */
  disagreeingPeer(): string | undefined {
    const ours = this.topologyChecksum();
    for (const [id, status] of this.statuses) {
      if (status.up && (this.states.get(id) as EndpointState).ringChecksum !== ours) return id;
    }
    return undefined;
  }

  /** Ids of the members this node believes up, self included (unless it has left). */
  liveMembers(): string[] {
    const ids = this.stopped ? [] : [this.id];
    for (const [id, status] of this.statuses) if (status.up) ids.push(id);
    return ids;
  }

  isUp(id: string): boolean {
    return id === this.id ? !this.stopped : (this.statuses.get(id)?.up ?? false);
  }

  /**
   * Whether a peer that says it is `claim.id` (with its actor and address, from its hello) would
   * be a second live node with an id already in use: ours, while we run, under another actor; or
   * a member's that is up, under another actor, at another address. Returns who holds the id, or
   * undefined when the claim is fine: the same actor is the same data directory restarted, and the
   * same address means the old process is gone (its port is the newcomer's now), as when a node
   * whose data was wiped comes back; a member down or gone gives its id up.
   */
  idHeldAgainst(claim: { id: string; actor: string; address: string }): { address: string; actor: string | undefined } | undefined {
    const held = this.states.get(claim.id);
    if (held === undefined || held.actor === claim.actor) return undefined;
    if (claim.id === this.id) return this.stopped ? undefined : { address: held.address, actor: held.actor };
    if (!this.isUp(claim.id) || gone(held.lifecycle) || held.address === claim.address) return undefined;
    return { address: held.address, actor: held.actor };
  }

  /** The latest state known for `id`. */
  stateOf(id: string): EndpointState | undefined {
    return this.states.get(id);
  }

  get lifecycle(): Lifecycle {
    return this.self.lifecycle;
  }

  /** The ring of every member in IN_RING, up or down; rebuilt only when such a member changes. */
  ring(): HashRing {
    if (this.cachedRing === undefined) {
      this.cachedLeavers = undefined;
      const members: RingMember[] = [];
      for (const s of this.states.values()) {
        if (IN_RING.has(s.lifecycle)) members.push({ id: s.id, zone: s.zone, tokens: this.tokensOf(s) });
      }
      this.cachedRing = new HashRing(members, this.hash64);
    }
    return this.cachedRing;
  }

  /**
   * This node's generation now: its start generation, or above it once it moved past a later
   * state of its own id (see applySelf). Peers key what they send a rebuilding node by it.
   */
  get generation(): number {
    return this.self.generation;
  }

  private get self(): EndpointState {
    return this.states.get(this.id) as EndpointState;
  }

  /**
   * The members leaving the ring for good, sorted: those decommissioning, and those another member
   * is removing (`removing` in its state). While there are any, a key's replicas are those of
   * `ring()` and those of `pendingRing()` together: reads and writes need a quorum of each.
   */
  leavers(): readonly string[] {
    return this.leaving().ids;
  }

  /**
   * The ring without the members being sent their ranges (rebuilding): where a coordinator that
   * has not heard of a new member yet places its keys. Undefined when nobody rebuilds.
   */
  priorRing(): HashRing | undefined {
    const ring = this.ring();
    if (this.cachedPrior === undefined || this.cachedPrior.of !== ring) {
      const members: RingMember[] = [];
      let rebuilding = false;
      for (const s of this.states.values()) {
        if (!IN_RING.has(s.lifecycle)) continue;
        if (s.rebuilding === true) rebuilding = true;
        else members.push({ id: s.id, zone: s.zone, tokens: this.tokensOf(s) });
      }
      this.cachedPrior = { of: ring, ring: rebuilding ? new HashRing(members, this.hash64) : undefined };
    }
    return this.cachedPrior.ring;
  }

  /** The ring once the leavers are gone; undefined when nobody is leaving. */
  pendingRing(): HashRing | undefined {
    return this.leaving().ring;
  }

  /**
   * The checksum each node gossips: of the ring, and of who is leaving it. Equal checksums from
   * every live peer mean every coordinator places keys, leavers included, as this node does.
   */
  topologyChecksum(): string {
    return this.leaving().checksum;
  }

  private leaving(): { ids: string[]; ring: HashRing | undefined; checksum: string } {
    const ring = this.ring();
    if (this.cachedLeavers === undefined) {
      const ids = new Set<string>();
      for (const s of this.states.values()) {
        if (s.lifecycle === Lifecycle.DECOMMISSIONING) ids.add(s.id);
        if (s.removing !== undefined && !gone(s.lifecycle) && IN_RING.has(this.states.get(s.removing)?.lifecycle ?? Lifecycle.REMOVED)) ids.add(s.removing);
      }
      const sorted = [...ids].sort();
      if (sorted.length === 0) {
        this.cachedLeavers = { ids: [], ring: undefined, checksum: ring.checksum() };
      } else {
        const members: RingMember[] = [];
        for (const s of this.states.values()) {
          if (IN_RING.has(s.lifecycle) && !ids.has(s.id)) members.push({ id: s.id, zone: s.zone, tokens: this.tokensOf(s) });
        }
        const checksum = this.hash64(`${ring.checksum()}>${sorted.join(',')}`).toString(16);
        this.cachedLeavers = { ids: sorted, ring: new HashRing(members, this.hash64), checksum };
      }
    }
    return this.cachedLeavers;
  }

  /**
   * Whether every peer this node sees up gossips the topology checksum it computes itself now (not
   * sticky, unlike `settled`): then no live coordinator places keys on an older ring.
   */
  agreed(): boolean {
    if (this.stopped) return false;
    return this.self.ringChecksum === this.topologyChecksum() && this.disagreeingPeer() === undefined;
  }

  /** `tally decommission`: this node is leaving the ring for good; it stays up and a replica until it is `removed`. */
  decommission(): MembershipEffect[] {
    this.updateSelf({ lifecycle: Lifecycle.DECOMMISSIONING });
    return this.announceChange();
  }

  /** The decommission is given up (another change begun at once would leave too few members): a normal member again. */
  cancelDecommission(): MembershipEffect[] {
    if (this.self.lifecycle !== Lifecycle.DECOMMISSIONING) return [];
    this.updateSelf({ lifecycle: Lifecycle.NORMAL });
    return this.announceChange();
  }

  /** The decommission is done: this node is off the ring for good. */
  finishDecommission(): MembershipEffect[] {
    this.updateSelf({ lifecycle: Lifecycle.REMOVED });
    return this.announceChange();
  }

  /** Our state changed: pushed to live peers now, with the ring checksum it makes. */
  private announceChange(): MembershipEffect[] {
    const effects: MembershipEffect[] = [];
    if (!this.noteRing(effects)) effects.push(...this.announce());
    return effects;
  }

  /**
   * The ring this node places keys on has changed since it last said (a member's lifecycle or
   * removal learnt, or its own): its checksum is taken into our state and pushed to live peers
   * now, not at the next gossip round. Every node refuses client requests (NOT_READY) while a
   * live peer's ring differs from its own, and learning each other's checksums at rounds a
   * second apart held writes back for up to two seconds at every ring change. Pushed at most
   * once a tick interval (`nowMs` given; a later change waits for the next tick), so a cluster
   * starting up, whose rings change with every member learnt, sends a bounded number more. Each
   * push is a new version of our state, which peers' detectors would take for a heartbeat but for
   * their floor (minArrivalIntervalMs). Returns whether it pushed.
   */
  private noteRing(effects: MembershipEffect[], nowMs?: number): boolean {
    const checksum = this.topologyChecksum();
    const changed = checksum !== this.self.ringChecksum;
    if (changed) {
      this.updateSelf({ ringChecksum: checksum });
      effects.push({ kind: 'ringChanged', checksum });
      this.ringToAnnounce = true;
    }
    if (this.ringToAnnounce && (nowMs === undefined || nowMs - this.ringAnnouncedAtMs >= this.config.tickIntervalMs)) {
      if (nowMs !== undefined) this.ringAnnouncedAtMs = nowMs;
      this.ringToAnnounce = false;
      effects.push(...this.announce());
      return true;
    }
    return false;
  }

  /** `tally removenode`: this node takes `id` (down) off the ring, once the others hold its ranges. */
  startRemoving(id: string): void {
    this.updateSelf({ removing: id });
  }

  /**
   * `id`'s ranges are re-replicated: its state becomes `removed`, at the highest version its
   * generation can have, so no older word of it outranks this one; a removed actor never returns.
   * One that died while it was being rebuilt is no longer being rebuilt: off the ring, it never will be.
   */
  markRemoved(id: string): void {
    const st = this.states.get(id);
    if (st === undefined || id === this.id) return;
    const { rebuilding: _, ...rest } = st;
    this.states.set(id, { ...rest, version: MAX_GOSSIP_VERSION, lifecycle: Lifecycle.REMOVED });
    this.cachedRing = undefined;
  }

  /** The removal this node drove is known everywhere: stop announcing it. */
  clearRemoving(): void {
    if (this.self.removing !== undefined) this.updateSelf({ removing: undefined });
  }

  /** The member this node is removing, if any. */
  get removing(): string | undefined {
    return this.self.removing;
  }

  isRemoved(id: string): boolean {
    return this.states.get(id)?.lifecycle === Lifecycle.REMOVED;
  }

  /** The ranges this node holds have all been sent to it: reads may count it. */
  doneRebuilding(): void {
    if (this.self.rebuilding !== true) return;
    this.updateSelf({ rebuilding: undefined });
  }

  /** Whether `id` says it is still being sent its ranges. */
  isRebuilding(id: string): boolean {
    return this.states.get(id)?.rebuilding === true;
  }

  private updateSelf(change: Partial<Pick<EndpointState, 'lifecycle' | 'ringChecksum' | 'rebuilding' | 'removing'>>): void {
    const old = this.self;
    const next: EndpointState = { ...old, ...change, version: old.version + 1 };
    if (next.rebuilding !== true) delete next.rebuilding;
    if (next.removing === undefined) delete next.removing;
    this.states.set(this.id, next);
    if (this.ringRelevantChange(old, next)) this.cachedRing = undefined;
  }

  private round(effects: MembershipEffect[]): void {
    // The round's heartbeat (tick took a changed ring into our state just before: see noteRing).
    this.updateSelf({});

    const live: string[] = [];
    const down: string[] = [];
    for (const [id, status] of this.statuses) {
      if (gone((this.states.get(id) as EndpointState).lifecycle)) continue;
      (status.up ? live : down).push(id);
    }
    // In order of need, so that the cap drops the least needed: one live peer; a down one to find
    // out whether it is back; a seed (always when no peer is live); a second live peer.
    const targets: PeerAddress[] = [];
    const add = (to: PeerAddress): void => {
      if (!targets.some((t) => t.address === to.address)) targets.push(to);
    };
    const liveTargets: string[] = [];
    for (let i = 0; i < this.config.livePeersPerRound; i++) {
      const id = this.nextLivePeer();
      if (id !== undefined && !liveTargets.includes(id)) liveTargets.push(id);
    }
    const [firstLive, ...moreLive] = liveTargets;
    if (firstLive !== undefined) add(this.addressOf(firstLive));
    if (down.length > 0 && this.rng.next() < down.length / (live.length + 1)) add(this.addressOf(this.rng.pick(down)));
    if (this.otherSeeds.length > 0) {
      const gossipedToSeed = liveTargets.some((id) => this.otherSeeds.includes(this.addressOf(id).address));
      const wantSeed =
        live.length === 0 ||
        ((!gossipedToSeed || live.length < this.otherSeeds.length) &&
          this.rng.next() < this.otherSeeds.length / (live.length + down.length + 1));
      if (wantSeed) add(this.seedAddress(this.rng.pick(this.otherSeeds)));
    }
    for (const id of moreLive) add(this.addressOf(id));
    const syn = this.syn();
    for (const to of targets.slice(0, this.config.maxGossipPeersPerRound)) effects.push({ kind: 'send', to, msg: syn });
  }

  /**
   * The next live peer in a shuffled round-robin (SWIM's randomized round-robin): as random as a
   * uniform pick over a cycle, but every live peer is contacted once per cycle, so the gap between
   * two contacts of the same pair is bounded instead of geometric with a long tail.
   */
  private nextLivePeer(): string | undefined {
    for (let attempts = 0; attempts < 2; attempts++) {
      while (this.liveCursor < this.liveOrder.length) {
        const id = this.liveOrder[this.liveCursor++] as string;
        const status = this.statuses.get(id);
        const lifecycle = this.states.get(id)?.lifecycle;
        if (status?.up === true && lifecycle !== undefined && !gone(lifecycle)) return id;
      }
      this.liveOrder = this.rng.shuffle([...this.statuses.keys()]);
      this.liveCursor = 0;
    }
    return undefined;
  }

  private syn(): GossipMessage {
    const digests: GossipDigest[] = [];
    for (const s of this.states.values()) digests.push({ id: s.id, generation: s.generation, version: s.version });
    return { t: GossipMessageType.SYN, seq: ++this.synSeq, sender: this.self, digests };
  }

  /** Our answer to a SYN's digests: what the initiator is behind on, and what we are behind on. */
  private ackFor(seq: number, digests: readonly GossipDigest[]): GossipMessage {
    const states: EndpointState[] = [];
    const requests: GossipDigest[] = [];
    const mentioned = new Set<string>();
    for (const d of digests) {
      mentioned.add(d.id);
      const local = this.states.get(d.id);
      if (local === undefined) {
        if (this.states.size + requests.length < MAX_MEMBERS) requests.push({ id: d.id, generation: 0, version: 0 });
      } else if (newer(d, local)) {
        // A tombstone outranks every later state of its actor, whatever its generation: send it (a
        // removed actor back on its old data learns it so; a peer that took its state drops it).
        if (local.lifecycle === Lifecycle.REMOVED) states.push(local);
        // A newer state of ourselves than our own is another process claiming our id; never adopt it.
        else if (d.id !== this.id) requests.push({ id: d.id, generation: local.generation, version: local.version });
      } else if (newer(local, d) && !remembered(local)) {
        states.push(local);
      }
    }
    for (const [id, s] of this.states) if (!mentioned.has(id) && !remembered(s)) states.push(s);
    return { t: GossipMessageType.ACK, seq, states: this.capStates(states), requests };
  }

  private statesNewerThan(requests: readonly GossipDigest[]): EndpointState[] {
    const states: EndpointState[] = [];
    for (const r of requests) {
      const local = this.states.get(r.id);
      if (local !== undefined && newer(local, r)) states.push(local);
    }
    return this.capStates(states);
  }

  /** At most MAX_GOSSIP_STATES, our own state first if it is among them; the rest at random. */
  private capStates(states: EndpointState[]): EndpointState[] {
    if (states.length <= MAX_GOSSIP_STATES) return states;
    const own = states.filter((s) => s.id === this.id);
    const others = this.rng.shuffle(states.filter((s) => s.id !== this.id));
    return [...own, ...others].slice(0, MAX_GOSSIP_STATES);
  }

  /**
   * Take `incoming` if it is newer than what we know. A newer state of a known member is a
   * heartbeat arrival, however it reached us; a member first known second-hand is not (the state
   * may be old news of a dead node), so it stays down until it shows life.
   */
  private apply(incoming: EndpointState, nowMs: number, touched: Set<string>, effects: MembershipEffect[]): void {
    const id = incoming.id;
    // Versions beyond the cap are forged or corrupt; refusing them keeps every refutation valid.
    if (incoming.version > MAX_GOSSIP_VERSION) return;
    if (id === this.id) {
      this.applySelf(incoming, nowMs, effects);
      return;
    }
    // A generation far in the future would make that member's real states look old for ever.
    if (incoming.generation > nowMs + this.config.maxGenerationAheadMs) return;
    const local = this.states.get(id);
    // A removed actor never comes back, whatever it or anyone says later, in any generation; a new
    // actor (its data wiped) may join again. The tombstone beats every state of its actor.
    if (local?.lifecycle === Lifecycle.REMOVED && incoming.actor === local.actor && incoming.lifecycle !== Lifecycle.REMOVED) return;
    if (local !== undefined && incoming.lifecycle === Lifecycle.REMOVED && local.lifecycle !== Lifecycle.REMOVED && incoming.actor === local.actor) {
      this.states.set(id, incoming);
      this.advancedAtMs.set(id, nowMs);
      this.cachedRing = undefined;
      touched.add(id);
      return;
    }
    if (local === undefined) {
      if (this.states.size >= MAX_MEMBERS) {
        // Without a word the newcomer would wait for ever to be taken, and no log would say why.
        if (nowMs - this.fullNoticeAtMs >= FULL_NOTICE_INTERVAL_MS) {
          let removed = 0;
          for (const st of this.states.values()) if (st.lifecycle === Lifecycle.REMOVED) removed++;
          this.fullRefusedSince.delete(id);
          effects.push({ kind: 'membersFull', id, known: this.states.size, removed, more: this.fullRefusedSince.size });
          this.fullNoticeAtMs = nowMs;
          this.fullRefusedSince.clear();
        } else if (this.fullRefusedSince.size < MAX_MEMBERS) {
          this.fullRefusedSince.add(id);
        }
        return;
      }
      const was = this.forgotten.get(id);
      if (was !== undefined && !newer(incoming, was)) return;
      this.forgotten.delete(id);
      this.states.set(id, incoming);
      this.advancedAtMs.set(id, nowMs);
      if (IN_RING.has(incoming.lifecycle)) this.cachedRing = undefined;
    } else if (newer(incoming, local)) {
      this.advancedAtMs.set(id, nowMs);
      this.states.set(id, incoming);
      const restarted = incoming.generation > local.generation;
      this.detector.heartbeat(id, nowMs, restarted);
      // A new process: the drop was the old one's (the detector forgets it too).
      if (restarted) {
        this.lostAtSeq.delete(id);
        this.probedAtMs.delete(id);
      }
      this.probeIfLost(id, nowMs, effects);
      if (this.ringRelevantChange(local, incoming)) this.cachedRing = undefined;
    } else {
      return;
    }
    touched.add(id);
  }

  /**
   * Someone says something newer about us than we do. In our own generation we refute it by
   * moving to the next generation (as SWIM refutes a suspicion with a new incarnation), so the
   * cluster keeps our word. A newer generation said at our own address is an earlier process of
   * ours: no other process can hold the address while we do. That happens when this node started
   * with its clock behind the one its last process started by, and had no record of that
   * generation to start above (its data was wiped, so the record went too): we move past it, or
   * peers would keep the old process's state (its actor, not rebuilding) and never take ours. A
   * newer generation at another address we do not outbid: it is reported, for the operator, as
   * another process running with our id.
   */
  private applySelf(incoming: EndpointState, nowMs: number, effects: MembershipEffect[]): void {
    const self = this.self;
    // Our actor was taken off the ring (by `tally removenode`, maybe while this process was away):
    // whatever generation that was said in, it is final for this actor.
    if (incoming.lifecycle === Lifecycle.REMOVED && incoming.actor === self.actor && self.lifecycle !== Lifecycle.REMOVED) {
      if (!this.reportedClaims.has('removed')) {
        this.reportedClaims.add('removed');
        effects.push({ kind: 'removed', by: incoming.address });
      }
      return;
    }
    if (!newer(incoming, self)) return;
    // Moved past once per actor heard of: a second time means the address is shared after all (an
    // --advertise copied to another live node), and two processes would outbid each other for
    // ever, so it is reported as a conflict. Never to a generation peers would refuse as too far
    // ahead of their clocks.
    const actor = incoming.actor ?? '';
    if (
      incoming.generation > self.generation &&
      incoming.address === self.address &&
      !this.raisedOver.has(actor) &&
      this.raisedOver.size < MAX_REPORTED_CLAIMS &&
      incoming.generation + 1 <= nowMs + this.config.maxGenerationAheadMs
    ) {
      this.raisedOver.add(actor);
      this.states.set(this.id, { ...self, generation: incoming.generation + 1, version: 1 });
      effects.push({ kind: 'generationRaised', over: incoming });
      return;
    }
    const refuted = incoming.generation === self.generation;
    // Outbid it with the next generation rather than a higher version: no version, however large,
    // beats a newer generation, so the answer never runs into MAX_GOSSIP_VERSION.
    if (refuted) this.states.set(this.id, { ...self, generation: self.generation + 1, version: 1 });
    // Report each claimant once, not once for every message that relays it.
    const claim = `${incoming.generation}#${incoming.address}`;
    if (this.reportedClaims.has(claim)) return;
    if (this.reportedClaims.size < MAX_REPORTED_CLAIMS) this.reportedClaims.add(claim);
    effects.push({ kind: 'identityConflict', claimed: incoming, refuted });
  }

  /**
   * A peer whose connection dropped is down until it answers a SYN sent after the drop. It is
   * probed at the drop, and again, at most once a gossip interval, whenever a newer heartbeat of
   * it arrives (it lives, so the probe is likely answered). A relayed heartbeat is no proof by
   * itself; the probe's answer is. Left to the rounds' occasional call on a down peer, a node
   * whose links reset while it was cut off stayed down for each peer until that peer happened to
   * pick it: a minute or more in a 20-node cluster.
   */
  private probeIfLost(id: string, nowMs: number, effects: MembershipEffect[]): void {
    const state = this.states.get(id);
    if (!this.lostAtSeq.has(id) || state === undefined || gone(state.lifecycle)) return;
    const last = this.probedAtMs.get(id);
    if (last !== undefined && nowMs - last < this.config.gossipIntervalMs) return;
    this.probedAtMs.set(id, nowMs);
    effects.push({ kind: 'send', to: { id, address: state.address }, msg: this.syn() });
  }

  /** Bring `id`'s up/down status in line with the detector and its lifecycle; report a change. */
  private evaluate(id: string, nowMs: number, effects: MembershipEffect[]): void {
    const state = this.states.get(id);
    if (state === undefined || id === this.id) return;
    const reason: StatusReason = gone(state.lifecycle) ? Lifecycle.LEFT : this.detector.verdict(id, nowMs);
    const up = reason === Verdict.UP;
    // Every member starts down; the first change to report is its first sign of life.
    const wasUp = this.statuses.get(id)?.up ?? false;
    this.statuses.set(id, { up, reason });
    if (up !== wasUp) effects.push({ kind: 'statusChanged', id, up, reason });
  }

  /**
   * Forgets members off the ring that are down and whose state has not advanced for
   * `memberExpiryMs`: only a member bumps its own heartbeat, so no node has seen such a member
   * alive for that long (one that died joining, or a state someone made up and stopped repeating).
   * A member on the ring stays, down, until `tally removenode` takes it off with its ranges streamed:
   * forgetting it would move its ranges to replicas that hold none of their data, and the members
   * would forget it at different moments, each disagreeing with the others about the ring.
   */
  private expire(nowMs: number, effects: MembershipEffect[]): void {
    for (const [id, f] of this.forgotten) if (nowMs - f.atMs > this.config.memberExpiryMs) this.forgotten.delete(id);
    for (const [id, at] of this.advancedAtMs) {
      if (nowMs - at <= this.config.memberExpiryMs || this.statuses.get(id)?.up === true) continue;
      const state = this.states.get(id);
      // A tombstone is kept: forgetting it would let its actor back onto the ring.
      if (state === undefined || state.lifecycle === Lifecycle.REMOVED || IN_RING.has(state.lifecycle)) continue;
      if (this.forgotten.size >= MAX_MEMBERS) this.forgotten.delete(this.forgotten.keys().next().value as string);
      this.forgotten.set(id, { generation: state.generation, version: state.version, atMs: nowMs });
      this.states.delete(id);
      this.statuses.delete(id);
      this.advancedAtMs.delete(id);
      this.lostAtSeq.delete(id);
      this.probedAtMs.delete(id);
      this.tokenCache.delete(id);
      this.detector.forget(id);
      effects.push({ kind: 'memberExpired', id });
    }
  }

  /** A gap since our last input beyond the threshold is our own stall: forgive it to every peer. */
  private noteInput(nowMs: number): void {
    const gap = nowMs - this.lastInputMs;
    if (gap > this.config.localPauseThresholdMs) this.detector.forgive(gap - this.config.localPauseThresholdMs);
    this.lastInputMs = Math.max(this.lastInputMs, nowMs);
  }

  /** Push our state to up to MAX_ANNOUNCE_PEERS live peers; no reply is expected. */
  private announce(): MembershipEffect[] {
    const live = this.rng.shuffle([...this.statuses].filter(([, s]) => s.up).map(([id]) => id));
    const msg: GossipMessage = { t: GossipMessageType.ACK2, states: [this.self] };
    return live.slice(0, MAX_ANNOUNCE_PEERS).map((id) => ({ kind: 'send', to: this.addressOf(id), msg }));
  }

  private addressOf(id: string): PeerAddress {
    return { id, address: (this.states.get(id) as EndpointState).address };
  }

  /** A seed address, with the id of the member now at that address if we know one. */
  private seedAddress(address: string): PeerAddress {
    for (const s of this.states.values()) if (s.address === address && s.id !== this.id) return { id: s.id, address };
    return { address };
  }

  private tokensOf(s: EndpointState): bigint[] {
    const cached = this.tokenCache.get(s.id);
    if (cached !== undefined && cached.vnodes === s.vnodes) return cached.tokens;
    const tokens = tokensFor(this.hash64, s.id, s.vnodes);
    this.tokenCache.set(s.id, { vnodes: s.vnodes, tokens });
    return tokens;
  }

  private ringRelevantChange(a: EndpointState, b: EndpointState): boolean {
    return a.lifecycle !== b.lifecycle || a.zone !== b.zone || a.vnodes !== b.vnodes || a.removing !== b.removing || a.rebuilding !== b.rebuilding;
  }
}

/**
 * A state this node only remembers from its last run (a known peer, generation 0), not one anyone
 * gossiped: kept to itself. Handed to a peer that forgot the member, or never knew it, it would put
 * a member nobody has heard of since back on that peer's ring.
 */
function remembered(s: EndpointState): boolean {
  return s.generation === 0 && s.version === 0;
}

/** Whether a is newer than b: higher generation, or the same generation and a higher version. */
function newer(a: { generation: number; version: number }, b: { generation: number; version: number }): boolean {
  return a.generation > b.generation || (a.generation === b.generation && a.version > b.version);
}
