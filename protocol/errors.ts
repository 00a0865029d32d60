/**
 * Error codes and the one error type Tally throws for operating errors.
 *
 * Codes are stable: they travel on the wire, are documented in the README and are what callers
 * branch on. Messages are for people and are never parsed. Programmer errors (broken invariants)
 * are not TallyErrors: they are assertions (see `assert`) and throw plain Errors.
 */

export const ErrorCode = {
  /** The request is malformed: wrong type, missing field, value out of range. */
  BAD_REQUEST: 'BAD_REQUEST',
  /** A frame, batch, id or query is over one of the named limits. */
  TOO_LARGE: 'TOO_LARGE',
  /** Fewer replicas are reachable than the consistency level needs. */
  UNAVAILABLE: 'UNAVAILABLE',
  /** The request did not complete in time; for writes, the outcome is unknown. */
  TIMEOUT: 'TIMEOUT',
  /** The node is over its bound of in-flight work; back off and retry. */
  OVERLOADED: 'OVERLOADED',
  /** The node or connection is not ready (no hello yet, starting, stopping). */
  NOT_READY: 'NOT_READY',
  /** Not allowed: a peer that did not prove the cluster secret, or of another cluster or replication factor. */
  UNAUTHORIZED: 'UNAUTHORIZED',
  /** The protocol versions of the two ends do not match. */
  VERSION_MISMATCH: 'VERSION_MISMATCH',
  /** The connection closed before a reply came; for writes, the outcome is unknown. */
  CONNECTION_CLOSED: 'CONNECTION_CLOSED',
  /** Client only: a call spanning several frames got some acknowledged and some not. */
  PARTIAL_WRITE: 'PARTIAL_WRITE',
  /**
   * The node's stored data is missing or damaged (its database deleted or replaced, its data
   * directory gone while it runs): it refuses to start, or to acknowledge writes, rather than lose
   * data silently. The message names the cause and the way out (`tally start --rebuild`).
   */
  STORAGE_DAMAGED: 'STORAGE_DAMAGED',
  /**
   * The node's disk is full: the write is kept in memory and written when space returns (by
   * itself, no restart), so its outcome is unknown until then; retry it with the same batch id.
   */
  STORAGE_FULL: 'STORAGE_FULL',
  /**
   * Client only: part of the range asked for is past retention (its minute or hour buckets have
   * expired), so the count would cover a shorter range. The message names the range that can be
   * answered; `getStats` answers over it and says so, as does any read with `{ clip: true }`.
   */
  RANGE_EXPIRED: 'RANGE_EXPIRED',
  /**
   * Something a node needs is taken by someone else: its port (another process listens on it), its
   * data directory (another node has it open), or its node id (a live member elsewhere already
   * uses it). Nothing was started; the message names what and who holds it.
   */
  IN_USE: 'IN_USE',
  /** A bug or an unexpected failure inside the node (for example a disk error). */
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === 'string' && KNOWN_CODES.has(x);
}

export class TallyError extends Error {
  override readonly name = 'TallyError';
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Programmer-error check: throws a plain Error at once when an invariant is broken. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
