/**
 * A full disk, on a real filesystem (a 64 MB tmpfs; mounting one needs root, as in CI): writes
 * fail with STORAGE_FULL (kept in memory, outcome unknown), none is acknowledged while the disk is
 * full, and once space returns writes resume by themselves — no restart — with every acknowledged
 * event, and every write retried with its batch id, counted exactly once, also after a restart.
 * A node started on a full disk refuses with STORAGE_FULL (not as damage to --rebuild), and starts
 * with its data once space returns; one started where it may not write (a read-only mount: the
 * same path as a directory of another owner) refuses with BAD_REQUEST, also not as damage.
 */
import { execFileSync } from 'node:child_process';
import { rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Connection } from '../../client/connection.js';
import { TallyClient } from '../../client/index.js';
import { DAY_MS } from '../../cluster/time-buckets.js';
import { TallyError, type EventTuple } from '../../protocol/index.js';
import { refusedStart, removeDir, runCli, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';
import { daysAgo } from '../helpers/time.js';

const T = daysAgo(1);

function mountTmpfs(dir: string): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return ((err as { stderr?: Buffer }).stderr?.toString() ?? (err as Error).message).trim();
  }
}

/** Stops `node` if it runs, unmounts the tmpfs on `dir` if there is one, and removes `dir`. */
async function cleanUp(node: NodeProcess | undefined, dir: string): Promise<void> {
  if (node !== undefined) await stopNode(node, 'SIGKILL');
  try {
    execFileSync('umount', [dir]);
  } catch {
    // not mounted
  }
  await removeDir(dir);
}

const root = process.getuid?.() === 0;

describe('a full disk', () => {
  it.skipIf(!root)('fails writes with STORAGE_FULL, acknowledges none, and resumes by itself when space returns', async () => {
    const dir = await tempDir();
    const why = mountTmpfs(dir);
    expect(why, `mount a tmpfs on ${dir}`).toBeUndefined();
    let node: NodeProcess | undefined;
    try {
      node = await startNode(['--rf', '1', '--port', '0', '--data', join(dir, 'n'), '--id', 'full1']);
      const conn = await Connection.open(node.address, 5_000);
      const send = async (batch: string, events: EventTuple[]): Promise<string> => {
        try {
          await conn.request({ t: 'count', events, cl: 'quorum', batch }, 10_000);
          return 'ok';
        } catch (err) {
          return err instanceof TallyError ? err.code : String(err);
        }
      };
      // Fill the disk but for ~3 MB, then write until the store says it is full.
      const fs = await statfs(dir);
      await writeFile(join(dir, 'filler'), Buffer.alloc(fs.bavail * fs.bsize - 3 * 1024 * 1024));
      let acknowledged = 0;
      let k = 0;
      const failed: { batch: string; events: EventTuple[] }[] = [];
      const codes: Record<string, number> = {};
      for (; k < 2_000 && failed.length < 5; k++) {
        const events: EventTuple[] = Array.from({ length: 500 }, (_, j) => [`full-${(k * 500 + j) % 5_000}`, 'view', T + ((k * 500 + j) % 1440) * 60_000, 1, 1]);
        const code = await send(`b${k}`, events);
        codes[code] = (codes[code] ?? 0) + 1;
        if (code === 'ok') {
          acknowledged += 500;
          expect(failed, 'no write is acknowledged once the disk is full').toEqual([]);
        } else failed.push({ batch: `b${k}`, events });
      }
      console.log(`before space returned: ${JSON.stringify(codes)} over ${k} batches of 500 events`);
      expect(failed.length).toBe(5);
      expect(codes['STORAGE_FULL'] ?? 0).toBeGreaterThan(0);
      for (const code of Object.keys(codes)) expect(['ok', 'STORAGE_FULL', 'OVERLOADED', 'TIMEOUT']).toContain(code);

      // Space returns: the failed batches go again with their ids and are taken, with no restart.
      await rm(join(dir, 'filler'));
      let expected = acknowledged;
      for (const f of failed) {
        await waitFor(`batch ${f.batch} after space returned`, 30_000, async () => ((await send(f.batch, f.events)) === 'ok' ? true : undefined), 250);
        expected += f.events.length;
      }
      expect(await send('after', [['full-0', 'view', T, 1, 7]])).toBe('ok');
      expected += 7;
      conn.close();
      const total = async (address: string): Promise<number> => {
        const c = await TallyClient.connect({ nodes: [address] });
        try {
          const counts = await Promise.all(Array.from({ length: 5_000 }, (_, v) => c.getViewsCount(`full-${v}`, T, T + DAY_MS)));
          return counts.reduce((a, b) => a + b, 0);
        } finally {
          await c.close();
        }
      };
      expect(await total(node.address)).toBe(expected);
      await stopNode(node, 'SIGKILL');
      node = await startNode(['--rf', '1', '--port', '0', '--data', join(dir, 'n'), '--id', 'full1']);
      expect(await total(node.address)).toBe(expected);
      console.log(`after space returned and a restart: ${expected} events, exactly`);
    } finally {
      await cleanUp(node, dir);
    }
  }, 120_000);
  it.skipIf(!root)('refuses a start on a full disk with STORAGE_FULL, not as damage to rebuild, and starts with its data once space returns', async () => {
    await refusedUntilMended(
      'full2',
      async (dir) => {
        const fs = await statfs(dir);
        await writeFile(join(dir, 'filler'), Buffer.alloc(fs.bavail * fs.bsize));
      },
      /STORAGE_FULL/,
      (dir) => rm(join(dir, 'filler')),
    );
  }, 60_000);

  it.skipIf(!root)('refuses a start where it may not write (a read-only mount) with BAD_REQUEST, not as damage to rebuild, and starts with its data once it may', async () => {
    await refusedUntilMended(
      'ro1',
      async (dir) => void execFileSync('mount', ['-o', 'remount,ro', dir]),
      /BAD_REQUEST: store open \S+ failed: this process may not write there \(.*Read-only file system\); its data is not damaged/,
      async (dir) => void execFileSync('mount', ['-o', 'remount,rw', dir]),
    );
  }, 60_000);
});

/**
 * A node on a tmpfs writes 100 events and is killed (its log is replayed into a table file at the
 * next open, which writes); `harm` keeps it from starting, with `refusal` and never as damage to
 * rebuild; once `mend`ed it starts with the 100 events.
 */
async function refusedUntilMended(id: string, harm: (dir: string) => Promise<void>, refusal: RegExp, mend: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  const why = mountTmpfs(dir);
  expect(why, `mount a tmpfs on ${dir}`).toBeUndefined();
  const args = ['--rf', '1', '--port', '0', '--data', join(dir, 'n'), '--id', id];
  let node: NodeProcess | undefined;
  try {
    node = await startNode(args);
    expect((await runCli(['count', 'v', '--n', '100', '--at', String(T), '--node', node.address])).code).toBe(0);
    await stopNode(node, 'SIGKILL');
    node = undefined;
    await harm(dir);
    const refused = await refusedStart(args);
    expect(refused).toMatch(refusal);
    expect(refused).not.toMatch(/STORAGE_DAMAGED|--rebuild/);
    await mend(dir);
    node = await startNode(args);
    const got = await runCli(['get', 'v', '--json', '--from', String(T - DAY_MS), '--to', String(T + DAY_MS), '--node', node.address]);
    expect((JSON.parse(got.stdout) as { count: number }).count).toBe(100);
  } finally {
    await cleanUp(node, dir);
  }
}
