/**
 * The one driver of the node's core (cluster/node-core.ts): it feeds the core every input — client
 * requests, validated peer messages, store results, dropped sends, and ticks from its one timer —
 * and carries out each `Ready`: commits to the store, loads and scans, frames to peers, replies to
 * clients, the next deadline. It owns no logic of its own about who holds what.
 *
 * Inputs are queued and stepped one at a time, so an input that arises while a Ready is carried out
 * (a send the transport drops at once) is stepped after it, never inside it.
 */
import type { NodeCore, CoreInput, Ready } from '../cluster/node-core.js';
import { Lifecycle } from '../protocol/gossip.js';
import {
  Consistency,
  ErrorCode,
  TallyError,
  decodeFrame,
  eventsIn,
  validatePeerMessage,
  validateRequest,
  type ClientRequest,
  type CountRequest,
  type PeerMessage,
  type Reply,
  type TopologyMember,
} from '../protocol/index.js';
import type { PeerTransport } from './peer-transport.js';
import type { RequestHandler } from './server.js';
import type { Store } from './store.js';
import { getHeapStatistics } from 'node:v8';
import { monotonicNowMs, wallNowMs } from './clock.js';
import { MAX_READS_IN_FLIGHT, MAX_READS_WAITING } from './range-reader.js';
import { Fifo } from './fifo.js';

/** Meta key of the members this node knew when it last ran (JSON of KnownPeer[]). */
export const KNOWN_PEERS_KEY = 'known-peers';

/**
 * Meta key of this store's rebuild: `needed` when it was made empty to join others, `done` once
 * every peer sent its ranges. A restart in between rebuilds on; one after never starts again.
 */
export const REBUILDING_KEY = 'rebuilding';
/** Meta key set when this store's actor was taken off the ring for good: why. The node never starts on it again. */
export const REMOVED_KEY = 'removed';

/** How often the heap is looked at for admission, and the share of its limit past which writes are refused. */
const HEAP_SAMPLE_MS = 50;
const HEAP_REFUSE_AT = 0.85;

/** Most distinct refusal reasons logged (a peer refusing us every second logs once). */
const MAX_LOGGED_REFUSALS = 64;

type WaitingWrite = CoreInput & { kind: 'write' };

/** The core's input for the write request `req`, answered under `handle`. */
function writeInput(handle: number, req: CountRequest): WaitingWrite {
  const cl = req.cl ?? Consistency.QUORUM;
  return req.batch === undefined ? { kind: 'write', req: handle, events: req.events, cl } : { kind: 'write', req: handle, events: req.events, cl, batch: req.batch };
}

/** A client write that waits behind others, kept as the bytes of its frame (see deferWrite). */
interface WaitingFrame {
  kind: 'frame';
  req: number;
  frame: Uint8Array;
  tuples: number;
}

/**
 * A request the core is working on. It keeps what its reply needs, not the request: a write's
 * events would otherwise live until its commit is replicated, long enough for the garbage
 * collector to copy them (twice) out of the young generation.
 */
interface PendingRequest {
  resolve: (reply: Reply) => void;
  reject: (err: Error) => void;
  t: 'repair' | 'move' | 'count' | 'get';
  id: number;
  /** Events counted by a write. */
  n: number;
}

/** Inputs that are a store operation's result: the core settles each, or the operation stays under way. */
const STORE_RESULTS: ReadonlySet<CoreInput['kind']> = new Set(['loaded', 'loadFailed', 'scanned', 'scanFailed', 'walked', 'walkFailed', 'persisted', 'persistFailed']);

export class Driver implements RequestHandler {
  stopping = false;
  readonly stats = { invalidPeerMessages: 0, coreErrors: 0, storeErrors: 0, heapRefusals: 0, writesWaitedAsBytes: 0 };
  private readonly queue: CoreInput[] = [];
  /** Client writes waiting for their turn (see deferWrite), and their event tuples. */
  private readonly deferred: (WaitingWrite | WaitingFrame)[] = [];
  /** Scans waiting for a place in the store (see scanInTurn), oldest first, and those under way there. */
  private readonly scansWaiting = new Fifo<Ready['scans'][number]>();
  private scansRunning = 0;
  private deferredEvents = 0;
  private heapSampledMs = Number.NEGATIVE_INFINITY;
  private heapFull: string | undefined;
  private stepping = false;
  /** The retention sweep under way, if any: the next waits for it. */
  private sweeping: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private timerAtMs = Number.POSITIVE_INFINITY;
  private nextReq = 1;
  private readonly pending = new Map<number, PendingRequest>();
  private readonly refusals = new Set<string>();
  private closed = false;
  /** The node's actor is off the ring for good and recorded so: stop the node. */
  onRemoved: (reason: string) => void = () => {};
  /**
   * The node cannot go on and its process should stop, as a node with a lost disk, rather than
   * stay up, ready and healthy, failing or never settling what it is sent: a commit failed because
   * the store is damaged or its directory gone (STORAGE_DAMAGED), or the core broke an invariant
   * on a store operation's result (that commit, load, scan or walk would stay under way for good,
   * and every commit after it behind it). Called once.
   */
  onFatal: (err: TallyError) => void = () => {};
  private fatalSaid = false;
  private removed = false;

