/**
 * HTTP/JSON on the node's port, beside the WebSocket protocol: the same requests, validation,
 * limits and error codes, for curl, scripts, load balancers' probes, Prometheus and a browser.
 *
 *     POST /v1/events    { "events": [{ "videoId", "eventType"?, "timestamp"?, "value"?, "count"? }], "consistency"?, "batchId"? }
 *     GET  /v1/count     ?videoId=&type=&from=&to=&consistency=&clip=
 *     GET  /v1/stats     the same parameters; count, sum, min, max, avg and the range covered
 *     GET  /v1/status    the status report (`tally status --json`)
 *     GET  /healthz      200 while the process serves
 *     GET  /readyz       200 once the node serves its ranges, 503 (with why) before and while it stops
 *     GET  /metrics      Prometheus text format
 *     GET  /             the status page
 *
 * A failure is `{ "error": { "code", "message" } }` with the HTTP status of its code. With client
 * tokens, every path but /healthz, /readyz and the page needs `Authorization: Bearer <token>`, and
 * writes a read-write one.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  Consistency,
  ErrorCode,
  MAX_ERROR_MESSAGE_CHARS,
  MAX_EVENTS_PER_BATCH,
  MAX_WIRE_FRAME_BYTES,
  TallyError,
  checkBatchId,
  parseTimeText,
  validateRequest,
  type ClientRequest,
  type EventTuple,
  type QueryTuple,
  type Reply,
} from '../protocol/index.js';
import { rangeExpired, rangeStats } from '../protocol/range-stats.js';
import { wallNowMs } from './clock.js';
import type { HttpContext, HttpHandler } from './server.js';
import { Access } from './tokens.js';

/** Largest JSON body: a full batch of events as JSON, with room to spare. */
export const MAX_HTTP_BODY_BYTES = MAX_WIRE_FRAME_BYTES;

/** The HTTP status of each code. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  TOO_LARGE: 413,
  UNAUTHORIZED: 401,
  RANGE_EXPIRED: 422,
  OVERLOADED: 429,
  INTERNAL: 500,
  STORAGE_DAMAGED: 500,
  CONNECTION_CLOSED: 502,
  PARTIAL_WRITE: 502,
  NOT_READY: 503,
  UNAVAILABLE: 503,
  TIMEOUT: 504,
  VERSION_MISMATCH: 400,
  STORAGE_FULL: 507,
  IN_USE: 409,
};

export interface HttpApiDeps {
  handle(req: ClientRequest): Promise<Reply>;
  refuseEarly?(message: unknown): TallyError | undefined;
  status(): unknown;
  /** Whether the node serves its ranges now, and if not why. */
  ready(): { ready: boolean; reason: string };
  metrics(): Promise<{ contentType: string; body: string }>;
  /** The status page, and the Content-Security-Policy it is served with. */
  page(): { html: string; contentSecurityPolicy: string };
  /** Every error answered, by code (for metrics). */
  onError?(code: ErrorCode): void;
}

const bad = (m: string): TallyError => new TallyError(ErrorCode.BAD_REQUEST, m);

/**
 * A time as a query parameter or JSON field: epoch milliseconds, or ISO-8601 (a date, or a date
 * and time). A time without a zone is UTC, as buckets are.
 */
export function parseTimeParam(x: unknown, what: string): number {
  if (typeof x === 'number') {
    if (!Number.isInteger(x)) throw bad(`${what} must be whole epoch milliseconds, got ${x}`);
    return x;
  }
  if (typeof x !== 'string') throw bad(`${what} must be epoch milliseconds or an ISO-8601 time, got ${JSON.stringify(x)}`);
  const s = x.trim();
  const ms = parseTimeText(s);
  if (!Number.isFinite(ms)) throw bad(`${what} must be epoch milliseconds or ISO-8601 such as 2026-11-26T10:00:00Z, got ${JSON.stringify(s)}`);
  return ms;
}

