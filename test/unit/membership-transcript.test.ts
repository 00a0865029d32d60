/**
 * Transcripts of tricky membership edges, in the manner of etcd-io/raft's testdata/*.txt: a short
 * script of inputs to one node's core, and the effects it must answer with, as text.
 *
 * The peers here are hand-written messages, not cores, so each step shows exactly one input.
 * Gossip rounds pick targets at random; tick lines show only status and ring changes, receive
 * lines show everything.
 */

import { describe, expect, test } from 'vitest';
import { defaultConfig } from '../../cluster/membership-config.js';
import { Membership, type MembershipEffect } from '../../cluster/membership.js';
import { Prng } from '../../cluster/prng.js';
import {
  GossipMessageType,
  Lifecycle,
  type EndpointState,
  type GossipMessage,
} from '../../protocol/gossip.js';

const { h64 } = await (await import('xxhash-wasm')).default();

const CONFIG = { ...defaultConfig(), seeds: ['a:7000'], vnodes: 4 };

function state(id: string, generation: number, version: number, lifecycle: EndpointState['lifecycle'] = Lifecycle.NORMAL): EndpointState {
  return { id, address: `${id}:7000`, zone: 'z', generation, version, lifecycle, vnodes: 4, ringChecksum: '0' };
}

const syn = (sender: EndpointState, seq = 1): GossipMessage => ({
  t: GossipMessageType.SYN,
  seq,
  sender,
  digests: [{ id: sender.id, generation: sender.generation, version: sender.version }],
});
const ack = (seq: number, ...states: EndpointState[]): GossipMessage => ({ t: GossipMessageType.ACK, seq, states, requests: [] });
const ack2 = (...states: EndpointState[]): GossipMessage => ({ t: GossipMessageType.ACK2, states });

function fmtState(s: EndpointState): string {
  return `${s.id}@${s.generation}#${s.version}${s.lifecycle === Lifecycle.NORMAL ? '' : ` ${s.lifecycle}`}`;
}

function fmtMsg(m: GossipMessage): string {
  switch (m.t) {
    case GossipMessageType.SYN:
      return `syn seq=${m.seq} sender=${fmtState(m.sender)} digests=[${m.digests.map((d) => `${d.id}@${d.generation}#${d.version}`).join(' ')}]`;
    case GossipMessageType.ACK:
      return `ack seq=${m.seq} states=[${m.states.map(fmtState).join(' ')}] requests=[${m.requests.map((d) => `${d.id}@${d.generation}#${d.version}`).join(' ')}]`;
    case GossipMessageType.ACK2:
      return `ack2 states=[${m.states.map(fmtState).join(' ')}]`;
  }
}

function fmtEffect(e: MembershipEffect): string {
  switch (e.kind) {
    case 'send':
      return `send ${e.to.id ?? e.to.address}: ${fmtMsg(e.msg)}`;
    case 'statusChanged':
      return `${e.id} ${e.up ? 'up' : 'down'} (${e.reason})`;
    case 'ringChanged':
      return 'ring changed';
    case 'memberExpired':
      return `${e.id} expired`;
    case 'membersFull':
      return `${e.id} refused: ${e.known} members known (${e.removed} removed), ${e.more} more since`;
    case 'identityConflict':
      return `identity conflict: ${e.claimed.id} at ${e.claimed.address} gen ${e.claimed.generation} v${e.claimed.version}${e.refuted ? ' (refuted)' : ''}`;
    case 'removed':
      return `removed by ${e.by}`;
    case 'generationRaised':
      return `generation raised over ${e.over.id} gen ${e.over.generation} (actor ${e.over.actor ?? '?'})`;
  }
}

/** Runs a script against node `a` and returns the transcript. */
class Script {
  readonly a = new Membership({
    self: { id: 'a', address: 'a:7000', zone: 'z' },
    config: CONFIG,
    rng: new Prng(1),
    hash64: h64,
    nowMs: 0,
    generation: 500,
  });
  private readonly lines: string[] = [];

  receive(atMs: number, from: string, msg: GossipMessage): this {
    this.lines.push(`${atMs} a receives from ${from}: ${fmtMsg(msg)}`);
    for (const e of this.a.receive(from, msg, atMs)) this.lines.push(`  ${fmtEffect(e)}`);
    return this;
  }

