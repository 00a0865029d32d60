/**
 * Anti-entropy with real node processes and real LevelDB: keys deleted from one replica's database
 * while it is down are found and sent back by the repair schedule alone (no read repairs them: the
 * checks read at `one` from that node alone), `tally status` reports what was sent, and
 * `tally repair` then finds every pair in sync.
 */
import { Level } from 'level';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TallyClient } from '../../client/index.js';
import { statusOf } from '../../client/local-cluster.js';
import { DAY_MS } from '../../cluster/time-buckets.js';
import { Cluster } from '../helpers/cluster.js';
import { removeDir, runCli, tempDir, waitFor } from '../helpers/node-process.js';
import { daysAgo } from '../helpers/time.js';

const T = daysAgo(6, 12);
const VIDEOS = 200;
const EVENTS = 6_000;

describe('anti-entropy, three nodes, RF 3', () => {
  let dir: string;
  let cluster: Cluster;
  beforeAll(async () => {
    dir = await tempDir();
    cluster = new Cluster(dir, 3, ['--repair-interval-ms', '500']);
    await cluster.startAll();
  });
  afterAll(async () => {
    await cluster.stop();
    await removeDir(dir);
  });

  it('heals keys deleted from one replica offline by the schedule alone, and reports the bytes it sent', async () => {
    const client = await TallyClient.connect({ nodes: cluster.addresses });
    const events = Array.from({ length: EVENTS }, (_, i) => ({ videoId: `ae-${i % VIDEOS}`, timestamp: T + (i % 3) * DAY_MS + (i % 1440) * 60_000 }));
    for (let i = 0; i < events.length; i += 500) await client.processEvents(events.slice(i, i + 500), { consistency: 'all' });
    await client.close();
    // Comparisons that raced the load may still be sending; wait until no node sends for a second.
    const sentBy = async (n: number): Promise<{ slots: number; bytes: number }> => {
      const st = await Promise.all(cluster.addresses.slice(0, n).map((a) => statusOf(a)));
      return { slots: st.reduce((a, s) => a + (s.repair?.slotsSent ?? 0), 0), bytes: st.reduce((a, s) => a + (s.repair?.bytesSent ?? 0), 0) };
    };
    const steady = async (n: number): Promise<{ slots: number; bytes: number } | undefined> => {
      const a = await sentBy(n);
      await new Promise((r) => setTimeout(r, 1_000));
      const b = await sentBy(n);
      return a.slots === b.slots ? b : undefined;
    };
    await waitFor('no repair traffic', 30_000, () => steady(3));

    // n3 stops; a tenth of the videos lose every slot of theirs from its database.
    await cluster.kill(2, 'SIGTERM');
    const db = new Level<string, Uint8Array>(join(dir, 'n3', 'db'), { keyEncoding: 'utf8', valueEncoding: 'view' });
    await db.open();
    const doomed: string[] = [];
    for await (const key of db.keys()) {
      const m = /\u0000ae-(\d+)\u0000/.exec(key);
      if (m !== null && Number(m[1]) % 10 === 3 && /^[dhm]\u0000/.test(key)) doomed.push(key);
    }
    await db.batch(doomed.map((key) => ({ type: 'del' as const, key })));
    await db.close();
    expect(doomed.length).toBeGreaterThan(0);

    const before = await sentBy(2);
    await cluster.start(2);
    const started = Date.now();
    // No read until the schedule has done its work: a read could repair what it touches.
    const { value: after } = await waitFor('the schedule repaired n3', 60_000, async () => {
      const now = await steady(2);
      return now !== undefined && now.slots - before.slots >= doomed.length ? now : undefined;
    }, 100);
    const ms = Date.now() - started;
    const sent = after.slots - before.slots;
    const bytes = after.bytes - before.bytes;
    console.log(`${doomed.length} slots deleted from n3; repaired by the schedule within ${ms} ms of its restart (1 s of it making sure no more is sent); n1 and n2 sent ${sent} slots, ${bytes} bytes`);
    expect(bytes).toBeGreaterThan(0);
    // Only the leaves of the damaged videos travel (a leaf holds about one video here), not the
    // data: each of n3's two peers may send a slot once.
    expect(sent).toBeLessThanOrEqual(2 * doomed.length + 200);

    // Every pair is in sync now: an on-demand round from n3 finds nothing to send.
    const r = await runCli(['repair', '--node', cluster.address(2), '--json'], 60_000);
    expect(r.code, r.stderr).toBe(0);
    const round = JSON.parse(r.stdout) as { peers: number; inSync: number; slotsSent: number };
    expect(round).toMatchObject({ peers: 2, inSync: 2, slotsSent: 0 });

    // And n3 alone (its peers gone, so nothing else can answer) has every event.
    await cluster.kill(0);
    await cluster.kill(1);
    const alone = await TallyClient.connect({ nodes: [cluster.address(2)], routing: 'direct' });
    const counts = await Promise.all(Array.from({ length: VIDEOS }, (_, v) => alone.getViewsCount(`ae-${v}`, T - DAY_MS, T + 5 * DAY_MS, { consistency: 'one' })));
    await alone.close();
    expect(counts.reduce((x, y) => x + y, 0)).toBe(EVENTS);
  }, 120_000);
});
