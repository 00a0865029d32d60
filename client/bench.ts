/**
 * `tally bench`: the load generator users run against a cluster (`--node`) or a local one it
 * starts and stops (`--local N`). Writes go through the client library as a user's would, over
 * `videos` videos with uniform or Zipf popularity, either closed loop (`concurrency` calls
 * outstanding) or open loop at a target rate (`rate` events/s; latency is measured from when
 * each call was due, so a slow cluster cannot hide its queueing). Reads are `getCount` over 1
 * hour, 1 day or 30 days, as a share of the calls and by dedicated one-at-a-time readers.
 *
 * The first `warmupS` seconds load the cluster without being measured (a cold process compiles
 * its hot paths first). It prints a progress line a second (* during the warm-up), then a table (and JSON with `json`): acknowledged events/s,
 * write and read latency percentiles per range, errors by code, and each node's CPU and peak
 * memory. It writes under a prefix of its own (printed) and at the end checks a sample of counts,
 * reading each through another node in turn: every count must lie between what was acknowledged
 * and what was attempted. It asserts nothing else.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Consistency, ErrorCode, TallyError } from '../protocol/index.js';
import type { NodeStatus } from '../protocol/status.js';
import { AGREE_TIMEOUT_MS, startLocalCluster, type LocalCluster } from './local-cluster.js';
import { withoutUndefinedAuth, type ConnectionAuth } from './connection.js';
import { TallyClient, type EventInput } from './tally-client.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
export const READ_RANGES = { '1h': HOUR_MS, '1d': DAY_MS, '30d': 30 * DAY_MS } as const;
export type ReadRange = keyof typeof READ_RANGES;

export interface BenchOptions {
  nodes: string[];
  /** The token and TLS settings the nodes need. */
  auth?: ConnectionAuth;
  /** Start a local cluster of this many nodes instead of using `nodes`. */
  local?: number;
  localRf?: number;
  localFsync?: boolean;
  localBasePort?: number;
  localHeapMB?: number;
  /** Added to every local node's environment (see LocalClusterOptions.env). */
  localEnv?: Record<string, string>;
  /** Seconds of load measured, after `warmupS` seconds of load that is not. */
  durationS: number;
  warmupS: number;
  /** Stop once this many events were sent, if sooner. */
  events?: number;
  /** Target write rate in events/s (open loop); undefined: closed loop, `concurrency` calls outstanding. */
  rate?: number;
  videos: number;
  /** Zipf exponent of video popularity; 0 is uniform. */
  zipf: number;
  eventTypes: string[];
  /** Events per write call; 1 uses `countEvent`, as a caller counting one view at a time would. */
  batch: number;
  /** Calls outstanding at once (closed loop), or at most (open loop). */
  concurrency: number;
  /** Of the closed loop's calls, the share that are reads. */
  readShare: number;
  /** Readers alongside the writes, each making one read at a time. */
  readers: number;
  readRanges: ReadRange[];
  consistency: Consistency;
  /** Event times spread over this many days before now (0: all now). */
  historyDays: number;
  /** Video ids start with this; default `bench-{time}`. */
  prefix?: string;
  /** Videos whose counts are checked at the end. */
  checkVideos: number;
  /** Called once a second with a progress line. */
  progress?: (line: string) => void;
}

export interface Latency {
  count: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

export interface NodeUsage {
  address: string;
  cpuSeconds: number;
  /** Highest resident memory seen during the run (polled each second), and the process's own peak. */
  peakRssMB: number;
  processPeakRssMB: number;
  /**
   * Highest of its own memory (anonymous pages) seen, polled; the rest of its resident memory is
   * files it maps (LevelDB's tables, page cache the kernel takes back). Absent where not known.
   */
  peakAnonMB?: number;
}

export interface BenchResult {
  setup: string;
  prefix: string;
  seconds: number;
  writes: Latency & { eventsSent: number; eventsAcked: number; eventsPerSecond: number; eventsUnknown: number };
  reads: Partial<Record<ReadRange, Latency>>;
  errors: Record<string, number>;
  /** Calls an open loop could not start on time because `concurrency` were outstanding. */
  behind: number;
  nodes: NodeUsage[];
  clientCpuSeconds: number;
  check: { videos: number; acked: number; attempted: number; counted: number; outside: number; readThrough: string };
}

/**
 * The measured part of a run: from the end of its warm-up to now. It begins on a timer of its
 * own and its time is taken then: begun by a progress ticker, it began up to a second late while
 * rates were still divided by the whole duration (a 10 s run at 42,000 events/s offered reported
 * 37,800 when the tick fell just short).
 */
export class MeasureWindow {
  measuring: boolean;
  private from = performance.now();
  private readonly timer: NodeJS.Timeout | undefined;

