/**
 * Measures quorum read latency on a local 5-node cluster (RF 3) before and while one node is
 * frozen with SIGSTOP: the target is p99 under 50 ms. Prints numbers; asserts nothing.
 *   npm run measure:frozen [-- --seconds 6 --readers 16]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AGREE_TIMEOUT_MS, startLocalCluster } from '../client/local-cluster.js';
import { TallyClient } from '../client/tally-client.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '6' }, readers: { type: 'string', default: '16' }, 'base-port': { type: 'string', default: '7801' } } });
const seconds = Number(values.seconds);
const readers = Number(values.readers);
const DAY = 86_400_000;
/** Noon six days ago: inside retention whatever the day. */
const T = Math.floor(Date.now() / 86_400_000) * 86_400_000 - 6 * 86_400_000 + 12 * 3_600_000;

const dir = await mkdtemp(join(tmpdir(), 'tally-frozen-'));
const { cluster } = await startLocalCluster({ nodes: 5, basePort: Number(values['base-port']), host: '127.0.0.1', dataDir: dir, fsync: false, agreeTimeoutMs: AGREE_TIMEOUT_MS, quiet: true });
const client = await TallyClient.connect({ nodes: cluster.addresses });
try {
  const events = Array.from({ length: 2_000 }, (_, i) => ({ videoId: `f${i % 200}`, timestamp: T + (i % 3) * DAY }));
  for (let i = 0; i < events.length; i += 500) await client.processEvents(events.slice(i, i + 500));
  const measure = async (ms: number): Promise<number[]> => {
    const lat: number[] = [];
    const end = Date.now() + ms;
    await Promise.all(
      Array.from({ length: readers }, async (_, r) => {
        for (let i = r; Date.now() < end; i += readers) {
          const t = performance.now();
          await client.getViewsCount(`f${i % 200}`, T - DAY, T + 5 * DAY, { consistency: 'quorum' });
          lat.push(performance.now() - t);
        }
      }),
    );
    return lat.sort((a, b) => a - b);
  };
  const show = (what: string, lat: number[]): void => {
    const p = (q: number): string => (lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] as number).toFixed(1);
    console.log(`${what}: ${lat.length} quorum reads, ${readers} at a time: p50 ${p(0.5)} ms, p99 ${p(0.99)} ms, max ${p(1)} ms`);
  };
  await measure(2_000); // warm-up
  show('all nodes up', await measure(seconds * 1000));
  // The pid of the 4th node: its port's listener.
  const port = Number(cluster.addresses[3]?.split(':')[1]);
  const pid = await new Promise<string>((resolve) => {
    const ps = spawn('sh', ['-c', `ps -eo pid,args | grep -- '--port ${port} ' | grep -v grep | awk '{print $1}' | head -1`]);
    let out = '';
    ps.stdout.on('data', (d: Buffer) => (out += d.toString()));
    ps.on('exit', () => resolve(out.trim()));
  });
  process.kill(Number(pid), 'SIGSTOP');
  try {
    show('n4 frozen (SIGSTOP), from the moment it froze', await measure(seconds * 1000));
  } finally {
    process.kill(Number(pid), 'SIGCONT');
  }
} finally {
  await client.close();
  await cluster.stop();
  await rm(dir, { recursive: true, force: true });
}
