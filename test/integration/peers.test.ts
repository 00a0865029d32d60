/**
 * Authenticated peers, on real processes: a cluster started with a secret refuses a peer that
 * proves no secret or the wrong one, and the forged gossip an outsider once used to rewrite the
 * membership (a fake member, a live node marked left a year ahead, a forged member owning most of
 * the ring, a real member's address pointed elsewhere) changes nothing. A node reachable beyond
 * loopback refuses to start without a secret unless told --insecure. A node its peers refuse logs
 * why, at level error.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statusOf } from '../../client/local-cluster.js';
import { PeerTransport, defaultPeerTransportOptions } from '../../node/peer-transport.js';
import { decodeFrame, encodeFrame, newNonce, PROTOCOL_VERSION, type EndpointState, type GossipMessage } from '../../protocol/index.js';
import { removeDir, runCli, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';

const SECRET = 'correct-horse-battery-staple-42';

/** A raw socket speaking the peer hello, to send whatever it likes after it. */
async function rawPeer(address: string, firstFrames: unknown[]): Promise<{ replies: unknown[]; closed: Promise<number> }> {
  const ws = new WebSocket(`ws://${address}/`);
  const replies: unknown[] = [];
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  ws.on('message', (d) => replies.push(decodeFrame(d as Buffer)));
  await new Promise((r) => ws.once('open', r));
  ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'peer', cluster: 'tally', nodeId: 'intruder', nonce: newNonce(), rf: 3, retention: [14, 400] }));
  await waitFor('welcome', 3_000, async () => (replies.length > 0 ? true : undefined), 10);
  for (const f of firstFrames) ws.send(encodeFrame(f));
  return { replies, closed };
}

function forgedGossip(now: number, victims: { n1: string; n2: string }): GossipMessage[] {
  const base = { zone: 'z1', version: 1, lifecycle: 'normal' as const, vnodes: 128, ringChecksum: '0' };
  const fake: EndpointState = { ...base, id: 'fake', address: '127.0.0.1:1', generation: now };
  const grab: EndpointState = { ...base, id: 'grab', address: '127.0.0.1:2', generation: now, vnodes: 1024 };
  const left: EndpointState = { ...base, id: 'n2', address: victims.n2, generation: now + 365 * 86_400_000, lifecycle: 'left' };
  const hijack: EndpointState = { ...base, id: 'n1', address: '127.0.0.1:3', generation: now + 60_000 };
  return [
    { t: 'gossip-syn', seq: 1, sender: fake, digests: [] },
    { t: 'gossip-ack2', states: [fake, grab, left, hijack] },
  ];
}

