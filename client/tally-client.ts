/**
 * The Tally client library.
 *
 * Every call validates its input at once (the same checks the node runs, against this machine's
 * clock), so a bad event fails at the call with BAD_REQUEST. Concurrent writes are batched: events
 * from calls made together (or, under load, within `lingerMs`) travel in one `count` frame (split by
 * MAX_EVENTS_PER_BATCH and the frame size), and each call resolves when every frame holding its
 * events is acknowledged — that is, durable on the node. If the node refuses a shared frame as
 * malformed (it applied none of it), each call in it is sent again alone, so one bad call cannot
 * fail its neighbours. A call whose frames were partly acknowledged fails with PARTIAL_WRITE.
 * Concurrent reads are batched the same way into one `get`. OVERLOADED is retried with
 * exponential backoff and jitter (the node applied nothing); a write whose connection drops or
 * times out is not retried, since it may have been applied: the caller gets CONNECTION_CLOSED or
 * TIMEOUT and decides. At most MAX_PENDING_PER_CONNECTION frames await replies; more wait here.
 */
import {
  checkEvent,
  checkQuery,
  Consistency,
  ErrorCode,
  MAX_EVENTS_PER_BATCH,
  MAX_FRAME_BYTES,
  MAX_QUERIES_PER_GET,
  TallyError,
  type EventTuple,
  type QueryTuple,
  type Reply,
  type StatsTuple,
} from '../protocol/index.js';
import { Connection, MAX_PENDING_PER_CONNECTION } from './connection.js';

export interface ClientOptions {
  /** Nodes to talk to, as host:port. Any node can serve any request. */
  nodes: string[];
  /** Per-request timeout. */
  timeoutMs?: number;
  /** How long a write or read waits for others to share its frame. */
  lingerMs?: number;
  /** Default consistency level of writes and reads. */
  consistency?: Consistency;
  /** Retries of a request the node refused as OVERLOADED or NOT_READY. */
  maxRetries?: number;
  connectTimeoutMs?: number;
}

export type TimeInput = number | Date;

export interface WriteOptions {
  /** Event time; default now. */
  timestamp?: TimeInput;
  consistency?: Consistency;
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

export interface EventStats {
  count: number;
  sum: number;
  min: number | null;
  max: number | null;
  /** sum / count, or null when count is 0. */
  avg: number | null;
}

export const VIEW = 'view';

const DEFAULTS = {
  timeoutMs: 10_000, // long enough for a loaded node's group commit with fsync; short enough to notice a dead one
  lingerMs: 1, // one millisecond turns a burst of calls into one frame at little latency
  consistency: Consistency.QUORUM,
  maxRetries: 6, // with backoff from 20 ms doubling: about 2.5 s of retrying in all
  connectTimeoutMs: 3_000,
};
const RETRY_BASE_MS = 20;
/** Bytes of a frame kept free for the envelope and msgpack headers when packing events. */
const FRAME_MARGIN_BYTES = 1024;
/** msgpack overhead of one event tuple besides its two strings: headers, float64s, ints. */
const EVENT_OVERHEAD_BYTES = 32;

function toMs(t: TimeInput | undefined, what: string, fallback: number): number {
  if (t === undefined) return fallback;
  const ms = t instanceof Date ? t.getTime() : t;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `${what} must be epoch milliseconds or a Date, got ${String(t)}`);
  }
  return ms;
}

