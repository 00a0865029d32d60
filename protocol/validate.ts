/**
 * Validation of every decoded frame, field by field, before anything acts on it.
 *
 * A failed check throws a TallyError whose message names the field, the rule and the value seen,
 * e.g. `event 4: time 1970-01-01T00:00:00.005Z is before 2000-01-01T00:00:00.000Z, the earliest Tally takes`.
 * Counts that exceed a named limit are TOO_LARGE; every other failure is BAD_REQUEST. The same
 * checks run in the client before a request is sent (pair assertions), so a caller learns of a bad
 * event at the call, not from the node.
 */
import { TallyError, ErrorCode, isErrorCode } from './errors.js';
import {
  MAX_ADDRESS_BYTES,
  MAX_BATCH_ID_BYTES,
  MAX_ERROR_MESSAGE_CHARS,
  MAX_EVENT_COUNT,
  MAX_EVENT_FUTURE_SKEW_MS,
  MAX_EVENT_TYPE_BYTES,
  MAX_EVENT_VALUE,
  MAX_EVENTS_PER_BATCH,
  MAX_NAME_BYTES,
  MAX_QUERIES_PER_GET,
  MAX_REPLICATION_FACTOR,
  MAX_REQUEST_ID,
  MAX_RETENTION_DAYS,
  MAX_TIME_MS,
  MAX_TOKEN_CHARS,
  MAX_VIDEO_ID_BYTES,
  MIN_EVENT_TIME_MS,
} from './limits.js';
import {
  Consistency,
  Role,
  type AuthMessage,
  type ClientRequest,
  type CountRequest,
  type EventTuple,
  type HelloMessage,
  type QueryTuple,
  type Reply,
  type StatsTuple,
  type TopologyMember,
  type WelcomeMessage,
} from './messages.js';

const CONSISTENCIES = new Set<string>(Object.values(Consistency));
const ROLES = new Set<string>(Object.values(Role));
// C0 and C1 control characters and DEL: they would break the storage key layout (NUL is its
// separator) and make ids unprintable in logs and the CLI.
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;

function bad(message: string): TallyError {
  return new TallyError(ErrorCode.BAD_REQUEST, message);
}

function show(x: unknown): string {
  if (typeof x === 'string') return JSON.stringify(x.length > 40 ? `${x.slice(0, 40)}…` : x);
  if (typeof x === 'number' && Number.isNaN(x)) return 'not a number';
  if (typeof x === 'number' || typeof x === 'boolean' || x === null || x === undefined) return String(x);
  if (Array.isArray(x)) return `an array of ${x.length}`;
  // What MessagePack decodes to, in its words: a timestamp, bin, a map.
  if (x instanceof Date) return 'a timestamp';
  if (x instanceof Uint8Array) return `${x.length} bytes of binary data`;
  if (typeof x === 'object') return 'a map';
  return `a ${typeof x}`;
}

export function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

export function checkObject(x: unknown, what: string): Record<string, unknown> {
  if (!isPlainObject(x)) throw bad(`${what} must be a map, got ${show(x)}`);
  return x;
}

export function checkArray(x: unknown, what: string, maxLength: number): unknown[] {
  if (!Array.isArray(x)) throw bad(`${what} must be an array, got ${show(x)}`);
  if (x.length > maxLength) {
    throw new TallyError(ErrorCode.TOO_LARGE, `${what} has ${x.length} items, the limit is ${maxLength}`);
  }
  return x;
}

/**
 * A fixed-shape tuple of `length` items (`shape` names them for the message): a tuple of another
 * length is malformed, BAD_REQUEST, not over a limit.
 */
export function checkTuple(x: unknown, what: string, length: number, shape: string): unknown[] {
  if (!Array.isArray(x)) throw bad(`${what} must be an array, got ${show(x)}`);
  if (x.length !== length) throw bad(`${what} must be ${shape}, got ${x.length} items`);
  return x;
}

/** Whether checkName takes `x`: the whole check, with no message made (for the fast path of events). */
function nameOk(x: unknown, maxBytes: number): x is string {
  return (
    typeof x === 'string' &&
    x.length > 0 &&
    (x.length * 3 <= maxBytes || Buffer.byteLength(x, 'utf8') <= maxBytes) &&
    !CONTROL_CHARS.test(x) &&
    x.isWellFormed() &&
    !x.includes('\uFFFD')
  );
}

function intIn(x: unknown, min: number, max: number): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max;
}

