/**
 * Replication under simulation, on the composed core the node runs: simulated clients write and
 * read through five nodes (RF 3) while the network loses, duplicates and reorders messages, nodes
 * crash and restart, freeze, and are cut off one way or both.
 *
 * Safety, checked at every read (Jepsen's counter checks):
 * - a `quorum` read sees at least every increment acknowledged at `quorum` or `all` before it began;
 * - no read sees more than was attempted before it ended (a write refused with UNAVAILABLE,
 *   OVERLOADED or BAD_REQUEST applied nothing, so it is not counted as attempted);
 * - a `quorum` read sees at least what any `quorum` read that ended before it began saw (counts
 *   never go down);
 * - no store write ever lowers a slot (asserted by the simulator on every commit), though most
 *   writes take new slots as absent without reading them (cluster/written-filter.ts).
 * Clients retry a write whose outcome is unknown with the same batch id, so the upper bound also
 * checks that a retry is never counted twice.
 * Liveness, after healing: with the network clean and every node up, within 15 s of simulated time
 * hints (including those a restarted node makes from its replication journal), rebuilds and
 * anti-entropy leave every replica of every bucket holding the same slots, with no read; then an
 * `all` read of every bucket says a total within the bounds.
 * Each test prints its seed and replay command on failure (SIM_SEED pins one).
 */
import { describe, expect } from 'vitest';
import type { CoreReply } from '../../cluster/node-core.js';
import { DAY_MS } from '../../cluster/time-buckets.js';
import { Consistency, type EventTuple } from '../../protocol/messages.js';
import { divergence, ReplicationSim, type RequestOutcome } from './replication-sim.js';
import { report, simTest } from './sim-seed.js';
import { EVERY_BUCKET, T0, WINDOW_MS, workload } from './workload.js';

const FILE = 'test/sim/replication.test.ts';

/** One fault at a time, each healed after a while: crashes, freezes, partitions. */
function faults(sim: ReplicationSim, untilMs: number, counts: Record<string, number>, faultLog: string[]): void {
  const rng = sim.rng.fork();
  const ids = sim.nodes.map((n) => n.id);
  const nextFault = (): void => {
    if (sim.nowMs >= untilMs) return;
    const victim = rng.pick(ids);
    const others = ids.filter((i) => i !== victim);
    const lasts = 500 + rng.next() * 4000;
    const kind = rng.pick(['crash', 'wipe', 'pause', 'isolate', 'one-way', 'split'] as const);
    counts[`fault ${kind}`] = (counts[`fault ${kind}`] ?? 0) + 1;
    faultLog.push(`t=${sim.nowMs.toFixed(0)} ${kind} ${victim} for ${lasts.toFixed(0)} ms`);
    switch (kind) {
      case 'crash':
        sim.crash(victim);
        sim.queue.schedule(sim.nowMs + lasts, () => sim.start(victim));
        break;
      case 'wipe':
        // The disk is lost: the node comes back as a new actor, empty, and must be sent its ranges.
        sim.crash(victim);
        sim.wipe(victim);
        sim.queue.schedule(sim.nowMs + lasts, () => sim.start(victim));
        break;
      case 'pause':
        sim.pause(victim, lasts);
        break;
      case 'isolate':
        sim.net.partition([victim], others);
        sim.queue.schedule(sim.nowMs + lasts, () => sim.net.heal());
        break;
      case 'one-way':
        sim.net.partition([victim], others, true);
        sim.queue.schedule(sim.nowMs + lasts, () => sim.net.heal());
        break;
      case 'split': {
        const half = rng.shuffle([...ids]);
        sim.net.partition(half.slice(0, 2), half.slice(2));
        sim.queue.schedule(sim.nowMs + lasts, () => sim.net.heal());
        break;
      }
    }
    sim.queue.schedule(sim.nowMs + lasts + 500 + rng.next() * 2000, nextFault);
  };
  sim.queue.schedule(sim.nowMs + 2000, nextFault);
}

