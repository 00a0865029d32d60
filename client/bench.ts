/**
 * `tally bench`: a load generator that prints numbers. Writes go through the client library as a
 * user's would (concurrent `countViewEvent` calls, batched by the client), reads as
 * `getViewsCount` over a day. It reports throughput and latency percentiles; it asserts nothing.
 */
import { TallyClient } from './tally-client.js';

export interface BenchOptions {
  nodes: string[];
  events: number;
  videos: number;
  /** Write calls kept outstanding at once. */
  concurrency: number;
  reads: number;
  readConcurrency: number;
  /** Shown with the results, so runs can be told apart. */
  label?: string;
}

export interface BenchResult {
  writes: { events: number; seconds: number; perSecond: number; p50Ms: number; p99Ms: number; maxMs: number };
  reads: { reads: number; seconds: number; perSecond: number; p50Ms: number; p99Ms: number; maxMs: number };
  check: { expected: number; counted: number };
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
    perSecond: Math.round(total / seconds),
    p50Ms: +percentile(lat, 0.5).toFixed(2),
    p99Ms: +percentile(lat, 0.99).toFixed(2),
    maxMs: +(lat[lat.length - 1] ?? 0).toFixed(2),
  };
}

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const client = await TallyClient.connect({ nodes: o.nodes, timeoutMs: 30_000 });
  const run = `bench-${Date.now().toString(36)}`;
  const video = (i: number): string => `${run}-${i % o.videos}`;
  const now = Date.now();
  try {
    const w = await drive(o.events, o.concurrency, (i) => client.countViewEvent(video(i), { timestamp: now }));
    const from = now - 86_400_000;
    const r = await drive(o.reads, o.readConcurrency, (i) => client.getViewsCount(video(i), from, now + 60_000));
    let counted = 0;
    for (let v = 0; v < Math.min(o.videos, o.events); v++) counted += await client.getViewsCount(video(v), from, now + 60_000);
    return {
      writes: { events: o.events, ...w },
      reads: { reads: o.reads, ...r },
      check: { expected: o.events, counted },
    };
  } finally {
    await client.close();
  }
}
