/**
 * Measures how long a node whose data directory was wiped takes to be refilled by its peers, per
 * GB of its database: three nodes, RF 3, a load through the client, then one node is killed, its
 * directory deleted, and it is started again; the time runs until it no longer rebuilds. Then its
 * peers are stopped and a sample of videos is read from it alone at `one`, which must be exact.
 * Prints numbers; exits non-zero only if a read is wrong.
 *   npm run measure:rebuild [-- --events 1000000 --videos 100000]
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { statusOf } from '../client/local-cluster.js';
import { TallyClient } from '../client/tally-client.js';
import { bytesIn, startTallyNode, until } from './node-procs.js';

const { values } = parseArgs({ options: { events: { type: 'string', default: '1000000' }, videos: { type: 'string', default: '100000' }, 'base-port': { type: 'string', default: '7851' } } });
const EVENTS = Number(values.events);
const VIDEOS = Number(values.videos);
const BASE = Number(values['base-port']);
const DAY = 86_400_000;
/** Midnight six days ago: inside retention whatever the day. */
const T = Math.floor(Date.now() / 86_400_000) * 86_400_000 - 6 * 86_400_000;
const addresses = [0, 1, 2].map((i) => `127.0.0.1:${BASE + i}`);

const dir = await mkdtemp(join(tmpdir(), 'tally-rebuild-'));
const procs: (ChildProcess | undefined)[] = [];

function start(i: number): Promise<void> {
  const args = ['--port', String(BASE + i), '--data', join(dir, `n${i + 1}`), '--id', `n${i + 1}`, '--zone', `z${i + 1}`, '--rf', '3'];
  if (i > 0) args.push('--seeds', addresses[0] as string);
  return startTallyNode(args, `n${i + 1}`).then((p) => {
    procs[i] = p;
  });
}

async function kill(i: number): Promise<void> {
  const p = procs[i];
  if (p === undefined || p.exitCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await exited;
}

try {
  for (let i = 0; i < 3; i++) await start(i);
  await until('all up and rebuilt', 60_000, async () => {
    const all = await Promise.all(addresses.map((a) => statusOf(a)));
    return all.every((s) => s.members.length === 3 && s.members.every((m) => m.status === 'up' && m.lifecycle === 'normal'));
  });
  const client = await TallyClient.connect({ nodes: addresses });
  const t0 = Date.now();
  const per = 1_000;
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let b = next++; b * per < EVENTS; b = next++) {
        const events = Array.from({ length: per }, (_, j) => {
          const i = b * per + j;
          return { videoId: `rb-${i % VIDEOS}`, timestamp: T + (i % 3) * DAY + (i % 1440) * 60_000 };
        });
        await client.processEvents(events, { consistency: 'quorum' });
      }
    }),
  );
  console.log(`loaded ${EVENTS} events over ${VIDEOS} videos in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await client.close();
  // Let hints and replication settle, then lose n3's disk.
  await new Promise((r) => setTimeout(r, 3_000));
  const bytes = await bytesIn(join(dir, 'n3', 'db'));
  await kill(2);
  await rm(join(dir, 'n3'), { recursive: true, force: true });
  const t1 = Date.now();
  await start(2);
  await until('n3 rebuilt', 30 * 60_000, async () => {
    const s = await statusOf(addresses[2] as string);
    return s.members.every((m) => !m.lifecycle.includes('rebuilding'));
  });
  const seconds = (Date.now() - t1) / 1000;
  const rebuilt = await bytesIn(join(dir, 'n3', 'db'));
  console.log(`n3's database was ${(bytes / 1e6).toFixed(1)} MB; wiped, it was rebuilt in ${seconds.toFixed(1)} s (now ${(rebuilt / 1e6).toFixed(1)} MB): ${(seconds / (bytes / 1e9)).toFixed(0)} s per GB`);
  // n3 alone: its peers stopped, every sampled video read at `one` must be exact.
  await kill(0);
  await kill(1);
  const alone = await TallyClient.connect({ nodes: [addresses[2] as string], routing: 'direct' });
  const sample = Math.min(VIDEOS, 5_000);
  let wrong = 0;
  for (let v = 0; v < sample; v += 100) {
    const counts = await Promise.all(Array.from({ length: Math.min(100, sample - v) }, (_, k) => alone.getViewsCount(`rb-${v + k}`, T - DAY, T + 5 * DAY, { consistency: 'one' })));
    counts.forEach((n, k) => {
      const expected = Math.floor(EVENTS / VIDEOS) + ((v + k) < EVENTS % VIDEOS ? 1 : 0);
      if (n !== expected) wrong++;
    });
  }
  await alone.close();
  console.log(`read ${sample} videos from n3 alone at one: ${wrong} wrong`);
  if (wrong > 0) process.exitCode = 1;
} finally {
  for (let i = 0; i < 3; i++) await kill(i);
  await rm(dir, { recursive: true, force: true });
}
