/**
 * The node's one port: WebSocket for clients and (after a peer hello) other nodes, and HTTP/JSON
 * (node/http-api.ts) for people, scripts, probes and Prometheus. Plain or TLS.
 *
 * Every frame is size-checked, decoded and validated before it reaches a handler, and every
 * failure is answered with an error frame carrying a stable code; the connection stays open
 * whenever the framing allows (only frames over MAX_WIRE_FRAME_BYTES, a wrong protocol version
 * a foreign cluster, a failed peer proof or a missing client token close it). Each connection has
 * a bound on requests awaiting a reply and on bytes queued to it. A peer proves the cluster secret
 * before its link is handed over (protocol/peer-auth.ts); a client shows a token when the node
 * has any (node/tokens.ts). This module knows nothing of buckets or membership: it hands validated
 * requests to a `RequestHandler` and authenticated peer links to a `PeerHandler`.
 *
 * The edge holds under abuse: every TCP socket counts against `maxConnections` from the moment it
 * is accepted (a socket still silent when the table is full is the first to go), and against
 * `maxConnectionsPerAddress` for its source address; a socket must finish its TLS handshake and
 * its first HTTP request or upgrade, a WebSocket its hello, a frame begun its last byte, and an
 * HTTP client its reply, each within a deadline; a client connection idle for long is closed; and the bytes of frames and
 * request bodies received in part are bounded across all connections together (past the bound,
 * connections are read no further until it frees). The node keeps file descriptors for its own store
 * (node/config.ts `fitConnectionsToFiles`).
 */