function numberIn(x: unknown, min: number, max: number): x is number {
  return typeof x === 'number' && Number.isFinite(x) && x >= min && x <= max;
}

/** A non-empty UTF-8 name of at most maxBytes bytes with no control characters. */
export function checkName(x: unknown, what: string, maxBytes: number): string {
  if (typeof x !== 'string') throw bad(`${what} must be a string, got ${show(x)}`);
  if (x.length === 0) throw bad(`${what} must not be empty`);
  // Cheap bound before the exact byte count: a UTF-8 char is at most 3 bytes per UTF-16 unit.
  const bytes = x.length * 3 <= maxBytes ? x.length : Buffer.byteLength(x, 'utf8');
  if (bytes > maxBytes) {
    throw new TallyError(ErrorCode.TOO_LARGE, `${what} is ${bytes} bytes, the limit is ${maxBytes}`);
  }
  if (CONTROL_CHARS.test(x)) throw bad(`${what} must not contain control characters, got ${show(x)}`);
  if (!x.isWellFormed()) throw bad(`${what} must be valid Unicode`);
  // Invalid UTF-8 bytes decode to U+FFFD: refused, or distinct byte strings would merge into one
  // name (and one series). A name may not hold U+FFFD itself either, since the two cannot be told apart.
  if (x.includes('\uFFFD')) throw bad(`${what} is not valid UTF-8 (or holds U+FFFD, the replacement character), got ${show(x)}`);
  return x;
}

export function checkInt(x: unknown, what: string, min: number, max: number): number {
  if (!intIn(x, min, max)) throw bad(`${what} must be an integer in [${min}, ${max}], got ${show(x)}`);
  return x;
}

export function checkNumber(x: unknown, what: string, min: number, max: number): number {
  if (!numberIn(x, min, max)) throw bad(`${what} must be a finite number in [${min}, ${max}], got ${show(x)}`);
  return x;
}

function checkOptionalConsistency(x: unknown, what: string): Consistency | undefined {
  if (x === undefined) return undefined;
  if (typeof x !== 'string' || !CONSISTENCIES.has(x)) {
    throw bad(`${what} must be one of ${[...CONSISTENCIES].join(', ')}, got ${show(x)}`);
  }
  return x as Consistency;
}

const BATCH_ID_PATTERN = /^[\x21-\x3d\x3f-\x7e]+$/;
const FORWARDED_BATCH_ID_PATTERN = /^[\x21-\x3d\x3f-\x7e]+>[\x21-\x3d\x3f-\x7e]+$/;
/** A forwarded batch's id: the client's, `>`, and the forwarding node's id. */
export const MAX_FORWARDED_BATCH_ID_BYTES = MAX_BATCH_ID_BYTES + 1 + MAX_NAME_BYTES;

/**
 * A client's batch id: 1..MAX_BATCH_ID_BYTES printable ASCII characters, no spaces and no `>`,
 * which a node forwarding the batch puts between it and its own id (so no client's id is ever
 * another's forwarded one). With `forwarded`, such an id.
 */
export function checkBatchId(x: unknown, what: string, forwarded = false): string {
  const max = forwarded ? MAX_FORWARDED_BATCH_ID_BYTES : MAX_BATCH_ID_BYTES;
  if (typeof x !== 'string' || x.length === 0 || x.length > max || !(forwarded ? FORWARDED_BATCH_ID_PATTERN : BATCH_ID_PATTERN).test(x)) {
    throw bad(
      forwarded
        ? `${what} must be a client's batch id, '>' and a node id (at most ${max} printable ASCII characters), got ${show(x)}`
        : `${what} must be 1-${MAX_BATCH_ID_BYTES} printable ASCII characters other than '>', got ${show(x)}`,
    );
  }
  return x;
}

const NONCE_PATTERN = /^[0-9a-f]{32,128}$/;

function checkHex(x: unknown, what: string): string {
  if (typeof x !== 'string' || !NONCE_PATTERN.test(x)) throw bad(`${what} must be 32-128 lower-case hex digits`);
  return x;
}

export function checkRequestId(x: unknown): number {
  return checkInt(x, 'id', 0, MAX_REQUEST_ID);
}

/** A time for people: ISO-8601 in UTC, as the buckets are. */
export function showTime(ms: number): string {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : show(ms);
}

