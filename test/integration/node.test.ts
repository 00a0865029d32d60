/**
 * One real node process with real LevelDB: the CLI round trip, durability across SIGKILL, a
 * clean stop, the identity check, exact counts through the client, many long counts at once, and
 * event times landing in the right buckets over 40 days.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TallyClient, TallyError } from '../../client/index.js';
import { DAY_MS, MINUTE_MS } from '../../cluster/time-buckets.js';
import { refusedStart, removeDir, runCli, startNode, stopNode, tempDir, type NodeProcess } from '../helpers/node-process.js';
import { seededRandom } from '../helpers/random.js';

/** Minutes and hours kept for ever: these tests read events of 40 days, and of fixed dates, to the minute. */
const FOREVER = ['--minute-retention-days', '0', '--hour-retention-days', '0'];

describe('a single node', () => {
  let dir: string;
  let node: NodeProcess;

  beforeAll(async () => {
    dir = await tempDir();
    node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 'n1', ...FOREVER]);
  });
  afterAll(async () => {
    if (node) await stopNode(node, 'SIGKILL');
    await removeDir(dir);
  });

  it('counts with the CLI and keeps acknowledged counts across SIGKILL', async () => {
    const count = await runCli(['count', 'v1', '--n', '5', '--node', node.address]);
    expect(count.stderr).toBe('');
    expect(count.code).toBe(0);
    const get = await runCli(['get', 'v1', '--node', node.address]);
    expect(get.stdout).toBe('5\n');

    await stopNode(node, 'SIGKILL');
    node = await startNode(['--rf', '1', '--port', String(node.port), '--data', dir, '--id', 'n1', ...FOREVER]);
    const after = await runCli(['get', 'v1', '--node', node.address]);
    expect(after.stdout).toBe('5\n');
    const json = JSON.parse((await runCli(['get', 'v1', '--json', '--node', node.address])).stdout);
    expect(json).toMatchObject({ count: 5, sum: 5, min: 1, max: 1, avg: 1, from: 0, clipped: false });
  });

  it('counts 10,000 events sent through the client exactly', async () => {
    const client = await TallyClient.connect({ nodes: [node.address] });
    try {
      const calls: Promise<void>[] = [];
      for (let i = 0; i < 10_000; i++) calls.push(client.countViewEvent('exact-10k'));
      await Promise.all(calls);
      expect(await client.getViewsCount('exact-10k', 0, Date.now() + MINUTE_MS)).toBe(10_000);
    } finally {
      await client.close();
    }
  });

  it('answers 500 counts since 1970 asked at once, which read the store thousands of times', async () => {
    // Each count's days since 1970 are ~21 reads of 1,024 days; the client sends the 500 counts in
    // one request. The read thread takes 512 reads at once: the rest wait their turn, not refused.
    const client = await TallyClient.connect({ nodes: [node.address] });
    try {
      await client.processEvents(Array.from({ length: 500 }, (_, i) => ({ videoId: `all-time-${i}`, count: i + 1 })));
      const now = Date.now() + MINUTE_MS;
      const counts = await Promise.all(Array.from({ length: 500 }, (_, i) => client.getViewsCount(`all-time-${i}`, 0, now)));
      expect(counts).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    } finally {
      await client.close();
    }
  });

  it('counts writes that waited their turn as bytes exactly: values, types and times as sent', async () => {
    const client = await TallyClient.connect({ nodes: [node.address] });
    try {
      const rand = seededRandom(8);
      const now = Date.now();
      const want = new Map<string, { count: number; sum: number; min: number; max: number }>();
      const calls: Promise<void>[] = [];
      // 40 calls of 1,000 at once: frames of up to 2,000 events, which wait behind each other.
      for (let c = 0; c < 40; c++) {
        const events = Array.from({ length: 1_000 }, () => {
          const videoId = `waited-${Math.floor(rand() * 20)}`;
          const eventType = rand() < 0.5 ? 'view' : 'watch-ms';
          const value = Math.floor(rand() * 5_000) / 4;
          const key = `${videoId}|${eventType}`;
          const w = want.get(key) ?? { count: 0, sum: 0, min: Infinity, max: -Infinity };
          want.set(key, { count: w.count + 1, sum: w.sum + value, min: Math.min(w.min, value), max: Math.max(w.max, value) });
          return { videoId, eventType, value, timestamp: now - Math.floor(rand() * 3 * DAY_MS) };
        });
        calls.push(client.processEvents(events));
      }
      await Promise.all(calls);
      const waited = ((await client.status()) as { peers: Record<string, number> }).peers['writesWaitedAsBytes'];
      expect(waited).toBeGreaterThan(0);
      for (const [key, w] of want) {
        const [videoId, eventType] = key.split('|') as [string, string];
        const got = await client.getStats(videoId, eventType, now - 4 * DAY_MS, now + MINUTE_MS);
        expect({ key, count: got.count, sum: got.sum, min: got.min, max: got.max }).toEqual({ key, ...w });
      }
    } finally {
      await client.close();
    }
  });

  it('refuses, whole, a write that would pass 2^53, and keeps serving that series and the writes beside it', async () => {
    const client = await TallyClient.connect({ nodes: [node.address] });
    try {
      const at = Date.UTC(2026, 10, 2, 10);
      // Each tuple adds 10^15 to the sum: nine fit under 2^53 (about 9.007 × 10^15), the tenth does not.
      const huge = { videoId: 'huge', eventType: 'watch_ms', timestamp: at, value: 1e9, count: 1_000_000 };
      for (let i = 0; i < 9; i++) await client.processEvents([huge]);
      const results = await Promise.allSettled([client.processEvents([huge]), ...Array.from({ length: 20 }, () => client.countViewEvent('innocent', { timestamp: at }))]);
      expect(results[0]).toMatchObject({ status: 'rejected', reason: { code: 'BAD_REQUEST', message: expect.stringMatching(/2\^53/) } });
      expect(results.slice(1).every((r) => r.status === 'fulfilled')).toBe(true);
      const stats = await client.getStats('huge', 'watch_ms', at - DAY_MS, at + DAY_MS);
      expect(stats).toMatchObject({ count: 9_000_000, sum: 9e15 });
      expect(await client.getViewsCount('innocent', at - DAY_MS, at + DAY_MS)).toBe(20);
    } finally {
      await client.close();
    }
  });

  it('puts events with explicit times in the right buckets over 40 days', async () => {
    const rand = seededRandom(Number(process.env.TEST_SEED ?? 40));
    const end = Date.UTC(2026, 10, 1);
    const start = end - 40 * DAY_MS;
    const times: number[] = [];
    for (let i = 0; i < 3_000; i++) times.push(start + Math.floor(rand() * (end - start)));
    const client = await TallyClient.connect({ nodes: [node.address] });
    try {
      await client.processEvents(times.map((timestamp) => ({ videoId: 'forty-days', timestamp })));
      for (let i = 0; i < 200; i++) {
        // Half the ranges on minute boundaries, half anywhere: both ends count whole minutes.
        let a = start - DAY_MS + Math.floor(rand() * (end - start + 2 * DAY_MS));
        let b = start - DAY_MS + Math.floor(rand() * (end - start + 2 * DAY_MS));
        if (a > b) [a, b] = [b, a];
        if (i % 2 === 0) {
          a -= a % MINUTE_MS;
          b -= b % MINUTE_MS;
        }
        const from = a - (a % MINUTE_MS);
        const to = b <= a ? from : Math.ceil(b / MINUTE_MS) * MINUTE_MS; // an empty range covers nothing
        const expected = times.filter((t) => t >= from && t < to).length;
        expect(await client.getViewsCount('forty-days', a, b), `range [${a}, ${b})`).toBe(expected);
      }
    } finally {
      await client.close();
    }
  });

  it('rejects bad input at the call and on the CLI with a code', async () => {
    const client = await TallyClient.connect({ nodes: [node.address] });
    try {
      await expect(client.countViewEvent('')).rejects.toMatchObject({ code: 'BAD_REQUEST' });
      await expect(client.processEvent('v', 'watch', -1)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
      await expect(client.processEvent('v', 'watch', Number.NaN)).rejects.toBeInstanceOf(TallyError);
      await expect(client.countViewEvent('x'.repeat(300))).rejects.toMatchObject({ code: 'TOO_LARGE' });
      await expect(client.countViewEvent('v', { timestamp: 5 })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    } finally {
      await client.close();
    }
    const r = await runCli(['get', 'v1', '--from', 'yesterday', '--node', node.address]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error BAD_REQUEST: --from must be/);
  });

  it('stops cleanly on SIGTERM and refuses its directory under another id', async () => {
    await runCli(['count', 'clean-stop', '--n', '3', '--node', node.address]);
    expect(await stopNode(node, 'SIGTERM')).toBe(0);
    expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 'n2'])).toMatch(
      /belongs to node "n1", refusing to start it as "n2"/,
    );
    node = await startNode(['--rf', '1', '--port', '0', '--data', dir, ...FOREVER]);
    expect((await runCli(['get', 'clean-stop', '--node', node.address])).stdout).toBe('3\n');
  });

  it('says which node is unreachable', async () => {
    const r = await runCli(['get', 'v1', '--node', '127.0.0.1:1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error UNAVAILABLE: /);
  });
});