function consistencyOf(x: unknown, what: string): Consistency | undefined {
  if (x === undefined || x === null) return undefined;
  const values: unknown[] = Object.values(Consistency);
  if (!values.includes(x)) throw bad(`${what} must be one of ${values.join(', ')}, got ${JSON.stringify(x)}`);
  return x as Consistency;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers }).end(text);
}

/**
 * A request's parameters are those its route takes, each at most once: a second `videoId` or
 * `from` would otherwise be ignored, and the answer be of a query the caller did not mean.
 */
function checkParams(q: URLSearchParams, known: readonly string[]): void {
  for (const k of new Set(q.keys())) {
    if (!known.includes(k)) throw bad(`unknown parameter ${JSON.stringify(k)}; known: ${known.join(', ')}`);
    const n = q.getAll(k).length;
    if (n > 1) throw bad(`${k} was given ${n} times; give it once`);
  }
}

export function httpApi(deps: HttpApiDeps): HttpHandler {
  const fail = (res: ServerResponse, err: unknown, close = false): void => {
    const e = err instanceof TallyError ? err : new TallyError(ErrorCode.INTERNAL, `internal error: ${(err as Error)?.message ?? String(err)}`);
    deps.onError?.(e.code);
    const headers: Record<string, string> = {};
    if (e.code === ErrorCode.OVERLOADED) headers['retry-after'] = '1';
    if (e.code === ErrorCode.UNAUTHORIZED) headers['www-authenticate'] = 'Bearer realm="tally"';
    if (close) headers.connection = 'close';
    sendJson(res, e instanceof Forbidden ? 403 : (HTTP_STATUS[e.code] ?? 500), { error: { code: e.code, message: e.message.slice(0, MAX_ERROR_MESSAGE_CHARS) } }, headers);
  };
  const need = (ctx: HttpContext, access: Access, what: string): void => {
    if (ctx.access >= access) return;
    if (ctx.access === Access.NONE) throw new TallyError(ErrorCode.UNAUTHORIZED, 'this node needs a client token: send Authorization: Bearer <token>');
    throw new Forbidden(ErrorCode.UNAUTHORIZED, `this token may only read; ${what} needs a read-write token`);
  };

  const read = async (q: URLSearchParams, ctx: HttpContext, stats: boolean): Promise<unknown> => {
    need(ctx, Access.READ, 'reading');
    checkParams(q, ['videoId', 'type', 'from', 'to', 'consistency', 'clip']);
    const videoId = q.get('videoId');
    if (videoId === null) throw bad('videoId is missing: /v1/count?videoId=…&from=…&to=…');
    const now = wallNowMs();
    const from = q.has('from') ? parseTimeParam(q.get('from'), 'from') : 0;
    const to = q.has('to') ? parseTimeParam(q.get('to'), 'to') : now;
    const clip = q.get('clip');
    if (clip !== null && clip !== 'true' && clip !== 'false') throw bad(`clip must be true or false, got ${JSON.stringify(clip)}`);
    const req = validateRequest({ t: 'get', id: 0, queries: [[videoId, q.get('type') ?? 'view', from, to]], cl: consistencyOf(q.get('consistency') ?? undefined, 'consistency') });
    if (req.t !== 'get') throw new Error('assertion failed: a get validates as a get');
    const reply = await deps.handle(req);
    if (reply.t === 'error') throw new TallyError(reply.code, reply.message);
    if (reply.t !== 'result') throw new TallyError(ErrorCode.INTERNAL, `a read was answered with '${reply.t}'`);
    const query = req.queries[0] as QueryTuple;
    const s = rangeStats(query, reply.stats[0] ?? [0, 0, null, null], reply.answered?.[0]);
    if (!stats && s.clipped && clip !== 'true') throw rangeExpired(query, s, 'add clip=true');
    return stats ? s : { count: s.count, from: s.from, to: s.to, clipped: s.clipped };
  };

  const write = async (req: IncomingMessage, q: URLSearchParams, ctx: HttpContext): Promise<unknown> => {
    // A browser sends Origin with every cross-site POST, which needs no preflight as text/plain or a
    // form: a page the user visits must not count events on a node it can reach. curl sends none.
    if (req.headers.origin !== undefined) throw new Forbidden(ErrorCode.UNAUTHORIZED, 'writes from a web page are refused (the request has an Origin header)');
    need(ctx, Access.FULL, 'writing events');
    checkParams(q, ['consistency']);
    const body = await readBody(req, ctx);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch (err) {
      throw bad(`the body is not JSON: ${(err as Error).message}`);
    }
    const o: Record<string, unknown> = Array.isArray(parsed) ? { events: parsed } : (parsed as Record<string, unknown>);
    if (typeof o !== 'object' || o === null) throw bad('the body must be { "events": [...] } or a list of events');
    for (const k of Object.keys(o)) {
      if (!['events', 'consistency', 'batchId'].includes(k)) throw bad(`unknown field ${JSON.stringify(k)}; known: events, consistency, batchId`);
      // As for an event's fields: a null consistency would write at quorum without a word.
      if (o[k] === null) throw bad(`${k} is null; leave it out for its default, or give a value`);
    }
    const events = o.events;
    if (!Array.isArray(events)) throw bad('events must be a list of { videoId, eventType?, timestamp?, value?, count? }');
    if (events.length > MAX_EVENTS_PER_BATCH) throw new TallyError(ErrorCode.TOO_LARGE, `${events.length} events in one request, the limit is ${MAX_EVENTS_PER_BATCH}`);
    if (events.length === 0) return { stored: 0 };
    const now = wallNowMs();
    const tuples: EventTuple[] = events.map((e: unknown, i: number) => {
      if (typeof e !== 'object' || e === null || Array.isArray(e)) throw bad(`event ${i + 1} must be { videoId, eventType?, timestamp?, value?, count? }`);
      const ev = e as Record<string, unknown>;
      for (const k of Object.keys(ev)) {
        if (!['videoId', 'eventType', 'timestamp', 'value', 'count'].includes(k)) throw bad(`event ${i + 1} has an unknown field ${JSON.stringify(k)}; the fields are videoId, eventType, timestamp, value, count`);
        // null is not "left out": it would count a view, or a value of 1, without a word.
        if (ev[k] === null) throw bad(`event ${i + 1}: ${k} is null; leave it out for its default, or give a value`);
      }
      return [ev.videoId, ev.eventType ?? 'view', ev.timestamp === undefined ? now : parseTimeParam(ev.timestamp, `event ${i + 1}: timestamp`), ev.value ?? 1, ev.count ?? 1] as EventTuple;
    });
    if (o.consistency !== undefined && q.has('consistency')) throw bad('consistency is given both in the path and in the body; give it once');
    const message = {
      t: 'count',
      id: 0,
      events: tuples,
      ...(o.consistency !== undefined || q.has('consistency') ? { cl: consistencyOf(o.consistency ?? q.get('consistency'), 'consistency') } : {}),
      ...(o.batchId === undefined ? {} : { batch: checkBatchId(o.batchId, 'batchId') }),
    };
    const early = deps.refuseEarly?.(message);
    if (early !== undefined) throw early;
    const checked = validateRequest(message, now);
    const reply = await deps.handle(checked);
    if (reply.t === 'error') throw new TallyError(reply.code, reply.message);
    if (reply.t !== 'ack') throw new TallyError(ErrorCode.INTERNAL, `a write was answered with '${reply.t}'`);
    return { stored: reply.n };
  };

  return (req, res, ctx) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://tally.invalid');
    } catch {
      fail(res, bad(`the request target ${JSON.stringify((req.url ?? '').slice(0, 200))} is not a path`), true);
      return;
    }
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const route = ROUTES[path];
    if (route === undefined) {
      deps.onError?.(ErrorCode.BAD_REQUEST);
      sendJson(res, 404, { error: { code: ErrorCode.BAD_REQUEST, message: `no such path ${JSON.stringify(path.slice(0, 200))}; the paths are ${Object.keys(ROUTES).join(', ')}` } });
      return;
    }
    if (route !== method && !(route === 'GET' && method === 'HEAD')) {
      deps.onError?.(ErrorCode.BAD_REQUEST);
      sendJson(res, 405, { error: { code: ErrorCode.BAD_REQUEST, message: `${path} takes ${route}, not ${method}` } }, { allow: route });
      return;
    }
    const run = async (): Promise<void> => {
      switch (path) {
        case '/healthz':
          return sendJson(res, 200, { ok: true });
        case '/readyz': {
          const r = deps.ready();
          return sendJson(res, r.ready ? 200 : 503, r);
        }
        case '/': {
          const page = deps.page();
          res
            .writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': page.contentSecurityPolicy, 'x-content-type-options': 'nosniff' })
            .end(page.html);
          return;
        }
        case '/metrics': {
          need(ctx, Access.READ, 'metrics');
          const m = await deps.metrics();
          res.writeHead(200, { 'content-type': m.contentType }).end(m.body);
          return;
        }
        case '/v1/status':
          need(ctx, Access.READ, 'the status');
          return sendJson(res, 200, deps.status());
        case '/v1/count':
          return sendJson(res, 200, await read(url.searchParams, ctx, false));
        case '/v1/stats':
          return sendJson(res, 200, await read(url.searchParams, ctx, true));
        case '/v1/events':
          return sendJson(res, 200, await write(req, url.searchParams, ctx));
      }
    };
    run().catch((err: unknown) => fail(res, err, err instanceof BodyError));
  };
}

