/**
 * The peer hello's challenge-response: each end proves it holds the cluster secret over a nonce
 * the other end just made, and the secret never crosses the wire.
 *
 *   initiator → hello   { nodeId: I, cluster, nonce: Ni }
 *   acceptor  → welcome { nodeId: A, nonce: Na, proof: HMAC(secret, acceptor|cluster|Ni|Na|A|I) }
 *   initiator → auth    { proof: HMAC(secret, initiator|cluster|Ni|Na|I|A) }
 *
 * The acceptor takes nothing but `auth` from the link until the proof checks; the initiator sends
 * nothing but `auth` until the welcome's proof checks. Each proof covers both nonces, both ids and
 * the role, so neither a replayed nor a reflected proof is accepted. Without a secret the key is
 * empty and the exchange proves only the cluster name (for loopback clusters; see node/config.ts).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Bytes of randomness in a nonce (hex on the wire). */
export const NONCE_BYTES = 16;

export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString('hex');
}

export interface PeerAuthContext {
  cluster: string;
  initiatorNonce: string;
  acceptorNonce: string;
  initiatorId: string;
  acceptorId: string;
}

export function peerProof(secret: string | undefined, role: 'initiator' | 'acceptor', c: PeerAuthContext): string {
  const [self, other] = role === 'initiator' ? [c.initiatorId, c.acceptorId] : [c.acceptorId, c.initiatorId];
  return createHmac('sha256', secret ?? '')
    .update(['tally-peer-v1', role, c.cluster, c.initiatorNonce, c.acceptorNonce, self, other].join('\u0000'))
    .digest('hex');
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofMatches(received: string, expected: string): boolean {
  const a = Buffer.from(received, 'hex');
  const b = Buffer.from(expected, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}