import { createServer as createHttpServer, maxHeaderSize, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import {
  decodeFrame,
  encodeFrame,
  ErrorCode,
  isPlainObject,
  MAX_ERROR_MESSAGE_CHARS,
  MAX_FRAME_BYTES,
  MAX_WIRE_FRAME_BYTES,
  PROTOCOL_VERSION,
  Role,
  TallyError,
  requestIdOf,
  newNonce,
  type ByeMessage,
  peerProof,
  proofMatches,
  validateAuth,
  validateHello,
  validateRequest,
  type ClientRequest,
  type HelloMessage,
  type PeerAuthContext,
  type Reply,
  type WelcomeMessage,
} from '../protocol/index.js';
import { wallNowMs } from './clock.js';
import { Access, mayDo, type ClientTokens } from './tokens.js';

/** How long a stopping node waits for its connections to close before it cuts them. */
export const CLOSE_GRACE_MS = 1_000;
/** How often deadlines (handshake, hello, frame, idle) are checked. */
const SWEEP_MS = 250;
/** Bytes a WebSocket may send before its hello (and a peer's proof) is whole; a hello is ~300. */
const MAX_HELLO_BYTES = 64 * 1024;

export interface RequestHandler {
  /** `frame`: the bytes a WebSocket request was decoded from; a write that must wait may keep them in place of its events. */
  handle(req: ClientRequest, frame?: Uint8Array): Promise<Reply>;
  /**
   * A refusal of a decoded but not yet validated request, when the node can tell at once that it
   * would refuse it (a write while it is at capacity): refusing costs less than checking.
   */
  refuseEarly?(message: unknown): TallyError | undefined;
}

/** A peer connection after its hello: the server hands its frames over, still undecoded. */
export interface PeerLink {
  readonly remoteNodeId: string;
  send(message: unknown): boolean;
  close(code?: number, reason?: string): void;
  onMessage: ((message: unknown) => void) | undefined;
  onClose: (() => void) | undefined;
}

export interface PeerHandler {
  accept(link: PeerLink, hello: HelloMessage): void;
}

/** What an HTTP request may use of the server: its access, and the partial-bytes budget for its body. */
export interface HttpContext {
  /** The access the request's bearer token gives (FULL when the node has no tokens). */
  access: Access;
  /** Counts `n` more bytes of this request's body against the budget; false: over it, stop reading. */
  bodyBytes(n: number): boolean;
  /** The body is read: its bytes no longer count. */
  bodyDone(): void;
}

export type HttpHandler = (req: IncomingMessage, res: ServerResponse, ctx: HttpContext) => void;

export interface TlsSettings {
  cert: string | Buffer;
  key: string | Buffer;
  /** CA(s) trusted for peers' certificates; undefined: the system's. */
  ca?: string | Buffer;
}

/** The edge's bounds beyond the connection cap (node/config.ts gives their defaults and reasons). */
export interface EdgeLimits {
  /** Open sockets from one source address; past it a new one from there is refused. */
  maxConnectionsPerAddress: number;
  /** From accept to the first HTTP request or WebSocket upgrade, TLS handshake included. */
  handshakeTimeoutMs: number;
  /** From a WebSocket's upgrade to its hello (a peer's: and its proof). */
  helloTimeoutMs: number;
  /** From the first byte of a frame or request body to its last. */
  frameTimeoutMs: number;
  /** A client connection idle (nothing sent, nothing awaited) this long is closed; 0: never. */
  idleTimeoutMs: number;
  /** Bytes of frames and request bodies received in part, all connections together. */
  maxPartialBytes: number;
}

export interface ServerOptions extends EdgeLimits {
  host: string;
  port: number;
  nodeId: string;
  zone: string;
  cluster: string;
  /** This node's actor, told to clients in the welcome. */
  actor?: string;
  /** The cluster secret peers must prove; undefined: an empty key (the cluster name only). */
  clusterSecret: string | undefined;
  /** Replication factor; a peer with another is refused. */
  rf: number;
  /** Days minute and hour buckets are kept (0: for ever); a peer with others is refused. */
  retention: [minuteDays: number, hourDays: number];
  maxInFlightPerConnection: number;
  maxSocketBufferedBytes: number;
  /** Open sockets of every kind, counted from accept. */
  maxConnections: number;
  /** Client tokens; undefined: clients need none. */
  tokens?: ClientTokens;
  tls?: TlsSettings;
}

/** Where a connection is in its life. */
const enum Stage {
  /** Accepted; no request or upgrade yet. */
  NEW,
  /** Serving HTTP requests. */
  HTTP,
  /** A WebSocket awaiting its hello (or a peer's proof). */
  HELLO,
  /** A client after its hello. */
  CLIENT,
  /** An authenticated peer. */
  PEER,
}

interface Conn {
  readonly key: string;
  readonly address: string;
  readonly socket: Socket;
  /** The stream a WebSocket reads (the TLS socket under TLS); paused while the partial-bytes bound is full. */
  stream: Socket | undefined;
  readonly acceptedAt: number;
  stage: Stage;
  stageAt: number;
  ws: WebSocket | undefined;
  /** Bytes of a frame or body received so far and not yet complete, and since when. */
  partial: number;
  partialSince: number;
  /** Last frame received (over HTTP: request begun or answered), and requests awaiting replies (for the idle deadline and eviction). */
  lastFrameAt: number;
  inFlight: number;
  /** The stream HTTP replies are written to (the TLS socket under TLS), and since when a reply has waited in it unread (0: none). */
  replyTo: Socket | undefined;
  replyWaitingSince: number;
}

export class TallyServer {
  private server: HttpServer | undefined;
  private wss: WebSocketServer | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  /** Every accepted socket, by its addresses and ports (the same for a TLS socket and its TCP one; see connKey). */
  private readonly conns = new Map<string, Conn>();
  private readonly perAddress = new Map<string, number>();
  private partialTotal = 0;
  /** Connections not read from while the partial-bytes bound is full. */
  private readonly paused = new Set<Conn>();
  private closing = false;
  /** The port listened on (the real one when asked for port 0); 0 before `listen`. */
  port = 0;
  /** Error replies sent, by code (WebSocket and HTTP). */
  readonly errorCodes: Record<string, number> = {};
  /** Counters for status and metrics. */
  readonly stats = {
    connections: 0,
    frames: 0,
    errors: 0,
    peersRefused: 0,
    /** Sockets refused at accept: the table full of established connections, or their address at its cap. */
    connectionsRefused: 0,
    /** Sockets still in their handshake closed to make room for a new one. */
    connectionsEvicted: 0,
    /** Sockets closed for missing a deadline: handshake or first request, hello, a frame's last byte. */
    handshakeTimeouts: 0,
    helloTimeouts: 0,
    frameTimeouts: 0,
    /** Client connections closed after idling. */
    idleClosed: 0,
    /** HTTP connections closed for leaving a reply unread past the frame deadline. */
    replyTimeouts: 0,
    /** Times a connection was paused (not read from) because partly received frames filled their bound. */
    partialPaused: 0,
    /** Clients refused for a missing or wrong token, or a request their token does not allow. */
    unauthorized: 0,
    httpRequests: 0,
  };

  constructor(
    private readonly opts: ServerOptions,
    private readonly requests: RequestHandler,
    private peers: PeerHandler | undefined = undefined,
    private http: HttpHandler | undefined = undefined,
  ) {}

  setPeerHandler(peers: PeerHandler): void {
    this.peers = peers;
  }

  setHttpHandler(http: HttpHandler): void {
    this.http = http;
  }

  /** Open sockets now, and bytes received in part now. */
  get load(): { connections: number; partialBytes: number; byStage: Record<'new' | 'http' | 'hello' | 'client' | 'peer', number> } {
    const byStage = { new: 0, http: 0, hello: 0, client: 0, peer: 0 };
    const names = ['new', 'http', 'hello', 'client', 'peer'] as const;
    for (const c of this.conns.values()) byStage[names[c.stage]] += 1;
    return { connections: this.conns.size, partialBytes: this.partialTotal, byStage };
  }

  async listen(): Promise<{ host: string; port: number }> {
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => this.onHttpRequest(req, res);
    const tls = this.opts.tls;
    const server: HttpServer = tls
      ? (createHttpsServer({ cert: tls.cert, key: tls.key, ...(tls.ca === undefined ? {} : { ca: tls.ca }), handshakeTimeout: this.opts.handshakeTimeoutMs, connectionsCheckingInterval: SWEEP_MS * 4 }, onRequest) as unknown as HttpServer)
      : createHttpServer({ connectionsCheckingInterval: SWEEP_MS * 4 }, onRequest);
    // Node's own bounds, a second behind ours (its checker runs every second, our sweep every
    // 250 ms): headers within the handshake deadline, a whole request within the frame deadline
    // past it, and idle keep-alive sockets closed after 5 s.
    server.headersTimeout = this.opts.handshakeTimeoutMs + SWEEP_MS * 4;
    server.requestTimeout = this.opts.handshakeTimeoutMs + this.opts.frameTimeoutMs + SWEEP_MS * 4;
    server.keepAliveTimeout = 5_000;
    server.on('connection', (socket: Socket) => this.onSocket(socket));
    // A request Node cannot parse is answered as any other failure is: its code, and why.
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      const overflow = err.code === 'HPE_HEADER_OVERFLOW';
      const code = overflow ? ErrorCode.TOO_LARGE : ErrorCode.BAD_REQUEST;
      const message = overflow
        ? `the request's headers are over ${maxHeaderSize} bytes, the limit`
        : `the request is not HTTP/1.1 the node can read (${err.code ?? 'no code'}): ${err.message}`;
      this.countError(code);
      const body = `${JSON.stringify({ error: { code, message: message.slice(0, MAX_ERROR_MESSAGE_CHARS) } })}\n`;
      const status = overflow ? '431 Request Header Fields Too Large' : '400 Bad Request';
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      socket.destroy();
    });
    const wss = new WebSocketServer({
      server,
      // Clients and peers send no Origin; a browser always does. A page the user visits must not
      // reach a node on their machine or network (the status page speaks HTTP to its own node).
      verifyClient: (info: { origin?: string }) => info.origin === undefined || info.origin === '',
      maxPayload: MAX_WIRE_FRAME_BYTES,
      perMessageDeflate: false,
      clientTracking: false,
    });
    wss.on('connection', (ws, req) => this.onWebSocket(ws, req));
    // ws re-emits the listener's errors (a port in use); the listen below reports them. Upgrade failures close their socket.
    wss.on('error', () => {});
    this.server = server;
    this.wss = wss;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const a = server.address() as AddressInfo;
    this.port = a.port;
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
    return { host: this.opts.host, port: a.port };
  }

  /**
   * Stops accepting, says goodbye to each client (see ByeMessage) and waits, up to CLOSE_GRACE_MS,
   * for them to close once their last replies came, then closes every connection and waits for
   * the listener to close. A request read meanwhile is answered as the node answers while it
   * stops (NOT_READY, nothing applied); one closed under it would leave its outcome unknown.
   */
  async close(): Promise<void> {
    this.closing = true;
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    const clients: WebSocket[] = [];
    for (const c of this.conns.values()) if (c.stage === Stage.CLIENT && c.ws !== undefined && c.ws.readyState === c.ws.OPEN) clients.push(c.ws);
    if (clients.length > 0) {
      const bye = encodeFrame({ t: 'bye', message: `${this.opts.nodeId} is stopping` } satisfies ByeMessage);
      const closed = clients.map((ws) => new Promise<void>((resolve) => ws.once('close', () => resolve())));
      for (const ws of clients) ws.send(bye);
      let grace: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(closed), new Promise<void>((resolve) => (grace = setTimeout(resolve, CLOSE_GRACE_MS)))]);
      clearTimeout(grace);
    }
    for (const c of this.conns.values()) {
      if (c.ws !== undefined) c.ws.close(1001, 'node stopping');
      else if (c.stage === Stage.NEW) c.socket.destroy();
    }
    const deadline = setTimeout(() => {
      for (const c of this.conns.values()) c.socket.destroy();
    }, CLOSE_GRACE_MS);
    this.wss?.close();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    clearTimeout(deadline);
    this.server?.closeAllConnections();
  }

  // ---------------------------------------------------------------------------------------------
  // Sockets: admission, deadlines, the partial-bytes budget

  private onSocket(socket: Socket): void {
    const address = socket.remoteAddress;
    if (address === undefined || this.closing) {
      socket.destroy();
      return;
    }
    const source = sourceOf(address);
    const fromAddress = this.perAddress.get(source) ?? 0;
    if (fromAddress >= this.opts.maxConnectionsPerAddress) {
      this.stats.connectionsRefused += 1;
      socket.destroy();
      return;
    }
    if (this.conns.size >= this.opts.maxConnections && !this.evictOneInHandshake()) {
      this.stats.connectionsRefused += 1;
      socket.destroy();
      return;
    }
    const now = Date.now();
    const conn: Conn = {
      key: connKey(socket),
      address,
      socket,
      stream: undefined,
      acceptedAt: now,
      stage: Stage.NEW,
      stageAt: now,
      ws: undefined,
      partial: 0,
      partialSince: 0,
      lastFrameAt: now,
      inFlight: 0,
      replyTo: undefined,
      replyWaitingSince: 0,
    };
    this.conns.set(conn.key, conn);
    this.perAddress.set(source, fromAddress + 1);
    this.stats.connections += 1;
    socket.once('close', () => {
      this.releasePartial(conn);
      if (this.conns.get(conn.key) === conn) {
        // Closed by Node's backstop rather than our sweep (a stalled loop): still a missed deadline.
        if (conn.stage === Stage.NEW && Date.now() - conn.stageAt > this.opts.handshakeTimeoutMs) this.stats.handshakeTimeouts += 1;
        this.conns.delete(conn.key);
      }
      const left = (this.perAddress.get(source) ?? 1) - 1;
      if (left > 0) this.perAddress.set(source, left);
      else this.perAddress.delete(source);
    });
  }

  /** The socket of `socket`'s connection (a TLS socket shares its TCP socket's address and port). */
  private connOf(socket: Socket): Conn | undefined {
    return this.conns.get(connKey(socket));
  }

  /**
   * At a full table: closes the oldest socket that has not finished its handshake or hello, or
   * else the client idle longest (nothing awaited, nothing sent for a second at least; over HTTP, a
   * kept-alive connection between requests), so idle clients cannot lock out peers or busy clients.
   */
  private evictOneInHandshake(): boolean {
    let oldest: Conn | undefined;
    for (const c of this.conns.values()) {
      if ((c.stage === Stage.NEW || c.stage === Stage.HELLO) && (oldest === undefined || c.stageAt < oldest.stageAt)) oldest = c;
    }
    if (oldest === undefined) {
      const idleSince = Date.now() - 1_000;
      for (const c of this.conns.values()) {
        const idle = c.inFlight === 0 && c.lastFrameAt < idleSince && (c.stage === Stage.CLIENT || (c.stage === Stage.HTTP && (c.replyTo?.writableLength ?? 0) === 0));
        if (idle && (oldest === undefined || c.lastFrameAt < oldest.lastFrameAt)) oldest = c;
      }
    }
    if (oldest === undefined) return false;
    this.stats.connectionsEvicted += 1;
    this.drop(oldest);
    return true;
  }

  private drop(c: Conn): void {
    this.conns.delete(c.key);
    this.releasePartial(c);
    if (c.ws !== undefined) c.ws.terminate();
    else c.socket.destroy();
  }

  private sweep(): void {
    const now = Date.now();
    const o = this.opts;
    for (const c of this.conns.values()) {
      if (c.stage === Stage.NEW && now - c.stageAt > o.handshakeTimeoutMs) {
        this.stats.handshakeTimeouts += 1;
        this.drop(c);
      } else if (c.stage === Stage.HELLO && now - c.stageAt > o.helloTimeoutMs) {
        this.stats.helloTimeouts += 1;
        c.ws?.close(1008, 'no hello');
        c.stage = Stage.NEW; // closing: the handshake deadline cuts it if the close handshake stalls
        c.stageAt = now;
      } else if (c.partial > 0 && now - c.partialSince > o.frameTimeoutMs) {
        this.stats.frameTimeouts += 1;
        this.drop(c);
      } else if (c.stage === Stage.HTTP && this.replyUnread(c, now)) {
        this.stats.replyTimeouts += 1;
        this.drop(c);
      } else if (c.stage === Stage.CLIENT && o.idleTimeoutMs > 0 && c.inFlight === 0 && now - c.lastFrameAt > o.idleTimeoutMs) {
        this.stats.idleClosed += 1;
        c.ws?.close(1000, 'idle');
        c.stage = Stage.NEW;
        c.stageAt = now;
      }
    }
  }

  /**
   * Whether an HTTP reply has waited in `c`'s socket, unread by the other end, for longer than the
   * frame deadline. Node sets no such deadline: a client that asks and never reads (pipelined
   * requests fill the socket's buffers) would hold its socket, and its place in the table, for good.
   */
  private replyUnread(c: Conn, now: number): boolean {
    if ((c.replyTo?.writableLength ?? 0) === 0) {
      c.replyWaitingSince = 0;
      return false;
    }
    if (c.replyWaitingSince === 0) c.replyWaitingSince = now;
    return now - c.replyWaitingSince > this.opts.frameTimeoutMs;
  }

  /**
   * Counts `n` more bytes received in part on `c`. Past the bound, `c` is read no further (its
   * sender is held back by TCP, its bytes stay in the kernel) until the bytes it holds complete a
   * frame or the total falls to half the bound; a frame that stays incomplete meets its deadline.
   * A small frame arrives whole in the chunk that pauses it, so it completes and its connection
   * reads on: clients sending ordinary frames are served while the bound is full. False when over
   * the bound (an HTTP body is then refused).
   */
  private notePartial(c: Conn, n: number): boolean {
    if (c.partial === 0) c.partialSince = Date.now();
    c.partial += n;
    this.partialTotal += n;
    if (c.stage === Stage.HELLO && c.partial > MAX_HELLO_BYTES) {
      // Nothing before the hello (and a peer's proof) is larger than a few hundred bytes. Judged
      // once this chunk is read: a peer sends its proof and its first messages together, and the
      // proof, read first, makes it a peer.
      queueMicrotask(() => {
        if (c.stage === Stage.HELLO && c.partial > MAX_HELLO_BYTES && this.conns.get(c.key) === c) {
          this.stats.helloTimeouts += 1;
          this.drop(c);
        }
      });
    }
    if (this.partialTotal <= this.opts.maxPartialBytes) return true;
    // Peers have proved the cluster secret; their replication must not wait on strangers' bytes.
    if (c.stream !== undefined && c.stage !== Stage.PEER && !this.paused.has(c)) {
      this.paused.add(c);
      this.stats.partialPaused += 1;
      c.stream.pause();
    }
    return false;
  }

  /** `n` of `c`'s partial bytes are done (a control frame), the rest still pending. */
  private releaseBytes(c: Conn, n: number): void {
    const k = Math.min(n, c.partial);
    c.partial -= k;
    this.partialTotal -= k;
    if (c.partial === 0) this.releasePartial(c);
  }

  private releasePartial(c: Conn): void {
    this.partialTotal -= c.partial;
    c.partial = 0;
    if (this.paused.delete(c)) c.stream?.resume();
    if (this.paused.size > 0 && this.partialTotal <= this.opts.maxPartialBytes / 2) {
      for (const p of this.paused) p.stream?.resume();
      this.paused.clear();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // HTTP

  private onHttpRequest(req: IncomingMessage, res: ServerResponse): void {
    const c = this.connOf(req.socket);
    if (c === undefined) {
      req.socket.destroy();
      return;
    }
    this.stats.httpRequests += 1;
    if (c.stage === Stage.NEW) {
      c.stage = Stage.HTTP;
      c.stageAt = Date.now();
    }
    c.replyTo = req.socket;
    c.lastFrameAt = Date.now();
    const access = this.accessOf(bearer(req.headers.authorization));
    const ctx: HttpContext = {
      access,
      bodyBytes: (n) => this.notePartial(c, n),
      bodyDone: () => this.releasePartial(c),
    };
    // Pipelined requests reach this all at once (Node queues their replies in order, not their
    // handling): as on a WebSocket, at most maxInFlightPerConnection are handled at a time.
    if (c.inFlight >= this.opts.maxInFlightPerConnection) {
      this.countError(ErrorCode.OVERLOADED);
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
      res.end(`${JSON.stringify({ error: { code: ErrorCode.OVERLOADED, message: `connection has ${c.inFlight} requests awaiting replies, the limit is ${this.opts.maxInFlightPerConnection}` } })}\n`);
      return;
    }
    c.inFlight += 1;
    res.on('close', () => {
      c.inFlight -= 1;
      c.lastFrameAt = Date.now();
      this.releasePartial(c);
    });
    if (this.http === undefined) {
      res.writeHead(503, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error: { code: ErrorCode.NOT_READY, message: 'the node is starting' } })}\n`);
      return;
    }
    try {
      this.http(req, res, ctx);
    } catch (err) {
      // A handler must answer every request itself; one that throws must not take the node down.
      this.countError(ErrorCode.INTERNAL);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json', connection: 'close' });
      res.end(`${JSON.stringify({ error: { code: ErrorCode.INTERNAL, message: `internal error: ${(err as Error)?.message ?? String(err)}` } })}\n`);
    }
  }

  countError(code: string): void {
    this.errorCodes[code] = (this.errorCodes[code] ?? 0) + 1;
  }

  /** The access a token gives: FULL when the node needs none, NONE for a missing or unknown one. */
  accessOf(token: string | undefined): Access {
    if (this.opts.tokens === undefined) return Access.FULL;
    return token === undefined ? Access.NONE : this.opts.tokens.check(token);
  }

  // ---------------------------------------------------------------------------------------------
  // WebSocket

  private onWebSocket(ws: WebSocket, req: IncomingMessage): void {
    const conn = this.connOf(req.socket);
    if (conn === undefined || this.closing) {
      ws.terminate();
      return;
    }
    const now = Date.now();
    conn.stage = Stage.HELLO;
    conn.stageAt = now;
    conn.lastFrameAt = now;
    conn.ws = ws;
    conn.stream = req.socket;
    ws.binaryType = 'nodebuffer';
    // Ahead of the WebSocket's own reader: a chunk counts as part of a frame until a whole frame is read.
    req.socket.prependListener('data', (chunk: Buffer) => {
      this.notePartial(conn, chunk.length);
    });
    // Bytes read past a message's end (the same read) begin the next frame: they stay counted, and
    // its deadline runs from now. Released with the message, a frame begun so would escape the
    // frame deadline and the partial-bytes bound until the connection idled out.
    const frameDone = (): void => {
      this.releasePartial(conn);
      const next = bytesBeyondMessage(ws);
      if (next > 0) this.notePartial(conn, next);
    };
    // A control frame may come between the fragments of a message, which ws keeps: only its own
    // bytes (payload, and at most a 2-byte header and 4-byte mask) are done, not the message's.
    const controlDone = (data: Buffer): void => this.releaseBytes(conn, data.length + 6);
    ws.on('ping', controlDone);
    ws.on('pong', controlDone);
    let hello: HelloMessage | undefined;
    let auth: PeerAuthContext | undefined;
    let access: Access = Access.NONE;
    let refused = false;
    let peer: (PeerLink & { deliver(m: unknown): void; closed(): void }) | undefined;

    const send = (message: unknown): boolean => {
      if (ws.readyState !== ws.OPEN) return false;
      if (ws.bufferedAmount > this.opts.maxSocketBufferedBytes) {
        // The other end is not reading: cut it off rather than queue without bound.
        ws.terminate();
        return false;
      }
      ws.send(encodeFrame(message));
      return true;
    };
    const sendError = (id: number | null, err: unknown): void => {
      this.stats.errors += 1;
      const e =
        err instanceof TallyError
          ? err
          : new TallyError(ErrorCode.INTERNAL, `internal error: ${(err as Error)?.message ?? String(err)}`);
      this.countError(e.code);
      send({ t: 'error', id, code: e.code, message: e.message.slice(0, MAX_ERROR_MESSAGE_CHARS) });
    };
    const refuse = (id: number | null, err: TallyError): void => {
      refused = true;
      sendError(id, err);
      ws.close(1008, err.code);
    };

    ws.on('message', (data: RawData, isBinary: boolean) => {
      frameDone();
      // Closing (idle, no hello, stopping): nothing more is applied, as its reply could not be sent.
      if (ws.readyState !== ws.OPEN) return;
      conn.lastFrameAt = Date.now();
      this.stats.frames += 1;
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (!isBinary) {
        sendError(null, new TallyError(ErrorCode.BAD_REQUEST, 'frames must be binary MessagePack, got a text frame'));
        return;
      }
      let message: unknown;
      try {
        message = decodeFrame(bytes, MAX_FRAME_BYTES);
      } catch (err) {
        sendError(null, err);
        return;
      }
      if (peer !== undefined) {
        peer.deliver(message);
        return;
      }
      if (refused) return;
      if (hello === undefined) {
        if (isPlainObject(message) && message.t !== 'hello') {
          sendError(requestIdOf(message), new TallyError(ErrorCode.NOT_READY, `say hello first: the first message must be a hello, got t=${JSON.stringify(message.t)}`));
          return;
        }
        try {
          hello = this.onHello(message);
        } catch (err) {
          const code = (err as TallyError).code;
          if (code === ErrorCode.VERSION_MISMATCH || code === ErrorCode.UNAUTHORIZED) {
            if (code === ErrorCode.UNAUTHORIZED) this.stats.peersRefused += 1;
            refuse(requestIdOf(message), err as TallyError);
          } else {
            sendError(requestIdOf(message), err);
          }
          return;
        }
        if (hello.role === Role.CLIENT) {
          access = this.accessOf(hello.token);
          if (access === Access.NONE) {
            this.stats.unauthorized += 1;
            hello = undefined;
            refuse(
              requestIdOf(message),
              new TallyError(ErrorCode.UNAUTHORIZED, message !== null && typeof message === 'object' && 'token' in message
                ? 'the client token is not one this node accepts'
                : 'this node needs a client token: pass { token } to the client, --client-token (or TALLY_CLIENT_TOKEN) to the CLI'),
            );
            return;
          }
        }
        const welcome: WelcomeMessage = {
          t: 'welcome',
          v: PROTOCOL_VERSION,
          nodeId: this.opts.nodeId,
          zone: this.opts.zone,
          cluster: this.opts.cluster,
        };
        if (this.opts.actor !== undefined) welcome.actor = this.opts.actor;
        if (hello.role === Role.PEER) {
          auth = {
            cluster: this.opts.cluster,
            initiatorNonce: hello.nonce as string,
            acceptorNonce: newNonce(),
            initiatorId: hello.nodeId as string,
            acceptorId: this.opts.nodeId,
          };
          welcome.nonce = auth.acceptorNonce;
          welcome.proof = peerProof(this.opts.clusterSecret, 'acceptor', auth);
          send(welcome);
          return; // the hello deadline runs on until the peer's proof checks
        }
        conn.stage = Stage.CLIENT;
        conn.stageAt = Date.now();
        send(welcome);
        // A client whose hello comes while the node stops is told at once, as those before it were.
        if (this.closing) send({ t: 'bye', message: `${this.opts.nodeId} is stopping` } satisfies ByeMessage);
        return;
      }
      if (auth !== undefined && peer === undefined) {
        // A peer's first frame after our welcome must prove the secret; nothing else is read before.
        let proven = false;
        try {
          proven = proofMatches(validateAuth(message).proof, peerProof(this.opts.clusterSecret, 'initiator', auth));
        } catch {
          proven = false;
        }
        if (!proven) {
          this.stats.peersRefused += 1;
          refuse(null, new TallyError(ErrorCode.UNAUTHORIZED, 'the peer did not prove the cluster secret'));
          return;
        }
        conn.stage = Stage.PEER;
        conn.stageAt = Date.now();
        peer = this.makePeerLink(ws, auth.initiatorId, send);
        (this.peers as PeerHandler).accept(peer, hello);
        return;
      }
      // Only a client that may write is refused for load: a read-only one is told it may not write.
      const early = mayDo(access, 'count') ? this.requests.refuseEarly?.(message) : undefined;
      if (early !== undefined) {
        sendError(requestIdOf(message), early);
        return;
      }
      let req: ClientRequest;
      try {
        req = validateRequest(message, wallNowMs());
      } catch (err) {
        sendError(requestIdOf(message), err);
        return;
      }
      if (!mayDo(access, req.t)) {
        this.stats.unauthorized += 1;
        sendError(req.id, new TallyError(ErrorCode.UNAUTHORIZED, `this client's token may only read; a '${req.t}' request needs a read-write token`));
        return;
      }
      if (conn.inFlight >= this.opts.maxInFlightPerConnection) {
        sendError(
          req.id,
          new TallyError(
            ErrorCode.OVERLOADED,
            `connection has ${conn.inFlight} requests awaiting replies, the limit is ${this.opts.maxInFlightPerConnection}`,
          ),
        );
        return;
      }
      conn.inFlight += 1;
      // The callbacks keep the id, not the request (a write's events), while the write is under way.
      const id = req.id;
      this.requests.handle(req, req.t === 'count' ? bytes : undefined).then(
        (reply) => {
          conn.inFlight -= 1;
          conn.lastFrameAt = Date.now();
          send(reply);
        },
        (err: unknown) => {
          conn.inFlight -= 1;
          conn.lastFrameAt = Date.now();
          sendError(id, err);
        },
      );
    });
    ws.on('error', () => {
      // Framing errors (e.g. over maxPayload) close the socket; 'close' follows.
    });
    ws.on('close', () => {
      this.releasePartial(conn);
      peer?.closed();
    });
  }

  private onHello(message: unknown): HelloMessage {
    const hello = validateHello(message);
    if (hello.v !== PROTOCOL_VERSION) {
      throw new TallyError(
        ErrorCode.VERSION_MISMATCH,
        `this node speaks protocol version ${PROTOCOL_VERSION}, the hello says ${hello.v}`,
      );
    }
    if (hello.role === Role.PEER) {
      if (hello.cluster !== this.opts.cluster) {
        throw new TallyError(
          ErrorCode.UNAUTHORIZED,
          `this node belongs to cluster "${this.opts.cluster}", the peer to "${hello.cluster}"`,
        );
      }
      if (hello.rf !== this.opts.rf) {
        throw new TallyError(
          ErrorCode.UNAUTHORIZED,
          `this node replicates every key ${this.opts.rf} times (--rf ${this.opts.rf}), the peer ${hello.rf} times; every member must agree`,
        );
      }
      const [m, h] = this.opts.retention;
      if (hello.retention?.[0] !== m || hello.retention[1] !== h) {
        throw new TallyError(
          ErrorCode.UNAUTHORIZED,
          `this node keeps minute buckets ${m} days and hour buckets ${h} days (--minute-retention-days ${m} --hour-retention-days ${h}; 0: for ever), ` +
            `the peer ${hello.retention?.[0]} and ${hello.retention?.[1]}; every member must agree, or one would repair what another expired`,
        );
      }
      if (this.peers === undefined) throw new TallyError(ErrorCode.NOT_READY, 'this node does not accept peers yet');
    }
    return hello;
  }

  private makePeerLink(
    ws: WebSocket,
    remoteNodeId: string,
    send: (m: unknown) => boolean,
  ): PeerLink & { deliver(m: unknown): void; closed(): void } {
    const link = {
      remoteNodeId,
      send,
      close: (code?: number, reason?: string) => ws.close(code ?? 1000, reason),
      onMessage: undefined as ((m: unknown) => void) | undefined,
      onClose: undefined as (() => void) | undefined,
      deliver: (m: unknown) => link.onMessage?.(m),
      closed: () => link.onClose?.(),
    };
    return link;
  }
}

