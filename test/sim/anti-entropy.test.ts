/**
 * Anti-entropy under simulation, on the composed core: replicas that diverged where hints and read
 * repair cannot help (keys deleted from a disk offline, replication messages dropped with hints
 * off) are brought level by the repair schedule alone, with no read; the slots sent grow with the
 * divergence, not with the data; a repair of replicas already level sends nothing.
 * Each test prints its seed and replay command on failure (SIM_SEED pins one).
 */
import { describe, expect } from 'vitest';
import { DAY_MS, HOUR_MS } from '../../cluster/time-buckets.js';
import { MAX_REPAIR_ROUNDS, type RepairRound } from '../../cluster/node-core.js';
import { Consistency, type EventTuple } from '../../protocol/messages.js';
import { divergence, EPOCH_MS, ReplicationSim } from './replication-sim.js';
import { report, simTest } from './sim-seed.js';

const FILE = 'test/sim/anti-entropy.test.ts';
const T0 = Math.floor(EPOCH_MS / DAY_MS) * DAY_MS - DAY_MS;

/** Writes `events` events over `series` series, `batch` at a time, through random nodes; returns how many were acknowledged. */
function load(sim: ReplicationSim, series: number, events: number, cl: Consistency): number {
  let acked = 0;
  const ids = sim.alive().map((n) => n.id);
  for (let i = 0; i < events; i += 20) {
    const batch: EventTuple[] = Array.from({ length: 20 }, (_, j): EventTuple => [`video-${(i + j) % series}`, 'view', T0 + Math.floor(sim.rng.next() * 6 * HOUR_MS), 1, 1]);
    sim.write(sim.rng.pick(ids), batch, cl, `load-${i}`, (o) => {
      if (o.kind === 'reply' && o.reply.ok) acked += batch.length;
    });
    sim.run(5);
  }
  sim.run(3_000);
  return acked;
}

function slotsSent(sim: ReplicationSim): number {
  return sim.alive().reduce((a, n) => a + (n.core?.stats().repair.slotsSent ?? 0), 0);
}

function totalSlots(sim: ReplicationSim): number {
  return sim.nodes.reduce((a, n) => a + n.disk.all().size, 0);
}

/** Runs until no replica differs or `limitMs` passes; returns the simulated ms it took. */
function untilLevel(sim: ReplicationSim, limitMs: number): number {
  const t0 = sim.nowMs;
  while (divergence(sim).length > 0 && sim.nowMs - t0 < limitMs) sim.run(250);
  return sim.nowMs - t0;
}