  /** Ticks every 250 ms up to `untilMs`, showing the non-send effects with their time. */
  ticks(fromMs: number, untilMs: number): this {
    for (let t = fromMs; t <= untilMs; t += CONFIG.tickIntervalMs) {
      for (const e of this.a.tick(t)) if (e.kind !== 'send') this.lines.push(`${t} tick: ${fmtEffect(e)}`);
    }
    return this;
  }

  connectionLost(atMs: number, peer: string): this {
    this.lines.push(`${atMs} a loses its connection to ${peer}`);
    for (const e of this.a.connectionLost(peer, atMs)) this.lines.push(`  ${fmtEffect(e)}`);
    return this;
  }

  view(atMs: number, id: string): this {
    const row = this.a.view(atMs).find((m) => m.id === id);
    this.lines.push(
      row === undefined
        ? `${atMs} view ${id}: unknown`
        : `${atMs} view ${id}: ${row.status} (${row.reason}) ${row.lifecycle} generation=${row.generation} heartbeat=${row.heartbeat}`,
    );
    return this;
  }

  note(text: string): this {
    this.lines.push(`# ${text}`);
    return this;
  }

  get transcript(): string {
    return this.lines.join('\n');
  }
}

describe('membership transcripts', () => {
  test('a down node’s newer heartbeat brings it back up; a restart replaces its state', () => {
    const s = new Script()
      .receive(0, 'b', syn(state('b', 1000, 5)))
      .note('each new member changes the ring: pushed to live peers at once, at most once a tick interval (this one at the tick)')
      .receive(100, 'c', syn(state('c', 1000, 7)))
      .note('b falls silent; c keeps talking')
      .ticks(250, 1000);
    for (let t = 1000; t <= 12_000; t += 1000) {
      s.receive(t, 'c', ack2(state('c', 1000, 7 + t / 1000))).ticks(t + 250, t + 750);
    }
    s.view(12_000, 'b')
      .note('a newer heartbeat of b, relayed by c: b is alive')
      .receive(12_100, 'c', ack2(state('b', 1000, 16)))
      .note('an older one, late: nothing')
      .receive(12_200, 'c', ack2(state('b', 1000, 12)))
      .note('b restarted: a higher generation wins over a higher version')
      .receive(12_300, 'c', ack2(state('b', 9000, 2)))
      .view(12_300, 'b')
      .note('news of the old incarnation, however fresh its version, is stale')
      .receive(12_400, 'c', ack2(state('b', 1000, 99)))
      .view(12_400, 'b');
    expect(s.transcript).toBe(
      `0 a receives from b: syn seq=1 sender=b@1000#5 digests=[b@1000#5]
  send b: ack seq=1 states=[a@500#2] requests=[]
  b up (up)
  ring changed
  send b: ack2 states=[a@500#3]
# each new member changes the ring: pushed to live peers at once, at most once a tick interval (this one at the tick)
100 a receives from c: syn seq=1 sender=c@1000#7 digests=[c@1000#7]
  send c: ack seq=1 states=[a@500#3 b@1000#5] requests=[]
  c up (up)
  ring changed
# b falls silent; c keeps talking
1000 a receives from c: ack2 states=[c@1000#8]
2000 a receives from c: ack2 states=[c@1000#9]
3000 a receives from c: ack2 states=[c@1000#10]
4000 a receives from c: ack2 states=[c@1000#11]
5000 a receives from c: ack2 states=[c@1000#12]
6000 a receives from c: ack2 states=[c@1000#13]
6750 tick: b down (phi)
7000 a receives from c: ack2 states=[c@1000#14]
8000 a receives from c: ack2 states=[c@1000#15]
9000 a receives from c: ack2 states=[c@1000#16]
10000 a receives from c: ack2 states=[c@1000#17]
11000 a receives from c: ack2 states=[c@1000#18]
12000 a receives from c: ack2 states=[c@1000#19]
12000 view b: down (phi) normal generation=1000 heartbeat=5
# a newer heartbeat of b, relayed by c: b is alive
12100 a receives from c: ack2 states=[b@1000#16]
  b up (up)
# an older one, late: nothing
12200 a receives from c: ack2 states=[b@1000#12]
# b restarted: a higher generation wins over a higher version
12300 a receives from c: ack2 states=[b@9000#2]
12300 view b: up (up) normal generation=9000 heartbeat=2
# news of the old incarnation, however fresh its version, is stale
12400 a receives from c: ack2 states=[b@1000#99]
12400 view b: up (up) normal generation=9000 heartbeat=2`,
    );
  });

  test('a dropped connection: probe at once, down after the grace, up when the peer answers the probe', () => {
    const s = new Script().receive(0, 'b', syn(state('b', 1000, 5))).receive(100, 'c', syn(state('c', 1000, 3)));
    s.connectionLost(1000, 'b')
      .note('already suspected: no second probe')
      .connectionLost(1100, 'b')
      .note('messages b sent before the drop may still land: they prove nothing')
      .receive(1150, 'b', syn(state('b', 1000, 6), 40))
      .ticks(1250, 1250)
      .note('nor does a relayed heartbeat: it may be the last word of a dead process')
      .receive(1500, 'c', ack2(state('b', 1000, 7)))
      .note('an answer to a SYN sent before the drop, late')
      .receive(1600, 'b', ack(0))
      .ticks(1750, 2500)
      .note('the answer to the probe: b is alive after the drop')
      .receive(3000, 'b', ack(1));
    expect(s.transcript).toBe(
      `0 a receives from b: syn seq=1 sender=b@1000#5 digests=[b@1000#5]
  send b: ack seq=1 states=[a@500#2] requests=[]
  b up (up)
  ring changed
  send b: ack2 states=[a@500#3]
100 a receives from c: syn seq=1 sender=c@1000#3 digests=[c@1000#3]
  send c: ack seq=1 states=[a@500#3 b@1000#5] requests=[]
  c up (up)
  ring changed
1000 a loses its connection to b
  send b: syn seq=1 sender=a@500#4 digests=[a@500#4 b@1000#5 c@1000#3]
# already suspected: no second probe
1100 a loses its connection to b
# messages b sent before the drop may still land: they prove nothing
1150 a receives from b: syn seq=40 sender=b@1000#6 digests=[b@1000#6]
  send b: ack seq=40 states=[a@500#4 c@1000#3] requests=[]
  send c: ack2 states=[a@500#4]
  send b: ack2 states=[a@500#4]
# nor does a relayed heartbeat: it may be the last word of a dead process
1500 a receives from c: ack2 states=[b@1000#7]
# an answer to a SYN sent before the drop, late
1600 a receives from b: ack seq=0 states=[] requests=[]
2500 tick: b down (connection-lost)
# the answer to the probe: b is alive after the drop
3000 a receives from b: ack seq=1 states=[] requests=[]
  b up (up)`,
    );
  });

  test('a graceful leave is down at once and keeps its tokens on the ring; a joiner becomes normal', () => {
    const joiner = new Membership({
      self: { id: 'j', address: 'j:7000', zone: 'z' },
      config: CONFIG,
      rng: new Prng(2),
      hash64: h64,
      nowMs: 0,
      generation: 700,
    });
    expect(joiner.lifecycle).toBe(Lifecycle.JOINING);
    // Knowing only the seed's address, it asks the seed, by address.
    const first = joiner.tick(0).filter((e) => e.kind === 'send');
    expect(first.map((e) => (e.kind === 'send' ? e.to : undefined))).toEqual([{ address: 'a:7000' }]);
    joiner.receive('a', ack(1, state('a', 500, 3)), 50);
    expect(joiner.lifecycle).toBe(Lifecycle.NORMAL);

    const s = new Script().receive(0, 'b', syn(state('b', 1000, 5)));
    const ringBefore = s.a.ring().members.join(' ');
    s.receive(500, 'b', ack2(state('b', 1000, 6, Lifecycle.LEFT)));
    expect(s.transcript).toBe(
      `0 a receives from b: syn seq=1 sender=b@1000#5 digests=[b@1000#5]
  send b: ack seq=1 states=[a@500#2] requests=[]
  b up (up)
  ring changed
  send b: ack2 states=[a@500#3]
500 a receives from b: ack2 states=[b@1000#6 left]
  b down (left)`,
    );
    expect(ringBefore).toBe('a b');
    expect(s.a.ring().members.join(' ')).toBe('a b');
  });

  test('news of ourselves: refuted in our generation, reported in a newer one; absurd generations dropped', () => {
    const s = new Script()
      .receive(0, 'b', syn(state('b', 1000, 5)))
      .note('a forged state of a, with a higher version in its own generation')
      .receive(100, 'b', ack2(state('a', 500, 40)))
      .note('the same forgery again: reported once')
      .receive(150, 'b', ack2(state('a', 500, 40)))
      .view(150, 'a')
      .note('a version beyond MAX_GOSSIP_VERSION: dropped, never adopted')
      .receive(160, 'b', ack2(state('b', 1000, 2 ** 48 + 1)))
      .view(160, 'b')
      .note('another process started with id a at another address (a newer generation): a cannot outbid it')
      .receive(200, 'b', ack2({ ...state('a', 9000, 1), address: 'elsewhere:7000', actor: 'a#other' }))
      .note('an earlier process of a, at its address, in a later generation (a started with its clock behind, its data wiped): a moves past it')
      .receive(250, 'b', ack2({ ...state('a', 800, 3), actor: 'a#before' }))
      .view(250, 'a')
      .note('the same actor again in a later generation: not an earlier process after all (a shared address); reported, not outbid again')
      .receive(260, 'b', ack2({ ...state('a', 900, 1), actor: 'a#before' }))
      .note('another actor at our address, too far ahead of our clock: reported, not followed there')
      .receive(270, 'b', ack2({ ...state('a', 20 * 60 * 1000, 1), actor: 'a#ahead' }))
      .view(270, 'a')
      .note('c with a generation years ahead of our clock: dropped, never a member')
      .receive(300, 'b', ack2(state('c', 400 * 24 * 3600 * 1000, 1)))
      .view(300, 'c');
    expect(s.transcript).toBe(
      `0 a receives from b: syn seq=1 sender=b@1000#5 digests=[b@1000#5]
  send b: ack seq=1 states=[a@500#2] requests=[]
  b up (up)
  ring changed
  send b: ack2 states=[a@500#3]
# a forged state of a, with a higher version in its own generation
100 a receives from b: ack2 states=[a@500#40]
  identity conflict: a at a:7000 gen 500 v40 (refuted)
# the same forgery again: reported once
150 a receives from b: ack2 states=[a@500#40]
150 view a: up (up) normal generation=501 heartbeat=1
# a version beyond MAX_GOSSIP_VERSION: dropped, never adopted
160 a receives from b: ack2 states=[b@1000#281474976710657]
160 view b: up (up) normal generation=1000 heartbeat=5
# another process started with id a at another address (a newer generation): a cannot outbid it
200 a receives from b: ack2 states=[a@9000#1]
  identity conflict: a at elsewhere:7000 gen 9000 v1
# an earlier process of a, at its address, in a later generation (a started with its clock behind, its data wiped): a moves past it
250 a receives from b: ack2 states=[a@800#3]
  generation raised over a gen 800 (actor a#before)
250 view a: up (up) normal generation=801 heartbeat=1
# the same actor again in a later generation: not an earlier process after all (a shared address); reported, not outbid again
260 a receives from b: ack2 states=[a@900#1]
  identity conflict: a at a:7000 gen 900 v1
# another actor at our address, too far ahead of our clock: reported, not followed there
270 a receives from b: ack2 states=[a@1200000#1]
  identity conflict: a at a:7000 gen 1200000 v1
270 view a: up (up) normal generation=801 heartbeat=1
# c with a generation years ahead of our clock: dropped, never a member
300 a receives from b: ack2 states=[c@34560000000#1]
300 view c: unknown`,
    );
    // A SYN whose (old, so not taken) sender state names another address: the answer goes to
    // the address we hold for b, never to one a peer merely mentions.
    const effects = s.a.receive('b', syn({ ...state('b', 1000, 3), address: 'elsewhere:1' }, 2), 400);
    expect(effects.find((e) => e.kind === 'send')).toMatchObject({ to: { id: 'b', address: 'b:7000' } });
  });
});