describe('a node with --fsync', () => {
  it('acknowledges writes that survive SIGKILL', async () => {
    const dir = await tempDir();
    let node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 'f1', '--fsync']);
    try {
      expect(node.output()).toMatch(/, fsync\)/);
      const client = await TallyClient.connect({ nodes: [node.address] });
      await Promise.all(Array.from({ length: 500 }, (_, i) => client.processEvent('synced', 'watch_ms', i)));
      await client.close();
      await stopNode(node, 'SIGKILL');
      node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 'f1', '--fsync']);
      const r = JSON.parse((await runCli(['get', 'synced', '--type', 'watch_ms', '--json', '--node', node.address])).stdout);
      expect(r).toMatchObject({ count: 500, sum: (499 * 500) / 2, min: 0, max: 499, avg: 249.5, clipped: false });
    } finally {
      await stopNode(node, 'SIGKILL');
      await removeDir(dir);
    }
  });
});

describe('a node started with a shorter retention', () => {
  it('is refused unless it says --shorten-retention, and nothing is deleted meanwhile', async () => {
    const dir = await tempDir();
    const base = ['--rf', '1', '--port', '0', '--data', dir, '--id', 'r1'];
    const at = new Date(Date.now() - 30 * DAY_MS);
    at.setUTCHours(12, 30, 0, 0);
    const minute = ['--from', String(at.getTime()), '--to', String(at.getTime() + MINUTE_MS)];
    let node = await startNode([...base, ...FOREVER]);
    try {
      await runCli(['count', 'old', '--n', '4', '--at', at.toISOString(), '--node', node.address]);
      expect((await runCli(['get', 'old', ...minute, '--node', node.address])).stdout).toBe('4\n');
      await stopNode(node, 'SIGTERM');
      // The defaults (minutes 14 days, hours 400) would delete the 30-day-old minute at once.
      const refused = await refusedStart(base);
      expect(refused).toMatch(/BAD_REQUEST/);
      expect(refused).toMatch(/kept minutes for ever, hours for ever.*would delete minutes for ever → 14 days and hours for ever → 400 days.*--minute-retention-days 0 --hour-retention-days 0.*--shorten-retention/s);
      // Refused twice over (and a lengthening of one of them does not let the other through).
      expect(await refusedStart([...base, '--minute-retention-days', '20', '--hour-retention-days', '0'])).toMatch(/would delete minutes for ever → 20 days of it/);
      node = await startNode([...base, ...FOREVER]);
      expect((await runCli(['get', 'old', ...minute, '--node', node.address])).stdout).toBe('4\n');
      await stopNode(node, 'SIGTERM');
      // Meant: the node starts, says so, and the minute is gone (its day still counts it).
      node = await startNode([...base, '--minute-retention-days', '7', '--hour-retention-days', '0', '--shorten-retention']);
      expect(node.output()).toMatch(/retention shortened \(minutes for ever → 7 days\)/);
      const gone = await runCli(['get', 'old', ...minute, '--node', node.address]);
      expect(gone.stdout).toBe('0\n');
      expect(gone.stderr).toMatch(/past retention/);
      const day = Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate());
      expect((await runCli(['get', 'old', '--from', String(day), '--to', String(day + DAY_MS), '--node', node.address])).stdout).toBe('4\n');
      await stopNode(node, 'SIGTERM');
      // Lengthening again deletes nothing and needs no flag; going back to 7 then is a shortening
      // too (of what the longer retention kept), and says so.
      node = await startNode([...base, '--minute-retention-days', '10', '--hour-retention-days', '0']);
      await stopNode(node, 'SIGTERM');
      expect(await refusedStart([...base, '--minute-retention-days', '7', '--hour-retention-days', '0'])).toMatch(/minutes 10 days → 7 days/);
    } finally {
      await stopNode(node, 'SIGKILL');
      await removeDir(dir);
    }
  });
});

describe('a node whose database is wiped', () => {
  it('refuses to start as an empty store, and with --rebuild comes back as a new actor under the same id', async () => {
    const dir = await tempDir();
    let node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 'w1']);
    try {
      const actor = /actor (\S+?)[,)]/.exec(node.output())?.[1];
      expect(actor).toMatch(/^w1#[0-9a-f]{8}$/);
      await stopNode(node, 'SIGTERM');
      await removeDir(`${dir}/db`);
      expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 'w1'])).toMatch(/STORAGE_DAMAGED.*db is missing; refusing to start it as an empty store.*--rebuild/s);
      node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 'w1', '--rebuild']);
      const again = /actor (\S+?)[,)]/.exec(node.output())?.[1];
      expect(again).toMatch(/^w1#[0-9a-f]{8}$/);
      expect(again).not.toBe(actor);
      expect(await refusedStart(['--rf', '1', '--port', '0', '--data', dir, '--id', 'w1'])).toMatch(/in use by another process/);
    } finally {
      await stopNode(node, 'SIGKILL');
      await removeDir(dir);
    }
  });
});
