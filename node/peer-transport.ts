/**
 * Node-to-node links over the same WebSocket port clients use.
 *
 * Each node keeps one outgoing connection per peer address and sends everything over it; the
 * peer's own outgoing connection carries what it sends back. A connection opens with a peer hello
 * that names the cluster and the node, and both ends prove the cluster secret over fresh nonces
 * (protocol/peer-auth.ts) before anything else crosses it. Connections
 * are persistent and reopened on demand with exponential backoff and jitter. What is queued for a
 * peer is bounded (MAX_PEER_QUEUE_FRAMES and maxBufferedBytes while connecting, maxBufferedBytes on an open socket):
 * past it, frames are dropped, counted and reported (`onDropped`): gossip repeats itself every
 * round, and a coordinator turns a dropped replication into a hint. When our connection to a peer
 * drops, that is reported as evidence to the failure detector.
 */
import WebSocket from 'ws';
import {
  decodeFrame,
  encodeFrame,
  ErrorCode,
  isErrorCode,
  isPlainObject,
  MAX_ERROR_MESSAGE_CHARS,
  MAX_FRAME_BYTES,
  MAX_WIRE_FRAME_BYTES,
  newNonce,
  peerProof,
  proofMatches,
  PROTOCOL_VERSION,
  Role,
  validatePeerWelcome,
  wsUrl,
} from '../protocol/index.js';
import type { PeerHandler, PeerLink } from './server.js';
import { MAX_MEMBERS } from '../cluster/membership.js';
import type { PeerMessage } from '../protocol/peer.js';
import { MAX_SEEDS } from '../cluster/membership-config.js';
import { defaultRetention } from '../cluster/retention.js';
import type { HelloMessage } from '../protocol/index.js';

/** Frames kept for a peer while its connection is being opened. */
export const MAX_PEER_QUEUE_FRAMES = 64;
/**
 * Peer links kept (one per address sent to): room for every member and seed, with margin for
 * addresses that changed. Past it, the least recently used link is dropped, closed ones first,
 * so address churn over a long life can never leave a live member unreachable.
 */
export const MAX_PEER_LINKS = 2 * MAX_MEMBERS + MAX_SEEDS;
/** How often `drain` looks whether the sockets have emptied. */
const DRAIN_POLL_MS = 10;

export interface PeerTransportOptions {
  selfId: string;
  cluster: string;
  clusterSecret: string | undefined;
  rf: number;
  /** Days minute and hour buckets are kept; peers must agree. */
  retention: [minuteDays: number, hourDays: number];
  /** How long opening a connection (TCP, upgrade, hello) may take. */
  connectTimeoutMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Bytes queued on an open socket beyond which new frames are dropped; also the most kept while connecting. */
  maxBufferedBytes: number;
  /** Dial peers over TLS (`wss://`), trusting `ca` (undefined: the system's CAs). */
  tls?: { ca?: string | Buffer };
}

export function defaultPeerTransportOptions(
  selfId: string,
  cluster: string,
  clusterSecret: string | undefined = undefined,
  rf = 3,
  retention: [number, number] = [defaultRetention().minuteDays, defaultRetention().hourDays],
): PeerTransportOptions {
  return {
    selfId,
    cluster,
    clusterSecret,
    rf,
    retention,
    connectTimeoutMs: 2_000, // a live node on a LAN answers in ms; a stopped one never does
    backoffBaseMs: 100, // a restarting peer is back within a second or two
    backoffMaxMs: 2_000, // never wait much longer than a gossip round or two to retry
    maxBufferedBytes: 4 * 1024 * 1024, // minutes of gossip; a peer that reads nothing for that long is down
  };
}

interface OutLink {
  address: string;
  ws: WebSocket | undefined;
  open: boolean;
  remoteId: string | undefined;
  queue: { frame: Buffer; message: PeerMessage }[];
  failures: number;
  retryAtMs: number;
  lastUsedMs: number;
}

