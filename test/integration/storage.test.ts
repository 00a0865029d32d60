/**
 * Storage faults replayed on real processes and LevelDB: a node never starts as an empty store on
 * a directory that held data, never acknowledges a write after its data directory is gone, and
 * `--rebuild` is the way back — in a cluster, without losing an acknowledged event.
 * - db/CURRENT deleted (LevelDB would open a new empty database and delete the old tables): the
 *   node refuses with STORAGE_DAMAGED naming the cause, also without the identity file that
 *   recorded the database; the table files are untouched.
 * - the log cut in half, or 16 bytes of it flipped (LevelDB drops what it cannot read): the node
 *   refuses with STORAGE_DAMAGED naming how many commits are gone, on every start.
 * - the data directory deleted while the node runs: the next commit fails, none is acknowledged,
 *   and the node stops; in a cluster, the others serve every key at quorum.
 * - a database started in another cluster, or under another node id (its identity file lost, or
 *   the database copied from another node's directory): refused, as a directory of another id is.
 * - a start killed just after it made a new database (a wiped directory, or --rebuild): the next
 *   start takes it as new again, so its peers refill it before reads count it.
 * - three nodes, RF 3: one loses its CURRENT file; it refuses; with --rebuild it comes back as a
 *   new actor, is refilled by its peers, and reads at `one` from it alone are exact.
 */