/**
 * Whom a remote address is counted against for `maxConnectionsPerAddress`: an IPv4 address (an
 * IPv4-mapped IPv6 one as its IPv4 address), or an IPv6 address's /64, which one host or user
 * usually holds whole: counted by full address, it would give them 2^64 addresses' worth of sockets.
 */
export function sourceOf(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1] as string;
  if (!address.includes(':')) return address;
  const bare = address.split('%')[0] as string; // a zone (fe80::1%eth0) is not part of the address
  const [head = '', tail] = bare.split('::');
  const front = head === '' ? [] : head.split(':');
  const back = tail === undefined || tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail (::ffff:0:1.2.3.4 and the like) is two groups; only the first four matter.
  const groups = tail === undefined ? front : [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill('0'), ...back];
  return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}

/**
 * Bytes the WebSocket has read and not yet parsed into a message: the start of the next frame.
 * ws keeps them in its receiver and does not say so publicly; 0 if that ever changes (the frame
 * is then timed from its next read, as before).
 */
function bytesBeyondMessage(ws: WebSocket): number {
  const n = (ws as unknown as { _receiver?: { _bufferedBytes?: unknown } })._receiver?._bufferedBytes;
  return typeof n === 'number' && n > 0 ? n : 0;
}

/**
 * A socket's key: both ends' addresses and ports. The remote end alone is not unique: a node
 * listening on several addresses can hold two sockets from one source address and port, and the
 * second would take the first's entry, leaving the first outside the table and its deadlines.
 */
function connKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}|${socket.localPort}`;
}

/** The token of an `Authorization: Bearer <token>` header. */
function bearer(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}
