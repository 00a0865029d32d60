/**
 * Replication with real node processes, real sockets and real LevelDB on loopback:
 * - 3 nodes, RF 3: 10,000 events at quorum; SIGKILL one node; 10,000 more at quorum all succeed
 *   and a quorum read says 20,000; restart it; within 30 s a read at `one` of each node alone and
 *   a read at `all` say exactly 20,000 (hints replayed, nothing read-repaired first).
 * - 5 nodes, RF 3: killing any one node loses no acknowledged increment and leaves no key
 *   unavailable at quorum; freezing one (SIGSTOP) costs reads milliseconds, not seconds. The
 *   50 ms p99 target is measured by `npm run measure:frozen` on an otherwise idle machine; here,
 *   beside other test files on two cores, the bound is looser, but still far below the seconds a
 *   read would wait for a frozen replica without speculative retry and hedging.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TallyClient } from '../../client/index.js';
import { DAY_MS } from '../../cluster/time-buckets.js';
import { Cluster } from '../helpers/cluster.js';
import { removeDir, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';
import { daysAgo } from '../helpers/time.js';

const T = daysAgo(6, 12);

/** `n` events spread over `videos` videos and three days, in batches of 500. */
async function writeEvents(client: TallyClient, prefix: string, videos: number, n: number): Promise<void> {
  const events = Array.from({ length: n }, (_, i) => ({ videoId: `${prefix}${i % videos}`, timestamp: T + (i % 3) * DAY_MS + (i % 1440) * 60_000 }));
  for (let i = 0; i < events.length; i += 500) await client.processEvents(events.slice(i, i + 500), { consistency: 'quorum' });
}

async function total(client: TallyClient, prefix: string, videos: number, consistency: 'one' | 'quorum' | 'all'): Promise<number> {
  const counts = await Promise.all(Array.from({ length: videos }, (_, v) => client.getViewsCount(`${prefix}${v}`, T - DAY_MS, T + 5 * DAY_MS, { consistency })));
  return counts.reduce((a, b) => a + b, 0);
}

describe('three nodes, RF 3', () => {
  let dir: string;
  let cluster: Cluster;
  beforeAll(async () => {
    dir = await tempDir();
    cluster = new Cluster(dir, 3);
    await cluster.startAll();
  });
  afterAll(async () => {
    await cluster.stop();
    await removeDir(dir);
  });

  it('keeps every acknowledged write through a SIGKILL, and the restarted node catches up by itself', async () => {
    const client = await TallyClient.connect({ nodes: cluster.addresses });
    await writeEvents(client, 'r3-', 50, 10_000);
    expect(await total(client, 'r3-', 50, 'quorum')).toBe(10_000);

    await cluster.kill(2);
    const t0 = Date.now();
    await writeEvents(client, 'r3-', 50, 10_000);
    console.log(`10,000 events at quorum with n3 down took ${Date.now() - t0} ms`);
    expect(await total(client, 'r3-', 50, 'quorum')).toBe(20_000);
    await client.close();

    await cluster.start(2);
    const restarted = Date.now();
    const alone = async (i: number): Promise<number> => {
      const c = await TallyClient.connect({ nodes: [cluster.address(i)], routing: 'direct' });
      try {
        return await total(c, 'r3-', 50, 'one');
      } finally {
        await c.close();
      }
    };
    const { ms } = await waitFor('n3 caught up', 30_000, async () => ((await alone(2)) === 20_000 ? true : undefined), 250);
    console.log(`the restarted node read 20,000 alone ${ms} ms after its restart (${Date.now() - restarted} ms)`);
    expect(await alone(0)).toBe(20_000);
    expect(await alone(1)).toBe(20_000);
    const all = await TallyClient.connect({ nodes: cluster.addresses });
    expect(await total(all, 'r3-', 50, 'all')).toBe(20_000);
    await all.close();
  });
});