export class PeerTransport implements PeerHandler {
  private readonly out = new Map<string, OutLink>();
  private readonly incoming = new Set<PeerLink>();
  private closed = false;
  /** Counters for status. */
  readonly stats = { sent: 0, dropped: 0, received: 0, invalid: 0, connects: 0, connectFailures: 0, evicted: 0, refused: 0 };
  /** A frame from a peer (still unvalidated) and the id the peer gave in its hello. */
  onMessage: (fromId: string, message: unknown) => void = () => {};
  /** A connection to or from `peerId` dropped. */
  onConnectionLost: (peerId: string) => void = () => {};
  /** Messages for `address` that were dropped after `send` had taken them (queued for a connection that failed). */
  onDropped: (address: string, messages: PeerMessage[]) => void = () => {};
  /**
   * The node at `address` refused our hello or proof (`byPeer`, `reason` in its words), or failed
   * to prove the secret itself; `reason` is `CODE: message`.
   */
  onRefused: (address: string, reason: string, byPeer: boolean) => void = () => {};
  /**
   * Who already holds the id an accepting peer gives, if it is a second live node with that id
   * (Membership.idHeldAgainst); such a peer is refused with IN_USE.
   */
  idHeld: (claim: { id: string; actor: string; address: string }) => { address: string; actor: string | undefined } | undefined = () => undefined;
  /** A peer was refused because it uses an id already in use (`message` says whose). */
  onDuplicateRefused: (message: string) => void = () => {};
  /** The node at `address` refused us: another live node already uses our id. This node must not run. */
  onOwnIdInUse: (address: string, message: string) => void = () => {};
  /** Our actor and announced address, sent in the hello; set once the node knows its address. */
  self: { actor: string; address: string } | undefined;

  constructor(private readonly opts: PeerTransportOptions) {}

  /** Sends one message to the node at `address`; returns false if it was dropped. */
  send(address: string, message: PeerMessage): boolean {
    if (this.closed) return false;
    const link = this.linkFor(address);
    const frame = encodeFrame(message);
    if (frame.length > MAX_FRAME_BYTES) return this.drop();
    if (link.open && link.ws !== undefined) {
      if (link.ws.bufferedAmount > this.opts.maxBufferedBytes) return this.drop();
      link.ws.send(frame);
      this.stats.sent += 1;
      return true;
    }
    if (link.ws === undefined && Date.now() < link.retryAtMs) return this.drop();
    // Frames of up to MAX_FRAME_BYTES each: bounded in bytes too, or a few peers slow to answer
    // would hold tens of MiB of replication each.
    const queuedBytes = (): number => link.queue.reduce((n, q) => n + q.frame.length, 0);
    while (link.queue.length > 0 && (link.queue.length >= MAX_PEER_QUEUE_FRAMES || queuedBytes() + frame.length > this.opts.maxBufferedBytes)) {
      const oldest = link.queue.shift() as { frame: Buffer; message: PeerMessage };
      this.stats.dropped += 1;
      this.onDropped(address, [oldest.message]);
    }
    link.queue.push({ frame, message });
    if (link.ws === undefined) this.connect(link);
    return true;
  }

  /**
   * Opens a link to `address` now, if there is none: a node keeps a link open to every member it
   * believes up, so that member's death (its socket closing) is noticed at once even if no gossip
   * happened to go its way lately. Called when a member is newly heard to be up, which is fresh
   * evidence, so a backoff left from while it was down ends here: otherwise everything sent to a
   * restarted peer would be dropped for up to a backoff after gossip already shows it up.
   */
  open(address: string): void {
    if (this.closed) return;
    const link = this.linkFor(address);
    if (link.ws !== undefined || link.retryAtMs === Number.POSITIVE_INFINITY) return;
    link.failures = 0;
    link.retryAtMs = 0;
    this.connect(link);
  }

