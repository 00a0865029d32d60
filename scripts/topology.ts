/**
 * Ring changes with real node processes, real sockets and real LevelDB, checked like the chaos
 * runner checks a counter:
 * 1. three nodes (RF 3) are loaded with `events` increments over `videos` series, at `quorum`;
 * 2. while a writer goes on at `quorum` and readers check every `quorum` read (never below what
 *    was acknowledged before the read began, never above what was attempted before it ended),
 *    a 4th and a 5th node join, one at a time; then one node is decommissioned; then one is killed
 *    for good and removed with `removenode`;
 * 3. at the end every series is read at `one` from each of its replicas alone (the node reads
 *    itself): each must say exactly what was acknowledged (or, for a series with writes of unknown
 *    outcome, something within the bounds).
 * Used by `npm run measure:topology` (full size, prints the figures) and by
 * test/integration/topology.test.ts (a small run in `npm test`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { statusOf } from '../client/local-cluster.js';
import { TallyClient } from '../client/tally-client.js';
import { Consistency, TallyError } from '../protocol/index.js';
import { startArgs } from '../node/memory.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = existsSync(join(HERE, 'cli.js')) ? join(HERE, 'cli.js') : join(HERE, '../dist/scripts/cli.js');
/** Midnight six days ago: inside retention whatever the day. */
const T = Math.floor(Date.now() / 86_400_000) * 86_400_000 - 6 * 86_400_000;
const DAY = 86_400_000;
const NOTHING_APPLIED = new Set(['UNAVAILABLE', 'OVERLOADED', 'BAD_REQUEST', 'TOO_LARGE', 'NOT_READY']);

export interface TopologyOptions {
  events: number;
  videos: number;
  basePort: number;
  /** 80% of `events` are loaded before the ring changes; during them a writer goes on at `rate` events per second. */
  rate: number;
  log: (line: string) => void;
}

export interface TopologySummary {
  loadMs: number;
  steps: { step: string; ms: number }[];
  writes: Record<string, number>;
  reads: Record<string, number>;
  acknowledged: number;
  unknown: number;
  violations: string[];
  /** Series read at `one` from each replica at the end, and how many of those reads were wrong. */
  finalReads: number;
  finalWrong: number;
  finalRing: string[];
  repairSlotsSent: number;
}

class Nodes {
  readonly procs: (ChildProcess | undefined)[] = [];
  readonly out: string[] = [];
  constructor(
    readonly dir: string,
    readonly basePort: number,
  ) {}

  address(i: number): string {
    return `127.0.0.1:${this.basePort + i}`;
  }

  start(i: number): Promise<void> {
    const args = ['--port', String(this.basePort + i), '--data', join(this.dir, `n${i + 1}`), '--id', `n${i + 1}`, '--zone', `z${(i % 3) + 1}`, '--rf', '3', '--insecure'];
    if (i > 0) args.push('--seeds', this.address(0));
    const p = spawn(process.execPath, startArgs(CLI, args), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.procs[i] = p;
    this.out[i] = '';
    return new Promise((resolve, reject) => {
      const onData = (d: Buffer): void => {
        this.out[i] += d.toString();
        if ((this.out[i] as string).length > 200_000) this.out[i] = (this.out[i] as string).slice(-100_000);
        if ((this.out[i] as string).includes(' ready on ')) resolve();
      };
      p.stdout?.on('data', onData);
      p.stderr?.on('data', onData);
      p.once('exit', (code) => reject(new Error(`n${i + 1} exited (${code}):\n${this.out[i]}`)));
    });
  }

  async kill(i: number): Promise<void> {
    const p = this.procs[i];
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  /** Resolves with the exit code once node `i` has exited by itself. */
  exited(i: number): Promise<number | null> {
    const p = this.procs[i];
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return Promise.resolve(p?.exitCode ?? null);
    return new Promise((r) => p.once('exit', (code) => r(code)));
  }
}

async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await check().catch(() => false)) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new TallyError('TIMEOUT', `${what}: not within ${ms} ms`);
}

/** Every live node sees each of `live` up, none rebuilding, and no ring change under way. */
async function settled(nodes: Nodes, live: number[]): Promise<boolean> {
  const all = await Promise.all(live.map((i) => statusOf(nodes.address(i))));
  return all.every(
    (s) =>
      s.ringChange === undefined &&
      s.health.startsWith('healthy') &&
      live.every((j) => {
        const m = s.members.find((x) => x.id === `n${j + 1}`);
        return m?.status === 'up' && m.lifecycle === 'normal';
      }),
  );
}

