/**
 * Reads under simulation, on the composed core: ranges whose answers do not fit one replica
 * message, and read repair. Each test prints its seed and replay command on failure (SIM_SEED pins
 * one).
 */
import { describe, expect } from 'vitest';
import type { CoreReply } from '../../cluster/node-core.js';
import { DAY_MS, HOUR_MS } from '../../cluster/time-buckets.js';
import { Consistency, type EventTuple, type QueryTuple } from '../../protocol/messages.js';
import { EPOCH_MS, ReplicationSim } from './replication-sim.js';
import { PeerMessageType, type PeerMessage } from '../../protocol/peer.js';
import { simTest } from './sim-seed.js';
import { MAX_TIME_MS } from '../../protocol/limits.js';

const FILE = 'test/sim/reads.test.ts';

function request(sim: ReplicationSim, send: (done: (r: CoreReply) => void) => void): CoreReply {
  let reply: CoreReply | undefined;
  send((r) => (reply = r));
  const t0 = sim.nowMs;
  while (reply === undefined && sim.nowMs - t0 < 10_000) sim.run(5);
  if (reply === undefined) throw new Error('no reply');
  return reply;
}

function read(sim: ReplicationSim, via: string, queries: QueryTuple[], cl: Consistency): CoreReply {
  return request(sim, (done) => sim.read(via, queries, cl, (o) => o.kind === 'reply' && done(o.reply)));
}

function write(sim: ReplicationSim, via: string, events: EventTuple[], batch: string): CoreReply {
  return request(sim, (done) => sim.write(via, events, Consistency.ALL, batch, (o) => o.kind === 'reply' && done(o.reply)));
}

describe('reads (simulation)', () => {
  simTest(FILE, 'a read or write refused for replicas down names the ones down, not every replica as if up', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    sim.crash('n3');
    const t0 = sim.nowMs;
    while (sim.node('n1').core!.membership.isUp('n3') && sim.nowMs - t0 < 20_000) sim.run(100);
    const day = Math.floor(EPOCH_MS / DAY_MS) * DAY_MS - DAY_MS;
    const r = read(sim, 'n1', [['v', 'view', day, day + DAY_MS]], Consistency.ALL);
    expect(r).toMatchObject({ ok: false, code: 'UNAVAILABLE' });
    expect(r.ok ? '' : r.message).toMatch(/^consistency all needs 3 replicas of "v"; 2 of its 3 replicas are up and not rebuilding \(not: n3\)$/);
    const w = write(sim, 'n1', [['v', 'view', day, 1, 1]], 'w-down');
    expect(w).toMatchObject({ ok: false, code: 'UNAVAILABLE' });
    expect(w.ok ? '' : w.message).toMatch(/^consistency all needs 3 replicas of "v"; 2 of its 3 replicas are up \(down: n3\); nothing was applied$/);
  });

  simTest(FILE, 'a count to 2100 asks for no day past the last one an event may be in, and counts an event of tomorrow', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    // An event 23 hours ahead of the clock (the edge takes up to 24): it must still be counted.
    const now = sim.epochMs + sim.nowMs;
    const ahead = now + 23 * HOUR_MS;
    const today = Math.floor(now / DAY_MS) * DAY_MS;
    expect(write(sim, 'n1', [['v', 'view', today, 1, 2], ['v', 'view', ahead, 1, 3]], 'w-ahead')).toMatchObject({ ok: true });
    const send = sim.net.send.bind(sim.net);
    let latest = 0;
    let buckets = 0;
    sim.net.send = (from: string, to: string, msg: PeerMessage): void => {
      if (msg.t === PeerMessageType.READ) {
        for (const [, , res, start, end] of msg.spans) {
          latest = Math.max(latest, end);
          buckets += (end - start) / (res === 'd' ? DAY_MS : res === 'h' ? HOUR_MS : 60_000);
        }
      }
      send(from, to, msg);
    };
    expect(read(sim, 'n1', [['v', 'view', today, MAX_TIME_MS]], Consistency.ALL)).toEqual({ ok: true, stats: [[5, 5, 1, 1]] });
    sim.net.send = send;
    // Two replicas asked, each for the days up to two days past tomorrow: not 75 years of them.
    expect(latest).toBeGreaterThan(ahead);
    expect(latest).toBeLessThanOrEqual(today + 4 * DAY_MS);
    expect(buckets).toBeLessThanOrEqual(2 * 4);
  });

  simTest(FILE, 'a range of years whose day buckets each hold a slot of every replica is counted at every level', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    // One event a day for three years, each day's written once through every node: every day
    // bucket holds three slots, so a replica's answer for 1,024 days holds 3,072.
    const today = Math.floor(EPOCH_MS / DAY_MS) * DAY_MS;
    const days = 3 * 365;
    const first = today - days * DAY_MS;
    for (const [i, node] of sim.nodes.entries()) {
      for (let d = 0; d < days; d += 1_000) {
        const events: EventTuple[] = [];
        for (let k = d; k < Math.min(days, d + 1_000); k++) events.push(['old', 'view', first + k * DAY_MS + 3_600_000, 1, 1]);
        expect(write(sim, node.id, events, `b${i}-${d}`)).toMatchObject({ ok: true });
      }
    }
    for (const cl of [Consistency.ONE, Consistency.QUORUM, Consistency.ALL]) {
      expect(read(sim, 'n1', [['old', 'view', first, today]], cl), cl).toEqual({ ok: true, stats: [[3 * days, 3 * days, 1, 1]] });
    }
  });

  simTest(FILE, "a replica's answer holding slots outside the buckets asked for counts none of them, and repairs no one with them", (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    const day = Math.floor(EPOCH_MS / DAY_MS) * DAY_MS - DAY_MS;
    expect(write(sim, 'n1', [['v', 'view', day + HOUR_MS, 5, 2]], 'w1')).toMatchObject({ ok: true });
    // n2 answers every read with a slot of the bucket after the span it was asked for, and one
    // not aligned to the span's resolution, besides what it holds.
    const send = sim.net.send.bind(sim.net);
    sim.net.send = (from: string, to: string, msg: PeerMessage): void => {
      if (to !== 'n2' || msg.t !== PeerMessageType.READ) return send(from, to, msg);
      const [, , res, start, end] = msg.spans[0]!;
      const slots = [
        [0, end, 'n9#00000001', 7, 7, 1, 1],
        [0, start + 1, 'n9#00000001', 7, 7, 1, 1],
        [0, start, 'n1#00000001', 2, 10, 5, 5],
      ] as const;
      expect(res).toBe('d');
      send('n2', from, { t: PeerMessageType.READ_REPLY, id: msg.id, slots: slots.map((x) => [...x]) } as PeerMessage);
    };
    for (const cl of [Consistency.QUORUM, Consistency.ALL]) {
      expect(read(sim, 'n1', [['v', 'view', day, day + DAY_MS]], cl), cl).toEqual({ ok: true, stats: [[2, 10, 5, 5]] });
    }
    sim.net.send = send;
    sim.run(2_000);
    for (const n of sim.nodes) expect([...n.disk.all().keys()].filter((k) => k.includes('n9#')), n.id).toEqual([]);
  });
});