import { cp, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import xxhash from 'xxhash-wasm';
import { describe, expect, it } from 'vitest';
import { TallyClient } from '../../client/index.js';
import { DAY_MS } from '../../cluster/time-buckets.js';
import { openActor, openNodeId, recordDatabase } from '../../node/identity.js';
import { LevelKv } from '../../node/kv.js';
import { Store } from '../../node/store.js';
import { Cluster } from '../helpers/cluster.js';
import { refusedStart, removeDir, runCli, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';
import { daysAgo } from '../helpers/time.js';

const T = daysAgo(1, 8);

describe('storage faults on one node', () => {
  it('refuses to start on a database that lost its CURRENT file, and touches none of its tables', async () => {
    const dir = await tempDir();
    let node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's1']);
    try {
      expect((await runCli(['count', 'v', '--n', '100', '--at', String(T), '--node', node.address])).code).toBe(0);
      await stopNode(node, 'SIGTERM');
      const before = (await readdir(`${dir}/db`)).filter((f) => f !== 'CURRENT' && f !== 'LOCK').sort();
      await unlink(`${dir}/db/CURRENT`);
      expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 's1'])).toMatch(/STORAGE_DAMAGED.*lost its CURRENT file.*--rebuild/s);
      expect((await readdir(`${dir}/db`)).filter((f) => f !== 'LOCK').sort()).toEqual(before);
      // --rebuild keeps the damaged database beside the new one.
      node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's1', '--rebuild']);
      expect((await readdir(dir)).some((f) => f.startsWith('db.damaged-'))).toBe(true);
    } finally {
      await stopNode(node, 'SIGKILL');
      await removeDir(dir);
    }
  });

  it('refuses a database that lost its CURRENT file even when the identity file that recorded it is lost too', async () => {
    const dir = await tempDir();
    const node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's10']);
    try {
      expect((await runCli(['count', 'v', '--n', '100', '--at', String(T), '--node', node.address])).code).toBe(0);
      // Killed: what it holds is in its log, not yet in a table.
      await stopNode(node, 'SIGKILL');
      const before = (await readdir(`${dir}/db`)).filter((f) => f !== 'CURRENT' && f !== 'LOCK').sort();
      await unlink(`${dir}/db/CURRENT`);
      await unlink(join(dir, 'tally-node.json'));
      expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 's10'])).toMatch(/STORAGE_DAMAGED.*lost its CURRENT file.*--rebuild/s);
      expect((await readdir(`${dir}/db`)).filter((f) => f !== 'LOCK').sort()).toEqual(before);
    } finally {
      await stopNode(node, 'SIGKILL');
      await removeDir(dir);
    }
  });

  it('refuses a database that lost its actor epoch, and leaves it as it was', async () => {
    const dir = await tempDir();
    const node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's5']);
    try {
      expect((await runCli(['count', 'v', '--n', '3', '--at', String(T), '--node', node.address])).code).toBe(0);
      await stopNode(node, 'SIGTERM');
      const db = new Level<string, Uint8Array>(`${dir}/db`, { keyEncoding: 'utf8', valueEncoding: 'view' });
      await db.del('z\u0000actor-epoch');
      await db.close();
      expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 's5'])).toMatch(/STORAGE_DAMAGED.*lost its actor epoch.*--rebuild/s);
      const again = new Level<string, Uint8Array>(`${dir}/db`, { keyEncoding: 'utf8', valueEncoding: 'view' });
      expect(await again.get('z\u0000actor-epoch')).toBeUndefined();
      await again.close();
    } finally {
      await stopNode(node, 'SIGKILL');
      await removeDir(dir);
    }
  });

  for (const damage of ['cut in half', '16 bytes flipped'] as const) {
    it(`refuses to start on a database whose log was ${damage}, naming the commits it lost`, async () => {
      const dir = await tempDir();
      let node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's3']);
      try {
        const client = await TallyClient.connect({ nodes: [node.address] });
        for (let i = 0; i < 20_000; i += 500) {
          await client.processEvents(Array.from({ length: 500 }, (_, j) => ({ videoId: `log-${(i + j) % 2_000}`, timestamp: T + ((i + j) % 1440) * 60_000 })));
        }
        await client.close();
        await stopNode(node, 'SIGKILL');
        const log = (await readdir(`${dir}/db`)).find((f) => f.endsWith('.log')) as string;
        const bytes = await readFile(`${dir}/db/${log}`);
        expect(bytes.length).toBeGreaterThan(100_000);
        if (damage === 'cut in half') await writeFile(`${dir}/db/${log}`, bytes.subarray(0, bytes.length >> 1));
        else {
          for (let i = 0; i < 16; i++) bytes[(bytes.length >> 1) + i] = (bytes[(bytes.length >> 1) + i] as number) ^ 0xff;
          await writeFile(`${dir}/db/${log}`, bytes);
        }
        expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 's3'])).toMatch(/STORAGE_DAMAGED.*LevelDB dropped .*from a damaged (or cut )?log.*--rebuild/s);
        // Refused again on the next start: no crash loop, no silent start.
        expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 's3'])).toMatch(/STORAGE_DAMAGED/);
      } finally {
        await stopNode(node, 'SIGKILL');
        await removeDir(dir);
      }
    });
  }

  it('serves no wrong number from a table with 64 flipped bytes, and does not crash-loop', async () => {
    const dir = await tempDir();
    let node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's4']);
    const SERIES = 4_000;
    try {
      const client = await TallyClient.connect({ nodes: [node.address] });
      for (let i = 0; i < 60_000; i += 1_000) {
        await client.processEvents(Array.from({ length: 1_000 }, (_, j) => ({ videoId: `ldb-${(i + j) % SERIES}`, timestamp: T + ((i + j) % 1440) * 60_000 })));
      }
      await client.close();
      await stopNode(node, 'SIGTERM');
      const tables = await Promise.all((await readdir(`${dir}/db`)).filter((f) => f.endsWith('.ldb')).map(async (f) => ({ f, bytes: await readFile(`${dir}/db/${f}`) })));
      const largest = tables.sort((a, b) => b.bytes.length - a.bytes.length)[0]!;
      for (let i = 0; i < 64; i++) largest.bytes[(largest.bytes.length >> 2) + i] = (largest.bytes[(largest.bytes.length >> 2) + i] as number) ^ 0xff;
      await writeFile(`${dir}/db/${largest.f}`, largest.bytes);
      // Each series counts exactly 15 events, or its read fails with the cause: never another number.
      const outcomes: Record<string, number> = {};
      for (let start = 0; start < 2; start++) {
        try {
          node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's4']);
        } catch (err) {
          expect((err as Error).message).toMatch(/STORAGE_DAMAGED/);
          outcomes['start refused'] = (outcomes['start refused'] ?? 0) + 1;
          continue;
        }
        const c = await TallyClient.connect({ nodes: [node.address], maxRetries: 0 });
        for (let v = 0; v < SERIES; v += 200) {
          const keys = await Promise.all(
            Array.from({ length: 200 }, (_, k) =>
              c.getViewsCount(`ldb-${v + k}`, T, T + DAY_MS).then((n) => (n === 15 ? 'exact' : `wrong ${n}`), (err: unknown) => String((err as { code?: string }).code)),
            ),
          );
          for (const key of keys) outcomes[key] = (outcomes[key] ?? 0) + 1;
        }
        await c.close();
        await stopNode(node, 'SIGKILL');
      }
      console.log(`64 bytes flipped in ${largest.f} (${largest.bytes.length} bytes): ${JSON.stringify(outcomes)}`);
      for (const k of Object.keys(outcomes)) expect(['exact', 'STORAGE_DAMAGED', 'start refused']).toContain(k);
    } finally {
      await stopNode(node, 'SIGKILL');
      await removeDir(dir);
    }
  }, 120_000);

  it("refuses a database of another cluster, or of another node, whatever the identity file says", async () => {
    const dir = await tempDir();
    const other = await tempDir();
    let node: NodeProcess | undefined = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's7', '--cluster', 'blue']);
    try {
      expect((await runCli(['count', 'v', '--n', '5', '--at', String(T), '--node', node.address])).code).toBe(0);
      await stopNode(node, 'SIGTERM');
      node = undefined;
      expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 's7', '--cluster', 'green'])).toMatch(/BAD_REQUEST.*cluster "blue".*"green"/s);
      // The identity file lost: the database still knows whose it is.
      await unlink(join(dir, 'tally-node.json'));
      expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 's8', '--cluster', 'blue'])).toMatch(/BAD_REQUEST.*node "s7".*"s8"/s);
      // Another node's database copied into a new directory.
      await cp(join(dir, 'db'), join(other, 'db'), { recursive: true });
      expect(await refusedStart(['--rf', '1', '--port', '0', '--data', other, '--id', 's9', '--cluster', 'blue'])).toMatch(/BAD_REQUEST.*node "s7".*"s9"/s);
      node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's7', '--cluster', 'blue']);
      expect((await runCli(['get', 'v', '--from', String(T - DAY_MS), '--to', String(T + DAY_MS), '--node', node.address])).stdout).toBe('5\n');
    } finally {
      if (node !== undefined) await stopNode(node, 'SIGKILL');
      await removeDir(dir);
      await removeDir(other);
    }
  });

  for (const made of ['in a wiped directory', 'by --rebuild'] as const) {
    it(`a start killed just after it made a new database ${made} is taken as new again: rebuilt before reads count it`, async () => {
      const dir = await tempDir();
      // Nothing listens there: a node joining through it waits to be sent its ranges.
      const args = ['--rf', '1', '--port', '0', '--data', dir, '--id', 's6', '--seeds', '127.0.0.1:1'];
      let node: NodeProcess | undefined;
      try {
        if (made === 'by --rebuild') {
          node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's6']);
          expect((await runCli(['count', 'v', '--n', '10', '--at', String(T), '--node', node.address])).code).toBe(0);
          await stopNode(node, 'SIGTERM');
          await rename(join(dir, 'db'), join(dir, 'db.damaged-1'));
        }
        // What the start did before it was killed: the node id, the new database and its actor
        // epoch, and the epoch recorded as this directory's database.
        const { id } = await openNodeId(dir, 's6');
        const { h64 } = await xxhash();
        const store = new Store(new LevelKv(join(dir, 'db')), h64);
        await store.open();
        const identity = await openActor(store, id);
        await recordDatabase(dir, id, identity.epoch, Date.now());
        await store.close();
        node = await startNode(args);
        const status = await runCli(['status', '--node', node.address, '--json']);
        const own = (JSON.parse(status.stdout) as { members: { id: string; lifecycle: string }[] }).members.find((m) => m.id === 's6');
        expect(own?.lifecycle).toBe('normal+rebuilding');
      } finally {
        if (node !== undefined) await stopNode(node, 'SIGKILL');
        await removeDir(dir);
      }
    });
  }

  it('acknowledges no write once its data directory is deleted under it, and stops', async () => {
    const dir = await tempDir();
    const node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 's2']);
    try {
      expect((await runCli(['count', 'v', '--n', '10', '--at', String(T), '--node', node.address])).code).toBe(0);
      await rm(dir, { recursive: true, force: true });
      // The first commit after it finds the directory gone: its events stay in memory (outcome
      // unknown), and the node stops, answering what comes meanwhile NOT_READY.
      const client = await TallyClient.connect({ nodes: [node.address], maxRetries: 0, timeoutMs: 2_000 });
      let acknowledged = 0;
      const codes = new Set<string>();
      for (let i = 0; i < 5; i++) {
        try {
          await client.countViewEvent('v', { timestamp: T });
          acknowledged++;
        } catch (err) {
          codes.add((err as { code?: string }).code ?? 'ERROR');
        }
      }
      await client.close();
      expect(acknowledged).toBe(0);
      expect(codes.size).toBeGreaterThan(0);
      for (const code of codes) expect(['INTERNAL', 'TIMEOUT', 'NOT_READY', 'CONNECTION_CLOSED', 'UNAVAILABLE']).toContain(code);
      expect(await node.exited).toBe(1);
      expect(node.output()).toMatch(/error STORAGE_DAMAGED: [^\n]*deleted or replaced while the node ran/);
    } finally {
      await stopNode(node, 'SIGKILL');
      await removeDir(dir);
    }
  });
});