  constructor(
    readonly core: NodeCore,
    private readonly store: Store,
    private readonly transport: PeerTransport,
    private readonly log: (line: string) => void,
    private readonly status: () => unknown,
  ) {
    transport.onMessage = (from, raw) => {
      let msg: PeerMessage;
      try {
        msg = validatePeerMessage(raw);
      } catch {
        this.stats.invalidPeerMessages += 1;
        return;
      }
      this.input({ kind: 'peer', from, msg });
    };
    transport.onConnectionLost = (peer) => this.input({ kind: 'connectionLost', peer });
    transport.onDropped = (address, messages) => {
      const to = this.idAt(address);
      if (to !== undefined) for (const msg of messages) this.input({ kind: 'sendFailed', to, msg });
    };
    transport.onRefused = (address, reason, byPeer) => {
      // The peer's words speak of itself as "this node" and of us as "the peer": say whose they are.
      // A refusal for a setting (the secret, the cluster, rf, retention, the protocol, the id)
      // stands until an operator changes one, so it is an error; one for now (NOT_READY) is not.
      const m = /^([A-Z_]+): ([\s\S]*)$/.exec(reason);
      const code = m?.[1];
      const words = m?.[2] ?? reason;
      const said = byPeer ? `peer ${address} refused this node, saying: ${words}` : `this node refuses peer ${address}: ${words}`;
      const line = code === undefined || code === ErrorCode.NOT_READY || code === ErrorCode.OVERLOADED ? `${said} (${code ?? 'no code'})` : `error ${code}: ${said}`;
      if (this.refusals.has(line) || this.refusals.size >= MAX_LOGGED_REFUSALS) return;
      this.refusals.add(line);
      this.log(line);
    };
    this.input({ kind: 'tick' });
  }

  /** A client request from the server: count and get go through the core; the rest are answered here. */
  handle(req: ClientRequest, frame?: Uint8Array): Promise<Reply> {
    if (this.stopping) return Promise.reject(new TallyError(ErrorCode.NOT_READY, 'node is stopping'));
    switch (req.t) {
      case 'ping':
        return Promise.resolve({ t: 'pong', id: req.id, nowMs: wallNowMs() });
      case 'status':
        return Promise.resolve({ t: 'status', id: req.id, status: this.status() });
      case 'topology':
        return Promise.resolve({ t: 'topology', id: req.id, rf: this.core.stats().rf, members: this.topology() });
      case 'repair':
      case 'move':
      case 'count':
      case 'get': {
        const handle = this.nextReq++;
        const n = req.t === 'count' ? eventsIn(req.events) : 0;
        const p = new Promise<Reply>((resolve, reject) => this.pending.set(handle, { resolve, reject, t: req.t, id: req.id, n }));
        if (req.t === 'repair') {
          this.input({ kind: 'repair', req: handle });
          return p;
        }
        if (req.t === 'move') {
          this.input(req.node === undefined ? { kind: 'move', req: handle, op: req.op } : { kind: 'move', req: handle, op: req.op, node: req.node });
          return p;
        }
        const cl = req.cl ?? Consistency.QUORUM;
        if (req.t === 'count') {
          this.deferWrite(writeInput(handle, req), frame);
        } else {
          this.input({ kind: 'read', req: handle, queries: req.queries, cl });
        }
        return p;
      }
    }
  }

  /** A write while the core coordinates as many events as it takes is refused before it is validated. */
  refuseEarly(message: unknown): TallyError | undefined {
    const m = message as { t?: unknown; events?: unknown };
    if (typeof m !== 'object' || m === null || m.t !== 'count' || !Array.isArray(m.events)) return undefined;
    const heap = this.heapNearLimit();
    if (heap !== undefined) return heap;
    const backlog = this.core.writeBacklog();
    const events = backlog.events + this.deferredEvents;
    if (events === 0 || events + m.events.length <= backlog.limit) return undefined;
    return new TallyError(ErrorCode.OVERLOADED, `${events} events are being written, the limit is ${backlog.limit}; nothing was applied, retry with backoff`);
  }