describe('bounds on what gossip can make a node believe', () => {
  const HOUR = 3_600_000;
  const node = (nowMs: number): Membership =>
    new Membership({ self: { id: 'a', address: 'a:7000', zone: 'z' }, config: CONFIG, rng: new Prng(2), hash64: h64, nowMs, generation: nowMs });

  test('a generation more than maxGenerationAheadMs ahead of our clock is not taken', () => {
    const now = 1_000 * HOUR;
    const a = node(now);
    a.receive('c', ack2(state('far', now + CONFIG.maxGenerationAheadMs + 1, 1), state('near', now + CONFIG.maxGenerationAheadMs - 1, 1)), now);
    expect(a.stateOf('far')).toBeUndefined();
    expect(a.stateOf('near')).toBeDefined();
  });

  test('a member off the ring nobody has seen alive for memberExpiryMs is forgotten, and not taken back from a peer that still relays it', () => {
    const now = 1_000 * HOUR;
    const a = node(now);
    a.receive('b', syn(state('b', now, 1)), now);
    a.receive('b', ack2(state('ghost', now - HOUR, 7, Lifecycle.JOINING)), now + 1);
    const expired: string[] = [];
    let version = 2;
    const end = now + CONFIG.memberExpiryMs + 10 * CONFIG.gossipIntervalMs;
    for (let t = now; t <= end; t += CONFIG.gossipIntervalMs) {
      a.receive('b', syn(state('b', now, version++)), t); // b is alive and says so every round
      for (const e of a.tick(t)) if (e.kind === 'memberExpired') expired.push(e.id);
    }
    expect(expired).toEqual(['ghost']);
    expect(a.stateOf('ghost')).toBeUndefined();
    expect(a.isUp('b')).toBe(true);
    // b, whose clock for it started later, still relays the same state: it stays forgotten (else
    // the two would hand it to each other for ever); a newer one, a sign of life, is taken.
    a.receive('b', ack2(state('ghost', now - HOUR, 7, Lifecycle.JOINING)), end + 1);
    expect(a.stateOf('ghost')).toBeUndefined();
    a.receive('b', ack2(state('ghost', now - HOUR, 8, Lifecycle.JOINING)), end + 2);
    expect(a.stateOf('ghost')?.version).toBe(8);
  });

  test('a member on the ring stays, down, however long nobody has seen it: only a removal takes it off', () => {
    const now = 1_000 * HOUR;
    const a = node(now);
    a.receive('b', syn(state('b', now, 1)), now);
    a.receive('b', ack2(state('dead', now - HOUR, 7)), now + 1);
    expect(a.ring().members).toContain('dead');
    const expired: string[] = [];
    let version = 2;
    for (let t = now; t <= now + 2 * CONFIG.memberExpiryMs; t += CONFIG.gossipIntervalMs) {
      a.receive('b', syn(state('b', now, version++)), t);
      for (const e of a.tick(t)) if (e.kind === 'memberExpired') expired.push(e.id);
    }
    expect(expired).toEqual([]);
    expect(a.ring().members).toContain('dead');
    expect(a.isUp('dead')).toBe(false);
  });
});