/** Three nodes, RF 3, with 3,000 events at quorum over 30 videos `${prefix}0`… and two days. */
async function clusterWith(dir: string, prefix: string): Promise<Cluster> {
  const cluster = new Cluster(dir, 3);
  try {
    await cluster.startAll();
    const client = await TallyClient.connect({ nodes: cluster.addresses });
    const events = Array.from({ length: 3_000 }, (_, i) => ({ videoId: `${prefix}${i % 30}`, timestamp: T + (i % 2) * DAY_MS + (i % 600) * 60_000 }));
    for (let i = 0; i < events.length; i += 500) await client.processEvents(events.slice(i, i + 500), { consistency: 'quorum' });
    await client.close();
    return cluster;
  } catch (err) {
    await cluster.stop();
    await removeDir(dir);
    throw err;
  }
}

describe('storage faults in a cluster', () => {
  it('a replica whose data directory is deleted under it stops, and the others serve every key at quorum', async () => {
    const dir = await tempDir();
    const cluster = await clusterWith(dir, 'dd-');
    try {
      const victim = cluster.nodes[1]!;
      await rm(`${dir}/n2`, { recursive: true, force: true });
      // A write it coordinates finds the directory gone at its commit (its outcome unknown).
      const direct = await TallyClient.connect({ nodes: [cluster.address(1)], routing: 'direct', maxRetries: 0, timeoutMs: 2_000 });
      await expect(direct.countViewEvent('dd-0', { timestamp: T })).rejects.toThrow();
      await direct.close().catch(() => {});
      // It stops, as a node with a lost disk should, rather than stay up and fail what it is
      // asked to write: a replica that cannot commit failed the reads that read-repaired it.
      expect(await victim.exited).toBe(1);
      expect(victim.output()).toMatch(/error STORAGE_DAMAGED: [^\n]*deleted or replaced while the node ran/);
      const client = await TallyClient.connect({ nodes: [cluster.address(0), cluster.address(2)], timeoutMs: 5_000 });
      await client.processEvents(Array.from({ length: 300 }, (_, i) => ({ videoId: `dd-${i % 30}`, timestamp: T })), { consistency: 'quorum' });
      for (let v = 0; v < 30; v++) {
        const n = await client.getViewsCount(`dd-${v}`, T - DAY_MS, T + 3 * DAY_MS, { consistency: 'quorum' });
        // 100 loaded, 10 just now, and dd-0's write of unknown outcome at most.
        if (v === 0) expect(n).toBeGreaterThanOrEqual(110);
        else expect(n, `dd-${v}`).toBe(110);
      }
      expect(await client.getViewsCount('dd-0', T - DAY_MS, T + 3 * DAY_MS, { consistency: 'quorum' })).toBeLessThanOrEqual(111);
      await client.close();
    } finally {
      await cluster.stop();
      await removeDir(dir);
    }
  }, 90_000);

  it('a replica that lost its CURRENT file refuses, then --rebuild brings it back with every acknowledged event', async () => {
    const dir = await tempDir();
    const cluster = await clusterWith(dir, 'st-');
    try {
      await cluster.kill(2, 'SIGTERM');
      await unlink(`${dir}/n3/db/CURRENT`);
      await expect(cluster.start(2)).rejects.toThrow(/STORAGE_DAMAGED/);
      const args = cluster.extra;
      args.push('--rebuild');
      await cluster.start(2);
      args.pop();
      const alone = await TallyClient.connect({ nodes: [cluster.address(2)], routing: 'direct' });
      const total = async (): Promise<number> => {
        const counts = await Promise.all(Array.from({ length: 30 }, (_, v) => alone.getViewsCount(`st-${v}`, T - DAY_MS, T + 3 * DAY_MS, { consistency: 'one' })));
        return counts.reduce((a, b) => a + b, 0);
      };
      // Reads do not count it until it is rebuilt (NOT_READY or read elsewhere); then it holds all.
      const { ms } = await waitFor('n3 rebuilt', 60_000, async () => {
        const status = await runCli(['status', '--node', cluster.address(2), '--json']);
        const s = JSON.parse(status.stdout) as { members: { id: string; lifecycle: string }[] };
        return s.members.some((m) => m.lifecycle.includes('rebuilding')) ? undefined : true;
      }, 250);
      await cluster.kill(0);
      await cluster.kill(1);
      expect(await total()).toBe(3_000);
      await alone.close();
      console.log(`n3 rebuilt ${ms} ms after it started with --rebuild`);
    } finally {
      await cluster.stop();
      await removeDir(dir);
    }
  }, 120_000);

  it('a replica wiped right after a restart with its clock 5 s ahead is taken as its new self and rebuilt', async () => {
    // Its generation comes from its clock, above the last one its data directory recorded. The
    // restart 5 s ahead leaves its peers holding a generation 5 s in the future; wiped, it has no
    // record to start above and starts below that. Its peers must still take its new state (new
    // actor, being rebuilt) rather than keep the old process's, or it is never sent its ranges.
    const dir = await tempDir();
    const cluster = await clusterWith(dir, 'ck-');
    try {
      const members = async (i: number): Promise<{ id: string; lifecycle: string; generation: number }[]> =>
        (JSON.parse((await runCli(['status', '--node', cluster.address(i), '--json'])).stdout) as { members: { id: string; lifecycle: string; generation: number }[] }).members;
      await cluster.kill(2);
      cluster.extra.push('--clock-offset-ms', '5000');
      await cluster.start(2);
      cluster.extra.splice(-2);
      // Its peers hear of the generation its clock, 5 s ahead, gave it.
      const ahead = (await members(2)).find((m) => m.id === 'n3')?.generation as number;
      await waitFor('peers hold the generation 5 s ahead', 10_000, async () => ((await members(0)).find((m) => m.id === 'n3')?.generation === ahead ? true : undefined), 100);
      await cluster.kill(2);
      await rm(`${dir}/n3`, { recursive: true, force: true });
      await cluster.start(2);
      const { ms } = await waitFor('n3 rebuilt, and seen so by its peers', 30_000, async () => {
        const own = (await members(2)).find((m) => m.id === 'n3');
        if (own === undefined || own.lifecycle.includes('rebuilding')) return undefined;
        for (const i of [0, 1]) {
          const seen = (await members(i)).find((m) => m.id === 'n3');
          if (seen?.generation !== own.generation || seen.lifecycle.includes('rebuilding')) return undefined;
        }
        return true;
      }, 250);
      // It started below the generation its peers held, and moved past it once it heard of it.
      expect(cluster.nodes[2]?.output()).toMatch(new RegExp(`known in generation ${ahead}, later than this one's start: this node moved to generation ${ahead + 1}`));
      await cluster.kill(0);
      await cluster.kill(1);
      const alone = await TallyClient.connect({ nodes: [cluster.address(2)], routing: 'direct' });
      const counts = await Promise.all(Array.from({ length: 30 }, (_, v) => alone.getViewsCount(`ck-${v}`, T - DAY_MS, T + 3 * DAY_MS, { consistency: 'one' })));
      expect(counts.reduce((a, b) => a + b, 0)).toBe(3_000);
      await alone.close();
      console.log(`n3 rebuilt ${ms} ms after its wiped start`);
    } finally {
      await cluster.stop();
      await removeDir(dir);
    }
  }, 120_000);
});