/** A time in epoch milliseconds within [min, max]; the message gives dates, not raw numbers. */
function checkTime(x: unknown, what: string, min: number, max: number, maxWhy: string): number {
  if (typeof x !== 'number' || !Number.isInteger(x)) throw bad(`${what} must be whole epoch milliseconds, got ${show(x)}`);
  if (x < min) {
    const hint = x > 0 && x < min / 100 ? ' (is it in seconds rather than milliseconds?)' : '';
    throw bad(`${what} ${showTime(x)} is before ${showTime(min)}, the earliest Tally takes${hint}`);
  }
  if (x > max) throw bad(`${what} ${showTime(x)} is after ${showTime(max)}, ${maxWhy}`);
  return x;
}

/**
 * One event tuple. `what` names it for people ("the event", or "event" with its `index`, which
 * reads "event 3"); messages name its fields by name, never by their place in the tuple. `nowMs`,
 * when given, bounds how far in the future the event may be (MAX_EVENT_FUTURE_SKEW_MS): the node
 * passes its clock, the client its own.
 *
 * A valid event passes one test of every field and makes no string: a batch of 500 is checked in
 * a fraction of the time building each field's name and bound for a message would take. Only an
 * event that fails it goes through the checks that say what is wrong.
 */
export function checkEvent(x: unknown, what: string, nowMs?: number, index?: number): EventTuple {
  const ahead = nowMs !== undefined && nowMs + MAX_EVENT_FUTURE_SKEW_MS < MAX_TIME_MS;
  const maxTs = ahead ? nowMs + MAX_EVENT_FUTURE_SKEW_MS : MAX_TIME_MS;
  if (
    Array.isArray(x) &&
    x.length === 5 &&
    nameOk(x[0], MAX_VIDEO_ID_BYTES) &&
    nameOk(x[1], MAX_EVENT_TYPE_BYTES) &&
    intIn(x[2], MIN_EVENT_TIME_MS, maxTs) &&
    numberIn(x[3], 0, MAX_EVENT_VALUE) &&
    intIn(x[4], 1, MAX_EVENT_COUNT)
  ) {
    // Five checked values in a plain array (decoded, or made by the client): kept as it is.
    return x as EventTuple;
  }
  return checkEventSaying(x, index === undefined ? what : `${what} ${index + 1}`, ahead, maxTs, nowMs);
}

/** checkEvent's checks one by one, each saying what is wrong. */
function checkEventSaying(x: unknown, what: string, ahead: boolean, maxTs: number, nowMs: number | undefined): EventTuple {
  const e = checkTuple(x, what, 5, '[videoId, eventType, timestampMs, value, count]');
  const videoId = checkName(e[0], `${what}: videoId`, MAX_VIDEO_ID_BYTES);
  const eventType = checkName(e[1], `${what}: event type`, MAX_EVENT_TYPE_BYTES);
  const maxWhy = ahead ? `more than ${MAX_EVENT_FUTURE_SKEW_MS / 3_600_000} hours ahead of the clock (${showTime(nowMs as number)})` : 'the latest Tally takes';
  const ts = checkTime(e[2], `${what}: time`, MIN_EVENT_TIME_MS, maxTs, maxWhy);
  const value = checkNumber(e[3], `${what}: value`, 0, MAX_EVENT_VALUE);
  const count = checkInt(e[4], `${what}: count`, 1, MAX_EVENT_COUNT);
  return [videoId, eventType, ts, value, count];
}

export function checkQuery(x: unknown, what: string): QueryTuple {
  const q = checkTuple(x, what, 4, '[videoId, eventType, startMs, endMs]');
  const videoId = checkName(q[0], `${what}: videoId`, MAX_VIDEO_ID_BYTES);
  const eventType = checkName(q[1], `${what}: event type`, MAX_EVENT_TYPE_BYTES);
  const start = checkTime(q[2], `${what}: range start`, 0, MAX_TIME_MS, 'the latest Tally takes');
  const end = checkTime(q[3], `${what}: range end`, 0, MAX_TIME_MS, 'the latest Tally takes');
  if (end < start) throw bad(`${what}: the range ends (${showTime(end)}) before it starts (${showTime(start)})`);
  return [videoId, eventType, start, end];
}

function checkKeys(o: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw bad(`${what} has an unknown field ${show(k)}`);
  }
}

