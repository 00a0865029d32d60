/**
 * The node's one port: a WebSocket server for clients and (after a peer hello) other nodes.
 *
 * Every frame is size-checked, decoded and validated before it reaches a handler, and every
 * failure is answered with an error frame carrying a stable code; the connection stays open
 * whenever the framing allows (only frames over MAX_WIRE_FRAME_BYTES, a wrong protocol version
 * a foreign cluster or a failed peer proof close it). Each connection has a bound on requests
 * awaiting a reply and on bytes queued to it. A peer proves the cluster secret before its link is
 * handed over (protocol/peer-auth.ts). This module knows nothing of buckets or membership: it hands
 * validated requests to a `RequestHandler` and authenticated peer links to a `PeerHandler`.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
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

/** How long a new connection may take to say hello before it is closed. */
export const HELLO_TIMEOUT_MS = 10_000;
/** How long a stopping node waits for its connections to close before it cuts them. */
export const CLOSE_GRACE_MS = 1_000;

export interface RequestHandler {
  handle(req: ClientRequest): Promise<Reply>;
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

export interface ServerOptions {
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
  maxConnections: number;
}

export class TallyServer {
  private http: HttpServer | undefined;
  private wss: WebSocketServer | undefined;
  private readonly sockets = new Set<WebSocket>();
  /** The port listened on (the real one when asked for port 0); 0 before `listen`. */
  port = 0;
  /** Counters for status. */
  readonly stats = { connections: 0, frames: 0, errors: 0, peersRefused: 0 };

  constructor(
    private readonly opts: ServerOptions,
    private readonly requests: RequestHandler,
    private peers: PeerHandler | undefined = undefined,
  ) {}

  setPeerHandler(peers: PeerHandler): void {
    this.peers = peers;
  }

  async listen(): Promise<{ host: string; port: number }> {
    const http = createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' }).end('Tally speaks WebSocket on this port\n');
    });
    const wss = new WebSocketServer({
      server: http,
      maxPayload: MAX_WIRE_FRAME_BYTES,
      perMessageDeflate: false,
      clientTracking: false,
    });
    wss.on('connection', (ws) => this.onConnection(ws));
    // ws re-emits the listener's errors (a port in use); the listen below reports them.
    wss.on('error', () => {});
    this.http = http;
    this.wss = wss;
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(this.opts.port, this.opts.host, () => {
        http.off('error', reject);
        resolve();
      });
    });
    const a = http.address() as AddressInfo;
    this.port = a.port;
    return { host: this.opts.host, port: a.port };
  }

  /** Stops accepting, closes every connection, waits for the listener to close. */
  async close(): Promise<void> {
    for (const ws of this.sockets) ws.close(1001, 'node stopping');
    const deadline = setTimeout(() => {
      for (const ws of this.sockets) ws.terminate();
    }, CLOSE_GRACE_MS);
    this.wss?.close();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    clearTimeout(deadline);
    this.http?.closeAllConnections();
  }

  private onConnection(ws: WebSocket): void {
    if (this.sockets.size >= this.opts.maxConnections) {
      const message = `node has ${this.sockets.size} connections open, the limit is ${this.opts.maxConnections}`;
      ws.send(encodeFrame({ t: 'error', id: null, code: ErrorCode.OVERLOADED, message }));
      ws.close(1013, 'too many connections'); // 1013: try again later
      return;
    }
    this.sockets.add(ws);
    this.stats.connections += 1;
    ws.binaryType = 'nodebuffer';
    let hello: HelloMessage | undefined;
    let auth: PeerAuthContext | undefined;
    let refused = false;
    let inFlight = 0;
    let peer: (PeerLink & { deliver(m: unknown): void; closed(): void }) | undefined;
    const helloTimer = setTimeout(() => ws.close(1008, 'no hello'), HELLO_TIMEOUT_MS);

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
      send({ t: 'error', id, code: e.code, message: e.message.slice(0, MAX_ERROR_MESSAGE_CHARS) });
    };

    ws.on('message', (data: RawData, isBinary: boolean) => {
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
          sendError(requestIdOf(message), err);
          const code = (err as TallyError).code;
          if (code === ErrorCode.VERSION_MISMATCH || code === ErrorCode.UNAUTHORIZED) {
            refused = true;
            if (code === ErrorCode.UNAUTHORIZED) this.stats.peersRefused += 1;
            ws.close(1008, code);
          }
          return;
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
          return; // the hello timer runs on until the peer's proof checks
        }
        clearTimeout(helloTimer);
        send(welcome);
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
          refused = true;
          this.stats.peersRefused += 1;
          sendError(null, new TallyError(ErrorCode.UNAUTHORIZED, 'the peer did not prove the cluster secret'));
          ws.close(1008, ErrorCode.UNAUTHORIZED);
          return;
        }
        clearTimeout(helloTimer);
        peer = this.makePeerLink(ws, auth.initiatorId, send);
        (this.peers as PeerHandler).accept(peer, hello);
        return;
      }
      const early = this.requests.refuseEarly?.(message);
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
      if (inFlight >= this.opts.maxInFlightPerConnection) {
        sendError(
          req.id,
          new TallyError(
            ErrorCode.OVERLOADED,
            `connection has ${inFlight} requests awaiting replies, the limit is ${this.opts.maxInFlightPerConnection}`,
          ),
        );
        return;
      }
      inFlight += 1;
      this.requests.handle(req).then(
        (reply) => {
          inFlight -= 1;
          send(reply);
        },
        (err: unknown) => {
          inFlight -= 1;
          sendError(req.id, err);
        },
      );
    });
    ws.on('error', () => {
      // Framing errors (e.g. over maxPayload) close the socket; 'close' follows.
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      this.sockets.delete(ws);
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