/** One write call: settled once every frame holding some of its events has been answered. */
interface Call {
  events: number;
  /** Frames holding its events that have not been answered yet. */
  pendingFrames: number;
  ackedEvents: number;
  error: TallyError | undefined;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** The events of one call inside a frame: `events.slice(from, to)`. */
interface Part {
  call: Call;
  from: number;
  to: number;
}

interface WriteBatch {
  events: EventTuple[];
  bytes: number;
  parts: Part[];
  cl: Consistency;
}

interface ReadBatch {
  queries: QueryTuple[];
  waiters: { resolve: (s: StatsTuple) => void; reject: (e: Error) => void }[];
  cl: Consistency;
}

export class TallyClient {
  private readonly opts: Required<ClientOptions>;
  private conn: Connection | undefined;
  private connecting: Promise<Connection> | undefined;
  private nextNode: number;
  private writes: WriteBatch | undefined;
  private writeTimer: (() => void) | undefined;
  private reads: ReadBatch | undefined;
  private readTimer: (() => void) | undefined;
  private closed = false;
  /** Requests sent and not answered; callers past MAX_PENDING_PER_CONNECTION wait their turn. */
  private inFlight = 0;
  private readonly slotWaiters: (() => void)[] = [];

  private constructor(opts: ClientOptions) {
    if (!Array.isArray(opts.nodes) || opts.nodes.length === 0) {
      throw new TallyError(ErrorCode.BAD_REQUEST, 'nodes must list at least one host:port');
    }
    this.opts = {
      nodes: [...opts.nodes],
      timeoutMs: opts.timeoutMs ?? DEFAULTS.timeoutMs,
      lingerMs: opts.lingerMs ?? DEFAULTS.lingerMs,
      consistency: opts.consistency ?? DEFAULTS.consistency,
      maxRetries: opts.maxRetries ?? DEFAULTS.maxRetries,
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    };
    this.nextNode = Math.floor(Math.random() * this.opts.nodes.length);
  }

