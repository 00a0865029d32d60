/**
 * A removed member's tombstone, on the membership alone: three members a, b, x; x is taken off
 * the ring by a (`tally removenode`); then x's process comes back on its old data with a newer
 * generation. Its state never outranks the tombstone, a member that heard x first still takes the
 * tombstone when it comes, and x itself is told (the `removed` effect) when it gossips.
 */
import { describe, expect, test } from 'vitest';
import { defaultConfig } from '../../cluster/membership-config.js';
import { FULL_NOTICE_INTERVAL_MS, MAX_MEMBERS, Membership, type KnownPeer, type MembershipEffect } from '../../cluster/membership.js';
import { Prng } from '../../cluster/prng.js';
import { parseKnownPeers } from '../../node/tally-node.js';
import { GossipMessageType, Lifecycle, type GossipMessage } from '../../protocol/gossip.js';

const { h64 } = await (await import('xxhash-wasm')).default();
const CONFIG = { ...defaultConfig(), seeds: ['a:7000'], vnodes: 4 };

function member(id: string, generation: number, nowMs: number, opts: { knownPeers?: KnownPeer[]; actor?: string } = {}): Membership {
  return new Membership({
    self: { id, address: `${id}:7000`, zone: 'z', actor: opts.actor ?? `${id}#0001` },
    config: CONFIG,
    rng: new Prng(generation),
    hash64: h64,
    nowMs,
    generation,
    bootstrapped: true,
    ...(opts.knownPeers === undefined ? {} : { knownPeers: opts.knownPeers }),
  });
}

/** Delivers every gossip message among `nodes` until none is left (SYN → ACK → ACK2). */
function gossip(nodes: Map<string, Membership>, from: string, to: string, nowMs: number): MembershipEffect[] {
  const effects: MembershipEffect[] = [];
  const queue: [string, string, GossipMessage][] = [];
  const push = (src: string, es: MembershipEffect[]): void => {
    for (const e of es) {
      effects.push(e);
      if (e.kind === 'send' && e.to.id !== undefined && nodes.has(e.to.id)) queue.push([src, e.to.id, e.msg]);
    }
  };
  push(from, [{ kind: 'send', to: { id: to, address: `${to}:7000` }, msg: (nodes.get(from) as unknown as { syn(): GossipMessage }).syn() }]);
  for (let i = 0; i < 20 && queue.length > 0; i++) {
    const [src, dst, msg] = queue.shift() as [string, string, GossipMessage];
    const es = (nodes.get(dst) as Membership).receive(src, msg, nowMs);
    // Only answers go on (ACK to a SYN, ACK2 to an ACK): no new rounds.
    push(dst, msg.t === GossipMessageType.ACK2 ? es.filter((e) => e.kind !== 'send') : es.filter((e) => e.kind !== 'send' || e.msg.t !== GossipMessageType.SYN));
  }
  return effects;
}

