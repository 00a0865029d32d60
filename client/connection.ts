/**
 * One client connection to one node: the hello, request ids, replies matched to requests, and a
 * timeout per request. A connection that drops fails every request awaiting a reply with
 * CONNECTION_CLOSED (for a write, its outcome is unknown); the client opens a new one.
 */
import WebSocket from 'ws';
// The protocol's modules one by one, not its index, as in tally-client.ts.
import { decodeFrame, encodeFrame } from '../protocol/codec.js';
import { ErrorCode, isErrorCode, TallyError } from '../protocol/errors.js';
import { MAX_REQUEST_ID, MAX_WIRE_FRAME_BYTES, PROTOCOL_VERSION } from '../protocol/limits.js';
import { Role, type ClientRequest, type Reply, type WelcomeMessage } from '../protocol/messages.js';
import { isPlainObject, validateReply, wsUrl } from '../protocol/validate.js';

/** Requests awaiting a reply on one connection; past it, callers wait in the client's queue. Below the node's own per-connection bound (1,024). */
export const MAX_PENDING_PER_CONNECTION = 1_000;

/** TLS settings of a client: `true` for the system's CAs, or the CA (PEM) the nodes' certificates chain to. */
export type ClientTls = boolean | { ca?: string | Uint8Array; rejectUnauthorized?: boolean };

/** What a connection shows a node: its token, and whether (and how) it speaks TLS. */
export interface ConnectionAuth {
  token?: string | undefined;
  tls?: ClientTls | undefined;
}

/** `auth` as client options: only what is set. */
export function withoutUndefinedAuth(auth: ConnectionAuth): { token?: string; tls?: ClientTls } {
  return { ...(auth.token === undefined ? {} : { token: auth.token }), ...(auth.tls === undefined ? {} : { tls: auth.tls }) };
}

export type Outgoing = ClientRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

interface Pending {
  resolve: (reply: Reply) => void;
  reject: (err: TallyError) => void;
  timer: NodeJS.Timeout;
  sentAtMs: number;
  /** For a get: how many stats the result must hold. */
  queries: number | undefined;
}

export class Connection {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closedError: TallyError | undefined;
  /** Set once the node said it is stopping (see ByeMessage): nothing more is sent. */
  private byeError: TallyError | undefined;
  /** The node said it is stopping: told once. */
  onBye: (() => void) | undefined;
  /** When the node last answered anything on this connection. */
  private lastAnswerMs = 0;
  onClose: ((err: TallyError) => void) | undefined;

  private constructor(
    private readonly ws: WebSocket,
    readonly address: string,
    readonly welcome: WelcomeMessage,
  ) {
    ws.on('message', (data: WebSocket.RawData) => this.onMessage(data));
    ws.on('close', () =>
      this.fail(new TallyError(ErrorCode.CONNECTION_CLOSED, `connection to ${address} closed before the reply came`)),
    );
    ws.on('error', () => {
      // 'close' follows and fails what is pending.
    });
  }