describe('a restarted node and the members it kept', () => {
  /** b, restarted with `seed` and the members `known` from its last run. */
  const restarted = (seed: string, known: string[]): Membership =>
    new Membership({
      self: { id: 'b', address: 'b:7000', zone: 'z' },
      config: { ...CONFIG, seeds: [seed] },
      rng: new Prng(3),
      hash64: h64,
      nowMs: 0,
      generation: 100,
      bootstrapped: true,
      knownPeers: known.map((id) => ({ id, address: `${id}:7000`, zone: 'z', vnodes: 4 })),
    });

  test('it gossips with the members it knew, not only with its seeds: a dead seed does not leave it alone', () => {
    // b restarts with seed n1 (dead now) and knows n1 and c from its last run.
    const b = restarted('n1:7000', ['n1', 'c']);
    const called = new Set<string>();
    for (let t = 0; t <= 10 * CONFIG.gossipIntervalMs; t += CONFIG.tickIntervalMs) {
      for (const e of b.tick(t)) if (e.kind === 'send' && e.msg.t === GossipMessageType.SYN) called.add(e.to.address);
    }
    expect(called).toContain('n1:7000');
    expect(called).toContain('c:7000');
  });

  test('it keeps what it remembers of a member to itself: a peer that forgot the member is not handed it back', () => {
    // b remembers ghost from its last run (a member its peers forgot, or never knew); c does not.
    const b = restarted('c:7000', ['ghost']);
    const c = state('c', 50, 3);
    const sent = b.receive('c', syn(c), 1).filter((e) => e.kind === 'send');
    const states = sent.flatMap((e) => (e.kind === 'send' && 'states' in e.msg ? e.msg.states : []));
    expect(states.map((x) => x.id)).toContain('b');
    expect(states.map((x) => x.id), 'the remembered placeholder').not.toContain('ghost');
    expect(b.ring().members, 'still placed on its own ring until it is heard of').toContain('ghost');
  });
});
