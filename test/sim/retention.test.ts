/**
 * Retention under simulation: minute and hour buckets whose day has passed its retention are
 * deleted from every replica's disk, and no path brings them back: not the hints of a replica that
 * was down when they were written, not anti-entropy, not read repair. Reads whose edges fall in
 * expired minutes are answered over the range still kept and say so.
 * Each test prints its seed and replay command on failure (SIM_SEED pins one).
 */
import { describe, expect } from 'vitest';
import type { CoreReply } from '../../cluster/node-core.js';
import { isExpired, type Retention } from '../../cluster/retention.js';
import { DAY_MS, HOUR_MS, MINUTE_MS, type Resolution } from '../../cluster/time-buckets.js';
import { Consistency, type EventTuple } from '../../protocol/messages.js';
import { EPOCH_MS, ReplicationSim } from './replication-sim.js';
import { simTest } from './sim-seed.js';

const FILE = 'test/sim/retention.test.ts';
const RETENTION: Retention = { minuteDays: 1, hourDays: 2 };
/** The UTC midnight the test crosses: the clocks start 20 s before it. */
const MIDNIGHT = Math.floor(EPOCH_MS / DAY_MS) * DAY_MS + DAY_MS;
/** Minutes of this day expire at MIDNIGHT (one day kept after the day ends); hours at MIDNIGHT + 1 day. */
const D = MIDNIGHT - 2 * DAY_MS;

/** Slots on `node`'s disk that have expired at the node's clock now. */
function expiredOnDisk(sim: ReplicationSim, node: string): string[] {
  const now = sim.epochMs + sim.nowMs;
  return [...sim.node(node).disk.all().keys()].filter((k) => {
    const [res, start] = k.split('\u0000') as [Resolution, string];
    return isExpired({ res, start: Number(start) }, now, RETENTION);
  });
}

function read(sim: ReplicationSim, via: string, from: number, to: number, cl: Consistency): CoreReply {
  let reply: CoreReply | undefined;
  sim.read(via, [['ret', 'view', from, to]], cl, (o) => (reply = o.kind === 'reply' ? o.reply : undefined));
  const t0 = sim.nowMs;
  while (reply === undefined && sim.nowMs - t0 < 10_000) sim.run(5);
  if (reply === undefined) throw new Error('no reply to a read');
  return reply;
}

describe('retention (simulation)', () => {
  simTest(FILE, 'expired buckets leave every disk and stay gone through hints, anti-entropy and read repair; reads say what they answered', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 4, startMs: MIDNIGHT - 20_000, replication: { retention: RETENTION } });
    sim.startAll();
    sim.settle();
    const replicas = sim.node('n1').core!.replicasOf('ret');
    const [coordinator, , down] = replicas as [string, string, string];
    // One replica is down while the events are written: it gets them from hints after midnight.
    sim.crash(down);
    sim.run(5_000);
    // 20 events a minute from 10:37 to 11:36 of day D (its minutes expire at MIDNIGHT), 5 a minute
    // in the day before it (hours gone at MIDNIGHT, minutes gone already), and 1 a minute yesterday.
    const events: EventTuple[] = [];
    for (let m = 0; m < 60; m++) events.push(['ret', 'view', D + 10 * HOUR_MS + (37 + m) * MINUTE_MS, 1, 20]);
    for (let m = 0; m < 60; m++) events.push(['ret', 'view', D - DAY_MS + 3 * HOUR_MS + m * MINUTE_MS, 1, 5]);
    for (let m = 0; m < 60; m++) events.push(['ret', 'view', MIDNIGHT - DAY_MS + 5 * HOUR_MS + m * MINUTE_MS, 1, 1]);
    let acked = false;
    sim.write(coordinator, events, Consistency.QUORUM, 'ret-1', (o) => (acked = o.kind === 'reply' && o.reply.ok));
    sim.run(1_000);
    expect(acked).toBe(true);
    const edge = D + 10 * HOUR_MS + 37 * MINUTE_MS;
    // Before midnight, day D's minutes answer to the minute.
    expect(read(sim, coordinator, edge, edge + 23 * MINUTE_MS, Consistency.QUORUM)).toEqual({ ok: true, stats: [[460, 460, 1, 1]] });
    // The day before: its minutes had expired before the write, so an edge there moves to the hour.
    const before = read(sim, coordinator, D - DAY_MS + 3 * HOUR_MS + 30 * MINUTE_MS, D, Consistency.QUORUM);
    expect(before).toEqual({ ok: true, stats: [[0, 0, null, null]], answered: [[D - DAY_MS + 4 * HOUR_MS, D]] });
    expect(read(sim, coordinator, D - DAY_MS, D, Consistency.QUORUM)).toEqual({ ok: true, stats: [[300, 300, 1, 1]] });

    // Past midnight: day D's minutes and the day before's hours have gone from every live disk.
    while (sim.epochMs + sim.nowMs < MIDNIGHT + 5_000) sim.run(100);
    for (const n of sim.alive()) expect(expiredOnDisk(sim, n.id), n.id).toEqual([]);
    // A read with its start in day D's minutes is answered from 11:00 and says so: 37 minutes of
    // day D (11:00 to 11:36) at 20, and yesterday's 60.
    const clipped = read(sim, coordinator, edge, MIDNIGHT, Consistency.QUORUM);
    expect(clipped).toEqual({ ok: true, stats: [[800, 800, 1, 1]], answered: [[D + 11 * HOUR_MS, MIDNIGHT]] });

    // The replica that was down comes back: hints replay, anti-entropy runs everywhere, reads at
    // `all` repair what differs. Nothing expired comes back to any disk.
    sim.start(down);
    sim.run(10_000);
    for (const n of sim.alive()) sim.repair(n.id, () => {});
    sim.run(20_000);
    expect(read(sim, coordinator, D, MIDNIGHT, Consistency.ALL)).toEqual({ ok: true, stats: [[1260, 1260, 1, 1]] });
    expect(read(sim, down, D - DAY_MS, MIDNIGHT, Consistency.ALL)).toEqual({ ok: true, stats: [[1560, 1560, 1, 1]] });
    sim.run(5_000);
    for (const n of sim.alive()) expect(expiredOnDisk(sim, n.id), n.id).toEqual([]);
    // What is kept, the down replica has now: day and hour buckets of D, and yesterday's minutes.
    const kept = [...sim.node(down).disk.all().keys()].map((k) => k.split('\u0000').slice(0, 2).join(' '));
    expect(kept.filter((k) => k.startsWith('m ')).length).toBe(60);
    expect(kept.filter((k) => k.startsWith('h ')).length).toBe(2 + 1);
  });
});
