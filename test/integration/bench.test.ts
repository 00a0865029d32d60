/**
 * `tally bench` and the Redis reference run, short: a smoke test that each runs and reports (not
 * a timed assertion). Each offers a low fixed rate rather than all it can: these files run beside
 * others that measure latency, on two cores. The bench starts three real nodes (RF 3, fsync), writes for a few seconds
 * with readers alongside, and checks a sample of counts through each node; the Redis script starts
 * Debian's redis-server and drives it with the same workload.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statusOf } from '../../client/local-cluster.js';
import { removeDir, ROOT, startNode, stopNode, tempDir, waitFor } from '../helpers/node-process.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tally-bench-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function run(script: string, args: string[]): Promise<{ code: number | null; out: string }> {
  const proc = spawn(process.execPath, [join(ROOT, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => proc.once('exit', (code) => resolve({ code, out })));
}

describe('bench smoke', () => {
  it('tally bench --local 3 runs, reports every figure, and every count it checks is within bounds', async () => {
    const json = join(dir, 'bench.json');
    const { code, out } = await run('dist/scripts/cli.js', [
      'bench', '--local', '3', '--base-port', '17881', '--duration', '4', '--warmup', '1', '--rate', '1500', '--videos', '20000', '--batch', '100', '--concurrency', '16', '--readers', '1', '--check', '200', '--json', json,
    ]);
    console.log(out);
    expect(code, out).toBe(0);
    expect(out).toMatch(/^\s+\d+ s\*? .* events\/s/m);
    const r = JSON.parse(await readFile(json, 'utf8'));
    expect(r.writes.eventsAcked).toBeGreaterThan(0);
    expect(r.writes.eventsPerSecond).toBeGreaterThan(0);
    expect(r.writes.p99Ms).toBeGreaterThan(0);
    expect(Object.keys(r.reads).sort()).toEqual(['1d', '1h', '30d']);
    expect(r.nodes).toHaveLength(3);
    for (const n of r.nodes) {
      expect(n.cpuSeconds).toBeGreaterThan(0);
      expect(n.peakRssMB).toBeGreaterThan(0);
      // Its own memory, apart from the files it maps (Linux, where CI runs).
      expect(n.peakAnonMB).toBeGreaterThan(0);
      expect(n.peakAnonMB).toBeLessThanOrEqual(n.peakRssMB);
    }
    expect(r.check.videos).toBeGreaterThan(0);
    expect(r.check.videos).toBeLessThanOrEqual(200);
    expect(r.check.outside).toBe(0);
    expect(r.check.counted).toBeGreaterThanOrEqual(r.check.acked);
  }, 120_000);

  it('a member down when the run ends is skipped by the count check, which goes on through the others', async () => {
    // A run through a ring change, or beside a node stopped for maintenance, used to end in the
    // check's failure to connect to a member it knew at the start, with none of its figures.
    const d = await tempDir('tally-bench-down-');
    const n1 = await startNode(['--port', '0', '--data', join(d, 'n1'), '--id', 'n1', '--rf', '2']);
    const n2 = await startNode(['--port', '0', '--data', join(d, 'n2'), '--id', 'n2', '--rf', '2', '--seeds', n1.address]);
    try {
      await waitFor('n1 sees n2 up', 15_000, async () => ((await statusOf(n1.address)).members.find((m) => m.id === 'n2')?.status === 'up' ? true : undefined));
      await stopNode(n2);
      await waitFor('n1 sees n2 down', 15_000, async () => ((await statusOf(n1.address)).members.find((m) => m.id === 'n2')?.status === 'down' ? true : undefined));
      const { code, out } = await run('dist/scripts/cli.js', ['bench', '--node', n1.address, '--duration', '2', '--warmup', '1', '--rate', '500', '--batch', '10', '--consistency', 'one', '--videos', '1000', '--check', '50']);
      expect(code, out).toBe(0);
      expect(out).toContain(`read through ${n1.address} (not reachable, skipped: ${n2.address})`);
      expect(out).toMatch(/^check: .*every count within bounds$/m);
      // At `all` with n2 down nothing is acknowledged: a run that measured nothing says so by its exit code.
      const none = await run('dist/scripts/cli.js', ['bench', '--node', n1.address, '--duration', '1', '--warmup', '0', '--rate', '100', '--batch', '10', '--consistency', 'all', '--videos', '100', '--check', '10']);
      expect(none.code, none.out).toBe(1);
      expect(none.out).toMatch(/^errors: .*UNAVAILABLE/m);
    } finally {
      await stopNode(n1);
      await stopNode(n2);
      await removeDir(d);
    }
  }, 60_000);

  it('a node with a small heap (--heap-mb 128) under steady load with uniform popularity stays up and loses nothing', async () => {
    // Before the slot bounds followed the heap, such a node at full load filled its heap with
    // cached slots within seconds and ended ("JavaScript heap out of memory"). Full load here
    // would take the CPU from the files beside this one that measure latency (a frozen-replica
    // read test failed its p99 bound twice beside these runs at 12,000 events/s), so this offers
    // a light steady rate: it checks a node with fitted bounds serves, not the crash
    // (node-config.test.ts checks the bounds; the README has the full-load runs).
    const json = join(dir, 'small-heap.json');
    const { code, out } = await run('dist/scripts/cli.js', [
      'bench', '--local', '1', '--rf', '1', '--heap-mb', '128', '--base-port', '17891', '--duration', '4', '--warmup', '1', '--rate', '3000', '--zipf', '0', '--check', '300', '--quiet', '--json', json,
    ]);
    console.log(out);
    expect(code, out).toBe(0);
    const r = JSON.parse(await readFile(json, 'utf8'));
    expect(r.writes.eventsAcked).toBeGreaterThan(0);
    expect(r.writes.eventsUnknown).toBe(0);
    expect(r.check.outside).toBe(0);
    expect(r.nodes[0].cpuSeconds).toBeGreaterThan(0);
  }, 120_000);

  // redis-server is Debian's package: .ci/run installs it; on a machine without it (and not in CI)
  // this one test is skipped, and says why.
  const redis = spawnSync('redis-server', ['--version']).status === 0;
  if (!redis && process.env.CI === undefined) console.warn('redis-server is not installed (apt-get install redis-server): the Redis reference smoke test is skipped');
  it.skipIf(!redis && process.env.CI === undefined)('the Redis reference run drives redis-server with the same workload and reports', async () => {
    const json = join(dir, 'redis.json');
    const { code, out } = await run('dist/scripts/redis-bench.js', ['--port', '17899', '--duration', '3', '--warmup', '1', '--rate', '5000', '--videos', '20000', '--readers', '1', '--json', json]);
    console.log(out);
    expect(code, out).toBe(0);
    const r = JSON.parse(await readFile(json, 'utf8'));
    expect(r.writes.eventsPerSecond).toBeGreaterThan(0);
    expect(Object.keys(r.reads).sort()).toEqual(['1d', '1h', '30d']);
    expect(r.server.peakRssMB).toBeGreaterThan(0);
  }, 60_000);
});