export function validateHello(x: unknown): HelloMessage {
  const o = checkObject(x, 'hello');
  if (o.t !== 'hello') throw bad(`the first message must be a hello, got t=${show(o.t)}`);
  checkKeys(o, ['t', 'v', 'role', 'cluster', 'nodeId', 'nonce', 'rf', 'retention', 'actor', 'address', 'token'], 'hello');
  const v = checkInt(o.v, 'hello.v', 0, 0xffff);
  if (typeof o.role !== 'string' || !ROLES.has(o.role)) {
    throw bad(`hello.role must be one of ${[...ROLES].join(', ')}, got ${show(o.role)}`);
  }
  const hello: HelloMessage = { t: 'hello', v, role: o.role as Role };
  if (o.token !== undefined) {
    if (typeof o.token !== 'string' || o.token.length > MAX_TOKEN_CHARS) throw bad(`hello.token must be a string of at most ${MAX_TOKEN_CHARS} characters`);
    hello.token = o.token;
  }
  if (o.role === Role.PEER) {
    hello.cluster = checkName(o.cluster, 'hello.cluster', MAX_NAME_BYTES);
    hello.nodeId = checkName(o.nodeId, 'hello.nodeId', MAX_NAME_BYTES);
    hello.nonce = checkHex(o.nonce, 'hello.nonce');
    hello.rf = checkInt(o.rf, 'hello.rf', 1, MAX_REPLICATION_FACTOR);
    if (!Array.isArray(o.retention) || o.retention.length !== 2) throw bad(`hello.retention must be [minuteDays, hourDays], got ${show(o.retention)}`);
    hello.retention = [checkInt(o.retention[0], 'hello.retention[0] (minute days)', 0, MAX_RETENTION_DAYS), checkInt(o.retention[1], 'hello.retention[1] (hour days)', 0, MAX_RETENTION_DAYS)];
    if (o.actor !== undefined) hello.actor = checkName(o.actor, 'hello.actor', 2 * MAX_NAME_BYTES); // `${nodeId}#${epoch}`
    if (o.address !== undefined) hello.address = checkName(o.address, 'hello.address', MAX_ADDRESS_BYTES);
  }
  return hello;
}

/** A welcome as a peer receives it (the client's check is in its connection). */
export function validatePeerWelcome(x: unknown): Required<Pick<WelcomeMessage, 'nodeId' | 'cluster' | 'nonce' | 'proof'>> {
  const o = checkObject(x, 'welcome');
  if (o.t !== 'welcome') throw bad(`expected a welcome, got t=${show(o.t)}`);
  return {
    nodeId: checkName(o.nodeId, 'welcome.nodeId', MAX_NAME_BYTES),
    cluster: checkName(o.cluster, 'welcome.cluster', MAX_NAME_BYTES),
    nonce: checkHex(o.nonce, 'welcome.nonce'),
    proof: checkHex(o.proof, 'welcome.proof'),
  };
}

export function validateAuth(x: unknown): AuthMessage {
  const o = checkObject(x, 'auth');
  if (o.t !== 'auth') throw bad(`the peer must answer the welcome with auth, got t=${show(o.t)}`);
  checkKeys(o, ['t', 'proof'], 'auth');
  return { t: 'auth', proof: checkHex(o.proof, 'auth.proof') };
}

/** Validates a decoded client request. `nowMs` bounds event times in the future. */
export function validateRequest(x: unknown, nowMs?: number): ClientRequest {
  const o = checkObject(x, 'request');
  const t = o.t;
  switch (t) {
    case 'count': {
      checkKeys(o, ['t', 'id', 'events', 'cl', 'batch'], 'count');
      const id = checkRequestId(o.id);
      const raw = checkArray(o.events, 'events', MAX_EVENTS_PER_BATCH);
      if (raw.length === 0) throw bad('events must not be empty');
      const events = raw.map((e, i) => checkEvent(e, 'event', nowMs, i));
      const req: CountRequest = { t, id, events };
      const cl = checkOptionalConsistency(o.cl, 'cl');
      if (cl !== undefined) req.cl = cl;
      if (o.batch !== undefined) req.batch = checkBatchId(o.batch, 'batch');
      return req;
    }
    case 'get': {
      checkKeys(o, ['t', 'id', 'queries', 'cl'], 'get');
      const id = checkRequestId(o.id);
      const raw = checkArray(o.queries, 'queries', MAX_QUERIES_PER_GET);
      if (raw.length === 0) throw bad('queries must not be empty');
      const queries = raw.map((q, i) => checkQuery(q, `query ${i + 1}`));
      const cl = checkOptionalConsistency(o.cl, 'cl');
      return cl === undefined ? { t, id, queries } : { t, id, queries, cl };
    }
    case 'ping':
    case 'status':
    case 'topology':
    case 'repair': {
      checkKeys(o, ['t', 'id'], t);
      return { t, id: checkRequestId(o.id) };
    }
    case 'move': {
      checkKeys(o, ['t', 'id', 'op', 'node'], 'move');
      const id = checkRequestId(o.id);
      if (o.op === 'decommission') {
        if (o.node !== undefined) throw bad('move: decommission takes no node; it is sent to the node that leaves');
        return { t, id, op: o.op };
      }
      if (o.op === 'removenode') {
        if (o.node === undefined) throw bad('move: removenode needs the id of the node to remove');
        return { t, id, op: o.op, node: checkName(o.node, 'move.node', MAX_NAME_BYTES) };
      }
      throw bad(`move: op must be decommission or removenode, got ${show(o.op)}`);
    }
    default:
      throw bad(`unknown message type t=${show(t)}`);
  }
}