describe('anti-entropy on the composed core', () => {
  simTest(FILE, 'keys deleted from one replica offline come back by the schedule alone; slots sent follow the divergence, not the data', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 5, replication: { repairIntervalMs: 1_000 } });
    sim.startAll();
    sim.settle();
    expect(load(sim, 400, 4_000, Consistency.ALL)).toBe(4_000);
    expect(divergence(sim)).toEqual([]);
    // Lose a few slots of n1 behind its back: a tenth of the series, every bucket of theirs.
    sim.crash('n1');
    const lost = sim.deleteSlots('n1', (key) => Number(key.split('\u0000')[0]?.slice('video-'.length)) % 10 === 7);
    expect(lost).toBeGreaterThan(0);
    sim.start('n1');
    const before = slotsSent(sim);
    sim.run(100);
    expect(divergence(sim).length).toBeGreaterThan(0);
    const took = untilLevel(sim, 60_000);
    const sent = slotsSent(sim) - before;
    report('slots deleted', lost);
    report('slots stored on all nodes', totalSlots(sim));
    report('repair slots sent', sent);
    report('converged after ms', took);
    expect(divergence(sim)).toEqual([]);
    // A leaf holds about one series here, so little else is sent. A deleted slot is usually sent
    // once; both its other replicas may send it, and a second round may start before the first's
    // slots are durable (seen up to 3.75x over 13 seeds).
    expect(sent).toBeGreaterThanOrEqual(lost);
    expect(sent).toBeLessThanOrEqual(5 * lost);
    expect(sent).toBeLessThan(totalSlots(sim) / 10);
  }, 120_000);

  simTest(FILE, 'replication messages dropped with hints off: the schedule alone brings every replica level', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 5, replication: { repairIntervalMs: 1_000, maxHintsPerNode: 0 } });
    sim.startAll();
    sim.settle();
    // n2 hears nothing for a while: writes at `one` succeed elsewhere and nothing is hinted for it.
    sim.net.partition(['n2'], ['n1', 'n3', 'n4', 'n5'], true);
    const acked = load(sim, 60, 600, Consistency.ONE);
    sim.net.heal();
    report('acknowledged at one', acked);
    expect(acked).toBeGreaterThan(0);
    expect(divergence(sim).length).toBeGreaterThan(0);
    const dropped = Object.values(sim.node('n1').core!.stats().hints).reduce((a, h) => a + h.dropped, 0);
    report('hints dropped at n1', dropped);
    const took = untilLevel(sim, 60_000);
    report('converged after ms', took);
    expect(divergence(sim)).toEqual([]);
  }, 120_000);

  simTest(FILE, 'a node whose own slots are damaged on disk refuses writes to them, serves none, and takes them back from a replica', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3, replication: { repairIntervalMs: 1_000 } });
    sim.startAll();
    sim.settle();
    let acked = 0;
    for (let i = 0; i < 10; i++) {
      sim.write('n1', [['hurt', 'view', T0, 1, 2]], Consistency.ALL, `h${i}`, (o) => {
        if (o.kind === 'reply' && o.reply.ok) acked += 2;
      });
      sim.run(50);
    }
    sim.run(1_000);
    expect(acked).toBe(20);
    // n1's own slots of the series go bad on its disk while it is down.
    sim.crash('n1');
    const disk = sim.node('n1').disk;
    const own = [...disk.all().keys()].filter((k) => k.includes('\u0000hurt\u0000') && k.endsWith(`\u0000${sim.actorOf(sim.node('n1'))}`));
    expect(own).toHaveLength(3);
    for (const k of own) disk.damaged.add(k);
    sim.start('n1');
    sim.run(100);
    const outcomes: string[] = [];
    sim.write('n1', [['hurt', 'view', T0, 1, 5]], Consistency.QUORUM, 'after-damage', (o) => outcomes.push(o.kind === 'reply' ? (o.reply.ok ? 'ok' : o.reply.code) : 'lost'));
    sim.run(500);
    expect(outcomes).toEqual(['STORAGE_DAMAGED']);
    // A read at `one` from n1 is answered by a replica whose copy is whole, never from the damaged bytes.
    const reads: number[] = [];
    sim.read('n1', [['hurt', 'view', T0, T0 + DAY_MS]], Consistency.ONE, (o) => {
      if (o.kind === 'reply' && o.reply.ok) reads.push((o.reply.stats?.[0] ?? [NaN])[0]);
    });
    sim.run(500);
    expect(reads).toEqual([20]);
    // The schedule brings n1's own slots back from the replicas that hold copies of them.
    untilLevel(sim, 30_000);
    expect(divergence(sim)).toEqual([]);
    expect(disk.damaged.size).toBe(0);
    sim.write('n1', [['hurt', 'view', T0, 1, 5]], Consistency.QUORUM, 'after-repair', (o) => outcomes.push(o.kind === 'reply' ? (o.reply.ok ? 'ok' : o.reply.code) : 'lost'));
    sim.run(1_000);
    expect(outcomes).toEqual(['STORAGE_DAMAGED', 'ok']);
    let all = -1;
    sim.read('n2', [['hurt', 'view', T0, T0 + DAY_MS]], Consistency.ALL, (o) => {
      if (o.kind === 'reply' && o.reply.ok) all = (o.reply.stats?.[0] ?? [NaN])[0];
    });
    sim.run(500);
    expect(all).toBe(25);
  }, 60_000);

  simTest(FILE, 'a wiped node coming back never leaves the ring, so its keys never move to other nodes meanwhile', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 5 });
    sim.startAll();
    sim.settle();
    sim.crash('n4');
    sim.wipe('n4');
    sim.run(1_000);
    sim.start('n4');
    // Before, it announced itself joining: every peer took its tokens off the ring until it had heard
    // from one, and writes for its keys went to others (left behind there once it was back).
    for (let t = 0; t < 3_000; t += 5) {
      sim.run(5);
      for (const n of sim.alive()) expect(n.core?.membership.ring().members, `${n.id}'s ring at +${t} ms`).toContain('n4');
    }
    // Its peers stream to it once every coordinator has had writeTimeoutMs to finish what it began before.
    sim.run(sim.replication.writeTimeoutMs + 3_000);
    expect(sim.node('n4').core?.membership.isRebuilding('n4')).toBe(false);
  }, 30_000);

  simTest(FILE, 'tally repair on replicas already level compares with every peer and sends nothing', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 4, replication: { repairIntervalMs: 0 } });
    sim.startAll();
    sim.settle();
    load(sim, 50, 500, Consistency.ALL);
    const rounds: RepairRound[] = [];
    sim.repair('n1', (r) => rounds.push(r));
    sim.run(5_000);
    expect(rounds[0]).toEqual({ peers: 3, sessions: 3, inSync: 3, failed: 0, leavesDiffered: 0, slotsSent: 0, bytesSent: 0 });
    // And after one replica lost a slot, a repair round finds and sends it.
    sim.crash('n2');
    const victim = [...sim.node('n2').disk.series.keys()][0]?.split('\u0000')[0] as string;
    const lost = sim.deleteSlots('n2', (key) => key.startsWith(`${victim}\u0000`));
    sim.start('n2');
    sim.run(5_000);
    expect(lost).toBeGreaterThan(0);
    sim.repair('n2', (r) => rounds.push(r));
    sim.run(5_000);
    expect(rounds[1]?.sessions).toBe(3);
    expect(rounds[1]?.leavesDiffered).toBeGreaterThan(0);
    expect(divergence(sim)).toEqual([]);
  }, 60_000);

  simTest(FILE, 'a replica whose commits take longer than the ack timeout is still repaired: its pages are waited for while it is up', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3, replication: { repairIntervalMs: 0 } });
    sim.startAll();
    sim.settle();
    load(sim, 50, 500, Consistency.ALL);
    sim.crash('n2');
    const lost = sim.deleteSlots('n2', (key) => Number(key.split('\u0000')[0]?.slice('video-'.length)) % 5 === 1);
    expect(lost).toBeGreaterThan(0);
    sim.start('n2');
    sim.settle();
    // n2 is up but behind: each of its commits takes 1.5 s, longer than replAckTimeoutMs (1 s).
    sim.node('n2').commitDelayMs = 1_500;
    const rounds: RepairRound[] = [];
    sim.repair('n1', (r) => rounds.push(r));
    sim.run(20_000);
    expect(rounds).toHaveLength(1);
    expect(rounds[0]?.failed).toBe(0);
    expect(rounds[0]?.slotsSent).toBeGreaterThanOrEqual(lost);
    expect(divergence(sim)).toEqual([]);
  }, 60_000);

  simTest(FILE, 'tally repair asked for far more often than rounds can run is refused OVERLOADED past a bound; the rounds it took all end', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3, replication: { repairIntervalMs: 0 } });
    sim.startAll();
    sim.settle();
    load(sim, 20, 200, Consistency.ALL);
    const rounds: RepairRound[] = [];
    const refused: string[] = [];
    for (let i = 0; i < 50; i++) sim.repair('n1', (r) => rounds.push(r), (code) => refused.push(code));
    sim.run(30_000);
    expect(rounds).toHaveLength(MAX_REPAIR_ROUNDS);
    expect(refused).toEqual(Array.from({ length: 50 - MAX_REPAIR_ROUNDS }, () => 'OVERLOADED'));
    for (const r of rounds) expect(r).toMatchObject({ peers: 2, sessions: 2, failed: 0 });
    // Once they are done, a round is taken again.
    sim.repair('n1', (r) => rounds.push(r), (code) => refused.push(code));
    sim.run(5_000);
    expect(rounds).toHaveLength(MAX_REPAIR_ROUNDS + 1);
  }, 60_000);
  simTest(FILE, 'a round that reports no failure leaves the pair level even when the network repeats its messages', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3, replication: { repairIntervalMs: 0 } });
    sim.startAll();
    sim.settle();
    load(sim, 600, 3_000, Consistency.ALL);
    // n2 loses half its series offline: they differ under many branches, so the leaves go in several messages.
    sim.crash('n2');
    const lost = sim.deleteSlots('n2', (key) => Number(key.split('\u0000')[0]?.slice('video-'.length)) % 2 === 0);
    sim.start('n2');
    sim.settle();
    expect(lost).toBeGreaterThan(0);
    // Every message arrives twice (a link that repeats what it carries).
    sim.net.options = { ...sim.net.options, duplicateRate: 1 };
    const rounds: RepairRound[] = [];
    sim.repair('n1', (r) => rounds.push(r));
    sim.run(20_000);
    sim.net.options = { ...sim.net.options, duplicateRate: 0 };
    sim.run(1_000);
    expect(rounds).toHaveLength(1);
    expect(rounds[0]?.failed).toBe(0);
    expect(divergence(sim)).toEqual([]);
  }, 60_000);
});