function runScenario(seed: number, opts: { faultMs: number; loss: number }): void {
  const sim = new ReplicationSim({
    seed,
    nodes: 5,
    network: { minDelayMs: 0.2, maxDelayMs: 5, lossRate: opts.loss, duplicateRate: opts.loss, reorderRate: 0.05, reorderDelayMs: 30 },
    // Every node compares with its next peer each 2 s: a full round of all pairs in the 15 s of healing.
    replication: { repairIntervalMs: 2_000 },
  });
  sim.startAll();
  sim.settle(); // membership converges, the later nodes are sent their (empty) ranges
  expect(sim.alive().every((n) => n.core?.membership.liveMembers().length === 5)).toBe(true);
  const faultEnd = sim.nowMs + opts.faultMs;
  const counts: Record<string, number> = {};
  const run = workload(sim, 12, 6, () => faultEnd);
  const faultLog: string[] = [];
  faults(sim, faultEnd - 3000, counts, faultLog);
  sim.run(opts.faultMs);
  expect(run.violations, `${run.violations.slice(0, 5).join('\n')}\nfaults:\n${faultLog.join('\n')}`).toEqual([]);

  // Liveness: heal, everyone up, clean network; hints replay.
  sim.net.heal();
  sim.net.options = { ...sim.net.options, lossRate: 0, duplicateRate: 0, reorderRate: 0 };
  for (const n of sim.nodes) if (n.core === undefined) sim.start(n.id);
  sim.run(15_000);
  // Hints (and the journal of commits a crash cut short), the rebuild of wiped nodes and
  // anti-entropy bring every replica level with no read: a wiped disk took the hints it held for
  // others, and anti-entropy between the survivors heals what those hints were for. (A node may
  // hold buckets it does not replicate: while a wiped node was rebuilt, writes also went to the
  // replicas its keys had without it.)
  const healed = divergence(sim, true);
  expect(healed, `with no read: ${healed.slice(0, 5).join('\n')}\nfaults:\n${faultLog.join('\n')}`).toEqual([]);
  // An `all` read of every bucket: the day's count is the series' total.
  const finals = new Map<string, number>();
  for (const s of run.series) {
    sim.read(sim.nodes[0]!.id, EVERY_BUCKET.map(([a, b]) => [s.id, 'view', a, b]), Consistency.ALL, (o) => {
      if (o.kind === 'reply' && o.reply.ok) finals.set(s.id, (o.reply.stats?.at(-1) ?? [NaN])[0]);
    });
  }
  sim.run(5_000);
  expect(finals.size, 'every series readable at all after healing').toBe(run.series.length);
  for (const s of run.series) {
    const v = finals.get(s.id) as number;
    expect(v, `${s.id} after healing`).toBeGreaterThanOrEqual(s.ackedQuorum);
    expect(v, `${s.id} after healing`).toBeLessThanOrEqual(s.attempted);
  }
  const diverged = divergence(sim, true);
  expect(diverged, `${diverged.slice(0, 5).join('\n')}\nfaults:\n${faultLog.join('\n')}`).toEqual([]);
  for (const [k, v] of Object.entries({ ...run.counts, ...counts })) report(k, v);

  expect((run.counts['write ok quorum'] ?? 0) > 50, 'the workload made progress').toBe(true);
  // Slots taken as absent without a read (cluster/written-filter.ts) were among those written: had
  // one been stored after all, the add or join on top of it would have lowered it, which the
  // simulator refuses on every commit. Reads of the store were still needed after restarts.
  const slots = sim.alive().map((n) => n.core!.stats().slots);
  expect(slots.reduce((a, s) => a + s.knownAbsent, 0), 'slots known absent without a read').toBeGreaterThan(0);
  expect(slots.reduce((a, s) => a + s.loaded, 0), 'slots read back from the store').toBeGreaterThan(0);
  // Commits were pipelined: some were made while the one before was still being written.
  expect(sim.nodes.reduce((a, n) => a + n.pipelinedCommits, 0), 'commits made while one was under way').toBeGreaterThan(0);
}

/** Seeds per scenario in one run (SIM_RUNS); a failure names the seed that failed. */
const RUNS = Number(process.env['SIM_RUNS'] ?? 3);

/** Runs `body` for `RUNS` consecutive seeds from `seed` (one when SIM_SEED pins it), so each run covers several schedules. */
function seeds(seed: number, body: (seed: number) => void): void {
  const runs = process.env['SIM_SEED'] === undefined ? RUNS : 1;
  for (let i = 0; i < runs; i++) {
    try {
      body(seed + i);
    } catch (err) {
      throw new Error(`with seed ${seed + i}: ${(err as Error).message}`, { cause: err });
    }
  }
}

