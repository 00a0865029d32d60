/**
 * A partition that leaves a key with one reachable replica, with real processes in network
 * namespaces: five nodes, RF 3; the key's other two replicas are cut off from every node (the test,
 * on the bridge, still reaches all five, as clients in another segment would). Writes at `quorum`
 * for the key, sent on the wire with explicit batch ids to its reachable replica, to a cut-off
 * replica and to a node that is not a replica, must all fail with UNAVAILABLE (nothing applied) or
 * TIMEOUT (outcome unknown), never be acknowledged. After healing, each TIMEOUT write is sent
 * again with the same batch id to the same node until acknowledged; then the count at `all`, and
 * at `one` from each replica alone, is exactly what was acknowledged before plus those writes.
 * Without namespaces (not root, no iproute2) the two replicas are frozen with SIGSTOP instead, and
 * the test says so.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TallyClient } from '../../client/index.js';
import { Connection } from '../../client/connection.js';
import { statusOf } from '../../client/local-cluster.js';
import { DAY_MS } from '../../cluster/time-buckets.js';
import { TallyError } from '../../protocol/index.js';
import { ChaosNet } from '../../scripts/chaos-net.js';
import { removeDir, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';
import { daysAgo } from '../helpers/time.js';

const NODES = 5;
const SECRET = 'partition-test-secret-0123456789';
const T = daysAgo(2, 9);

describe('a key with one reachable replica', () => {
  let dir: string;
  let net: ChaosNet | undefined;
  let why = '';
  const procs: NodeProcess[] = [];
  const addresses: string[] = [];

  beforeAll(async () => {
    dir = await tempDir();
    const made = await ChaosNet.create(NODES, 'tpart', '10.78.0');
    if (made instanceof ChaosNet) net = made;
    else why = made.error;
    for (let i = 0; i < NODES; i++) addresses.push(net === undefined ? `127.0.0.1:${7591 + i}` : `${net.address(i)}:7400`);
    for (let i = 0; i < NODES; i++) {
      const [host, port] = addresses[i]!.split(':') as [string, string];
      const args = ['--host', host, '--port', port, '--data', `${dir}/n${i + 1}`, '--id', `n${i + 1}`, '--zone', `z${(i % 3) + 1}`];
      args.push('--seeds', addresses.slice(0, 2).join(','), '--rf', '3', '--cluster-secret', SECRET);
      procs.push(await startNode(args, 20_000, net === undefined ? [] : net.exec(i)));
    }
    await waitFor('all five up everywhere, rebuilt, the ring agreed', 30_000, async () => {
      const all = await Promise.all(addresses.map((a) => statusOf(a)));
      return all.every((s) => s.health.startsWith('healthy') && s.members.length === NODES && s.members.every((m) => m.status === 'up' && m.lifecycle === 'normal')) ? true : undefined;
    });
    // Every node takes a write of its own: it has settled (learnt the ring from a live peer), so
    // cut off later it answers UNAVAILABLE, not NOT_READY as a node that has just started does.
    for (const a of addresses) {
      await waitFor(`${a} serves`, 30_000, async () => {
        const c = await TallyClient.connect({ nodes: [a], routing: 'direct', maxRetries: 0 });
        try {
          await c.processEvents([{ videoId: 'warm-up', timestamp: T }], { consistency: 'one' });
          return true;
        } catch {
          return undefined;
        } finally {
          await c.close();
        }
      }, 200);
    }
  }, 90_000);

  afterAll(async () => {
    for (const p of procs) p.proc.kill('SIGCONT');
    await Promise.all(procs.map((p) => stopNode(p, 'SIGKILL')));
    await net?.teardown();
    await removeDir(dir);
  });

  it('refuses quorum writes with UNAVAILABLE or TIMEOUT, never acknowledges one, and counts exactly after healing', async () => {
    console.log(net === undefined ? `no network namespaces (${why}): the two replicas are frozen with SIGSTOP instead of cut off` : 'partition by network namespaces');
    const client = await TallyClient.connect({ nodes: addresses });
    const key = 'partitioned-video';
    const replicas = client.replicasOf(key);
    expect(replicas).toHaveLength(3);
    const index = (id: string): number => Number(id.slice(1)) - 1;
    const [reachable, cutA, cutB] = replicas.map((r) => index(r.id)) as [number, number, number];
    const outsider = [0, 1, 2, 3, 4].find((i) => !replicas.some((r) => index(r.id) === i)) as number;
    await client.processEvents(Array.from({ length: 10 }, () => ({ videoId: key, timestamp: T })), { consistency: 'quorum' });

    // The key's other two replicas drop out.
    if (net !== undefined) {
      await net.isolate(cutA);
      await net.isolate(cutB);
    } else {
      procs[cutA]!.proc.kill('SIGSTOP');
      procs[cutB]!.proc.kill('SIGSTOP');
    }
    const targets = net === undefined ? [reachable, outsider] : [reachable, cutA, outsider];
    const conns = new Map<number, Connection>();
    for (const i of targets) conns.set(i, await Connection.open(addresses[i]!, 5_000));
    const outcomes: Record<string, number> = {};
    const unknown: { node: number; batch: string; n: number }[] = [];
    const until = Date.now() + 12_000;
    for (let k = 0; Date.now() < until; k++) {
      const node = targets[k % targets.length] as number;
      const batch = `partition-test:${k}`;
      const n = 1 + (k % 4);
      try {
        const reply = await conns.get(node)!.request({ t: 'count', events: [[key, 'view', T, 1, n]], cl: 'quorum', batch }, 10_000);
        outcomes[`acknowledged by n${node + 1}`] = (outcomes[`acknowledged by n${node + 1}`] ?? 0) + 1;
        expect.fail(`a quorum write was acknowledged with two of three replicas cut off: ${JSON.stringify(reply)}`);
      } catch (err) {
        const code = err instanceof TallyError ? err.code : String(err);
        outcomes[code] = (outcomes[code] ?? 0) + 1;
        expect(['UNAVAILABLE', 'TIMEOUT'], `n${node + 1}: ${(err as Error).message}`).toContain(code);
        if (code === 'TIMEOUT') unknown.push({ node, batch, n });
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    console.log(`during the partition: ${JSON.stringify(outcomes)}`);
    expect(outcomes['UNAVAILABLE'] ?? 0, 'the failure detector turned timeouts into UNAVAILABLE').toBeGreaterThan(0);

    // Heal; each write of unknown outcome goes again, same node, same batch id, until acknowledged.
    if (net !== undefined) await net.heal();
    else for (const i of [cutA, cutB]) procs[i]!.proc.kill('SIGCONT');
    let expected = 10;
    for (const u of unknown) {
      await waitFor(`retry of ${u.batch}`, 30_000, async () => {
        try {
          await conns.get(u.node)!.request({ t: 'count', events: [[key, 'view', T, 1, u.n]], cl: 'quorum', batch: u.batch }, 5_000);
          return true;
        } catch {
          return undefined;
        }
      }, 250);
      expected += u.n;
    }
    for (const c of conns.values()) c.close();
    // Once every replica is up again in the coordinator's eyes, `all` answers.
    const { value: all } = await waitFor('a read at all', 30_000, async () => client.getViewsCount(key, T - DAY_MS, T + DAY_MS, { consistency: 'all' }).catch(() => undefined), 250);
    expect(all).toBe(expected);
    await client.close();
    for (const r of replicas) {
      const alone = await TallyClient.connect({ nodes: [r.address], routing: 'direct' });
      const { value } = await waitFor(`${r.id} alone`, 30_000, async () => {
        const v = await alone.getViewsCount(key, T - DAY_MS, T + DAY_MS, { consistency: 'one' });
        return v === expected ? v : undefined;
      }, 250);
      await alone.close();
      expect(value).toBe(expected);
    }
    console.log(`after healing: ${expected} = 10 before + ${unknown.length} writes of unknown outcome sent again (${expected - 10} events)`);
  }, 120_000);
});