describe('anti-entropy between stores of different sizes', () => {
  // n1 lost nine series in ten: its walk takes a tenth of its peers' (at 1,000 slots a second, a
  // few seconds against over half a minute), so each side of a comparison waits long for the other.
  for (const by of ['n1', 'n2']) {
    simTest(FILE, `tally repair on ${by} levels a node that lost most of its slots with peers whose stores take far longer to walk`, (seed) => {
      const sim = new ReplicationSim({ seed, nodes: 3, replication: { repairIntervalMs: 0, repairSlotsPerSecond: 1_000 } });
      sim.startAll();
      sim.settle();
      load(sim, 400, 8_000, Consistency.ALL);
      sim.crash('n1');
      const lost = sim.deleteSlots('n1', (key) => Number(key.split('\u0000')[0]?.slice('video-'.length)) % 10 !== 0);
      sim.start('n1');
      sim.settle();
      report('slots lost', lost);
      const rounds: RepairRound[] = [];
      sim.repair(by, (r) => rounds.push(r));
      for (let t = 0; t < 600_000 && rounds.length === 0; t += 1_000) sim.run(1_000);
      expect(rounds).toHaveLength(1);
      expect(rounds[0]?.failed).toBe(0);
      expect(divergence(sim)).toEqual([]);
    }, 120_000);
  }
});