describe('replication on the composed core', () => {
  simTest(FILE, 'quorum reads see every acknowledged write, never more than attempted, never less than before; replicas converge (clean network, crashes, freezes, partitions)', (seed) => {
    seeds(seed, (s) => runScenario(s, { faultMs: 30_000, loss: 0 }));
  }, 120_000);

  simTest(FILE, 'the same under 2% loss and duplication, with reordering', (seed) => {
    seeds(seed, (s) => runScenario(s, { faultMs: 30_000, loss: 0.02 }));
  }, 120_000);

  simTest(FILE, 'with a slot cache far smaller than what is written, an evicted slot is read back, never taken as absent: every count is exact', (seed) => {
    // Ten slots held at most: each write's slots are evicted soon after its commit, and the next
    // write to them must find them in the store (the written filter says "maybe" for every slot
    // committed once, however long ago), or it would start them from nothing and lower the count.
    const sim = new ReplicationSim({ seed, nodes: 3, replication: { maxCachedSlots: 10 } });
    sim.startAll();
    sim.settle();
    const videos = ['ev-a', 'ev-b', 'ev-c', 'ev-d', 'ev-e', 'ev-f'];
    const acked: EventTuple[] = [];
    for (let round = 0; round < 30; round++) {
      const events = Array.from({ length: 8 }, (): EventTuple => [sim.rng.pick(videos), 'view', T0 + sim.rng.int(WINDOW_MS), 1, 1 + sim.rng.int(3)]);
      sim.write(sim.rng.pick(['n1', 'n2', 'n3']), events, Consistency.QUORUM, `ev-${round}`, (o) => {
        if (o.kind === 'reply' && o.reply.ok) acked.push(...events);
      });
      sim.run(150);
    }
    sim.run(2_000);
    expect(acked.length).toBe(30 * 8);
    for (const v of videos) {
      for (const [from, to] of EVERY_BUCKET) {
        let got = -1;
        sim.read(sim.rng.pick(['n1', 'n2', 'n3']), [[v, 'view', from, to]], Consistency.QUORUM, (o) => {
          if (o.kind === 'reply' && o.reply.ok) got = (o.reply.stats?.[0] ?? [NaN])[0];
        });
        sim.run(200);
        const want = acked.filter(([id, , t]) => id === v && t >= from && t < to).reduce((a, e) => a + e[4], 0);
        expect(got, `${v} [${from - T0}, ${to - T0})`).toBe(want);
      }
    }
    // The cache did spill: slots were evicted and read back from the store.
    for (const n of sim.alive()) expect(n.core!.stats().slots.loaded, n.id).toBeGreaterThan(0);
  });

  simTest(FILE, 'a batch retried after its coordinator crashed between commit and reply is counted once', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    let first: RequestOutcome | undefined;
    sim.write('n1', [['crashy', 'view', T0, 1, 7]], Consistency.QUORUM, 'retry-me', (o) => (first = o));
    // Run until n1's commit of the batch is on its disk, then kill it before it can answer.
    const committed = (): boolean => sim.node('n1').disk.batches.has('retry-me');
    while (!committed()) sim.run(0.1);
    sim.crash('n1');
    sim.run(500);
    expect(first).toEqual({ kind: 'lost' });
    sim.start('n1');
    sim.run(3_000);
    let retry: RequestOutcome | undefined;
    sim.write('n1', [['crashy', 'view', T0, 1, 7]], Consistency.QUORUM, 'retry-me', (o) => (retry = o));
    sim.run(2_000);
    expect(retry).toMatchObject({ kind: 'reply', reply: { ok: true } });
    let all = -1;
    sim.read('n2', [['crashy', 'view', T0, T0 + DAY_MS]], Consistency.ALL, (o) => {
      if (o.kind === 'reply' && o.reply.ok) all = (o.reply.stats?.[0] ?? [NaN])[0];
    });
    sim.run(1_000);
    expect(all).toBe(7);
    expect(sim.node('n1').core!.stats().dedupe.repeats).toBe(1);
  });

  simTest(FILE, 'a commit made on top of one that fails is not written either, so no event reaches the disk without its batch id', (seed) => {
    // Commit 2, made while commit 1 is written, holds the hot bucket's value with commit 1's event
    // in it. Were it written when commit 1 failed, a crash would leave that event on disk without
    // its batch id, and the client's retry of it (same id, same node) would count it twice.
    const sim = new ReplicationSim({ seed, nodes: 1, rf: 1, storeDelayMs: [20, 20] });
    sim.startAll();
    sim.settle();
    const n1 = sim.node('n1');
    n1.failCommits = 1;
    const outcomes = new Map<string, RequestOutcome>();
    sim.write('n1', [['hot', 'view', T0, 1, 1]], Consistency.ONE, 'B1', (o) => outcomes.set('B1', o));
    while (n1.commitsInFlight === 0) sim.run(0.05);
    // Enough slots for a commit of its own while the first is written (a share of commitAtDirty).
    const many: EventTuple[] = [['hot', 'view', T0, 1, 1], ...Array.from({ length: 2_000 }, (_, i): EventTuple => [`f${i}`, 'view', T0, 1, 1])];
    sim.write('n1', many, Consistency.ONE, 'B2', (o) => outcomes.set('B2', o));
    while (!outcomes.has('B1') || !outcomes.has('B2')) sim.run(0.05);
    expect(n1.pipelinedCommits, 'the second commit was made while the first was written').toBeGreaterThan(0);
    // Both of unknown outcome: the events stay in memory, for a later commit.
    expect(outcomes.get('B1')).toMatchObject({ kind: 'reply', reply: { ok: false, code: 'STORAGE_FULL' } });
    expect(outcomes.get('B2')).toMatchObject({ kind: 'reply', reply: { ok: false, code: 'STORAGE_FULL' } });
    // Nothing of either is on disk: no event without its batch id.
    expect(n1.disk.batches.size).toBe(0);
    sim.crash('n1');
    sim.run(100);
    sim.start('n1');
    sim.run(3_000);
    let retry: RequestOutcome | undefined;
    sim.write('n1', [['hot', 'view', T0, 1, 1]], Consistency.ONE, 'B1', (o) => (retry = o));
    sim.run(1_000);
    expect(retry).toMatchObject({ kind: 'reply', reply: { ok: true } });
    let hot = -1;
    sim.read('n1', [['hot', 'view', T0, T0 + DAY_MS]], Consistency.ONE, (o) => {
      if (o.kind === 'reply' && o.reply.ok) hot = (o.reply.stats?.[0] ?? [NaN])[0];
    });
    sim.run(1_000);
    // B1 once; B2's events were lost with the crash (its outcome was unknown): never B1 twice.
    expect(hot).toBe(1);
  });

  simTest(FILE, 'a retry of a forwarded batch waits for the record of where it went, so after a crash it goes nowhere else', (seed) => {
    // n1 holds no replica of the video: it sends the batch on, and records durably to which
    // replica first. A retry while that record was still on its way to the disk was sent on at
    // once; n1 crashed before the record landed, and once back, with that replica down, it sent
    // the batch to another replica, which counted it again.
    const sim = new ReplicationSim({ seed, nodes: 4, rf: 3, network: { lossRate: 0, duplicateRate: 0, reorderRate: 0 }, storeDelayMs: [300, 300] });
    sim.startAll();
    sim.settle();
    const core = sim.node('n1').core!;
    const video = Array.from({ length: 1_000 }, (_, i) => `v${i}`).find((v) => !core.replicasOf(v).includes('n1')) as string;
    const replicas = core.replicasOf(video);
    const ev: EventTuple[] = [[video, 'view', T0, 1, 1]];
    sim.write('n1', ev, Consistency.ONE, 'B1', () => {});
    sim.run(50);
    // The client retries (its connection dropped, say) while the record is being committed.
    sim.write('n1', ev, Consistency.ONE, 'B1', () => {});
    sim.run(100);
    sim.crash('n1');
    sim.run(400);
    // The replica it went to is down when n1 is back and the client retries once more.
    sim.crash(replicas[0] as string);
    sim.start('n1');
    sim.run(3_000);
    sim.write('n1', ev, Consistency.ONE, 'B1', () => {});
    sim.run(2_000);
    sim.start(replicas[0] as string);
    sim.run(15_000);
    let all = -1;
    sim.read(replicas[1] as string, [[video, 'view', T0, T0 + DAY_MS]], Consistency.ALL, (o) => {
      if (o.kind === 'reply' && o.reply.ok) all = (o.reply.stats?.[0] ?? [NaN])[0];
    });
    sim.run(2_000);
    expect(all, 'B1 counted once at most (or not at all: every attempt of unknown outcome)').toBeLessThanOrEqual(1);
    expect(all).toBeGreaterThanOrEqual(0);
  });

  simTest(FILE, 'batch ids given up at the cap before their time are said in the log, and are then taken again', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 1, rf: 1, replication: { maxDedupeEntries: 3 } });
    sim.startAll();
    sim.settle();
    // One after another, so c:0 is the oldest.
    for (let i = 0; i < 6; i++) {
      sim.write('n1', [['capped', 'view', T0, 1, 1]], Consistency.ONE, `c:${i}`, () => {});
      sim.run(100);
    }
    sim.run(2_000);
    expect(sim.log.filter((l) => l.includes('applied batch ids are given up at the cap of 3'))).toHaveLength(1);
    // The proof that the warning is due: the first id, given up, is applied again.
    const repeats = sim.node('n1').core!.stats().dedupe.repeats;
    let again: RequestOutcome | undefined;
    sim.write('n1', [['capped', 'view', T0, 1, 1]], Consistency.ONE, 'c:0', (o) => (again = o));
    sim.run(1_000);
    expect(again).toMatchObject({ kind: 'reply', reply: { ok: true } });
    expect(sim.node('n1').core!.stats().dedupe.repeats).toBe(repeats);
  });

  simTest(FILE, 'a node wiped soon after a restart with its clock ahead is taken as a new actor and rebuilt, not ignored as older', (seed) => {
    // Generations come from the wall clock, above the last one the data directory recorded. A
    // restart with the clock 5 s ahead leaves peers holding a generation 5 s in the future; wiped
    // then, the node has no record to start above and starts below it. Peers would keep its old
    // process's state (its old actor, not rebuilding), never send it its ranges, and count it for
    // reads while it is empty.
    const sim = new ReplicationSim({ seed, nodes: 5 });
    sim.startAll();
    sim.settle();
    const events = Array.from({ length: 60 }, (_, i): EventTuple => [`behind-${i}`, 'view', T0, 1, 1]);
    let acked = false;
    sim.write('n1', events, Consistency.QUORUM, undefined, (o) => (acked = o.kind === 'reply' && o.reply.ok));
    sim.run(1_000);
    expect(acked).toBe(true);
    sim.crash('n3');
    sim.start('n3', { clockOffsetMs: 5_000 });
    sim.run(1_000);
    sim.crash('n3');
    sim.wipe('n3');
    sim.start('n3');
    const actor = sim.actorOf(sim.node('n3'));
    sim.settle(20_000);
    for (const n of sim.alive()) expect(n.core!.membership.stateOf('n3')?.actor, `${n.id}'s view of n3`).toBe(actor);
    // Rebuilt: n3's disk alone holds every event of the keys it replicates.
    const mine = events.filter(([v]) => sim.node('n1').core!.replicasOf(v).includes('n3'));
    expect(mine.length).toBeGreaterThan(0);
    const day = T0 - (T0 % DAY_MS);
    for (const [videoId] of mine) expect(sim.node('n3').disk.count({ videoId, eventType: 'view', res: 'd', start: day }), videoId).toBe(1);
  });

  simTest(FILE, 'a failed store read fails every write waiting on it at once, not only the one that asked for it', (seed) => {
    // Several schedules: whether the second write arrives before the read fails depends on the seed.
    seeds(seed, (seed) => {
      const sim = new ReplicationSim({ seed, nodes: 3 });
      sim.startAll();
      sim.settle();
      sim.write('n1', [['before', 'view', T0, 1, 1]], Consistency.QUORUM, undefined, () => {});
      sim.run(1_000);
      // Restarted, n1's store may hold slots of T0's buckets (it wrote some before), so a write to a
      // video it has not written since reads its slots first.
      sim.crash('n1');
      sim.start('n1');
      sim.settle();
      sim.node('n1').failLoadOf = 'loaded';
      const outcomes: RequestOutcome[] = [];
      const t0 = sim.nowMs;
      let last = 0;
      for (const batch of ['first', 'second']) {
        sim.write('n1', [['loaded', 'view', T0, 1, 1]], Consistency.QUORUM, batch, (o) => {
          outcomes.push(o);
          last = sim.nowMs - t0;
        });
      }
      sim.run(10_000);
      // A write that waited on the read that failed is told so at once (nothing applied); one that
      // arrived after it (the network's delays depend on the seed) reads again and is applied.
      // Neither waits out the 4 s write timeout.
      expect(outcomes).toHaveLength(2);
      const failedRead = outcomes.filter((o) => o.kind === 'reply' && !o.reply.ok && o.reply.code === 'INTERNAL' && /store read failed/.test(o.reply.message ?? ''));
      expect(failedRead.length, JSON.stringify(outcomes)).toBeGreaterThanOrEqual(1);
      for (const o of outcomes) if (!failedRead.includes(o)) expect(o).toMatchObject({ kind: 'reply', reply: { ok: true } });
      expect(last).toBeLessThan(1_000);
    });
  });

  simTest(FILE, 'a store read that finds the database damaged fails the writes waiting on it with STORAGE_DAMAGED', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    sim.write('n1', [['damaged-read', 'view', T0, 1, 1]], Consistency.QUORUM, undefined, () => {});
    sim.run(1_000);
    sim.crash('n1');
    sim.start('n1');
    sim.settle();
    sim.node('n1').failLoadOf = 'damaged-read';
    sim.node('n1').failLoadCode = 'STORAGE_DAMAGED';
    const outcomes: RequestOutcome[] = [];
    sim.write('n1', [['damaged-read', 'view', T0, 1, 1]], Consistency.QUORUM, 'b', (o) => outcomes.push(o));
    sim.run(2_000);
    expect(outcomes).toMatchObject([{ kind: 'reply', reply: { ok: false, code: 'STORAGE_DAMAGED' } }]);
  });

  /** The slot of `actor` in the day bucket of T0 of `videoId` on node `n`'s disk. */
  const dayCount = (sim: ReplicationSim, n: string, videoId: string, actor: string): number | undefined =>
    sim.node(n).disk.get({ videoId, eventType: 'view', res: 'd', start: T0 - (T0 % DAY_MS) }, actor)?.count;
  const hinted = (sim: ReplicationSim, n: string): number => sim.node(n).core?.stats().replication.hinted ?? NaN;

  simTest(FILE, 'replicas that are up but slow to commit are waited for: their late acks count for an `all` write, and nothing is hinted', (seed) => {
    // Every store operation takes 2-2.5 s, so a replica acknowledges a replicated commit well
    // after replAckTimeoutMs (1 s). Hinting it then would only add work to a loaded replica, and
    // its ack, when it came, would no longer count: the write would time out.
    const sim = new ReplicationSim({ seed, nodes: 3, storeDelayMs: [2_000, 2_500], replication: { writeTimeoutMs: 9_000 } });
    sim.startAll();
    sim.settle(60_000);
    const before = ['n1', 'n2', 'n3'].map((n) => hinted(sim, n));
    const events = Array.from({ length: 50 }, (_, i): EventTuple => [`slow-${i}`, 'view', T0, 1, 1]);
    let outcome: RequestOutcome | undefined;
    sim.write('n1', events, Consistency.ALL, 'slow', (o) => (outcome = o));
    sim.run(9_500);
    expect(outcome).toMatchObject({ kind: 'reply', reply: { ok: true, n: 50 } });
    expect(['n1', 'n2', 'n3'].map((n) => hinted(sim, n))).toEqual(before);
  });

  simTest(FILE, 'a replica whose messages are lost while it is seen up is hinted after replAckMaxWaitMs; a frozen one as soon as it is seen down', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3, replication: { replAckMaxWaitMs: 10_000 } });
    sim.startAll();
    sim.settle();
    const actor = sim.actorOf(sim.node('n1'));
    // n1's messages to n2 are lost, while n2's gossip still reaches n1: n1 holds n2 up.
    sim.net.partition(['n1'], ['n2'], true);
    let lost: RequestOutcome | undefined;
    sim.write('n1', [['lost', 'view', T0, 1, 1]], Consistency.QUORUM, 'lost', (o) => (lost = o));
    sim.run(5_000);
    expect(lost).toMatchObject({ kind: 'reply', reply: { ok: true } });
    expect(sim.node('n1').core?.view(sim.epochMs + sim.nowMs).find((m) => m.id === 'n2')?.status).toBe('up');
    expect(hinted(sim, 'n1')).toBe(0);
    sim.run(6_000);
    expect(hinted(sim, 'n1')).toBeGreaterThan(0);
    sim.net.heal();
    sim.run(10_000);
    expect(dayCount(sim, 'n2', 'lost', actor)).toBe(1);

    // A frozen replica stops gossiping: once n1 holds it down, what it did not ack is hinted,
    // long before replAckMaxWaitMs (set far off here).
    const sim2 = new ReplicationSim({ seed, nodes: 3, replication: { replAckMaxWaitMs: 60_000, hintWindowMs: 3_600_000 } });
    sim2.startAll();
    sim2.settle();
    const actor2 = sim2.actorOf(sim2.node('n1'));
    sim2.pause('n2', 30_000);
    let frozen: RequestOutcome | undefined;
    sim2.write('n1', [['frozen', 'view', T0, 1, 1]], Consistency.QUORUM, 'frozen', (o) => (frozen = o));
    let hintedAt = -1;
    const t0 = sim2.nowMs;
    for (let t = 0; t < 25_000 && hintedAt < 0; t += 250) {
      sim2.run(250);
      if (hinted(sim2, 'n1') > 0) hintedAt = sim2.nowMs - t0;
    }
    expect(frozen).toMatchObject({ kind: 'reply', reply: { ok: true } });
    expect(hintedAt).toBeGreaterThan(0);
    expect(hintedAt).toBeLessThan(25_000);
    sim2.run(40_000);
    expect(dayCount(sim2, 'n2', 'frozen', actor2)).toBe(1);
  });

  simTest(FILE, 'a replica sent only part of a commit (the rest hinted for want of room) does not count for its writes', (seed) => {
    // One message in flight per peer: a commit of 1,800 own slots goes out as two messages of at
    // most 1,500, and the second is hinted. A peer that acknowledges the first holds only part
    // of the write, so an `all` write must not be acknowledged on its word.
    const sim = new ReplicationSim({ seed, nodes: 3, replication: { maxReplInFlightPerPeer: 1 } });
    sim.startAll();
    sim.settle();
    const events = Array.from({ length: 600 }, (_, i): EventTuple => [`part-${i}`, 'view', T0, 1, 1]);
    const actor = sim.actorOf(sim.node('n1'));
    let outcome: RequestOutcome | undefined;
    let missingWhenAcked = -1;
    sim.write('n1', events, Consistency.ALL, 'big', (o) => {
      outcome = o;
      if (o.kind === 'reply' && o.reply.ok) {
        missingWhenAcked = 0;
        for (const n of ['n2', 'n3']) {
          for (const [videoId] of events) if (sim.node(n).disk.get({ videoId, eventType: 'view', res: 'd', start: T0 - (T0 % DAY_MS) }, actor) === undefined) missingWhenAcked++;
        }
      }
    });
    sim.run(10_000);
    expect(outcome).toBeDefined();
    // Acknowledged only with every replica holding every slot, or not acknowledged (its outcome unknown).
    if (outcome?.kind === 'reply' && outcome.reply.ok) expect(missingWhenAcked).toBe(0);
    else expect(outcome).toMatchObject({ kind: 'reply', reply: { ok: false, code: 'TIMEOUT' } });
    // The hints bring the rest: every replica holds every event in the end.
    for (const n of ['n2', 'n3']) {
      const held = events.filter(([videoId]) => sim.node(n).disk.get({ videoId, eventType: 'view', res: 'd', start: T0 - (T0 % DAY_MS) }, actor) !== undefined).length;
      expect(held, `${n} holds n1's slot of every video`).toBe(events.length);
    }
  });

  simTest(FILE, 'a coordinator holding as many events as it takes refuses more with OVERLOADED, applying nothing, and takes writes again once they finish', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3, replication: { maxInFlightEvents: 150 } });
    sim.startAll();
    sim.settle();
    const batch = (tag: string): EventTuple[] => Array.from({ length: 100 }, (_, i): EventTuple => [`${tag}-${i}`, 'view', T0, 1, 1]);
    const outcomes: Record<string, RequestOutcome> = {};
    sim.write('n1', batch('first'), Consistency.QUORUM, 'first', (o) => (outcomes.first = o));
    sim.write('n1', batch('second'), Consistency.QUORUM, 'second', (o) => (outcomes.second = o));
    sim.run(1_000);
    // Whichever reached n1 first was taken; the other was refused.
    const ok = Object.entries(outcomes).filter(([, o]) => o.kind === 'reply' && o.reply.ok).map(([k]) => k);
    expect(ok, JSON.stringify(outcomes)).toHaveLength(1);
    const refused = ok[0] === 'first' ? 'second' : 'first';
    expect(outcomes[refused]).toMatchObject({ kind: 'reply', reply: { ok: false, code: 'OVERLOADED', message: expect.stringMatching(/100 events are being written, the limit is 150/) } });
    // Nothing of the refused write was applied; once the first is done, a third is taken.
    let seen = -1;
    sim.read('n2', [[`${refused}-0`, 'view', T0, T0 + DAY_MS]], Consistency.ALL, (o) => {
      if (o.kind === 'reply' && o.reply.ok) seen = (o.reply.stats?.[0] ?? [NaN])[0] as number;
    });
    sim.write('n1', batch('third'), Consistency.QUORUM, 'third', (o) => (outcomes.third = o));
    sim.run(1_000);
    expect(seen).toBe(0);
    expect(outcomes.third).toMatchObject({ kind: 'reply', reply: { ok: true } });
  });

  simTest(FILE, 'a write that would pass 2^53 is refused whole, and the writes sharing its commit are not', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    const big: EventTuple = ['huge', 'watch_ms', T0, 1e9, 1_000_000]; // a sum of 10^15 per tuple
    let acked = 0;
    const outcomes: RequestOutcome[] = [];
    for (let i = 0; i < 12; i++) {
      // Each big write shares its commit with a small one of another series.
      sim.write('n1', [big], Consistency.QUORUM, `big${i}`, (o) => {
        outcomes.push(o);
        if (o.kind === 'reply' && o.reply.ok) acked++;
      });
      sim.write('n1', [['small', 'view', T0, 1, 1]], Consistency.QUORUM, `small${i}`, (o) => outcomes.push(o));
      sim.run(50);
    }
    sim.run(1_000);
    const refused = outcomes.filter((o) => o.kind === 'reply' && !o.reply.ok);
    expect(acked).toBe(9); // 9 × 10^15 fits under 2^53 ≈ 9.007 × 10^15; the tenth would not
    expect(refused).toHaveLength(3);
    for (const o of refused) expect(o).toMatchObject({ reply: { code: 'BAD_REQUEST', message: expect.stringMatching(/2\^53/) } });
    const read = (series: string, type: string): number[] => {
      let stats: number[] = [];
      sim.read('n2', [[series, type, T0, T0 + DAY_MS]], Consistency.QUORUM, (o) => {
        if (o.kind === 'reply' && o.reply.ok) stats = (o.reply.stats?.[0] ?? []) as number[];
      });
      sim.run(200);
      return stats;
    };
    expect(read('huge', 'watch_ms').slice(0, 2)).toEqual([9_000_000, 9e15]);
    expect(read('small', 'view')[0]).toBe(12);
  });

  simTest(FILE, 'a node that was down gets its hints replayed and catches up without any read', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    sim.crash('n3');
    sim.run(3_000);
    let acked = 0;
    for (let i = 0; i < 20; i++) {
      sim.write(sim.rng.pick(['n1', 'n2']), [[`v${i % 4}`, 'view', T0, 1, 5]], Consistency.QUORUM, `b${i}`, (o) => {
        if (o.kind === 'reply' && o.reply.ok) acked += 5;
      });
    }
    sim.run(2_000);
    expect(acked).toBe(100);
    const hinted = Object.values(sim.node('n1').core!.stats().hints).reduce((a, h) => a + h.pending, 0) + Object.values(sim.node('n2').core!.stats().hints).reduce((a, h) => a + h.pending, 0);
    expect(hinted).toBeGreaterThan(0);
    sim.start('n3');
    const t0 = sim.nowMs;
    while (divergence(sim).length > 0 && sim.nowMs - t0 < 10_000) sim.run(100);
    report('hint replay converged after ms', sim.nowMs - t0);
    expect(divergence(sim)).toEqual([]);
    let one = -1;
    sim.read('n3', [[`v0`, 'view', T0, T0 + DAY_MS]], Consistency.ONE, (o) => {
      if (o.kind === 'reply' && o.reply.ok) one = (o.reply.stats?.[0] ?? [NaN])[0];
    });
    sim.run(100);
    expect(one).toBe(25);
  });

  simTest(FILE, 'a read whose message cannot be sent asks another replica at once, not at its speculative threshold', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 3 });
    sim.startAll();
    sim.settle();
    let acked = false;
    sim.write('n1', [['sf', 'view', T0, 1, 4]], Consistency.ALL, undefined, (o) => (acked = o.kind === 'reply' && o.reply.ok));
    sim.run(500);
    expect(acked).toBe(true);
    // n1's links to both peers back off: a quorum read it coordinates can only fail, and at once.
    sim.backOff('n1', 'n2', sim.nowMs + 60_000);
    sim.backOff('n1', 'n3', sim.nowMs + 60_000);
    let reply: CoreReply | undefined;
    const t0 = sim.nowMs;
    sim.read('n1', [['sf', 'view', T0, T0 + DAY_MS]], Consistency.QUORUM, (o) => (reply = o.kind === 'reply' ? o.reply : undefined));
    while (reply === undefined && sim.nowMs - t0 < 10_000) sim.run(1);
    expect(reply).toMatchObject({ ok: false, code: 'UNAVAILABLE' });
    expect(sim.nowMs - t0).toBeLessThan(sim.replication.speculativeRetryMs);
    // One link backing off: the other replica is asked straight away, with no speculation.
    sim.backOff('n1', 'n2', 0);
    reply = undefined;
    sim.read('n1', [['sf', 'view', T0, T0 + DAY_MS]], Consistency.QUORUM, (o) => (reply = o.kind === 'reply' ? o.reply : undefined));
    sim.run(1_000);
    expect(reply).toMatchObject({ ok: true, stats: [[4, 4, 1, 1]] });
    expect(sim.node('n1').core!.stats().reads.speculative).toBe(0);
  });

  simTest(FILE, 'a read asks a replica that comes back up while it waits, rather than wait on a silent one to its timeout', (seed) => {
    // Seen with real processes: a node restarted within the connection-lost grace was marked down
    // a moment later, and a read that started then (another replica killed, not yet noticed) asked
    // the killed one and the third, and waited on the killed one until its timeout, though the
    // restarted one was back up a second later.
    const sim = new ReplicationSim({ seed, nodes: 4 });
    sim.startAll();
    sim.settle();
    const core = sim.node('n4').core!;
    let video = 0;
    while (core.replicasOf(`back${video}`).includes('n4')) video++;
    const id = `back${video}`;
    const [flapping, silent, live] = core.replicasOf(id) as [string, string, string];
    let acked = false;
    sim.write('n1', [[id, 'view', T0, 1, 5]], Consistency.ALL, undefined, (o) => (acked = o.kind === 'reply' && o.reply.ok));
    sim.run(500);
    expect(acked).toBe(true);
    // One replica stalls until n4 marks it down; another falls silent (not yet noticed) as the
    // read starts, just before the first wakes up again.
    sim.pause(flapping, 20_000);
    const frozeAt = sim.nowMs;
    while (core.membership.isUp(flapping) && sim.nowMs - frozeAt < 20_000) sim.run(10);
    expect(core.membership.isUp(flapping)).toBe(false);
    sim.run(frozeAt + 20_000 - 50 - sim.nowMs);
    sim.pause(silent, 20_000);
    let reply: CoreReply | undefined;
    const t0 = sim.nowMs;
    sim.read('n4', [[id, 'view', T0, T0 + DAY_MS]], Consistency.QUORUM, (o) => (reply = o.kind === 'reply' ? o.reply : undefined));
    let upAt: number | undefined;
    while (reply === undefined && sim.nowMs - t0 < 10_000) {
      sim.run(1);
      if (upAt === undefined && core.membership.isUp(flapping)) upAt = sim.nowMs;
    }
    expect(upAt).toBeDefined();
    expect(reply).toMatchObject({ ok: true, stats: [[5, 5, 1, 1]] });
    // Asked within a speculative step of being seen up again.
    expect(sim.nowMs - (upAt as number)).toBeLessThan(sim.replication.speculativeRetryMs + 100);
    expect(live).toBeDefined();
    sim.run(25_000);
  });

  simTest(FILE, 'speculation goes on to the next replica while the ones asked stay silent', (seed) => {
    const sim = new ReplicationSim({ seed, nodes: 4 });
    sim.startAll();
    sim.settle();
    const core = sim.node('n4').core!;
    let video = 0;
    while (core.replicasOf(`spec${video}`).includes('n4')) video++;
    const id = `spec${video}`;
    const replicas = core.replicasOf(id);
    let acked = false;
    sim.write('n1', [[id, 'view', T0, 1, 3]], Consistency.ALL, undefined, (o) => (acked = o.kind === 'reply' && o.reply.ok));
    sim.run(500);
    expect(acked).toBe(true);
    // Whichever replica is left answering, a read at `one` through n4 (no replica) finds it within
    // a few speculative steps, long before its timeout, while the others are frozen.
    for (const live of replicas) {
      for (const r of replicas) if (r !== live) sim.pause(r, 300);
      let reply: CoreReply | undefined;
      const t0 = sim.nowMs;
      sim.read('n4', [[id, 'view', T0, T0 + DAY_MS]], Consistency.ONE, (o) => (reply = o.kind === 'reply' ? o.reply : undefined));
      while (reply === undefined && sim.nowMs - t0 < 10_000) sim.run(1);
      expect(reply).toMatchObject({ ok: true, stats: [[3, 3, 1, 1]] });
      expect(sim.nowMs - t0).toBeLessThan(250);
      sim.run(1_000);
    }
  });
});
