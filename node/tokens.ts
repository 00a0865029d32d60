/**
 * Client tokens: what a client shows in its hello (or an HTTP request as `Authorization: Bearer`)
 * when the node has any. A read-write token may do everything a client can; a read-only token may
 * read counts, status and topology, and nothing that changes data or the ring.
 *
 * Tokens come from `--client-token` (one read-write token) and from a token file:
 *
 *     { "readWrite": ["…"], "readOnly": ["…", "…"] }
 *
 * Tokens are kept only as SHA-256 digests and looked up by digest, so checking one takes the same
 * time whichever token it is and however much of it matches.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ErrorCode, MAX_TOKEN_CHARS, TallyError, type ClientRequest } from '../protocol/index.js';

export const Access = { NONE: 0, READ: 1, FULL: 2 } as const;
export type Access = (typeof Access)[keyof typeof Access];

/** Shortest token: 16 characters of a generated token carry ~96 bits. */
export const MIN_TOKEN_LENGTH = 16;
const TOKEN_PATTERN = /^[\x21-\x7e]+$/;

/** Requests a read-only token may make. */
const READS: ReadonlySet<ClientRequest['t']> = new Set(['get', 'ping', 'status', 'topology']);

export function mayDo(access: Access, t: ClientRequest['t']): boolean {
  return access === Access.FULL || (access === Access.READ && READS.has(t));
}

const digest = (token: string): string => createHash('sha256').update(token).digest('hex');

export function checkToken(token: string, what: string): string {
  if (token.length < MIN_TOKEN_LENGTH || token.length > MAX_TOKEN_CHARS || !TOKEN_PATTERN.test(token)) {
    throw new TallyError(
      ErrorCode.BAD_REQUEST,
      `${what} must be ${MIN_TOKEN_LENGTH} to ${MAX_TOKEN_CHARS} printable ASCII characters without spaces (e.g. openssl rand -hex 16)`,
    );
  }
  return token;
}

export class ClientTokens {
  private constructor(private readonly byDigest: ReadonlyMap<string, Access>) {}

  get size(): number {
    return this.byDigest.size;
  }

  check(token: string): Access {
    return this.byDigest.get(digest(token)) ?? Access.NONE;
  }

  /** The tokens of `--client-token` and `--client-token-file`; undefined when neither is set. */
  static from(token: string | undefined, file: string | undefined): ClientTokens | undefined {
    if (token === undefined && file === undefined) return undefined;
    const m = new Map<string, Access>();
    if (token !== undefined) m.set(digest(checkToken(token, 'the client token')), Access.FULL);
    if (file !== undefined) {
      let raw: unknown;
      try {
        raw = JSON.parse(readFileSync(file, 'utf8'));
      } catch (err) {
        throw new TallyError(ErrorCode.BAD_REQUEST, `the client token file ${file} cannot be read as JSON: ${(err as Error).message}`);
      }
      const o = raw as Record<string, unknown>;
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || Object.keys(o).some((k) => k !== 'readWrite' && k !== 'readOnly')) {
        throw new TallyError(ErrorCode.BAD_REQUEST, `the client token file ${file} must hold { "readWrite": [tokens], "readOnly": [tokens] }`);
      }
      for (const [key, access] of [['readOnly', Access.READ], ['readWrite', Access.FULL]] as const) {
        const list = o[key] ?? [];
        if (!Array.isArray(list) || list.some((t) => typeof t !== 'string')) {
          throw new TallyError(ErrorCode.BAD_REQUEST, `the client token file ${file}: "${key}" must be a list of tokens`);
        }
        list.forEach((t: string, i: number) => m.set(digest(checkToken(t, `${file}: ${key} token ${i + 1}`)), access));
      }
      if (m.size === 0) throw new TallyError(ErrorCode.BAD_REQUEST, `the client token file ${file} holds no token; every client would be refused`);
    }
    return new ClientTokens(m);
  }
}