/** Best-effort request id of a frame that failed validation, so the error reply can name it. */
export function requestIdOf(x: unknown): number | null {
  if (!isPlainObject(x)) return null;
  const id = x.id;
  return typeof id === 'number' && Number.isInteger(id) && id >= 0 && id <= MAX_REQUEST_ID ? id : null;
}

/**
 * A `host:port` address (IPv6 in brackets: `[::1]:7401`). Ports are 1-65535; the host is a name
 * or an IP literal of letters, digits, dots, dashes (and colons inside brackets).
 */
export function parseAddress(x: unknown, what = 'address'): { host: string; port: number } {
  const address = checkName(x, what, MAX_ADDRESS_BYTES);
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw bad(`${what} must be host:port (IPv6 as [::1]:7401), got ${show(address)}`);
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

/** `host:port` for a host and port, with IPv6 literals in brackets. */
export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The WebSocket URL of a node's address (`wss://` with `secure`); throws BAD_REQUEST for a malformed address. */
export function wsUrl(address: string, secure = false): string {
  const { host, port } = parseAddress(address);
  return `${secure ? 'wss' : 'ws'}://${formatAddress(host, port)}/`;
}

function checkStatsTuple(x: unknown, what: string): StatsTuple {
  const t = checkTuple(x, what, 4, '[count, sum, min, max]');
  const count = checkInt(t[0], `${what}[0] (count)`, 0, Number.MAX_SAFE_INTEGER);
  const sum = checkNumber(t[1], `${what}[1] (sum)`, 0, Number.MAX_VALUE);
  const min = t[2] === null ? null : checkNumber(t[2], `${what}[2] (min)`, 0, Number.MAX_VALUE);
  const max = t[3] === null ? null : checkNumber(t[3], `${what}[3] (max)`, 0, Number.MAX_VALUE);
  if ((count === 0) !== (min === null) || (min === null) !== (max === null)) throw bad(`${what}: min and max are null exactly when count is 0`);
  return [count, sum, min, max];
}

function checkTopologyMember(x: unknown, what: string): TopologyMember {
  const o = checkObject(x, what);
  parseAddress(o.address, `${what}.address`);
  if (typeof o.up !== 'boolean' || typeof o.inRing !== 'boolean') throw bad(`${what}.up and .inRing must be booleans`);
  return {
    id: checkName(o.id, `${what}.id`, MAX_NAME_BYTES),
    address: o.address as string,
    zone: checkName(o.zone, `${what}.zone`, MAX_NAME_BYTES),
    vnodes: checkInt(o.vnodes, `${what}.vnodes`, 1, 1024),
    up: o.up,
    inRing: o.inRing,
  };
}

/** Most members a topology reply may list. */
export const MAX_TOPOLOGY_MEMBERS = 1024;

/**
 * Validates a decoded reply as the client receives it, the way the node validates requests: a
 * clean copy with only the known fields, or BAD_REQUEST naming what is wrong. `queries` is how many
 * stats a `result` must hold.
 */
export function validateReply(x: unknown, queries?: number): Reply {
  const o = checkObject(x, 'reply');
  const id = checkRequestId(o.id);
  switch (o.t) {
    case 'ack':
      return { t: 'ack', id, n: checkInt(o.n, 'ack.n', 0, Number.MAX_SAFE_INTEGER) };
    case 'result': {
      const stats = checkArray(o.stats, 'result.stats', MAX_QUERIES_PER_GET).map((s, i) => checkStatsTuple(s, `result.stats[${i}]`));
      if (queries !== undefined && stats.length !== queries) throw bad(`result has ${stats.length} stats for ${queries} queries`);
      if (o.answered === undefined) return { t: 'result', id, stats };
      const answered = checkArray(o.answered, 'result.answered', MAX_QUERIES_PER_GET).map((r, i): [number, number] => {
        if (!Array.isArray(r) || r.length !== 2) throw bad(`result.answered[${i}] must be [from, to]`);
        const from = checkInt(r[0], `result.answered[${i}][0] (from)`, 0, MAX_TIME_MS);
        return [from, checkInt(r[1], `result.answered[${i}][1] (to)`, from, MAX_TIME_MS)];
      });
      if (answered.length !== stats.length) throw bad(`result has ${answered.length} answered ranges for ${stats.length} stats`);
      return { t: 'result', id, stats, answered };
    }
    case 'pong':
      return { t: 'pong', id, nowMs: checkInt(o.nowMs, 'pong.nowMs', 0, Number.MAX_SAFE_INTEGER) };
    case 'status':
      return { t: 'status', id, status: checkObject(o.status, 'status.status') };
    case 'topology':
      return {
        t: 'topology',
        id,
        rf: checkInt(o.rf, 'topology.rf', 1, MAX_REPLICATION_FACTOR),
        members: checkArray(o.members, 'topology.members', MAX_TOPOLOGY_MEMBERS).map((m, i) => checkTopologyMember(m, `topology.members[${i}]`)),
      };
    case 'repair': {
      const r = checkObject(o.repair, 'repair.repair');
      const n = (k: string): number => checkInt(r[k], `repair.${k}`, 0, Number.MAX_SAFE_INTEGER);
      return { t: 'repair', id, repair: { peers: n('peers'), sessions: n('sessions'), inSync: n('inSync'), failed: n('failed'), leavesDiffered: n('leavesDiffered'), slotsSent: n('slotsSent'), bytesSent: n('bytesSent') } };
    }
    case 'move':
      return { t: 'move', id, message: typeof o.message === 'string' ? o.message.slice(0, MAX_ERROR_MESSAGE_CHARS) : '' };
    case 'error': {
      const code = typeof o.code === 'string' && isErrorCode(o.code) ? o.code : ErrorCode.INTERNAL;
      const message = typeof o.message === 'string' ? o.message.slice(0, MAX_ERROR_MESSAGE_CHARS) : '';
      return { t: 'error', id, code, message };
    }
    default:
      throw bad(`unknown reply type t=${show(o.t)}`);
  }
}

const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,3})?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * A time as people write it: epoch milliseconds, or ISO-8601, a date (its midnight) or a date and
 * time, to the millisecond; without a zone it is UTC, as buckets are. A date or time that does not
 * exist (2026-02-30, 24:00) is refused rather than rolled over. NaN when `text` is none of these.
 */