  /** `begin` runs as measuring begins (at once for no warm-up: then not at all). */
  constructor(warmupMs: number, begin: () => void) {
    this.measuring = warmupMs === 0;
    this.timer = this.measuring
      ? undefined
      : setTimeout(() => {
          this.measuring = true;
          this.from = performance.now();
          begin();
        }, warmupMs);
  }

  /** Seconds measured so far (0 for a run that ended within its warm-up). */
  seconds(): number {
    return this.measuring ? (performance.now() - this.from) / 1000 : 0;
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

/** `n` over `seconds`, rounded; 0 for no time. */
export function perSecond(n: number, seconds: number): number {
  return seconds > 0 ? Math.round(n / seconds) : 0;
}

/** Latencies in ms, kept whole (a run makes at most a few million calls). */
export class Samples {
  private data = new Float64Array(1024);
  n = 0;
  add(ms: number): void {
    if (this.n === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.n++] = ms;
  }
  summary(seconds: number, from = 0): Latency {
    const sorted = this.data.slice(from, this.n).sort();
    const at = (p: number): number => (sorted.length === 0 ? 0 : +(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number).toFixed(2));
    return { count: sorted.length, perSecond: Math.round(sorted.length / Math.max(seconds, 1e-9)), p50Ms: at(0.5), p99Ms: at(0.99), p999Ms: at(0.999), maxMs: at(1) };
  }
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A write whose outcome is unknown may have been applied; any other refusal applied nothing. */
const NOTHING_APPLIED = new Set(['UNAVAILABLE', 'OVERLOADED', 'BAD_REQUEST', 'TOO_LARGE', 'NOT_READY', 'UNAUTHORIZED']);

async function nodeStatus(address: string, auth: ConnectionAuth): Promise<NodeStatus | undefined> {
  const c = await TallyClient.connect({ nodes: [address], routing: 'direct', timeoutMs: 3_000, ...withoutUndefinedAuth(auth) }).catch(() => undefined);
  if (c === undefined) return undefined;
  try {
    return (await c.status()) as NodeStatus;
  } catch {
    return undefined;
  } finally {
    await c.close();
  }
}

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  if (o.eventTypes.length === 0) throw new TallyError('BAD_REQUEST', 'name at least one event type');
  if (o.readRanges.length === 0 && (o.readers > 0 || o.readShare > 0)) throw new TallyError('BAD_REQUEST', 'name at least one read range (1h, 1d, 30d)');
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
      fsync: o.localFsync ?? true,
      rf: o.localRf,
      heapMB: o.localHeapMB,
      ...(o.localEnv === undefined ? {} : { env: o.localEnv }),
      agreeTimeoutMs: AGREE_TIMEOUT_MS,
      quiet: true,
      ...(o.auth?.token === undefined ? {} : { clientToken: o.auth.token }),
    });
    local = started.cluster;
    nodes = local.addresses;
  }
  const client = await TallyClient.connect({ nodes, timeoutMs: 30_000, consistency: o.consistency, ...withoutUndefinedAuth(o.auth ?? {}) });
  // Every member, not only the ones named: each is asked for its CPU and memory.
  const members = ((await client.status()) as NodeStatus | null)?.members.map((m) => m.address) ?? nodes;
  const prefix = o.prefix ?? `bench-${Date.now().toString(36)}`;
  const types = o.eventTypes;
  const video = (i: number): string => `${prefix}-${i}`;
  const pick = popularity(o.videos, o.zipf);
  const acked = new Uint32Array(o.videos * types.length);
  const unknown = new Uint32Array(o.videos * types.length);
  const writes = new Samples();
  const reads = new Map<ReadRange, Samples>(o.readRanges.map((r) => [r, new Samples()]));
  const errors: Record<string, number> = {};
  let sent = 0;
  let ackedEvents = 0;
  let unknownEvents = 0;
  let behind = 0;
  const startedAt = Date.now();
  // Whole days: a range with whole days at its edges is never clipped by retention.
  const earliest = Math.floor((startedAt - o.historyDays * DAY_MS) / DAY_MS) * DAY_MS - DAY_MS;
  const before = new Map<string, NodeStatus | undefined>(await Promise.all(members.map(async (a) => [a, await nodeStatus(a, o.auth ?? {})] as const)));
  const peakRss = new Map<string, number>();
  const peakAnon = new Map<string, number>();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const measureFrom = t0 + o.warmupS * 1000;
  const endAt = measureFrom + o.durationS * 1000;
  let ackedBeforeMeasuring = 0;
  const over = (): boolean => performance.now() >= endAt || (o.events !== undefined && sent >= o.events);

