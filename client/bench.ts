/**
 * `tally bench`: a load generator that prints numbers. Writes go through the client library as a
 * user's would (concurrent calls, each `--batch` events, batched further by the client), over
 * `--videos` videos with uniform or Zipf popularity; reads are `getViewsCount` over a day. It runs
 * against a cluster (`--node`) or a local one it starts and stops (`--local N`). It reports
 * throughput and latency percentiles, and checks a sample of the counts it wrote; it asserts
 * nothing else.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Consistency } from '../protocol/index.js';
import { AGREE_TIMEOUT_MS, startLocalCluster, type LocalCluster } from './local-cluster.js';
import { TallyClient, type EventInput } from './tally-client.js';

export interface BenchOptions {
  nodes: string[];
  /** Start a local cluster of this many nodes instead of using `nodes`. */
  local?: number;
  localRf?: number;
  localFsync?: boolean;
  localBasePort?: number;
  events: number;
  videos: number;
  /** Zipf exponent of video popularity; 0 is uniform. */
  zipf: number;
  /** Events per write call. */
  batch: number;
  /** Write calls kept outstanding at once. */
  concurrency: number;
  consistency: Consistency;
  reads: number;
  readConcurrency: number;
}

export interface BenchResult {
  setup: string;
  writes: { events: number; calls: number; seconds: number; eventsPerSecond: number; p50Ms: number; p99Ms: number; maxMs: number; cpuSecondsClient: number };
  reads: { reads: number; seconds: number; perSecond: number; p50Ms: number; p99Ms: number; maxMs: number };
  check: { videos: number; expected: number; counted: number };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

async function drive(total: number, concurrency: number, op: (i: number) => Promise<unknown>) {
  const lat = new Float64Array(total);
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      const s = performance.now();
      await op(i);
      lat[i] = performance.now() - s;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  lat.sort();
  return {
    seconds,
    p50Ms: +percentile(lat, 0.5).toFixed(2),
    p99Ms: +percentile(lat, 0.99).toFixed(2),
    maxMs: +(lat[lat.length - 1] ?? 0).toFixed(2),
  };
}

/** Draws video indexes in [0, n): uniform, or Zipf with exponent `s` (index 0 the most popular). */
export function popularity(n: number, s: number, random: () => number = Math.random): () => number {
  if (s === 0) return () => Math.floor(random() * n);
  const cdf = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k++) {
    total += 1 / (k + 1) ** s;
    cdf[k] = total;
  }
  return () => {
    const x = random() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cdf[mid] as number) < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  let local: LocalCluster | undefined;
  let dir: string | undefined;
  let nodes = o.nodes;
  if (o.local !== undefined) {
    dir = await mkdtemp(join(tmpdir(), 'tally-bench-'));
    const started = await startLocalCluster({
      nodes: o.local,
      basePort: o.localBasePort ?? 7701,
      host: '127.0.0.1',
      dataDir: dir,
      fsync: o.localFsync ?? false,
      rf: o.localRf,
      agreeTimeoutMs: AGREE_TIMEOUT_MS,
      quiet: true,
    });
    local = started.cluster;
    nodes = local.addresses;
  }
  const client = await TallyClient.connect({ nodes, timeoutMs: 30_000 });
  const run = `bench-${Date.now().toString(36)}`;
  const video = (i: number): string => `${run}-${i}`;
  const pick = popularity(o.videos, o.zipf);
  const expected = new Map<number, number>();
  const now = Date.now();
  const calls = Math.ceil(o.events / o.batch);
  try {
    const cpu0 = process.cpuUsage();
    const w = await drive(calls, o.concurrency, (c) => {
      const n = Math.min(o.batch, o.events - c * o.batch);
      const events: EventInput[] = new Array(n);
      for (let i = 0; i < n; i++) {
        const v = pick();
        expected.set(v, (expected.get(v) ?? 0) + 1);
        events[i] = { videoId: video(v), timestamp: now };
      }
      return client.processEvents(events, { consistency: o.consistency });
    });
    const cpu = process.cpuUsage(cpu0);
    const written = [...expected.keys()];
    const from = now - 86_400_000;
    const r = await drive(o.reads, o.readConcurrency, (i) => client.getViewsCount(video(written[i % written.length] as number), from, now + 60_000, { consistency: o.consistency }));
    // The most popular videos and a random sample of the rest.
    const sample = [...written.sort((a, b) => a - b).slice(0, 100), ...written.slice(100).sort(() => Math.random() - 0.5).slice(0, 400)];
    let counted = 0;
    let want = 0;
    for (const v of sample) {
      counted += await client.getViewsCount(video(v), from, now + 60_000, { consistency: o.consistency });
      want += expected.get(v) as number;
    }
    return {
      setup: `${o.local !== undefined ? `local ${o.local} nodes, rf ${o.localRf ?? Math.min(3, o.local)}${o.localFsync === true ? ', fsync' : ''}` : nodes.join(',')}; ${o.consistency}; ${o.videos} videos, ${o.zipf === 0 ? 'uniform' : `zipf ${o.zipf}`}; batches of ${o.batch}; ${o.concurrency} calls outstanding`,
      writes: {
        events: o.events,
        calls,
        ...w,
        eventsPerSecond: Math.round(o.events / w.seconds),
        cpuSecondsClient: +((cpu.user + cpu.system) / 1e6).toFixed(2),
      },
      reads: { reads: o.reads, ...r, perSecond: Math.round(o.reads / r.seconds) },
      check: { videos: sample.length, expected: want, counted },
    };
  } finally {
    await client.close();
    if (local !== undefined) await local.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}
