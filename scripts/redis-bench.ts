/**
 * The reference run: Redis (Debian's `redis-server`) driven with the workload `tally bench`
 * drives, so the two can be read side by side from one machine.
 *
 * Each event is three pipelined INCRBYs, of its minute, hour and day keys
 * (`{video}:{type}:{m|h|d}:{start}`); a write call is one pipeline of `--batch` events, and
 * `--concurrency` calls are outstanding (closed loop) or offered at `--rate` events/s (open loop,
 * latency from when each call was due). Reads are one MGET of the bucket keys that cover the
 * range, planned as Tally plans its own (minutes and hours at the edges, days between: ~113 keys
 * for 30 days). Redis runs with AOF and `appendfsync everysec` (its usual durable setting; Tally's
 * `--fsync` syncs every group commit, which is stronger), on a fresh directory, and is stopped
 * after. It prints the same table as `tally bench`.
 *
 *   node dist/scripts/redis-bench.js --duration 30 --videos 1000000 --zipf 1 --batch 500
 */
import { spawn } from 'node:child_process';
import { createConnection, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { formatLatency, MeasureWindow, perSecond, popularity, READ_RANGES, Samples, type ReadRange } from '../client/bench.js';
import { bucketStart, decomposeRange, spanBuckets } from '../cluster/time-buckets.js';
import { until } from './node-procs.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A pipeline of INCRBYs written to the socket as one buffer, its replies counted off by line.
 * ioredis builds a command object per INCRBY and held Redis at a quarter of a core here (35,000
 * events/s, client-bound), so the writes go this way; ioredis still makes the reads (MGET).
 * Every INCRBY reply is one line (`:n` or `-ERR …`), so counting lines finds each pipeline's end.
 */
class IncrPipe {
  private readonly waiting: { lines: number; resolve: () => void; reject: (e: Error) => void; errors: number }[] = [];
  private partial = '';
  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (err) => {
      for (const w of this.waiting.splice(0)) w.reject(err);
    });
  }

  static connect(host: string, port: number): Promise<IncrPipe> {
    return new Promise((resolve, reject) => {
      const s = createConnection({ host, port }, () => resolve(new IncrPipe(s)));
      s.setNoDelay(true);
      s.once('error', reject);
    });
  }

  /** INCRBY key 1 for each key, as one pipeline; resolves when every reply is in. */
  incr(keys: string[]): Promise<void> {
    const parts: string[] = [];
    for (const k of keys) parts.push(`*3\r\n$6\r\nINCRBY\r\n$${Buffer.byteLength(k)}\r\n${k}\r\n$1\r\n1\r\n`);
    return new Promise((resolve, reject) => {
      this.waiting.push({ lines: keys.length, resolve, reject, errors: 0 });
      this.socket.write(parts.join(''));
    });
  }

  private onData(d: Buffer): void {
    const text = this.partial + d.toString('latin1');
    let from = 0;
    for (let nl = text.indexOf('\n', from); nl >= 0; nl = text.indexOf('\n', from)) {
      const w = this.waiting[0];
      if (w === undefined) break;
      if (text[from] === '-') w.errors++;
      from = nl + 1;
      if (--w.lines === 0) {
        this.waiting.shift();
        if (w.errors > 0) w.reject(new Error(`${w.errors} INCRBY failed`));
        else w.resolve();
      }
    }
    this.partial = text.slice(from);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The keys a read of [from, to) MGETs: the buckets Tally's read plan covers the range with. */
function readKeys(video: string, type: string, from: number, to: number): string[] {
  const keys: string[] = [];
  for (const span of decomposeRange(bucketStart(from, 'm'), bucketStart(to, 'm'))) for (const start of spanBuckets(span)) keys.push(`${video}:${type}:${span.res}:${start}`);
  return keys;
}

async function main(): Promise<void> {
  const a = await yargs(hideBin(process.argv))
    .option('port', { type: 'number', default: 6399, describe: 'port of the redis-server this starts' })
    .option('redis', { type: 'string', describe: 'use a running Redis at host:port instead of starting one' })
    .option('duration', { type: 'number', default: 10 })
    .option('warmup', { type: 'number', default: 2 })
    .option('rate', { type: 'number', describe: 'offered events/s (open loop)' })
    .option('videos', { type: 'number', default: 1_000_000 })
    .option('zipf', { type: 'number', default: 1 })
    .option('batch', { type: 'number', default: 500 })
    .option('concurrency', { type: 'number', default: 64 })
    .option('connections', { type: 'number', default: 4, describe: 'client connections the calls are spread over' })
    .option('readers', { type: 'number', default: 0 })
    .option('read-ranges', { type: 'string', default: '1h,1d,30d' })
    .option('json', { type: 'string' })
    .strict()
    .parseAsync();
  let dir: string | undefined;
  let server: ReturnType<typeof spawn> | undefined;
  let host = '127.0.0.1';
  let port = a.port;
  if (a.redis !== undefined) {
    [host, port] = [a.redis.split(':')[0] as string, Number(a.redis.split(':')[1])];
  } else {
    dir = await mkdtemp(join(tmpdir(), 'tally-redis-'));
    server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', ''], { stdio: 'ignore' });
    server.on('error', (err) => {
      process.stderr.write(`error: could not start redis-server (${err.message}); install Debian's redis-server package\n`);
      process.exit(1);
    });
  }
  const conns = Array.from({ length: a.connections }, () => new Redis({ host, port, lazyConnect: true, maxRetriesPerRequest: 1 }));
  for (const c of conns) c.on('error', () => {});
  const pipes: IncrPipe[] = [];
  try {
    // A plain socket first: an ioredis client whose first connect fails goes on reconnecting by
    // itself and refuses a second connect(), so it is asked only once the server listens.
    const listening = (): Promise<boolean> =>
      new Promise((resolve) => {
        const s = createConnection({ host, port }, () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
    await until('redis-server answers', 10_000, listening);
    await Promise.all(conns.map((c) => c.connect()));
    for (let i = 0; i < a.connections; i++) pipes.push(await IncrPipe.connect(host, port));
    const ranges = a['read-ranges'].split(',').map((s) => s.trim()) as ReadRange[];
    const pick = popularity(a.videos, a.zipf);
    const prefix = `bench-${Date.now().toString(36)}`;
    const writes = new Samples();
    const reads = new Map<ReadRange, Samples>(ranges.map((r) => [r, new Samples()]));
    let conn = 0;
    let acked = 0;
    let ackedAtStart = 0;
    const t0 = performance.now();
    const measureFrom = t0 + a.warmup * 1000;
    const endAt = measureFrom + a.duration * 1000;
    const info0: { cpu: number } = { cpu: 0 };
    const cpuOf = async (): Promise<number> => {
      const text = await (conns[0] as Redis).info('cpu');
      const num = (k: string): number => Number(text.match(new RegExp(`${k}:([0-9.]+)`))?.[1] ?? 0);
      return num('used_cpu_user') + num('used_cpu_sys');
    };
    let peakRss = 0;
    const measured = new MeasureWindow(measureFrom - t0, () => {
      ackedAtStart = acked;
      void cpuOf().then((c) => (info0.cpu = c));
    });
    const ticker = setInterval(() => {
      void (conns[0] as Redis).info('memory').then((text) => {
        peakRss = Math.max(peakRss, Number(text.match(/used_memory_rss:(\d+)/)?.[1] ?? 0));
      });
    }, 1000);
    const writeOnce = async (dueMs: number): Promise<void> => {
      const now = Date.now();
      const [m, h, d] = [bucketStart(now, 'm'), bucketStart(now, 'h'), bucketStart(now, 'd')];
      const keys: string[] = [];
      for (let i = 0; i < a.batch; i++) {
        const key = `${prefix}-${pick()}:view`;
        keys.push(`${key}:m:${m}`, `${key}:h:${h}`, `${key}:d:${d}`);
      }
      await (pipes[conn++ % pipes.length] as IncrPipe).incr(keys);
      acked += a.batch;
      if (measured.measuring) writes.add(performance.now() - dueMs);
    };
    const readOnce = async (): Promise<void> => {
      const range = ranges[Math.floor(Math.random() * ranges.length)] as ReadRange;
      const to = Date.now() + 60_000;
      const s = performance.now();
      const values = await (conns[conn++ % conns.length] as Redis).mget(...readKeys(`${prefix}-${pick()}`, 'view', to - READ_RANGES[range], to));
      let n = 0;
      for (const v of values) n += v === null ? 0 : Number(v);
      if (Number.isNaN(n)) throw new Error('not a count');
      if (measured.measuring) reads.get(range)?.add(performance.now() - s);
    };
    const over = (): boolean => performance.now() >= endAt;
    const work: Promise<void>[] = [];
    for (let i = 0; i < a.readers; i++) work.push((async () => { while (!over()) await readOnce(); })());
    if (a.rate === undefined) {
      for (let i = 0; i < a.concurrency; i++) work.push((async () => { while (!over()) await writeOnce(performance.now()); })());
    } else {
      const interval = (1000 * a.batch) / a.rate;
      let out = 0;
      for (let k = 0; !over(); ) {
        for (; t0 + k * interval <= performance.now() && !over(); k++) {
          if (out >= a.concurrency) continue;
          out++;
          work.push(writeOnce(t0 + k * interval).finally(() => out--));
        }
        await sleep(1);
      }
    }
    await Promise.all(work);
    clearInterval(ticker);
    measured.stop();
    const seconds = measured.seconds();
    const ackedMeasured = measured.measuring ? acked - ackedAtStart : 0;
    const cpu = (await cpuOf()) - info0.cpu;
    const w = writes.summary(seconds);
    const result = {
      setup: `redis-server (AOF, appendfsync everysec); ${a.videos} videos, ${a.zipf === 0 ? 'uniform' : `zipf ${a.zipf}`}; 3 INCRBY per event, pipelines of ${a.batch} events; ` +
        `${a.rate === undefined ? `${a.concurrency} pipelines outstanding` : `${a.rate} events/s offered`} over ${a.connections} connections${a.readers > 0 ? `; ${a.readers} readers (MGET)` : ''}`,
      seconds: +seconds.toFixed(2),
      writes: { ...w, eventsAcked: ackedMeasured, eventsPerSecond: perSecond(ackedMeasured, seconds) },
      reads: Object.fromEntries([...reads].filter(([, s]) => s.n > 0).map(([r, s]) => [r, s.summary(seconds)])),
      server: { cpuSeconds: +cpu.toFixed(1), peakRssMB: Math.round(peakRss / 1048576) },
    };
    const lines = [
      `setup:   ${result.setup}`,
      `writes:  ${result.writes.eventsAcked.toLocaleString('en-US')} events in ${result.seconds} s (after the warm-up) = ${result.writes.eventsPerSecond.toLocaleString('en-US')} events/s; call latency ${formatLatency(w)}`,
      ...Object.entries(result.reads).map(([r, l]) => `reads ${r.padEnd(3)}: ${l.count} = ${l.perSecond}/s; ${formatLatency(l)}`),
      `server:  cpu ${result.server.cpuSeconds} s (${perSecond(100 * cpu, seconds)}% of a core), memory peak ${result.server.peakRssMB} MB`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    if (a.json !== undefined) await import('node:fs/promises').then((fs) => fs.writeFile(a.json as string, `${JSON.stringify(result, null, 2)}\n`));
  } finally {
    for (const c of conns) c.disconnect();
    for (const p of pipes) p.close();
    server?.kill('SIGTERM');
    if (server !== undefined) await new Promise((r) => server?.once('exit', r));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`error: ${(err as Error).message}\n`);
  process.exit(1);
});