  static open(address: string, timeoutMs: number, auth: ConnectionAuth = {}): Promise<Connection> {
    let url: string;
    try {
      url = wsUrl(address, auth.tls !== undefined && auth.tls !== false);
    } catch (err) {
      return Promise.reject(err);
    }
    const tls = typeof auth.tls === 'object' ? auth.tls : {};
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        maxPayload: MAX_WIRE_FRAME_BYTES,
        perMessageDeflate: false,
        ...(tls.ca === undefined ? {} : { ca: tls.ca as string | Buffer }),
        ...(tls.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: tls.rejectUnauthorized }),
      });
      ws.binaryType = 'nodebuffer';
      let settled = false;
      const finish = (err: TallyError | undefined, welcome?: WelcomeMessage): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.off('message', onFirst);
        if (err !== undefined) {
          ws.terminate();
          reject(err);
        } else {
          resolve(new Connection(ws, address, welcome as WelcomeMessage));
        }
      };
      const timer = setTimeout(
        () => finish(new TallyError(ErrorCode.UNAVAILABLE, `no answer from ${address} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onFirst = (data: WebSocket.RawData): void => {
        let m: unknown;
        try {
          m = decodeFrame(data as Buffer, MAX_WIRE_FRAME_BYTES);
        } catch (err) {
          finish(new TallyError(ErrorCode.INTERNAL, `${address} sent a bad welcome: ${(err as Error).message}`));
          return;
        }
        if (isPlainObject(m) && m.t === 'welcome' && typeof m.nodeId === 'string') {
          const welcome: WelcomeMessage = {
            t: 'welcome',
            v: typeof m.v === 'number' ? m.v : PROTOCOL_VERSION,
            nodeId: m.nodeId,
            zone: typeof m.zone === 'string' ? m.zone : '',
            cluster: typeof m.cluster === 'string' ? m.cluster : '',
          };
          if (typeof m.actor === 'string') welcome.actor = m.actor;
          finish(undefined, welcome);
        } else if (isPlainObject(m) && m.t === 'error' && isErrorCode(m.code)) {
          finish(new TallyError(m.code, `${address}: ${String(m.message)}`));
        } else {
          finish(new TallyError(ErrorCode.INTERNAL, `${address} did not answer the hello with a welcome`));
        }
      };
      ws.on('message', onFirst);
      ws.once('open', () => ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: Role.CLIENT, ...(auth.token === undefined ? {} : { token: auth.token }) })));
      ws.once('error', (err) => {
        // A node serving TLS hangs up on a plain hello without a word: say what that usually means.
        const plain = auth.tls === undefined || auth.tls === false;
        const hint = plain && /socket hang up|ECONNRESET/.test(err.message) ? ' (if the node serves TLS, connect with TLS: the client\'s tls option, or --tls / --tls-ca on the command line)' : '';
        finish(new TallyError(ErrorCode.UNAVAILABLE, `cannot connect to ${address}: ${err.message}${hint}`, { cause: err }));
      });
      ws.once('close', () => finish(new TallyError(ErrorCode.UNAVAILABLE, `${address} closed the connection`)));
    });
  }

  /** Open, and the node has not said it is stopping. */
  get isOpen(): boolean {
    return this.closedError === undefined && this.byeError === undefined;
  }

  /** Closed, or failed: nothing more comes on it. */
  get isClosed(): boolean {
    return this.closedError !== undefined;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * How long the node has answered nothing while requests await it: 0 when none does. A node that
   * answers slowly under load still answers something every commit; a frozen one, nothing.
   */
  silentForMs(nowMs: number): number {
    for (const p of this.pending.values()) return nowMs - Math.max(this.lastAnswerMs, p.sentAtMs);
    return 0;
  }

  /** Age of the oldest request still awaiting its reply, 0 when none is. */
  oldestPendingAgeMs(nowMs: number): number {
    // Map iteration is in insertion order, so the first is the oldest.
    for (const p of this.pending.values()) return nowMs - p.sentAtMs;
    return 0;
  }

  request(body: Outgoing, timeoutMs: number, queries?: number): Promise<Reply> {
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    if (this.byeError !== undefined) return Promise.reject(this.byeError);
    const id = this.nextId;
    this.nextId = this.nextId >= MAX_REQUEST_ID ? 1 : this.nextId + 1;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.closeAfterBye();
        reject(
          new TallyError(
            ErrorCode.TIMEOUT,
            `${body.t} request to ${this.address} had no reply within ${timeoutMs} ms` +
              (body.t === 'count' ? '; whether it was applied is unknown' : ''),
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, sentAtMs: Date.now(), queries });
      this.ws.send(encodeFrame({ ...body, id }));
    });
  }

  close(): void {
    this.fail(new TallyError(ErrorCode.CONNECTION_CLOSED, 'client closed'));
    this.ws.close(1000);
  }

  private onMessage(data: WebSocket.RawData): void {
    let m: unknown;
    try {
      m = decodeFrame(data as Buffer, MAX_WIRE_FRAME_BYTES);
    } catch {
      this.ws.terminate(); // a node that sends garbage is not to be trusted with more requests
      return;
    }
    if (isPlainObject(m) && m.t === 'bye' && m.id === undefined) {
      // The node is stopping: it answers what it has had and what is on its way; nothing more goes.
      this.byeError ??= new TallyError(ErrorCode.NOT_READY, `${this.address} is stopping (${String(m.message).slice(0, 200)}); the request was not sent, nothing was applied`);
      this.lastAnswerMs = Date.now();
      this.closeAfterBye();
      this.onBye?.();
      return;
    }
    if (!isPlainObject(m) || typeof m.id !== 'number') {
      // An error about a frame the node could not read, so it cannot say which request it was.
      // Guessing could fail the wrong one; close instead, and every pending request fails with
      // CONNECTION_CLOSED (outcome unknown), which is the truth.
      this.ws.terminate();
      return;
    }
    this.lastAnswerMs = Date.now();
    const p = this.pending.get(m.id);
    if (p === undefined) return; // timed out already
    let reply: Reply;
    try {
      reply = validateReply(m, p.queries);
    } catch (err) {
      // A reply that breaks the protocol: this node is not to be trusted with more requests.
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      p.reject(new TallyError(ErrorCode.INTERNAL, `${this.address} sent a malformed reply: ${(err as Error).message}`));
      this.ws.terminate();
      return;
    }
    this.settle(m.id, p, reply);
  }

  private settle(id: number, p: Pending, reply: Reply): void {
    this.pending.delete(id);
    clearTimeout(p.timer);
    this.closeAfterBye();
    if (reply.t === 'error') p.reject(new TallyError(isErrorCode(reply.code) ? reply.code : ErrorCode.INTERNAL, reply.message));
    else p.resolve(reply);
  }

  /** After the node's bye, the connection closes once no request awaits its reply. */
  private closeAfterBye(): void {
    if (this.byeError !== undefined && this.pending.size === 0) this.ws.close(1000);
  }

  private fail(err: TallyError): void {
    if (this.closedError !== undefined) return;
    this.closedError = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.onClose?.(err);
  }
}