  const fail = (err: unknown): string => {
    const code = err instanceof TallyError ? err.code : 'CLIENT';
    errors[code] = (errors[code] ?? 0) + 1;
    return code;
  };

  const timestampAt = (now: number): number => (o.historyDays === 0 ? now : now - Math.floor(Math.random() * o.historyDays * DAY_MS));
  const typeIndex = (): number => (types.length === 1 ? 0 : Math.floor(Math.random() * types.length));

  const writeOnce = (dueMs: number): Promise<void> => {
    const n = o.events === undefined ? o.batch : Math.min(o.batch, o.events - sent);
    if (n <= 0) return Promise.resolve();
    sent += n;
    const now = Date.now();
    if (n === 1) {
      // A single caller's call, made as lean as the caller's own code would be: the generator
      // shares the machine with the nodes.
      const v = pick();
      const t = typeIndex();
      return settled(client.countEvent(video(v), types[t] as string, { timestamp: timestampAt(now) }), [v * types.length + t], dueMs);
    }
    const slots: number[] = new Array(n);
    const events: EventInput[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const v = pick();
      const t = typeIndex();
      slots[i] = v * types.length + t;
      events[i] = { videoId: video(v), eventType: types[t] as string, timestamp: timestampAt(now) };
    }
    return settled(client.processEvents(events), slots, dueMs);
  };

  /** Counts a write call's outcome: its events acknowledged, or of unknown outcome. */
  const settled = async (call: Promise<void>, slots: readonly number[], dueMs: number): Promise<void> => {
    try {
      await call;
      for (const s of slots) acked[s] = (acked[s] as number) + 1;
      ackedEvents += slots.length;
      if (measured.measuring) writes.add(performance.now() - dueMs);
    } catch (err) {
      if (!NOTHING_APPLIED.has(fail(err))) {
        for (const s of slots) unknown[s] = (unknown[s] as number) + 1;
        unknownEvents += slots.length;
      }
    }
  };

  const readOnce = async (): Promise<void> => {
    const range = o.readRanges[Math.floor(Math.random() * o.readRanges.length)] as ReadRange;
    const to = Date.now() + 60_000;
    const s = performance.now();
    try {
      await client.getCount(video(pick()), types[Math.floor(Math.random() * types.length)] as string, to - READ_RANGES[range], to, { clip: true });
      if (measured.measuring) reads.get(range)?.add(performance.now() - s);
    } catch (err) {
      fail(err);
    }
  };