describe('a removed member', () => {
  test('never comes back under the same actor, and is told so when it gossips again', () => {
    const nodes = new Map([['a', member('a', 100, 0)], ['b', member('b', 100, 0)], ['x', member('x', 100, 0)]]);
    gossip(nodes, 'b', 'a', 10);
    gossip(nodes, 'x', 'a', 20);
    gossip(nodes, 'b', 'a', 30);
    expect([...nodes.get('b')!.ring().members].sort()).toEqual(['a', 'b', 'x']);

    // a takes x off the ring; b hears it from a.
    nodes.get('a')!.markRemoved('x');
    gossip(nodes, 'b', 'a', 40);
    expect(nodes.get('b')!.stateOf('x')?.lifecycle).toBe(Lifecycle.REMOVED);

    // x comes back on its old data: a newer generation, the same actor. c, new, hears x first.
    nodes.set('x', member('x', 5_000, 5_000));
    nodes.set('c', member('c', 5_000, 5_000));
    gossip(nodes, 'c', 'x', 5_010);
    expect(nodes.get('c')!.ring().members).toContain('x');
    // x gossips with b: b takes nothing from it (the tombstone outranks any generation of that
    // actor), and b's answer carries the tombstone, so x learns it was removed (once).
    const effects = gossip(nodes, 'x', 'b', 5_020);
    expect(nodes.get('b')!.stateOf('x')?.lifecycle).toBe(Lifecycle.REMOVED);
    expect(effects.filter((e) => e.kind === 'removed')).toHaveLength(1);
    expect(gossip(nodes, 'x', 'a', 5_030).filter((e) => e.kind === 'removed')).toHaveLength(0);
    // c hears the tombstone from b: x leaves its ring, though c had a newer state of x.
    gossip(nodes, 'c', 'b', 5_040);
    expect(nodes.get('c')!.stateOf('x')?.lifecycle).toBe(Lifecycle.REMOVED);
    expect(nodes.get('c')!.ring().members).not.toContain('x');
  });

  test('stays off the ring after every member restarted: the tombstone is kept with the known members', () => {
    const nodes = new Map([['a', member('a', 100, 0)], ['b', member('b', 100, 0)], ['x', member('x', 100, 0)]]);
    gossip(nodes, 'b', 'a', 10);
    gossip(nodes, 'x', 'a', 20);
    gossip(nodes, 'b', 'a', 30);
    nodes.get('a')!.markRemoved('x');
    gossip(nodes, 'b', 'a', 40);
    expect(nodes.get('b')!.stateOf('x')?.lifecycle).toBe(Lifecycle.REMOVED);

    // The whole cluster restarts (a power cut, say), each node with the members it kept; then x
    // comes back on its old data: a newer generation, the same actor.
    // Kept as the node keeps them: JSON in its store, read back and checked at the next start.
    const kept = new Map([...nodes].map(([id, m]) => [id, parseKnownPeers(Buffer.from(JSON.stringify(m.knownPeers())))]));
    expect(kept.get('b')?.find((p) => p.id === 'x')?.removed).toEqual({ actor: 'x#0001', generation: 100 });
    const restarted = new Map([
      ['a', member('a', 5_000, 5_000, { knownPeers: kept.get('a')! })],
      ['b', member('b', 5_000, 5_000, { knownPeers: kept.get('b')! })],
    ]);
    for (const m of restarted.values()) {
      expect(m.stateOf('x')?.lifecycle).toBe(Lifecycle.REMOVED);
      expect(m.ring().members).not.toContain('x');
    }
    restarted.set('x', member('x', 6_000, 6_000));
    const effects = gossip(restarted, 'x', 'a', 6_010);
    expect(restarted.get('a')!.ring().members).not.toContain('x');
    expect(effects.filter((e) => e.kind === 'removed')).toHaveLength(1);

    // A new actor under the id (x's data wiped) joins again.
    restarted.set('x', member('x', 7_000, 7_000, { actor: 'x#0002' }));
    gossip(restarted, 'x', 'b', 7_010);
    expect(restarted.get('b')!.stateOf('x')?.lifecycle).toBe(Lifecycle.NORMAL);
    expect(restarted.get('b')!.ring().members).toContain('x');
  });

  test('a node that keeps as many members as it may says so when it cannot take another, at most once a minute', () => {
    // Tombstones are kept for good: a cluster that has seen MAX_MEMBERS ids come and go takes no more.
    const tombstones: KnownPeer[] = Array.from({ length: MAX_MEMBERS - 2 }, (_, i) => ({
      id: `old${i}`,
      address: `old${i}:7000`,
      zone: 'z',
      vnodes: 4,
      removed: { actor: `old${i}#0001`, generation: 50 },
    }));
    const nodes = new Map([
      ['a', member('a', 100, 0, { knownPeers: [...tombstones, { id: 'b', address: 'b:7000', zone: 'z', vnodes: 4 }] })],
      ['b', member('b', 100, 0)],
      ['y', member('y', 100, 0)],
      ['w', member('w', 100, 0)],
    ]);
    gossip(nodes, 'b', 'a', 10);
    const full = (es: MembershipEffect[]): MembershipEffect[] => es.filter((e) => e.kind === 'membersFull');
    expect(full(gossip(nodes, 'y', 'a', 20))).toEqual([{ kind: 'membersFull', id: 'y', known: MAX_MEMBERS, removed: MAX_MEMBERS - 2, more: 0 }]);
    expect(nodes.get('a')!.stateOf('y')).toBeUndefined();
    // Within the minute: refused without a word; after it, said again with the count between.
    expect(full(gossip(nodes, 'y', 'a', 30))).toEqual([]);
    expect(full(gossip(nodes, 'w', 'a', 40))).toEqual([]);
    expect(full(gossip(nodes, 'y', 'a', 20 + FULL_NOTICE_INTERVAL_MS))).toEqual([{ kind: 'membersFull', id: 'y', known: MAX_MEMBERS, removed: MAX_MEMBERS - 2, more: 1 }]);
  });

  test('keeps its tombstone past the member expiry', () => {
    const a = member('a', 100, 0);
    const x = member('x', 100, 0);
    const nodes = new Map([['a', a], ['x', x]]);
    gossip(nodes, 'x', 'a', 10);
    a.markRemoved('x');
    a.tick(CONFIG.memberExpiryMs + 60_000);
    expect(a.stateOf('x')?.lifecycle).toBe(Lifecycle.REMOVED);
  });
});
