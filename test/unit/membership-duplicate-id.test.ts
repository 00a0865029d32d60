/**
 * Who holds a node id, on the membership alone: the check a node makes of a peer's hello
 * (`idHeldAgainst`) before letting it in. A second node with a live member's id is refused; the
 * same data directory restarted, a wiped node back at its address, and a member that is down are
 * let in.
 */
import { describe, expect, test } from 'vitest';
import { defaultConfig } from '../../cluster/membership-config.js';
import { Membership } from '../../cluster/membership.js';
import { Prng } from '../../cluster/prng.js';
import type { GossipMessage } from '../../protocol/gossip.js';

const { h64 } = await (await import('xxhash-wasm')).default();
const CONFIG = { ...defaultConfig(), seeds: ['a:7000'], vnodes: 4 };

function member(id: string): Membership {
  return new Membership({ self: { id, address: `${id}:7000`, zone: 'z', actor: `${id}#0001` }, config: CONFIG, rng: new Prng(1), hash64: h64, nowMs: 0, generation: 100, bootstrapped: true });
}

describe('idHeldAgainst', () => {
  test('refuses a second node with our own id or a live member\'s, and lets the rightful ones in', () => {
    const a = member('a');
    const b = member('b');
    // a hears b's SYN directly: b is up at a.
    a.receive('b', (b as unknown as { syn(): GossipMessage }).syn(), 10);
    expect(a.isUp('b')).toBe(true);

    // Our own id, another actor: refused, naming us.
    expect(a.idHeldAgainst({ id: 'a', actor: 'a#0002', address: 'elsewhere:7000' })).toEqual({ address: 'a:7000', actor: 'a#0001' });
    // A live member's id, another actor, another address: refused, naming the member.
    expect(a.idHeldAgainst({ id: 'b', actor: 'b#0002', address: 'elsewhere:7000' })).toEqual({ address: 'b:7000', actor: 'b#0001' });
    // The same actor (its own directory, restarted, maybe on another port): let in.
    expect(a.idHeldAgainst({ id: 'b', actor: 'b#0001', address: 'b:7001' })).toBeUndefined();
    // Another actor at the member's own address (its data wiped, back where it was): let in.
    expect(a.idHeldAgainst({ id: 'b', actor: 'b#0002', address: 'b:7000' })).toBeUndefined();
    // An id no one holds: let in.
    expect(a.idHeldAgainst({ id: 'c', actor: 'c#0001', address: 'c:7000' })).toBeUndefined();
    // A member not seen up (here: known from an earlier run only) holds nothing against another actor.
    const c = new Membership({
      self: { id: 'c', address: 'c:7000', zone: 'z', actor: 'c#0001' }, config: CONFIG, rng: new Prng(1), hash64: h64, nowMs: 0, generation: 100, bootstrapped: true,
      knownPeers: [{ id: 'b', address: 'b:7000', zone: 'z', vnodes: 4 }],
    });
    expect(c.stateOf('b')).toBeDefined();
    expect(c.isUp('b')).toBe(false);
    expect(c.idHeldAgainst({ id: 'b', actor: 'b#0002', address: 'elsewhere:7000' })).toBeUndefined();
  });
});