describe('a cluster with a secret', () => {
  let dir: string;
  const nodes: NodeProcess[] = [];
  beforeAll(async () => {
    dir = await tempDir();
    for (let i = 0; i < 3; i++) {
      const seeds = i === 0 ? [] : ['--seeds', nodes[0]!.address];
      nodes.push(await startNode(['--port', '0', '--data', `${dir}/n${i + 1}`, '--id', `n${i + 1}`, '--zone', `z${i + 1}`, '--cluster-secret', SECRET, ...seeds]));
    }
    // Up everywhere, and done rebuilding: a node that joins through a seed is first sent its ranges.
    await waitFor('three members up and rebuilt', 15_000, async () => {
      const all = await Promise.all(nodes.map((n) => statusOf(n.address)));
      return all.every((s) => s.members.length === 3 && s.members.every((m) => m.status === 'up' && m.lifecycle === 'normal')) ? true : undefined;
    });
  });
  afterAll(async () => {
    await Promise.all(nodes.map((n) => stopNode(n, 'SIGKILL')));
    await removeDir(dir);
  });

  it('refuses a peer that proves no secret or the wrong one, before reading anything else from it', async () => {
    const now = Date.now();
    const forged = forgedGossip(now, { n1: nodes[0]!.address, n2: nodes[1]!.address });
    // An outsider that knows the cluster name but not the secret: whatever it sends after the welcome is refused.
    const raw = await rawPeer(nodes[0]!.address, [{ t: 'auth', proof: '00'.repeat(32) }, ...forged]);
    expect(await raw.closed).toBe(1008);
    expect(raw.replies[0]).toMatchObject({ t: 'welcome', nodeId: 'n1' });
    expect(raw.replies[1]).toMatchObject({ t: 'error', code: 'UNAUTHORIZED' });
    const pipelined = await rawPeer(nodes[1]!.address, forged);
    expect(await pipelined.closed).toBe(1008);

    // Real transports with the wrong secret and with none: refused both, nothing delivered.
    for (const secret of ['not-the-secret-at-all-0000', undefined]) {
      const t = new PeerTransport({ ...defaultPeerTransportOptions('intruder', 'tally', secret, 3) });
      const refusals: string[] = [];
      t.onRefused = (_a, reason) => refusals.push(reason);
      for (const m of forged) t.send(nodes[2]!.address, m);
      await waitFor('refused', 3_000, async () => (refusals.length > 0 ? true : undefined), 10);
      expect(refusals[0]).toMatch(/^UNAUTHORIZED/);
      t.close();
    }

    // Nothing changed anywhere.
    await new Promise((r) => setTimeout(r, 1_500));
    for (const n of nodes) {
      const s = await statusOf(n.address);
      expect(s.members.map((m) => [m.id, m.address, m.status, m.lifecycle])).toEqual(
        nodes.map((x, i) => [`n${i + 1}`, x.address, 'up', 'normal']),
      );
      expect(s.health).toBe('healthy: 3/3 up; ring agreed');
      expect(s.peers['peersRefused']).toBeGreaterThanOrEqual(n === nodes[0] ? 1 : 0);
    }
  });

  it('never lets a node without the secret join', async () => {
    const outsider = await startNode(['--port', '0', '--data', `${dir}/x`, '--id', 'x', '--seeds', nodes[0]!.address]);
    try {
      await new Promise((r) => setTimeout(r, 2_500));
      expect((await statusOf(outsider.address)).members.map((m) => m.id)).toEqual(['x']);
      for (const n of nodes) expect((await statusOf(n.address)).members.map((m) => m.id)).toEqual(['n1', 'n2', 'n3']);
      // Its seeds' welcome proves a secret it does not have: it says so, as an error.
      expect(outsider.output()).toMatch(/"level":50,[^\n]*"msg":"error UNAUTHORIZED: this node refuses peer \S+: n1 did not prove the cluster secret \(every member needs the same --cluster-secret\)"/);
    } finally {
      await stopNode(outsider, 'SIGKILL');
    }
  });

  it('tells a node its peers refuse why, at level error, in words that name who keeps what', async () => {
    // The secret right, the retention not: the seed refuses it for good, until an operator changes one.
    const other = await startNode(['--port', '0', '--data', `${dir}/r`, '--id', 'r', '--cluster-secret', SECRET, '--minute-retention-days', '7', '--seeds', nodes[0]!.address]);
    try {
      await waitFor('the refusal logged', 5_000, async () => (other.output().includes('refused this node') ? true : undefined));
      const line = other.output().split('\n').find((l) => l.includes('refused this node'))!;
      expect(JSON.parse(line)).toMatchObject({
        level: 50,
        code: 'UNAUTHORIZED',
        msg: `error UNAUTHORIZED: peer ${nodes[0]!.address} refused this node, saying: this node keeps minute buckets 14 days and hour buckets 400 days (--minute-retention-days 14 --hour-retention-days 400; 0: for ever), the peer 7 and 400; every member must agree, or one would repair what another expired`,
      });
      // Alone, it serves what it can, but its status does not read healthy: it has not joined.
      const status = await runCli(['status', '--node', other.address]);
      expect(status.code).toBe(3);
      expect(status.stdout).toMatch(new RegExp(`\\ndegraded: 1/1 up; .*; not joined: none of its seeds \\(${nodes[0]!.address}\\) has let it in; its log says why\\n`));
    } finally {
      await stopNode(other, 'SIGKILL');
    }
  });
});

describe('a node reachable beyond loopback', () => {
  it('refuses to start without a secret unless told --insecure', async () => {
    const dir = await tempDir();
    try {
      const r = await runCli(['start', '--host', '0.0.0.0', '--advertise', '127.0.0.1:7999', '--port', '0', '--data', `${dir}/a`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/^error BAD_REQUEST: .*--cluster-secret/);
      const ok = await startNode(['--host', '0.0.0.0', '--advertise', '127.0.0.1:7999', '--port', '0', '--data', `${dir}/b`, '--insecure']);
      await stopNode(ok);
      const secret = await startNode(['--host', '0.0.0.0', '--advertise', '127.0.0.1:7999', '--port', '0', '--data', `${dir}/c`, '--cluster-secret', SECRET]);
      await stopNode(secret);
    } finally {
      await removeDir(dir);
    }
  });
});