/** Eight digits that read as a date from 1970 to 2100 (YYYYMMDD). */
export function looksLikeCompactDate(s: string): boolean {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(s);
  if (m === null) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  return y >= 1970 && y <= 2100 && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d;
}

export function parseTimeText(text: string): number {
  const s = text.trim();
  // Eight digits that read as a date (20261126) are a date without its dashes, not 20,261,126 ms
  // after 1970: taken as the latter, `--from 20261126` counted from 1970 without a word.
  if (looksLikeCompactDate(s)) return NaN;
  if (/^\d+$/.test(s)) return Number(s);
  const m = ISO_TIME.exec(s);
  if (m === null) return NaN;
  const [y, mo, d, h = '0', mi = '0', sec = '0'] = m.slice(1, 7).map((x) => x ?? undefined) as string[];
  const date = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d)));
  if (date.getUTCFullYear() !== Number(y) || date.getUTCMonth() !== Number(mo) - 1 || date.getUTCDate() !== Number(d)) return NaN;
  if (Number(h) > 23 || Number(mi) > 59 || Number(sec) > 59) return NaN;
  const zone = m[8] ?? 'Z';
  const iso = `${y}-${mo}-${d}T${h.padStart(2, '0')}:${mi.padStart(2, '0')}:${sec.padStart(2, '0')}${m[7] ?? ''}${zone.length === 5 ? `${zone.slice(0, 3)}:${zone.slice(3)}` : zone}`;
  return Date.parse(iso);
}