describe('five nodes, RF 3', () => {
  let dir: string;
  let cluster: Cluster;
  beforeAll(async () => {
    dir = await tempDir();
    cluster = new Cluster(dir, 5);
    await cluster.startAll();
  });
  afterAll(async () => {
    await cluster.stop();
    await removeDir(dir);
  });

  it('loses no acknowledged increment and leaves no key unavailable at quorum whichever node is killed', async () => {
    const videos = 100;
    const client = await TallyClient.connect({ nodes: cluster.addresses });
    await writeEvents(client, 'k5-', videos, 5_000);
    let acked = 5_000;
    for (let victim = 0; victim < 5; victim++) {
      await cluster.kill(victim);
      // Straight away, before anyone has marked it down: every key still reads and writes at quorum.
      expect(await total(client, 'k5-', videos, 'quorum')).toBe(acked);
      await writeEvents(client, 'k5-', videos, 1_000);
      acked += 1_000;
      expect(await total(client, 'k5-', videos, 'quorum')).toBe(acked);
      await cluster.start(victim);
      await cluster.waitAllUp();
      // The next kill finds every other node serving reads, the restarted one included: on two
      // busy cores a node seen up may still be starting its store and read thread for seconds,
      // and a quorum that needs it and the next victim would wait out its timeout. Every replica
      // answers a read at `all`, and it holds every acknowledged increment.
      const { value } = await waitFor('every node answers reads', 30_000, async () => total(client, 'k5-', videos, 'all'), 250);
      expect(value).toBe(acked);
    }
    expect(await total(client, 'k5-', videos, 'all')).toBe(acked);
    await client.close();
  });

  it('keeps quorum reads fast while one node is frozen (p99 well under the 4 s a frozen replica would cost)', async () => {
    const videos = 200;
    const client = await TallyClient.connect({ nodes: cluster.addresses });
    await writeEvents(client, 'f5-', videos, 2_000);
    // Reads for `ms`, and on until `atLeast` are done (at most 30 s): a p99 needs enough reads, and
    // how many fit in a few seconds depends on what else shares the two cores.
    const readFor = async (ms: number, latencies: number[], atLeast = 0): Promise<void> => {
      const end = Date.now() + ms;
      const last = Date.now() + 30_000;
      const more = (): boolean => Date.now() < last && (Date.now() < end || latencies.length < atLeast);
      const reader = async (r: number): Promise<void> => {
        for (let i = r; more(); i += 16) {
          const t = performance.now();
          await client.getViewsCount(`f5-${i % videos}`, T - DAY_MS, T + 5 * DAY_MS, { consistency: 'quorum' });
          latencies.push(performance.now() - t);
        }
      };
      await Promise.all(Array.from({ length: 16 }, (_, r) => reader(r)));
    };
    // Warm up first (nodes restarted by the test before are fresh processes), so what is measured is the freeze.
    await readFor(2_000, []);
    const victim = cluster.nodes[3] as NodeProcess;
    victim.proc.kill('SIGSTOP');
    const latencies: number[] = [];
    try {
      await readFor(6_000, latencies, 1_500);
    } finally {
      victim.proc.kill('SIGCONT');
    }
    latencies.sort((a, b) => a - b);
    const p = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] as number;
    console.log(`${latencies.length} quorum reads with n4 frozen: p50 ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms, max ${p(1).toFixed(1)} ms`);
    expect(latencies.length).toBeGreaterThan(1_000);
    // Without speculative retry and hedging, the reads whose first replicas include n4 (over half)
    // wait out the 4 s replica timeout. With them, no read comes near it, and the p99 stays a
    // fraction of it even with both cores shared with another test file's node processes (p99 seen
    // from 33 ms alone to 410 ms beside the heaviest files; the 50 ms target on an idle machine is
    // `npm run measure:frozen`'s).
    expect(p(1)).toBeLessThan(3_000);
    expect(p(0.99)).toBeLessThan(1_000);
    expect(await total(client, 'f5-', videos, 'quorum')).toBe(2_000);
    await client.close();
  });
});