  /** Incoming peer connection, after its hello (called by the server). */
  accept(link: PeerLink, hello: HelloMessage): void {
    if (this.closed) {
      link.close(1001, 'node stopping');
      return;
    }
    const claim = hello.actor === undefined || hello.address === undefined ? undefined : { id: link.remoteNodeId, actor: hello.actor, address: hello.address };
    const holder = claim === undefined ? undefined : this.idHeld(claim);
    if (claim !== undefined && holder !== undefined) {
      const message =
        `node id "${claim.id}" is in use by a live member at ${holder.address}${holder.actor === undefined ? '' : ` (actor ${holder.actor})`}; ` +
        `refusing a second node with it at ${claim.address} (actor ${claim.actor}): give each node its own --id, or stop the other one first`;
      this.stats.refused += 1;
      link.send({ t: 'error', id: null, code: ErrorCode.IN_USE, message });
      link.close(1008, 'node id in use');
      this.onDuplicateRefused(message);
      return;
    }
    this.incoming.add(link);
    link.onMessage = (m) => {
      this.stats.received += 1;
      this.onMessage(link.remoteNodeId, m);
    };
    // The close of an incoming link is not taken as evidence against its peer: the id it gave in
    // its hello is unproven, and our own link to the address the member announced drops as well.
    link.onClose = () => this.incoming.delete(link);
  }

  /** Resolves once what is queued on open links is handed to the kernel, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const busy = (): boolean =>
      [...this.out.values()].some((l) => (l.open && (l.ws?.bufferedAmount ?? 0) > 0) || (l.ws !== undefined && !l.open && l.queue.length > 0));
    while (busy() && Date.now() < deadline) await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
  }

  close(): void {
    this.closed = true;
    for (const link of this.out.values()) {
      link.queue = [];
      link.ws?.close(1001, 'node stopping');
    }
    this.out.clear();
    for (const link of this.incoming) link.close(1001, 'node stopping');
    this.incoming.clear();
  }

  /** The link to `address`, made (room permitting, by eviction) if there is none; marked used. */
  private linkFor(address: string): OutLink {
    let link = this.out.get(address);
    if (link === undefined) {
      if (this.out.size >= MAX_PEER_LINKS) this.evictOne();
      link = { address, ws: undefined, open: false, remoteId: undefined, queue: [], failures: 0, retryAtMs: 0, lastUsedMs: 0 };
      this.out.set(address, link);
    }
    link.lastUsedMs = Date.now();
    return link;
  }

  /** Forgets the least recently used link, preferring one with no connection. */
  private evictOne(): void {
    let victim: OutLink | undefined;
    for (const l of this.out.values()) {
      const better =
        victim === undefined ||
        (l.ws === undefined && victim.ws !== undefined) ||
        ((l.ws === undefined) === (victim.ws === undefined) && l.lastUsedMs < victim.lastUsedMs);
      if (better) victim = l;
    }
    if (victim === undefined) return;
    this.out.delete(victim.address);
    this.stats.evicted += 1;
    this.dropQueue(victim);
    const ws = victim.ws;
    victim.ws = undefined;
    victim.open = false;
    ws?.removeAllListeners('close');
    ws?.on('close', () => {});
    ws?.terminate();
  }

  private dropQueue(link: OutLink): void {
    if (link.queue.length === 0) return;
    this.stats.dropped += link.queue.length;
    const messages = link.queue.map((q) => q.message);
    link.queue = [];
    this.onDropped(link.address, messages);
  }

  private refused(link: OutLink, reason: string, byPeer = true): void {
    this.stats.refused += 1;
    this.onRefused(link.address, reason, byPeer);
  }

  private drop(): false {
    this.stats.dropped += 1;
    return false;
  }

