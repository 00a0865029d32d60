/**
 * Ring changes under simulation, on the composed core the node runs, while simulated clients write
 * and read through random nodes (checked at every read as replication.test.ts checks them) over a
 * network that loses, duplicates and reorders messages, with a node frozen now and then:
 * - two new nodes join a four-node cluster that holds data, one after the other;
 * - a live node is decommissioned;
 * - a node is killed for good and removed with `removenode`.
 * Anti-entropy is off, so what moves the data is the streaming of each change alone. Besides the
 * busy series the clients read all along, cold series written once at the start are read at
 * `quorum` only right after each change: each must show exactly what was acknowledged.
 * Then, with the network clean: no read ever saw less than was acknowledged before it began or
 * more than was attempted, every replica of every bucket on the final ring holds the same slots,
 * and an `all` read of every series is within its bounds; the nodes that left are off every ring.
 */
import { describe, expect, test } from 'vitest';
import { Lifecycle } from '../../protocol/gossip.js';
import type { NodeCore } from '../../cluster/node-core.js';
import { DAY_MS } from '../../cluster/time-buckets.js';
import { Consistency } from '../../protocol/messages.js';
import { healthLine, memberStatuses } from '../../node/status.js';
import { divergence, ReplicationSim, type RequestOutcome } from './replication-sim.js';
import { report, simTest } from './sim-seed.js';
import { EVERY_BUCKET, T0, workload } from './workload.js';

const FILE = 'test/sim/topology.test.ts';

/** Runs the simulation until `done`, or fails after `limitMs` of simulated time. */
function until(sim: ReplicationSim, what: string, limitMs: number, done: () => boolean): number {
  const t0 = sim.nowMs;
  while (!done()) {
    if (sim.nowMs - t0 > limitMs) throw new Error(`${what}: not within ${limitMs} ms\n${sim.log.slice(-30).join('\n')}`);
    sim.run(100);
  }
  return sim.nowMs - t0;
}

function ask(sim: ReplicationSim, id: string, op: 'decommission' | 'removenode', node?: string): RequestOutcome {
  let out: RequestOutcome | undefined;
  sim.move(id, op, node, (o) => (out = o));
  until(sim, `${op} answered`, 2_000, () => out !== undefined);
  return out as RequestOutcome;
}