  /**
   * OVERLOADED while the JavaScript heap is within 15% of its limit (`--max-old-space-size`): a
   * write taken then could end the process for want of memory, losing every write in flight.
   * The heap is looked at once per HEAP_SAMPLE_MS at most.
   */
  private heapNearLimit(): TallyError | undefined {
    const now = monotonicNowMs();
    if (now - this.heapSampledMs >= HEAP_SAMPLE_MS) {
      this.heapSampledMs = now;
      const h = getHeapStatistics();
      this.heapFull = h.used_heap_size > HEAP_REFUSE_AT * h.heap_size_limit ? `${Math.round(h.used_heap_size / 1048576)} of ${Math.round(h.heap_size_limit / 1048576)} MiB` : undefined;
    }
    if (this.heapFull === undefined) return undefined;
    this.stats.heapRefusals += 1;
    return new TallyError(ErrorCode.OVERLOADED, `the node's heap is nearly full (${this.heapFull}); nothing was applied, retry with backoff`);
  }

  /**
   * Client writes are applied one per turn of the event loop, after the I/O that arrived with
   * them: a read that came in behind a run of large writes is answered before them, not after
   * all of them. Reads go to the core at once.
   *
   * A write that waits behind others is kept as the bytes of its frame, given them, and decoded
   * again on its turn: at twice the load a node takes, 25-36 frames (12,500-19,500 events) waited
   * decoded, long enough for the collector to copy their events out of the young generation and
   * into the old (decoded frames were a fifth of what outlived the young generation in a profile).
   * Bytes are one object, and the events decoded on the write's turn are garbage the turn after.
   */
  private deferWrite(input: WaitingWrite, frame: Uint8Array | undefined): void {
    if (frame === undefined || this.deferred.length === 0) {
      this.deferred.push(input);
    } else {
      this.deferred.push({ kind: 'frame', req: input.req, frame: Buffer.from(frame), tuples: input.events.length });
      this.stats.writesWaitedAsBytes += 1;
    }
    this.deferredEvents += input.events.length;
    if (this.deferred.length === 1) setImmediate(() => this.applyDeferred());
  }

  private applyDeferred(): void {
    const next = this.deferred.shift();
    if (next === undefined) return;
    if (next.kind === 'frame') {
      this.deferredEvents -= next.tuples;
      const input = this.decodeWaiting(next);
      if (input !== undefined) this.input(input);
    } else {
      this.deferredEvents -= next.events.length;
      this.input(next);
    }
    if (this.deferred.length > 0) setImmediate(() => this.applyDeferred());
  }

  /**
   * A waiting frame's write, decoded and checked again (the same bytes, checked against a later
   * clock, which only widens how far ahead an event may be). Undefined, the request failed, if
   * they no longer pass: a fault of this node, not of the request.
   */
  private decodeWaiting(w: WaitingFrame): WaitingWrite | undefined {
    try {
      const req = validateRequest(decodeFrame(w.frame), wallNowMs());
      if (req.t !== 'count' || req.events.length !== w.tuples) throw new Error(`a waiting frame decoded to ${req.t === 'count' ? `${req.events.length} events, not ${w.tuples}` : `a ${req.t} request`}`);
      return writeInput(w.req, req);
    } catch (err) {
      this.stats.coreErrors += 1;
      this.log(`error INTERNAL: a write that waited its turn could not be decoded again: ${(err as Error).message}`);
      this.reply(w.req, { ok: false, code: ErrorCode.INTERNAL, message: 'the write could not be read again on its turn; nothing was applied' });
      return undefined;
    }
  }

  /** Every member as a client needs it to place keys. */
  topology(): TopologyMember[] {
    const m = this.core.membership;
    return m.view(monotonicNowMs()).map((v) => ({
      id: v.id,
      address: v.address,
      zone: v.zone,
      vnodes: v.vnodes,
      up: v.status === 'up',
      inRing: v.lifecycle !== Lifecycle.JOINING && v.lifecycle !== Lifecycle.REMOVED,
    }));
  }