  private connect(link: OutLink): void {
    let ws: WebSocket;
    try {
      const tls = this.opts.tls;
      ws = new WebSocket(wsUrl(link.address, tls !== undefined), {
        maxPayload: MAX_WIRE_FRAME_BYTES,
        perMessageDeflate: false,
        handshakeTimeout: this.opts.connectTimeoutMs,
        ...(tls?.ca === undefined ? {} : { ca: tls.ca }),
      });
    } catch {
      // A malformed address (validated upstream, so this is a bug or a hostile peer): never retry it.
      this.stats.connectFailures += 1;
      this.dropQueue(link);
      link.retryAtMs = Number.POSITIVE_INFINITY;
      return;
    }
    ws.binaryType = 'nodebuffer';
    link.ws = ws;
    link.open = false;
    const timer = setTimeout(() => ws.terminate(), this.opts.connectTimeoutMs);
    const nonce = newNonce();
    ws.once('open', () =>
      ws.send(
        encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: Role.PEER, cluster: this.opts.cluster, nodeId: this.opts.selfId, nonce, rf: this.opts.rf, retention: this.opts.retention, ...this.self }),
      ),
    );
    ws.on('message', (data: WebSocket.RawData) => {
      let m: unknown;
      try {
        m = decodeFrame(data as Buffer, MAX_WIRE_FRAME_BYTES);
      } catch {
        this.stats.invalid += 1;
        return;
      }
      if (link.open) {
        // A peer that finds our id in use by another live node says so right after our proof.
        if (isPlainObject(m) && m.t === 'error' && m.code === ErrorCode.IN_USE) {
          const message = String(m.message).slice(0, MAX_ERROR_MESSAGE_CHARS);
          this.refused(link, `${m.code}: ${message}`);
          link.retryAtMs = Number.POSITIVE_INFINITY;
          this.onOwnIdInUse(link.address, message);
          ws.terminate();
          return;
        }
        // Nothing else but errors is expected back on our own link; a peer's errors mean we sent
        // something it could not take, which gossip's next round will redo.
        this.stats.invalid += 1;
        return;
      }
      if (isPlainObject(m) && m.t === 'error' && isErrorCode(m.code)) {
        this.refused(link, `${m.code}: ${String(m.message).slice(0, MAX_ERROR_MESSAGE_CHARS)}`);
        ws.terminate();
        return;
      }
      let welcome;
      try {
        welcome = validatePeerWelcome(m);
      } catch {
        ws.terminate(); // not a Tally node, or another version
        return;
      }
      const ctx = { cluster: this.opts.cluster, initiatorNonce: nonce, acceptorNonce: welcome.nonce, initiatorId: this.opts.selfId, acceptorId: welcome.nodeId };
      if (welcome.cluster !== this.opts.cluster || !proofMatches(welcome.proof, peerProof(this.opts.clusterSecret, 'acceptor', ctx))) {
        this.refused(link, `UNAUTHORIZED: ${welcome.nodeId} did not prove the cluster secret (every member needs the same --cluster-secret)`, false);
        ws.terminate();
        return;
      }
      clearTimeout(timer);
      ws.send(encodeFrame({ t: 'auth', proof: peerProof(this.opts.clusterSecret, 'initiator', ctx) }));
      link.open = true;
      link.remoteId = welcome.nodeId;
      link.failures = 0;
      this.stats.connects += 1;
      for (const q of link.queue) {
        ws.send(q.frame);
        this.stats.sent += 1;
      }
      link.queue = [];
    });
    ws.on('error', () => {
      // 'close' follows.
    });
    ws.once('close', () => {
      clearTimeout(timer);
      const wasOpen = link.open;
      link.ws = undefined;
      link.open = false;
      if (this.closed) return;
      if (!wasOpen) {
        this.stats.connectFailures += 1;
        this.dropQueue(link);
        link.failures += 1;
        const backoff = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** (link.failures - 1));
        link.retryAtMs = Date.now() + backoff * (0.5 + Math.random());
      }
      if (link.remoteId !== undefined) this.onConnectionLost(link.remoteId);
    });
  }
}