function runTopology(seed: number): void {
  const sim = new ReplicationSim({
    seed,
    nodes: 6,
    network: { minDelayMs: 0.2, maxDelayMs: 5, lossRate: 0, duplicateRate: 0, reorderRate: 0.05, reorderDelayMs: 30 },
    replication: { repairIntervalMs: 0 },
  });
  for (const id of ['n1', 'n2', 'n3', 'n4']) sim.start(id);
  /** Every live node sees every other up, none rebuilding, and places keys as the others do. */
  const settled = (): boolean => {
    const alive = sim.alive();
    return alive.every((n) => n.core!.membership.agreed() && n.core!.membership.liveMembers().length === alive.length && alive.every((m) => !n.core!.membership.isRebuilding(m.id)));
  };
  until(sim, 'the first four agree', 20_000, settled);
  // Cold series: written once, read only after each change.
  const cold = new Map<string, number>();
  for (let i = 0; i < 60; i++) {
    const id = `cold-${i}`;
    sim.write('n1', [[id, 'view', T0 + i * 60_000, 1, i + 1]], Consistency.QUORUM, `cold-${i}`, (o) => {
      if (o.kind === 'reply' && o.reply.ok) cold.set(id, i + 1);
    });
  }
  sim.run(1_000);
  expect(cold.size, 'cold series written').toBe(60);
  // From here on the network loses and duplicates messages.
  sim.net.options = { ...sim.net.options, lossRate: 0.01, duplicateRate: 0.01 };
  const checkCold = (after: string): void => {
    until(sim, `agreement after ${after}`, 10_000, settled);
    const live = sim.alive().map((n) => n.id);
    const core = sim.alive()[0]!.core!;
    const seen = new Map<string, number | string>();
    const show = (o: RequestOutcome): number | string => (o.kind === 'reply' ? (o.reply.ok ? (o.reply.stats?.[0] ?? [NaN])[0] : o.reply.code) : 'lost');
    // A quorum read waits for its read repairs; one whose repair message the network lost answers
    // TIMEOUT (the lossy network's, not the change's): it is asked again, a few times.
    const quorumRead = (id: string, tries: number): void =>
      sim.read(rng.pick(live), [[id, 'view', T0, T0 + DAY_MS]], Consistency.QUORUM, (o) => {
        const v = show(o);
        if (v === 'TIMEOUT' && tries > 1) quorumRead(id, tries - 1);
        else seen.set(`${id} quorum`, v);
      });
    for (const [id] of cold) {
      quorumRead(id, 3);
      // And at `one` from each replica alone (it reads itself first): the stream, not a quorum, put it there.
      for (const r of core.replicasOf(id)) sim.read(r, [[id, 'view', T0, T0 + DAY_MS]], Consistency.ONE, (o) => seen.set(`${id} one at ${r}`, show(o)));
    }
    const expected = [...cold.keys()].reduce((a, id) => a + 1 + core.replicasOf(id).length, 0);
    until(sim, `cold reads after ${after} answered`, 20_000, () => seen.size === expected);
    const wrong: string[] = [];
    for (const [id, n] of cold) {
      for (const k of [`${id} quorum`, ...core.replicasOf(id).map((r) => `${id} one at ${r}`)]) if (seen.get(k) !== n) wrong.push(`${k}: read ${String(seen.get(k))}, acknowledged ${n}`);
    }
    expect(wrong, `cold series right after ${after}`).toEqual([]);
  };
  let stopAt = Number.POSITIVE_INFINITY;
  const run = workload(sim, 16, 6, () => stopAt);
  const rng = sim.rng.fork();
  // Now and then a node that takes no part in the change at hand freezes for a while.
  const freezes = (ids: string[]): void => {
    const id = rng.pick(ids);
    if (sim.node(id).core !== undefined) sim.pause(id, 200 + rng.next() * 1_500);
  };
  sim.run(3_000);

  const joined: Record<string, number> = {};
  for (const id of ['n5', 'n6']) {
    sim.start(id);
    freezes(['n1', 'n3']);
    joined[id] = until(sim, `${id} joins`, 60_000, () => sim.node(id).disk.rebuilding === false && settled());
    checkCold(`${id} joined`);
  }

  // A live node leaves for good.
  const decommission = ask(sim, 'n2', 'decommission');
  expect(decommission, 'decommission accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  freezes(['n1', 'n5']);
  const decommissionMs = until(sim, 'n2 decommissioned', 60_000, () => sim.node('n2').removed !== undefined);
  checkCold('n2 decommissioned');

  // A node dies for good and is removed by an operator on another node.
  sim.crash('n4');
  until(sim, 'n4 seen down', 20_000, () => !sim.node('n1').core!.membership.isUp('n4'));
  const early = ask(sim, 'n1', 'removenode', 'n1');
  expect(early, 'removing oneself is refused').toMatchObject({ reply: { ok: false, code: 'BAD_REQUEST' } });
  const remove = ask(sim, 'n1', 'removenode', 'n4');
  expect(remove, 'removenode accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  freezes(['n3', 'n6']);
  const removeMs = until(sim, 'n4 removed everywhere', 60_000, () =>
    sim.alive().every((n) => n.core!.membership.stateOf('n4')?.lifecycle === Lifecycle.REMOVED) && sim.node('n1').core!.membership.removing === undefined,
  );
  checkCold('n4 removed');
  stopAt = sim.nowMs;
  sim.run(3_000);
  expect(run.violations, run.violations.slice(0, 5).join('\n')).toEqual([]);

  // Healing: clean network, anti-entropy and hints level every replica of the final ring.
  sim.net.options = { ...sim.net.options, lossRate: 0, duplicateRate: 0, reorderRate: 0 };
  const alive = sim.alive().map((n) => n.id).sort();
  expect(alive).toEqual(['n1', 'n3', 'n5', 'n6']);
  for (const n of sim.alive()) {
    expect([...n.core!.membership.ring().members].sort(), `${n.id}'s ring`).toEqual(alive);
    expect(n.core!.membership.stateOf('n2')?.lifecycle, `n2 at ${n.id}`).toBe(Lifecycle.REMOVED);
  }
  // Hot data a coordinator had not replicated everywhere when it died (its hints died with it, and
  // this run turns the schedule off) is anti-entropy's: one round on each node.
  for (const n of sim.alive()) {
    let done = false;
    sim.repair(n.id, () => (done = true));
    until(sim, `repair round on ${n.id}`, 30_000, () => done);
  }
  let levelMs = 0;
  try {
    levelMs = until(sim, 'replicas level', 30_000, () => divergence(sim, true).length === 0);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${divergence(sim, true).slice(0, 5).join('\n')}`, { cause: err });
  }
  const finals = new Map<string, number>();
  for (const s of run.series) {
    sim.read('n1', EVERY_BUCKET.map(([a, b]) => [s.id, 'view', a, b]), Consistency.ALL, (o) => {
      if (o.kind === 'reply' && o.reply.ok) finals.set(s.id, (o.reply.stats?.at(-1) ?? [NaN])[0]);
    });
  }
  sim.run(3_000);
  expect(finals.size, 'every series readable at all').toBe(run.series.length);
  for (const s of run.series) {
    expect(finals.get(s.id), `${s.id}`).toBeGreaterThanOrEqual(s.ackedQuorum);
    expect(finals.get(s.id), `${s.id}`).toBeLessThanOrEqual(s.attempted);
  }
  for (const [k, v] of Object.entries({ ...run.counts, 'n5 join ms': joined['n5'] ?? 0, 'n6 join ms': joined['n6'] ?? 0, 'decommission ms': decommissionMs, 'removenode ms': removeMs, 'level after ms': levelMs })) report(k, v);
  expect((run.counts['write ok quorum'] ?? 0) > 100, 'the workload made progress').toBe(true);
}

/** Reads every series in `acked` at `all` through `via` (its first day) and expects what was acknowledged. */
function expectAllReads(sim: ReplicationSim, via: string, acked: ReadonlyMap<string, number>): void {
  const read = new Map<string, number | string>();
  for (const id of acked.keys()) {
    sim.read(via, [[id, 'view', T0, T0 + DAY_MS]], Consistency.ALL, (o) => {
      read.set(id, o.kind !== 'reply' ? o.kind : o.reply.ok ? ((o.reply.stats?.[0] ?? [NaN])[0] as number) : `${o.reply.code}: ${o.reply.message}`);
    });
  }
  sim.run(2_000);
  for (const [id, n] of acked) expect(read.get(id), id).toBe(n);
}

/**
 * With RF 1 a key has one replica, but while a node leaves, its keys' writes must also reach the
 * node taking them over (the write waits for both): the coordinator ships its slots to a key's
 * replicas on the ring being left and the ring being joined, whatever the RF.
 */
function runRf1Decommission(seed: number): void {
  const sim = new ReplicationSim({ seed, nodes: 3, rf: 1, network: { minDelayMs: 0.2, maxDelayMs: 5, lossRate: 0, duplicateRate: 0, reorderRate: 0 }, replication: { repairIntervalMs: 0 } });
  for (const id of ['n1', 'n2', 'n3']) sim.start(id);
  until(sim, 'the three agree', 20_000, () => {
    const alive = sim.alive();
    return alive.every((n) => n.core!.membership.agreed() && n.core!.membership.liveMembers().length === 3 && alive.every((m) => !n.core!.membership.isRebuilding(m.id)));
  });
  const series = Array.from({ length: 30 }, (_, i) => `rf1-${i}`);
  const acked = new Map<string, number>(series.map((id) => [id, 0]));
  const failed: string[] = [];
  let seq = 0;
  const writeSome = (): void => {
    for (const id of series) {
      const batch = `w${++seq}`;
      // Refused with nothing applied while the nodes' rings differ for a moment (NOT_READY): again, shortly.
      const attempt = (tries: number): void => {
        const via = sim.rng.pick(['n1', 'n3']);
        sim.write(via, [[id, 'view', T0, 1, 1]], Consistency.QUORUM, batch, (o) => {
          if (o.kind === 'reply' && o.reply.ok) acked.set(id, (acked.get(id) ?? 0) + 1);
          else if (o.kind === 'reply' && !o.reply.ok && o.reply.code === 'NOT_READY' && tries < 20) sim.queue.schedule(sim.nowMs + 50, () => attempt(tries + 1));
          else failed.push(`${id} via ${via}: ${o.kind === 'reply' ? (o.reply.ok ? '' : `${o.reply.code} ${o.reply.message}`) : 'lost'}`);
        });
      };
      attempt(1);
    }
  };
  writeSome();
  sim.run(1_000);
  const decommission = ask(sim, 'n2', 'decommission');
  expect(decommission, 'decommission accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  let rounds = 0;
  until(sim, 'n2 decommissioned', 60_000, () => {
    if (sim.node('n2').removed !== undefined) return true;
    writeSome();
    rounds++;
    return false;
  });
  sim.run(2_000);
  expect(rounds, 'writes went on during the change').toBeGreaterThan(0);
  expect(failed, 'writes during the change').toEqual([]);
  expectAllReads(sim, 'n1', acked);
}

/**
 * A ring that shrinks to one member (RF 1, two nodes): the member that stays gains every range, has
 * no one to stream them to, and is done at once. It used to wait for streams it never started,
 * logging that it started them at every step (about 50 lines a second), so a decommission ended
 * only by the leaver's word and a removenode never ended, holding every later ring change back.
 */
function runShrinkToOne(seed: number): void {
  const sim = new ReplicationSim({ seed, nodes: 3, rf: 1, network: { minDelayMs: 0.2, maxDelayMs: 5, lossRate: 0, duplicateRate: 0, reorderRate: 0 }, replication: { repairIntervalMs: 0 } });
  const agreed = (n: number): boolean => {
    const alive = sim.alive();
    return alive.length === n && alive.every((x) => x.core!.membership.agreed() && x.core!.membership.liveMembers().length === n && alive.every((m) => !x.core!.membership.isRebuilding(m.id)));
  };
  const streamLines = (): number => sim.log.filter((l) => / n1: ring change: streaming to/.test(l)).length;
  sim.start('n1');
  sim.start('n2');
  until(sim, 'the two agree', 20_000, () => agreed(2));
  const series = Array.from({ length: 20 }, (_, i) => `one-${i}`);
  const acked = new Map<string, number>();
  for (const id of series) {
    sim.write('n1', [[id, 'view', T0, 1, 3]], Consistency.QUORUM, `b-${id}`, (o) => {
      if (o.kind === 'reply' && o.reply.ok) acked.set(id, 3);
    });
  }
  sim.run(1_000);
  expect(acked.size, 'every series written').toBe(series.length);

  // A live member leaves: n1 takes every range, streamed to it by n2.
  expect(ask(sim, 'n2', 'decommission'), 'decommission accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  until(sim, 'n2 decommissioned', 30_000, () => sim.node('n2').removed !== undefined);
  expect(streamLines(), 'n1 logged the start of its part of the change once at most').toBeLessThanOrEqual(1);
  expectAllReads(sim, 'n1', acked);

  // A member that joined dies for good and is removed: what it alone held is gone (RF 1), and the
  // change ends.
  sim.start('n3');
  until(sim, 'n3 joins', 30_000, () => sim.node('n3').disk.rebuilding === false && agreed(2));
  sim.crash('n3');
  until(sim, 'n3 seen down', 20_000, () => !sim.node('n1').core!.membership.isUp('n3'));
  const before = streamLines();
  expect(ask(sim, 'n1', 'removenode', 'n3'), 'removenode accepted').toMatchObject({ kind: 'reply', reply: { ok: true, moved: expect.stringMatching(/with rf 1 no other member holds its ranges/) } });
  until(sim, 'n3 removed', 30_000, () => sim.node('n1').core!.membership.stateOf('n3')?.lifecycle === Lifecycle.REMOVED && sim.node('n1').core!.membership.removing === undefined);
  expect(streamLines() - before, 'n1 logged the start of its part of the change once at most').toBeLessThanOrEqual(1);
  // The next change is taken: n1 is the ring.
  expect(sim.node('n1').core!.membership.ring().members).toEqual(['n1']);
  // A ring of one has nobody to lose; an id that is not a member is named as such first.
  expect(ask(sim, 'n1', 'removenode', 'nobody')).toMatchObject({ kind: 'reply', reply: { ok: false, code: 'BAD_REQUEST', message: expect.stringMatching(/^"nobody" is not a member of the ring/) } });
}

/** Five agreeing nodes (RF 3, a clean network, no anti-entropy) and 40 series written at quorum, each acknowledged with 2. */
function fiveNodesWritten(seed: number, prefix: string): { sim: ReplicationSim; agreed: (n: number) => boolean; acked: Map<string, number> } {
  const sim = new ReplicationSim({ seed, nodes: 5, rf: 3, network: { minDelayMs: 0.2, maxDelayMs: 5, lossRate: 0, duplicateRate: 0, reorderRate: 0 }, replication: { repairIntervalMs: 0 } });
  const ids = ['n1', 'n2', 'n3', 'n4', 'n5'];
  for (const id of ids) sim.start(id);
  /** Every live node sees `n` live members, none rebuilding, and agrees on the ring. */
  const agreed = (n: number): boolean => sim.alive().every((x) => x.core!.membership.agreed() && x.core!.membership.liveMembers().length === n && sim.alive().every((m) => !x.core!.membership.isRebuilding(m.id)));
  until(sim, 'the five agree', 30_000, () => agreed(5));
  const acked = new Map<string, number>();
  for (let i = 0; i < 40; i++) {
    const id = `${prefix}-${i}`;
    sim.write(sim.rng.pick(ids), [[id, 'view', T0, 1, 2]], Consistency.QUORUM, `b-${id}`, (o) => {
      if (o.kind === 'reply' && o.reply.ok) acked.set(id, 2);
    });
  }
  sim.run(1_000);
  expect(acked.size, 'every series written').toBe(40);
  return { sim, agreed, acked };
}

/**
 * Two members dead for good at once (five nodes, RF 3): the removal of one waits for the other,
 * which gains some of its ranges and holds others. Brought back under its id, empty, the other is
 * rebuilt without waiting for the member being removed (whose removal waits for that rebuild), the
 * removal ends, every acknowledged count reads back at `all`, and the one brought back can leave.
 */
function runTwoDead(seed: number): void {
  const { sim, agreed, acked } = fiveNodesWritten(seed, 'two');
  sim.crash('n4');
  sim.crash('n5');
  until(sim, 'both seen down', 20_000, () => !sim.node('n1').core!.membership.isUp('n4') && !sim.node('n1').core!.membership.isUp('n5'));
  expect(ask(sim, 'n1', 'removenode', 'n4'), 'removenode accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  const removed = (): boolean => sim.node('n1').core!.membership.stateOf('n4')?.lifecycle === Lifecycle.REMOVED && sim.node('n1').core!.membership.removing === undefined;
  sim.run(20_000);
  expect(removed(), 'the removal waits for n5').toBe(false);
  sim.wipe('n5');
  sim.start('n5');
  until(sim, 'n4 removed once n5 is back', 60_000, removed);
  until(sim, 'n5 rebuilt, and the four agree', 30_000, () => sim.node('n5').disk.rebuilding === false && agreed(4));
  expectAllReads(sim, 'n2', acked);
  decommission(sim, agreed, 'n5', 3);
  expectAllReads(sim, 'n1', acked);
}

/**
 * A member decommissioning is alive, if down for a moment, and may hold the only copy of what a
 * member being rebuilt needs: the rebuild waits for it, where it does not wait for one being
 * removed. Five nodes, RF 3: n2 decommissions and freezes; n5, wiped and restarted meanwhile,
 * stays rebuilding until n2 is back; then both end and every acknowledged count reads back.
 */
function runRebuildWaitsForDecommissioning(seed: number): void {
  const { sim, agreed, acked } = fiveNodesWritten(seed, 'dec');
  expect(ask(sim, 'n2', 'decommission'), 'decommission accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  sim.pause('n2', 30_000);
  sim.crash('n5');
  sim.wipe('n5');
  sim.start('n5');
  sim.run(20_000);
  expect(sim.node('n1').core!.membership.isUp('n2'), 'n2 is seen down').toBe(false);
  expect(sim.node('n5').disk.rebuilding, 'n5 waits for n2').toBe(true);
  until(sim, 'n5 rebuilt and n2 decommissioned', 90_000, () => sim.node('n5').disk.rebuilding === false && sim.node('n2').removed !== undefined);
  until(sim, 'the four agree', 30_000, () => agreed(4));
  expectAllReads(sim, 'n1', acked);
}

/** `id` decommissions: accepted, and done once it has stopped and the `left` members agree. */
function decommission(sim: ReplicationSim, agreed: (n: number) => boolean, id: string, left: number): void {
  expect(ask(sim, id, 'decommission'), 'decommission accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  until(sim, `${id} decommissioned, and the ${left} agree`, 60_000, () => sim.node(id).removed !== undefined && agreed(left));
}

/** `via` removes `id`, which is down: accepted, and done once `id` is removed and the `left` members agree. */
function removeNode(sim: ReplicationSim, agreed: (n: number) => boolean, via: string, id: string, left: number): void {
  expect(ask(sim, via, 'removenode', id), 'removenode accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  const core = (): NodeCore => sim.node(via).core as NodeCore;
  until(sim, `${id} removed, and the ${left} agree`, 60_000, () => core().membership.stateOf(id)?.lifecycle === Lifecycle.REMOVED && core().membership.removing === undefined && agreed(left));
}

/**
 * `gone` is off the ring for good, not still being rebuilt: every member's status says `removed`,
 * and the cluster is healthy (tally removenode --wait and tally status read exactly that).
 */
function expectRemovedEverywhere(sim: ReplicationSim, gone: string, members: string[]): void {
  for (const id of members) {
    const core = sim.node(id).core!;
    expect(memberStatuses(core, sim.nowMs).find((m) => m.id === gone)?.lifecycle, id).toBe('removed');
    expect(healthLine(memberStatuses(core, sim.nowMs)), id).toMatch(/^healthy/);
  }
}

/**
 * A member that dies while it is being rebuilt can be removed: it holds nothing the others need
 * (reads do not count it yet), and nothing else would ever end its rebuild. Five nodes, RF 3: n5
 * is wiped, restarted and crashed again before its ranges come; removenode takes it off.
 */
function runDiesRebuilding(seed: number): void {
  const { sim, agreed, acked } = fiveNodesWritten(seed, 'reb');
  sim.crash('n5');
  sim.wipe('n5');
  sim.start('n5');
  until(sim, 'n5 seen rebuilding', 20_000, () => sim.node('n1').core!.membership.isRebuilding('n5') && sim.node('n1').core!.membership.isUp('n5'));
  sim.crash('n5');
  until(sim, 'n5 seen down', 20_000, () => !sim.node('n1').core!.membership.isUp('n5'));
  removeNode(sim, agreed, 'n1', 'n5', 4);
  expectRemovedEverywhere(sim, 'n5', ['n1', 'n2', 'n3', 'n4']);
  expectAllReads(sim, 'n2', acked);
  // Another ring change is taken now: nothing is left rebuilding.
  decommission(sim, agreed, 'n4', 3);
  expectAllReads(sim, 'n1', acked);
}

/**
 * A member that dies while it decommissions can be removed instead: its peers would otherwise hold
 * it as leaving, every other ring change waiting, until it came back. Five nodes, RF 3: n5 begins
 * its decommission and is killed for good; removenode takes it off through n1.
 */
function runDiesDecommissioning(seed: number): void {
  const { sim, agreed, acked } = fiveNodesWritten(seed, 'dd');
  expect(ask(sim, 'n5', 'decommission'), 'decommission accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  until(sim, 'n5 seen decommissioning', 20_000, () => sim.node('n1').core!.membership.stateOf('n5')?.lifecycle === Lifecycle.DECOMMISSIONING);
  sim.crash('n5');
  until(sim, 'n5 seen down', 20_000, () => !sim.node('n1').core!.membership.isUp('n5'));
  removeNode(sim, agreed, 'n1', 'n5', 4);
  expectRemovedEverywhere(sim, 'n5', ['n1', 'n2', 'n3', 'n4']);
  expectAllReads(sim, 'n2', acked);
}

/**
 * Ring changes asked of different members at once: each member checks only the changes it has
 * heard of, so three decommissions of five nodes at RF 3 are all taken; the one whose leaver sorts
 * last gives way, and the other two end with three members, every count intact.
 */
function runThreeAtOnce(seed: number): void {
  const { sim, agreed, acked } = fiveNodesWritten(seed, 'three');
  const answers: RequestOutcome[] = [];
  // None hears of another's change before it takes its own (a change spreads in ~100-200 ms, and
  // a member that hears of one answers NOT_READY until the ring agrees): all cut apart while asked.
  const ids = ['n1', 'n2', 'n3', 'n4', 'n5'];
  for (const [i, a] of ids.entries()) sim.net.partition([a], ids.slice(i + 1));
  for (const id of ['n3', 'n4', 'n5']) sim.move(id, 'decommission', undefined, (o) => answers.push(o));
  until(sim, 'all three answered', 2_000, () => answers.length === 3);
  sim.net.heal();
  expect(answers.map((a) => (a.kind === 'reply' && !a.reply.ok ? a.reply.message : true))).toEqual([true, true, true]);
  until(sim, 'n3 and n4 decommissioned, and the three agree', 90_000, () => sim.node('n3').removed !== undefined && sim.node('n4').removed !== undefined && agreed(3));
  expect(sim.node('n5').removed, 'n5 gave way').toBeUndefined();
  expect(sim.node('n1').core!.membership.stateOf('n5')?.lifecycle).toBe(Lifecycle.NORMAL);
  expect(sim.node('n1').core!.membership.ring().members).toEqual(['n1', 'n2', 'n5']);
  expectAllReads(sim, 'n1', acked);
}

/**
 * The member driving a removal dies too, before the removal ends (five nodes, RF 3): another live
 * member removes the same member again and takes the removal over. Without it no change could
 * ever be taken (one at a time), and bringing the dead driver back empty cancelled the removal
 * and left its rebuild waiting for the member being removed, for good.
 */
function runRemoverDies(seed: number): void {
  const { sim, agreed, acked } = fiveNodesWritten(seed, 'rd');
  sim.crash('n4');
  until(sim, 'n4 seen down', 20_000, () => !sim.node('n1').core!.membership.isUp('n4') && !sim.node('n2').core!.membership.isUp('n4'));
  expect(ask(sim, 'n1', 'removenode', 'n4'), 'removenode accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  until(sim, 'n2 hears of the removal', 5_000, () => sim.node('n2').core!.membership.leavers().includes('n4'));
  // Killed for good before the streams begin (they wait writeTimeoutMs after the ring is agreed).
  sim.crash('n1');
  until(sim, 'n1 seen down', 20_000, () => !sim.node('n2').core!.membership.isUp('n1'));
  expect(ask(sim, 'n2', 'removenode', 'n4'), 'the removal taken over').toMatchObject({ kind: 'reply', reply: { ok: true } });
  sim.wipe('n1');
  sim.start('n1');
  const core = (): NodeCore => sim.node('n2').core as NodeCore;
  until(sim, 'n4 removed and n1 rebuilt, and the four agree', 60_000, () => core().membership.stateOf('n4')?.lifecycle === Lifecycle.REMOVED && core().membership.removing === undefined && sim.node('n1').disk.rebuilding === false && agreed(4));
  expectRemovedEverywhere(sim, 'n4', ['n1', 'n2', 'n3', 'n5']);
  expectAllReads(sim, 'n3', acked);
}

/**
 * A node wiped while a ring change streams it what it takes over (five nodes, RF 3, n2
 * decommissioning): brought back empty, it is sent again what it gains as well as its own ranges,
 * so once the change ends it holds every acknowledged count of every key it replicates. It used to
 * be sent its ranges on the ring being left only, and held none of what it had taken over.
 */
function runGainerWiped(seed: number): void {
  const { sim, agreed, acked } = fiveNodesWritten(seed, 'gw');
  expect(ask(sim, 'n2', 'decommission'), 'decommission accepted').toMatchObject({ kind: 'reply', reply: { ok: true } });
  const core = sim.node('n1').core!;
  until(sim, 'n1 hears of the change', 5_000, () => core.membership.leavers().includes('n2'));
  const pending = core.membership.pendingRing()!;
  const ring = core.membership.ring();
  const gains = new Map<string, string[]>();
  for (const id of acked.keys()) {
    const before = ring.preferenceList(id, 3);
    for (const r of pending.preferenceList(id, 3)) if (!before.includes(r)) gains.set(r, [...(gains.get(r) ?? []), id]);
  }
  const [g1] = [...gains.keys()];
  expect(g1, 'a member gains ranges').toBeDefined();
  const gainer = g1 as string;
  // Nothing from n3 reaches n2, which drives the change, so the change cannot end; meanwhile the
  // gainer is sent everything it gains, then loses its disk.
  sim.net.partition(['n3'], ['n2'], true);
  const senders = ['n1', 'n2', 'n3', 'n4', 'n5'].filter((m) => m !== gainer);
  until(sim, `${gainer} sent what it gains`, 20_000, () => senders.every((m) => sim.log.some((l) => l.includes(` ${m}: ring change: sent ${gainer} what it takes over`))));
  expect(sim.node('n2').removed, 'the change still under way').toBeUndefined();
  sim.crash(gainer);
  sim.wipe(gainer);
  sim.start(gainer);
  sim.run(2_000);
  sim.net.heal();
  until(sim, 'n2 decommissioned, and the four agree', 90_000, () => sim.node('n2').removed !== undefined && sim.node(gainer).disk.rebuilding === false && agreed(4));
  const disk = sim.node(gainer).disk;
  const missing = [...acked.keys()].filter((id) => sim.node('n1').core!.replicasOf(id).includes(gainer) && disk.count({ videoId: id, eventType: 'view', res: 'd', start: T0 }) < (acked.get(id) as number));
  expect(missing, `series ${gainer} replicates but does not hold`).toEqual([]);
  expectAllReads(sim, 'n1', acked);
}

describe('ring changes on the composed core', () => {
  simTest(FILE, 'three decommissions asked at once of five nodes at RF 3: the last gives way, the two others end, nothing is lost', (seed) => runThreeAtOnce(seed), 60_000);
  simTest(FILE, 'a member that dies while it decommissions is removed instead, and nothing acknowledged is lost', (seed) => runDiesDecommissioning(seed), 60_000);
  simTest(FILE, 'a node wiped while a ring change streams it what it gains is sent it again, and holds every count it replicates', (seed) => runGainerWiped(seed), 60_000);
  simTest(FILE, 'the member driving a removal dies too: another takes the removal over, the first comes back empty, nothing acknowledged is lost', (seed) => runRemoverDies(seed), 60_000);
  simTest(FILE, 'a member that dies while it is being rebuilt is removed, and nothing acknowledged is lost', (seed) => runDiesRebuilding(seed), 60_000);
  simTest(FILE, 'a rebuild waits for a member decommissioning that is down for a moment, not for one being removed', (seed) => runRebuildWaitsForDecommissioning(seed), 60_000);
  simTest(FILE, 'two members dead for good at once: one brought back empty is rebuilt, the other\'s removal ends, nothing acknowledged is lost', (seed) => runTwoDead(seed), 60_000);
  simTest(FILE, 'a ring that shrinks to one member: a decommission and a removenode end, and the member that stays says so once', (seed) => runShrinkToOne(seed), 60_000);
  simTest(FILE, 'with RF 1, writes to a leaving node\'s keys while it streams them away are acknowledged, and none is lost', (seed) => runRf1Decommission(seed), 60_000);

  // A run that found a double count: a forward the network repeated was refused (a replica down,
  // nothing applied) and its copy taken once the replica was back (2 more than attempted).
  test('the same, on a run where a repeated forward was once applied after its refusal (seed 1998732496)', () => runTopology(1998732496), 120_000);
  simTest(FILE, 'joins, a decommission and a removenode under writes, loss and freezes: no acknowledged increment is ever invisible to a quorum read', (seed) => {
    const runs = process.env['SIM_SEED'] === undefined ? Number(process.env['SIM_RUNS'] ?? 2) : 1;
    for (let i = 0; i < runs; i++) {
      try {
        runTopology(seed + i);
      } catch (err) {
        throw new Error(`with seed ${seed + i}: ${(err as Error).message}`, { cause: err });
      }
    }
  }, 120_000);
});