/** Each path and the method it takes. */
const ROUTES: Record<string, string> = {
  '/': 'GET',
  '/healthz': 'GET',
  '/readyz': 'GET',
  '/metrics': 'GET',
  '/v1/status': 'GET',
  '/v1/count': 'GET',
  '/v1/stats': 'GET',
  '/v1/events': 'POST',
};

/** UNAUTHORIZED for a known token that does not allow the request: HTTP 403 rather than 401. */
class Forbidden extends TallyError {}

/** A body that could not be read whole: the connection is closed after the answer. */
class BodyError extends TallyError {}

/** The request's body as UTF-8, at most MAX_HTTP_BODY_BYTES, counted against the node's partial-bytes bound. */
function readBody(req: IncomingMessage, ctx: HttpContext): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > MAX_HTTP_BODY_BYTES) {
    req.resume();
    return Promise.reject(new BodyError(ErrorCode.TOO_LARGE, `the body is ${declared} bytes, the limit is ${MAX_HTTP_BODY_BYTES}`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err: TallyError | undefined): void => {
      if (done) return;
      done = true;
      ctx.bodyDone();
      if (err !== undefined) {
        req.removeAllListeners('data');
        req.resume();
        reject(err);
      } else {
        resolve(Buffer.concat(chunks, size).toString('utf8'));
      }
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > MAX_HTTP_BODY_BYTES) return finish(new BodyError(ErrorCode.TOO_LARGE, `the body is over ${MAX_HTTP_BODY_BYTES} bytes, the limit`));
      if (!ctx.bodyBytes(chunk.length)) return finish(new BodyError(ErrorCode.OVERLOADED, 'the node holds too many requests received in part; try again'));
      chunks.push(chunk);
    });
    req.on('end', () => finish(undefined));
    req.on('error', () => finish(new BodyError(ErrorCode.BAD_REQUEST, 'the body was cut off')));
    req.on('aborted', () => finish(new BodyError(ErrorCode.BAD_REQUEST, 'the body was cut off')));
  });
}