  // A progress line a second; node memory is polled at the same pace for the peak.
  let lastWrites = 0;
  let lastEvents = 0;
  let lastReads = 0;
  const readCount = (): number => [...reads.values()].reduce((a, r) => a + r.n, 0);
  const measured = new MeasureWindow(measureFrom - t0, () => {
    ackedBeforeMeasuring = ackedEvents;
    // Node CPU is counted from here too.
    for (const a of members) void nodeStatus(a, o.auth ?? {}).then((st) => before.set(a, st));
    for (const [k] of Object.entries(errors)) delete errors[k];
  });
  const ticker = setInterval(() => {
    const w = writes.summary(1, lastWrites);
    const r = readCount();
    const errs = Object.values(errors).reduce((a, b) => a + b, 0);
    o.progress?.(
      `${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s${measured.measuring ? ' ' : '*'} ${(ackedEvents - lastEvents).toLocaleString('en-US').padStart(9)} events/s  write p99 ${w.p99Ms} ms` +
        `  ${(r - lastReads).toLocaleString('en-US')} reads/s  errors ${errs}`,
    );
    lastWrites = writes.n;
    lastEvents = ackedEvents;
    lastReads = r;
    for (const a of members) {
      void nodeStatus(a, o.auth ?? {}).then((st) => {
        if (st?.process !== undefined) peakRss.set(a, Math.max(peakRss.get(a) ?? 0, st.process.rssBytes));
        if (st?.process?.rssAnonBytes !== undefined) peakAnon.set(a, Math.max(peakAnon.get(a) ?? 0, st.process.rssAnonBytes));
      });
    }
  }, 1000);

  try {
    const work: Promise<void>[] = [];
    for (let i = 0; i < o.readers; i++) {
      work.push(
        (async () => {
          while (!over()) await readOnce();
        })(),
      );
    }
    if (o.rate === undefined) {
      for (let i = 0; i < o.concurrency; i++) {
        work.push(
          (async () => {
            while (!over()) {
              if (o.readShare > 0 && Math.random() < o.readShare) await readOnce();
              else await writeOnce(performance.now());
            }
          })(),
        );
      }
    } else {
      // Open loop: call k is due at t0 + k·interval, started then if fewer than `concurrency` are out.
      const interval = (1000 * o.batch) / o.rate;
      let outstanding = 0;
      let k = 0;
      const inFlight = new Set<Promise<void>>();
      while (!over()) {
        const now = performance.now();
        for (; t0 + k * interval <= now && !over(); k++) {
          if (outstanding >= o.concurrency) {
            behind++;
            continue;
          }
          outstanding++;
          const p = writeOnce(t0 + k * interval).finally(() => {
            outstanding--;
            inFlight.delete(p);
          });
          inFlight.add(p);
        }
        await sleep(Math.max(0, Math.min(5, t0 + k * interval - performance.now())));
      }
      work.push(...inFlight);
    }
    await Promise.all(work);
  } finally {
    clearInterval(ticker);
    measured.stop();
  }
  const seconds = measured.seconds();
  const cpu = process.cpuUsage(cpu0);
  // A run that ended within its warm-up measured nothing.
  const measuredEvents = measured.measuring ? ackedEvents - ackedBeforeMeasuring : 0;