  /** Connects to one of `nodes` (trying each in turn) and returns a ready client. */
  static async connect(opts: ClientOptions): Promise<TallyClient> {
    const client = new TallyClient(opts);
    await client.connection();
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
      const e = checkEvent([videoId, eventType, toMs(opts?.timestamp, 'timestamp', now), value, 1], 'event', now);
      return this.write([e], opts?.consistency ?? this.opts.consistency);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** A batch of events; resolves when all are durable, rejects if any part failed. */
  processEvents(events: EventInput[]): Promise<void> {
    try {
      if (!Array.isArray(events)) throw new TallyError(ErrorCode.BAD_REQUEST, 'events must be an array');
      if (events.length === 0) return Promise.resolve();
      const now = Date.now();
      const tuples = events.map((e, i) =>
        checkEvent(
          [e?.videoId, e?.eventType ?? VIEW, toMs(e?.timestamp, `events[${i}].timestamp`, now), e?.value ?? 1, e?.count ?? 1],
          `events[${i}]`,
          now,
        ),
      );
      return this.write(tuples, this.opts.consistency);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Views of `videoId` in [startTime, endTime), both truncated to the minute. */
  getViewsCount(videoId: string, startTime: TimeInput, endTime: TimeInput): Promise<number> {
    return this.getCount(videoId, VIEW, startTime, endTime);
  }

  async getCount(videoId: string, eventType: string, startTime: TimeInput, endTime: TimeInput): Promise<number> {
    return (await this.getStats(videoId, eventType, startTime, endTime)).count;
  }

  async getStats(videoId: string, eventType: string, startTime: TimeInput, endTime: TimeInput): Promise<EventStats> {
    const q = checkQuery([videoId, eventType, toMs(startTime, 'startTime', 0), toMs(endTime, 'endTime', 0)], 'query');
    const [count, sum, min, max] = await this.read(q, this.opts.consistency);
    return { count, sum, min, max, avg: count > 0 ? sum / count : null };
  }

  /** What the node reports of itself and its cluster (the `tally status` data). */
  async status(): Promise<unknown> {
    const reply = await this.send({ t: 'status' });
    return reply.t === 'status' ? reply.status : null;
  }

  /** Fails what is queued and closes the connection. */
  async close(): Promise<void> {
    this.closed = true;
    const err = new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed');
    this.writeTimer?.();
    this.readTimer?.();
    for (const part of this.writes?.parts ?? []) this.settlePart(part, err);
    for (const w of this.reads?.waiters ?? []) w.reject(err);
    this.writes = undefined;
    this.reads = undefined;
    this.conn?.close();
    this.conn = undefined;
  }

  private write(events: EventTuple[], cl: Consistency): Promise<void> {
    if (this.closed) return Promise.reject(new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
    return new Promise<void>((resolve, reject) => {
      const call: Call = { events: events.length, pendingFrames: 0, ackedEvents: 0, error: undefined, resolve, reject };
      for (const e of events) {
        const bytes = Buffer.byteLength(e[0]) + Buffer.byteLength(e[1]) + EVENT_OVERHEAD_BYTES;
        let b = this.writes;
        if (
          b !== undefined &&
          (b.cl !== cl || b.events.length >= MAX_EVENTS_PER_BATCH || b.bytes + bytes > MAX_FRAME_BYTES - FRAME_MARGIN_BYTES)
        ) {
          this.flushWrites();
          b = undefined;
        }
        if (b === undefined) {
          b = { events: [], bytes: 0, parts: [], cl };
          this.writes = b;
        }
        const last = b.parts[b.parts.length - 1];
        if (last?.call === call) last.to += 1;
        else {
          b.parts.push({ call, from: b.events.length, to: b.events.length + 1 });
          call.pendingFrames += 1;
        }
        b.events.push(e);
        b.bytes += bytes;
      }
      this.writeTimer ??= this.linger(() => this.flushWrites());
    });
  }

  private flushWrites(): void {
    this.writeTimer?.();
    this.writeTimer = undefined;
    const b = this.writes;
    this.writes = undefined;
    if (b !== undefined) this.sendWrites(b);
  }

  private sendWrites(b: WriteBatch): void {
    this.send({ t: 'count', events: b.events, cl: b.cl }).then(
      () => {
        for (const part of b.parts) this.settlePart(part, undefined);
      },
      (err: unknown) => {
        const e = err instanceof TallyError ? err : new TallyError(ErrorCode.INTERNAL, String(err));
        if ((e.code === ErrorCode.BAD_REQUEST || e.code === ErrorCode.TOO_LARGE) && b.parts.length > 1) {
          // The node refused the frame before applying any of it, and it holds several calls:
          // send each call's events alone, so only the call at fault fails.
          for (const part of b.parts) {
            this.sendWrites({ events: b.events.slice(part.from, part.to), bytes: 0, parts: [{ call: part.call, from: 0, to: part.to - part.from }], cl: b.cl });
          }
          return;
        }
        for (const part of b.parts) this.settlePart(part, e);
      },
    );
  }

  /**
   * One frame holding part of a call was answered. Once all are, the call resolves, or fails with
   * the first error — or with PARTIAL_WRITE when some of its events are durable and some are not,
   * since retrying the whole call would count the durable ones twice.
   */
  private settlePart(part: Part, err: TallyError | undefined): void {
    const call = part.call;
    if (call.pendingFrames === 0) return;
    call.pendingFrames -= 1;
    if (err === undefined) call.ackedEvents += part.to - part.from;
    else call.error ??= err;
    if (call.pendingFrames > 0) return;
    if (call.error === undefined) call.resolve();
    else if (call.ackedEvents === 0) call.reject(call.error);
    else {
      call.reject(
        new TallyError(
          ErrorCode.PARTIAL_WRITE,
          `${call.ackedEvents} of ${call.events} events are durable, the rest failed (${call.error.code}: ${call.error.message}); ` +
            'retrying the whole call would count the durable ones twice',
          { cause: call.error },
        ),
      );
    }
  }

  private read(q: QueryTuple, cl: Consistency): Promise<StatsTuple> {
    if (this.closed) return Promise.reject(new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
    return new Promise<StatsTuple>((resolve, reject) => {
      if (this.reads !== undefined && (this.reads.cl !== cl || this.reads.queries.length >= MAX_QUERIES_PER_GET)) {
        this.flushReads();
      }
      this.reads ??= { queries: [], waiters: [], cl };
      this.reads.queries.push(q);
      this.reads.waiters.push({ resolve, reject });
      this.readTimer ??= this.linger(() => this.flushReads());
    });
  }

  private flushReads(): void {
    this.readTimer?.();
    this.readTimer = undefined;
    const b = this.reads;
    this.reads = undefined;
    if (b === undefined) return;
    this.send({ t: 'get', queries: b.queries, cl: b.cl }, true).then(
      (reply) => {
        const stats = reply.t === 'result' ? reply.stats : [];
        b.waiters.forEach((w, i) => {
          const s = stats[i];
          if (s === undefined) w.reject(new TallyError(ErrorCode.INTERNAL, 'node answered fewer queries than asked'));
          else w.resolve(s);
        });
      },
      (err: Error) => {
        for (const w of b.waiters) w.reject(err);
      },
    );
  }

  /**
   * Sends one request, retrying OVERLOADED and NOT_READY with backoff. `idempotent` requests
   * (reads) are also retried on another node after a dropped connection or a timeout.
   */
  private async send(
    body: { t: 'count'; events: EventTuple[]; cl: Consistency } | { t: 'get'; queries: QueryTuple[]; cl: Consistency } | { t: 'status' } | { t: 'ping' },
    idempotent = body.t !== 'count',
  ): Promise<Reply> {
    for (let attempt = 0; ; attempt++) {
      try {
        const conn = await this.connection();
        await this.acquireSlot();
        try {
          return await conn.request(body, this.opts.timeoutMs);
        } finally {
          this.releaseSlot();
        }
      } catch (err) {
        const code = err instanceof TallyError ? err.code : undefined;
        const retryable =
          code === ErrorCode.OVERLOADED ||
          code === ErrorCode.NOT_READY ||
          (code === ErrorCode.UNAVAILABLE && this.conn === undefined) ||
          (idempotent && (code === ErrorCode.CONNECTION_CLOSED || code === ErrorCode.TIMEOUT));
        if (!retryable || attempt >= this.opts.maxRetries || this.closed) throw err;
        const backoff = RETRY_BASE_MS * 2 ** attempt;
        await new Promise((r) => setTimeout(r, backoff / 2 + Math.random() * backoff));
      }
    }
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

  /** Waits until fewer than MAX_PENDING_PER_CONNECTION requests await replies. */
  private acquireSlot(): Promise<void> {
    if (this.inFlight < MAX_PENDING_PER_CONNECTION) {
      this.inFlight += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.slotWaiters.push(resolve));
  }

  /** Hands the slot to the next waiter, if any. */
  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next !== undefined) next();
    else this.inFlight -= 1;
  }

  /** The open connection, or a new one to the next node that answers. */
  private connection(): Promise<Connection> {
    if (this.conn?.isOpen) return Promise.resolve(this.conn);
    this.conn = undefined;
    this.connecting ??= this.openAny().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async openAny(): Promise<Connection> {
    const errors: TallyError[] = [];
    for (let i = 0; i < this.opts.nodes.length; i++) {
      const address = this.opts.nodes[this.nextNode % this.opts.nodes.length] as string;
      try {
        const conn = await Connection.open(address, this.opts.connectTimeoutMs);
        conn.onClose = () => {
          if (this.conn === conn) this.conn = undefined;
        };
        if (this.closed) {
          conn.close();
          throw new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed');
        }
        this.conn = conn;
        return conn;
      } catch (err) {
        if (this.closed) throw err;
        // Whatever went wrong with this node (down, another protocol version, not ready), the
        // next may serve: move on, and start from the next one next time too.
        errors.push(err instanceof TallyError ? err : new TallyError(ErrorCode.UNAVAILABLE, String(err)));
        this.nextNode += 1;
      }
    }
    const codes = new Set(errors.map((e) => e.code));
    const code = codes.size === 1 ? (errors[0] as TallyError).code : ErrorCode.UNAVAILABLE;
    throw new TallyError(code, `no node answered: ${errors.map((e) => e.message).join('; ')}`);
  }
}