  /** Announces `leaving`, refuses new requests, and waits (up to `timeoutMs`) for what is under way. */
  async drain(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.apply(this.core.startLeaving(monotonicNowMs()));
    const deadline = Date.now() + timeoutMs;
    while ((this.pending.size > 0 || !this.core.idle) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  }

  /** Announces `left` and stops the timer. */
  leave(): void {
    this.apply(this.core.leave(monotonicNowMs()));
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    // A write still awaiting its replicas may be applied here already: its outcome is unknown, not
    // "nothing applied" (a client would send it elsewhere, and count it twice). With the default
    // write timeout (4 s, shorter than the drain) the core has answered every write by now.
    // A ring change may have begun, too (it is answered once begun): `tally status` shows it.
    for (const p of this.pending.values()) {
      if (p.t === 'count') p.reject(new TallyError(ErrorCode.TIMEOUT, 'the node stopped before the write was acknowledged; whether it was applied is unknown'));
      else if (p.t === 'move') p.reject(new TallyError(ErrorCode.TIMEOUT, 'the node stopped before it answered; whether the ring change began is unknown (tally status shows it)'));
      else p.reject(new TallyError(ErrorCode.NOT_READY, 'node is stopping'));
    }
    this.pending.clear();
  }

  private idAt(address: string): string | undefined {
    for (const v of this.core.membership.view(monotonicNowMs())) if (v.address === address) return v.id;
    return undefined;
  }

  private input(input: CoreInput): void {
    if (this.closed) return;
    this.queue.push(input);
    if (this.stepping) return;
    this.stepping = true;
    try {
      for (let next = this.queue.shift(); next !== undefined; next = this.queue.shift()) {
        let ready: Ready;
        try {
          ready = this.core.step(next, monotonicNowMs());
        } catch (err) {
          // A broken invariant in the core is a bug; on input from the network or a client it must
          // not take the whole node down (one bad peer must not stop every node it talks to).
          // Logged and counted. On a store operation's result it stops the node (see onFatal).
          this.stats.coreErrors += 1;
          this.log(`error INTERNAL: the core failed on ${next.kind}: ${(err as Error).stack ?? String(err)}`);
          if (STORE_RESULTS.has(next.kind)) this.fatal(new TallyError(ErrorCode.INTERNAL, `the core failed on a store operation's result (${next.kind}): ${(err as Error).message}`));
          continue;
        }
        this.apply(ready);
      }
    } finally {
      this.stepping = false;
    }
  }

  private apply(ready: Ready): void {
    if (ready.persist !== undefined) {
      const batch = ready.persist;
      this.storeIo(this.store.commit(batch), () => ({ kind: 'persisted', persist: batch.id }), (message, code) => {
        if (code === ErrorCode.STORAGE_DAMAGED) this.fatal(new TallyError(ErrorCode.STORAGE_DAMAGED, message));
        return { kind: 'persistFailed', persist: batch.id, message, code };
      });
    }
    for (const load of ready.loads) {
      this.storeIo(this.store.getSlots(load.keys), (slots) => ({ kind: 'loaded', load: load.id, slots }), (message, code) => (code === undefined ? { kind: 'loadFailed', load: load.id, message } : { kind: 'loadFailed', load: load.id, message, code }));
    }
    for (const scan of ready.scans) this.scanInTurn(scan);
    for (const walk of ready.walks) {
      this.storeIo(
        this.store.walk(walk.after, walk.limit),
        (r) => ({ kind: 'walked', walk: walk.id, entries: r.entries, next: r.next }),
        (message) => ({ kind: 'walkFailed', walk: walk.id, message }),
      );
    }
    for (const e of ready.expire) {
      // One sweep at a time: a day's range delete and compaction may take a while on a large store.
      this.sweeping = this.sweeping.then(() =>
        this.store.expireBefore(e.res, e.cutoffMs).then(
          (deleted) => {
            if (deleted) this.log(`retention: deleted the ${e.res === 'm' ? 'minute' : 'hour'} buckets of the days before ${new Date(e.cutoffMs).toISOString().slice(0, 10)}`);
          },
          (err: unknown) => {
            this.stats.storeErrors += 1;
            this.log(`error ${err instanceof TallyError ? err.code : ErrorCode.INTERNAL}: could not delete expired ${e.res === 'm' ? 'minute' : 'hour'} buckets (the next sweep tries again): ${(err as Error).message}`);
          },
        ),
      );
    }
    for (const s of ready.send) {
      if (!this.transport.send(s.address, s.msg) && s.to !== '') this.input({ kind: 'sendFailed', to: s.to, msg: s.msg });
    }
    for (const address of ready.connect) this.transport.open(address);
    if (ready.rebuilt) {
      this.store.putMeta(REBUILDING_KEY, Buffer.from('done'), { sync: true }).catch((err: unknown) => this.log(`error INTERNAL: could not record the end of the rebuild: ${(err as Error).message}`));
    }
    if (ready.knownPeers !== undefined) {
      const peers = ready.knownPeers;
      this.store.putMeta(KNOWN_PEERS_KEY, Buffer.from(JSON.stringify(peers))).catch((err: unknown) => this.log(`error INTERNAL: could not keep the known members: ${(err as Error).message}`));
    }
    for (const r of ready.replies) this.reply(r.req, r.reply);
    for (const line of ready.log) this.log(line);
    if (ready.removed !== undefined && !this.removed) {
      this.removed = true;
      const reason = ready.removed;
      this.store.putMeta(REMOVED_KEY, Buffer.from(`${this.core.actor} ${reason}`), { sync: true }).then(
        () => this.onRemoved(reason),
        (err: unknown) => {
          this.log(`error INTERNAL: could not record that this node left the ring: ${(err as Error).message}`);
          this.onRemoved(reason);
        },
      );
    }
    this.schedule(ready.deadlineMs);
  }

  private fatal(err: TallyError): void {
    if (this.fatalSaid) return;
    this.fatalSaid = true;
    this.onFatal(err);
  }

  /**
   * A scan the core asked for, handed to the store once fewer than MAX_READS_IN_FLIGHT are under
   * way there; till then it waits as the core's own spans. A scan under way in the store holds
   * its key ranges, promises and a place in the read thread's line, ~6 KB: handed over at once,
   * the 21,000 scans of one request of 1,000 counts since 1970 took 120 MB of the heap, and three
   * such requests ended the node for want of memory. Past MAX_READS_WAITING waiting, refused
   * OVERLOADED, as the read thread's line refuses.
   */
  private scanInTurn(scan: Ready['scans'][number]): void {
    const waiting = this.scansWaiting.size;
    if (waiting >= MAX_READS_WAITING) {
      this.stats.storeErrors += 1;
      this.input({ kind: 'scanFailed', scan: scan.id, message: `${waiting} reads are waiting for the store, the limit is ${MAX_READS_WAITING}; nothing was read, retry with backoff`, code: ErrorCode.OVERLOADED });
      return;
    }
    this.scansWaiting.push(scan);
    this.startScans();
  }

  private startScans(): void {
    if (this.closed) {
      this.scansWaiting.drain();
      return;
    }
    while (this.scansRunning < MAX_READS_IN_FLIGHT && this.scansWaiting.size > 0) {
      const scan = this.scansWaiting.shift() as Ready['scans'][number];
      this.scansRunning += 1;
      const scanned = this.store.scan(scan.spans).finally(() => {
        this.scansRunning -= 1;
        this.startScans();
      });
      this.storeIo(scanned, (slots) => ({ kind: 'scanned', scan: scan.id, slots }), (message, code) => ({ kind: 'scanFailed', scan: scan.id, message, code }));
    }
  }

  /** A store operation whose result, or failure, goes back to the core as its next input. */
  private storeIo<T>(op: Promise<T>, ok: (result: T) => CoreInput, failed: (message: string, code: ErrorCode | undefined) => CoreInput): void {
    op.then(
      (result) => this.input(ok(result)),
      (err: unknown) => {
        this.stats.storeErrors += 1;
        this.input(failed((err as Error).message, err instanceof TallyError ? err.code : undefined));
      },
    );
  }

  private reply(handle: number, reply: Ready['replies'][number]['reply']): void {
    const p = this.pending.get(handle);
    if (p === undefined) return;
    this.pending.delete(handle);
    if (!reply.ok) return p.reject(new TallyError(reply.code, reply.message));
    if (p.t === 'repair') {
      p.resolve({ t: 'repair', id: p.id, repair: reply.repair ?? { peers: 0, sessions: 0, inSync: 0, failed: 0, leavesDiffered: 0, slotsSent: 0, bytesSent: 0 } });
    } else if (p.t === 'move') {
      p.resolve({ t: 'move', id: p.id, message: reply.moved ?? '' });
    } else if (p.t === 'count') {
      p.resolve({ t: 'ack', id: p.id, n: p.n });
    } else {
      p.resolve(reply.answered === undefined ? { t: 'result', id: p.id, stats: reply.stats ?? [] } : { t: 'result', id: p.id, stats: reply.stats ?? [], answered: reply.answered });
    }
  }

  private schedule(atMs: number): void {
    if (this.closed || !Number.isFinite(atMs)) return;
    if (this.timer !== undefined && this.timerAtMs <= atMs) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAtMs = atMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAtMs = Number.POSITIVE_INFINITY;
      this.input({ kind: 'tick' });
    }, Math.max(0, atMs - monotonicNowMs()));
  }
}