export async function runTopology(o: TopologyOptions): Promise<TopologySummary> {
  const dir = await mkdtemp(join(tmpdir(), 'tally-topology-'));
  const nodes = new Nodes(dir, o.basePort);
  const summary: TopologySummary = { loadMs: 0, steps: [], writes: {}, reads: {}, acknowledged: 0, unknown: 0, violations: [], finalReads: 0, finalWrong: 0, finalRing: [], repairSlotsSent: 0 };
  const attempted = new Float64Array(o.videos);
  const acked = new Float64Array(o.videos);
  const unknownVideos = new Set<number>();
  const bump = (rec: Record<string, number>, k: string): void => void (rec[k] = (rec[k] ?? 0) + 1);
  const clients: TallyClient[] = [];
  try {
    for (let i = 0; i < 3; i++) await nodes.start(i);
    let live = [0, 1, 2];
    await until('three nodes up', 60_000, () => settled(nodes, live));
    const client = await TallyClient.connect({ nodes: live.map((i) => nodes.address(i)), consistency: Consistency.QUORUM });
    clients.push(client);

    // A batch of events over videos [from, from + n) (wrapping), one minute bucket each.
    let sent = 0;
    const batchOf = (n: number): { events: { videoId: string; timestamp: number }[]; per: Map<number, number> } => {
      const events: { videoId: string; timestamp: number }[] = [];
      const per = new Map<number, number>();
      for (let k = 0; k < n; k++, sent++) {
        const v = (sent * 7919) % o.videos;
        events.push({ videoId: `t-${v}`, timestamp: T + (sent % 1440) * 60_000 });
        per.set(v, (per.get(v) ?? 0) + 1);
      }
      return { events, per };
    };
    const write = async (n: number): Promise<void> => {
      const { events, per } = batchOf(n);
      for (const [v, c] of per) attempted[v] = (attempted[v] ?? 0) + c;
      try {
        await client.processEvents(events);
        for (const [v, c] of per) acked[v] = (acked[v] ?? 0) + c;
        summary.acknowledged += n;
        bump(summary.writes, 'ok');
      } catch (err) {
        const code = err instanceof TallyError ? err.code : 'ERROR';
        bump(summary.writes, code);
        if (NOTHING_APPLIED.has(code)) {
          for (const [v, c] of per) attempted[v] = (attempted[v] ?? 0) - c;
        } else {
          summary.unknown += n;
          for (const v of per.keys()) unknownVideos.add(v);
        }
      }
    };

    // 1. The load.
    const loadStart = Date.now();
    const initial = Math.floor(o.events * 0.8);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < initial) {
          const n = Math.min(1_000, initial - next);
          next += n;
          await write(n);
        }
      }),
    );
    summary.loadMs = Date.now() - loadStart;
    o.log(`loaded ${summary.acknowledged} of ${initial} events over ${o.videos} series in ${summary.loadMs} ms`);

    // 2. Writers and readers run on while the ring changes.
    let running = true;
    const writer = (async () => {
      const per = 100;
      while (running) {
        const t0 = Date.now();
        next += per;
        await write(per);
        const wait = (per / o.rate) * 1000 - (Date.now() - t0);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    })();
    const readers = Array.from({ length: 4 }, async (_, r) => {
      let k = r;
      while (running) {
        const v = (k++ * 104_729) % o.videos;
        const lower = acked[v] ?? 0;
        try {
          const value = await client.getViewsCount(`t-${v}`, T - DAY, T + 2 * DAY, { consistency: Consistency.QUORUM });
          bump(summary.reads, 'ok');
          const upper = attempted[v] ?? 0;
          if (value < lower) summary.violations.push(`quorum read of t-${v}: ${value}, below the ${lower} acknowledged before it began`);
          if (value > upper) summary.violations.push(`quorum read of t-${v}: ${value}, above the ${upper} attempted`);
        } catch (err) {
          bump(summary.reads, err instanceof TallyError ? err.code : 'ERROR');
        }
        await new Promise((res) => setTimeout(res, 5));
      }
    });
    const step = async (name: string, run: () => Promise<void>): Promise<void> => {
      const t0 = Date.now();
      await run();
      const ms = Date.now() - t0;
      summary.steps.push({ step: name, ms });
      o.log(`${name}: ${ms} ms`);
    };

    for (const i of [3, 4]) {
      await step(`n${i + 1} joins and is sent its ranges`, async () => {
        await nodes.start(i);
        live = [...live, i];
        await until(`n${i + 1} joined`, 600_000, () => settled(nodes, live));
      });
    }
    await step('n2 decommissioned (its ranges streamed to their new replicas, then it stops)', async () => {
      o.log(await client.changeRing(nodes.address(1), 'decommission'));
      const code = await Promise.race([nodes.exited(1), new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 600_000))]);
      if (code !== 0) throw new TallyError('INTERNAL', `n2 did not stop cleanly after its decommission (${String(code)}):\n${nodes.out[1]?.slice(-3000)}`);
      live = live.filter((i) => i !== 1);
      await until('n2 removed everywhere', 60_000, async () => (await Promise.all(live.map((i) => statusOf(nodes.address(i))))).every((s) => s.members.find((m) => m.id === 'n2')?.lifecycle === 'removed'));
    });
    await step('n3 killed for good and removed with removenode', async () => {
      await nodes.kill(2);
      live = live.filter((i) => i !== 2);
      await until('n3 seen down', 30_000, async () => (await Promise.all(live.map((i) => statusOf(nodes.address(i))))).every((s) => s.members.find((m) => m.id === 'n3')?.status === 'down'));
      o.log(await client.changeRing(nodes.address(0), 'removenode', 'n3'));
      await until('n3 removed everywhere', 600_000, async () =>
        (await Promise.all(live.map((i) => statusOf(nodes.address(i))))).every((s) => s.ringChange === undefined && s.members.find((m) => m.id === 'n3')?.lifecycle === 'removed'),
      );
    });
    running = false;
    await writer;
    await Promise.all(readers);
    o.log(`during the changes: writes ${JSON.stringify(summary.writes)}, reads ${JSON.stringify(summary.reads)}`);

    await until('the ring agreed', 60_000, () => settled(nodes, live));
    // 3. Every series at `one` from each of its replicas alone. First one anti-entropy round on each
    // node, for what a killed coordinator had not replicated everywhere (its hints died with it).
    for (const i of live) {
      // NOT_READY while a peer still gossips the ring from before the last change: a moment.
      for (let attempt = 1; ; attempt++) {
        try {
          const r = await client.repair(nodes.address(i));
          summary.repairSlotsSent += r.slotsSent;
          break;
        } catch (err) {
          if (!(err instanceof TallyError && err.code === 'NOT_READY') || attempt >= 20) throw err;
          await new Promise((res) => setTimeout(res, 500));
        }
      }
    }
    o.log(`a repair round on each node sent ${summary.repairSlotsSent} slots`);
    const ring = TallyClient.connect({ nodes: live.map((i) => nodes.address(i)) });
    const fresh = await ring;
    clients.push(fresh);
    summary.finalRing = [...new Set(Array.from({ length: Math.min(o.videos, 1_000) }, (_, v) => fresh.replicasOf(`t-${v}`).map((r) => r.id)).flat())].sort();
    const byNode = new Map<string, number[]>();
    for (let v = 0; v < o.videos; v++) {
      const replicas = fresh.replicasOf(`t-${v}`);
      if (replicas.length !== 3) summary.violations.push(`t-${v} has ${replicas.length} replicas on the final ring, not 3`);
      for (const r of replicas) {
        let list = byNode.get(r.address);
        if (list === undefined) byNode.set(r.address, (list = []));
        list.push(v);
      }
    }
    for (const [address, vs] of byNode) {
      const direct = await TallyClient.connect({ nodes: [address], routing: 'direct' });
      clients.push(direct);
      let k = 0;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (k < vs.length) {
            const v = vs[k++] as number;
            const value = await direct.getViewsCount(`t-${v}`, T - DAY, T + 2 * DAY, { consistency: Consistency.ONE }).catch((err: unknown) => (err instanceof TallyError ? err.code : 'ERROR'));
            summary.finalReads++;
            const exact = !unknownVideos.has(v);
            const ok = typeof value === 'number' && (exact ? value === acked[v] : value >= (acked[v] ?? 0) && value <= (attempted[v] ?? 0));
            if (!ok) {
              summary.finalWrong++;
              if (summary.violations.length < 20) summary.violations.push(`t-${v} read at one from ${address}: ${value}, acknowledged ${acked[v]}, attempted ${attempted[v]}`);
            }
          }
        }),
      );
    }
    o.log(`read every series at one from each of its replicas: ${summary.finalReads} reads, ${summary.finalWrong} wrong`);
    return summary;
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    for (let i = 0; i < nodes.procs.length; i++) await nodes.kill(i);
    await rm(dir, { recursive: true, force: true });
  }
}