  try {
    const after = await Promise.all(members.map(async (a) => [a, await nodeStatus(a, o.auth ?? {})] as const));
    const nodeUsage: NodeUsage[] = after.map(([a, st]) => {
      const b = before.get(a)?.process;
      const p = st?.process;
      const cpuMs = p === undefined ? 0 : p.cpuUserMs + p.cpuSystemMs - (b === undefined ? 0 : b.cpuUserMs + b.cpuSystemMs);
      const peak = Math.max(peakRss.get(a) ?? 0, p?.rssBytes ?? 0);
      const anon = Math.max(peakAnon.get(a) ?? 0, p?.rssAnonBytes ?? 0);
      return {
        address: a,
        cpuSeconds: +(cpuMs / 1000).toFixed(1),
        peakRssMB: Math.round(peak / 1048576),
        processPeakRssMB: Math.round((p?.peakRssBytes ?? 0) / 1048576),
        ...(anon === 0 ? {} : { peakAnonMB: Math.round(anon / 1048576) }),
      };
    });
    const check = await checkCounts(o, members, video, types, acked, unknown, earliest);
    const w = writes.summary(seconds);
    const setup =
      `${o.local !== undefined ? `local ${o.local} nodes, rf ${o.localRf ?? Math.min(3, o.local)}${o.localFsync === false ? '' : ', fsync'}` : nodes.join(',')}; ` +
      `${o.consistency}; ${o.videos} videos, ${o.zipf === 0 ? 'uniform' : `zipf ${o.zipf}`}; ${types.length} event type${types.length === 1 ? '' : 's'}; batches of ${o.batch}; ` +
      (o.rate === undefined ? `${o.concurrency} calls outstanding` : `${o.rate} events/s offered, at most ${o.concurrency} calls outstanding`) +
      (o.readers > 0 ? `; ${o.readers} readers` : '') +
      (o.readShare > 0 ? `; ${Math.round(o.readShare * 100)}% of calls read` : '');
    return {
      setup,
      prefix,
      seconds: +seconds.toFixed(2),
      writes: { ...w, eventsSent: sent, eventsAcked: measuredEvents, eventsUnknown: unknownEvents, eventsPerSecond: perSecond(measuredEvents, seconds) },
      reads: Object.fromEntries([...reads].filter(([, s]) => s.n > 0).map(([r, s]) => [r, s.summary(seconds)])),
      errors,
      behind,
      nodes: nodeUsage,
      clientCpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(1),
      check,
    };
  } finally {
    await client.close();
    if (local !== undefined) await local.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The level the count check reads at: one whose replicas overlap those of every acknowledged
 * write. A write acknowledged at `one` may be on one replica alone, so those are read at `all`
 * (and, with a replica down, at `one` after all: see checkCounts).
 */
export function checkConsistency(written: Consistency): Consistency {
  return written === Consistency.ONE ? Consistency.ALL : written;
}

/**
 * Reads a sample of the series written (the most popular and a random draw of the rest), each
 * through another member in turn, and counts those outside [acknowledged, attempted].
 */
async function checkCounts(
  o: BenchOptions,
  members: string[],
  video: (i: number) => string,
  types: string[],
  acked: Uint32Array,
  unknown: Uint32Array,
  from: number,
): Promise<BenchResult['check']> {
  const written: number[] = [];
  for (let s = 0; s < acked.length; s++) if ((acked[s] as number) + (unknown[s] as number) > 0) written.push(s);
  const top = written.slice(0, Math.ceil(o.checkVideos / 5));
  const rest = written.slice(top.length);
  for (let i = rest.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [rest[i], rest[j]] = [rest[j] as number, rest[i] as number];
  }
  const sample = [...top, ...rest.slice(0, o.checkVideos - top.length)];
  // Through each member that can be reached now: one may have left, or been stopped, during the run.
  const tried = await Promise.allSettled(members.map((a) => TallyClient.connect({ nodes: [a], routing: 'direct', consistency: checkConsistency(o.consistency), timeoutMs: 30_000, ...withoutUndefinedAuth(o.auth ?? {}) })));
  const clients: TallyClient[] = [];
  const through: string[] = [];
  const unreachable: string[] = [];
  tried.forEach((t, i) => {
    if (t.status === 'fulfilled') {
      clients.push(t.value);
      through.push(members[i] as string);
    } else {
      unreachable.push(members[i] as string);
    }
  });
  if (clients.length === 0) throw (tried[0] as PromiseRejectedResult).reason;
  let a = 0;
  let attempted = 0;
  let counted = 0;
  let outside = 0;
  let failed: { address: string; reason: string }[];
  try {
    const to = Date.now() + 120_000;
    const readers = clients.map((c, i) => ({
      address: through[i] as string,
      count: async (s: number) => {
        const id = video(Math.floor(s / types.length));
        const type = types[s % types.length] as string;
        try {
          return await c.getCount(id, type, from, to, { clip: true });
        } catch (err) {
          // Written at `one` with a replica down: `all` cannot be met, and `one` is what is left.
          if (o.consistency !== Consistency.ONE || !(err instanceof TallyError) || err.code !== ErrorCode.UNAVAILABLE) throw err;
          return c.getCount(id, type, from, to, { clip: true, consistency: Consistency.ONE });
        }
      },
    }));
    const got = await countThrough(readers, sample);
    failed = got.failed;
    for (let i = 0; i < sample.length; i++) {
      const s = sample[i] as number;
      const n = got.counts[i] as number;
      const lo = acked[s] as number;
      const hi = lo + (unknown[s] as number);
      a += lo;
      attempted += hi;
      counted += n;
      if (n < lo || n > hi) outside++;
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
  const served = through.filter((m) => !failed.some((f) => f.address === m));
  const skipped = [...unreachable, ...failed.map((f) => `${f.address} (its read failed: ${f.reason})`)];
  const readThrough = (served.length > 1 ? `each of ${served.length} nodes in turn` : (served[0] as string)) + (skipped.length === 0 ? '' : ` (not reachable, skipped: ${skipped.join(', ')})`);
  return { videos: sample.length, acked: a, attempted, counted, outside, readThrough };
}

/**
 * Each sample's count, read through the members in turn. A member whose read fails (it stopped,
 * or left the ring, after the check connected) is dropped, named with its error, and the sample is
 * read through the next one; only when every member has failed does the check fail.
 */
export async function countThrough(
  readers: { address: string; count(sample: number): Promise<number> }[],
  sample: readonly number[],
): Promise<{ counts: number[]; failed: { address: string; reason: string }[] }> {
  const live = [...readers];
  const failed: { address: string; reason: string }[] = [];
  const counts: number[] = [];
  for (let i = 0; i < sample.length; i++) {
    for (;;) {
      const k = i % live.length;
      const r = live[k] as (typeof live)[number];
      try {
        counts.push(await r.count(sample[i] as number));
        break;
      } catch (err) {
        if (live.length === 1) throw err;
        live.splice(k, 1);
        failed.push({ address: r.address, reason: err instanceof TallyError ? err.code : (err as Error).message });
      }
    }
  }
  return { counts, failed };
}

/** A latency summary as the tables print it. */
export function formatLatency(l: Latency): string {
  return `p50 ${l.p50Ms} ms, p99 ${l.p99Ms} ms, p99.9 ${l.p999Ms} ms, max ${l.maxMs} ms`;
}

/** The result as the table `tally bench` prints. */
export function formatBench(r: BenchResult): string {
  const lines = [
    `setup:   ${r.setup}`,
    `prefix:  ${r.prefix} (video ids; bench series are not deleted unless the cluster was --local)`,
    `writes:  ${r.writes.eventsAcked.toLocaleString('en-US')} events acknowledged in ${r.seconds} s (after the warm-up) = ${r.writes.eventsPerSecond.toLocaleString('en-US')} events/s` +
      (r.writes.eventsUnknown > 0 ? ` (${r.writes.eventsUnknown} outcome unknown)` : '') +
      `; call latency ${formatLatency(r.writes)}` +
      (r.behind > 0 ? `; ${r.behind} calls not started on time (concurrency cap)` : ''),
  ];
  for (const [range, l] of Object.entries(r.reads)) lines.push(`reads ${range.padEnd(3)}: ${l.count} in ${r.seconds} s = ${l.perSecond}/s; ${formatLatency(l)}`);
  lines.push(`errors:  ${Object.keys(r.errors).length === 0 ? 'none' : Object.entries(r.errors).map(([c, n]) => `${c} ${n}`).join(', ')}`);
  for (const n of r.nodes) lines.push(`node ${n.address}: cpu ${n.cpuSeconds} s (${perSecond(100 * n.cpuSeconds, r.seconds)}% of a core), memory peak ${n.peakRssMB} MB (process peak ${n.processPeakRssMB} MB${n.peakAnonMB === undefined ? '' : `; its own at most ${n.peakAnonMB} MB, the rest mapped files: the node binary, LevelDB's tables`})`);
  lines.push(`client:  cpu ${r.clientCpuSeconds} s`);
  const c = r.check;
  lines.push(`check:   ${c.videos} series read through ${c.readThrough}: counted ${c.counted}, acknowledged ${c.acked}, attempted ${c.attempted}; ${c.outside === 0 ? 'every count within bounds' : `${c.outside} OUTSIDE [acknowledged, attempted]`}`);
  return lines.join('\n');
}
