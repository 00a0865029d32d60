/**
 * A peer that proves the cluster secret and then sends 5,000 gossip and data messages, most of them
 * mutated (fields replaced, removed or added, values of every type): the node's core never fails
 * on them (a failure is logged as `the core failed`), and the node keeps answering. What such a
 * peer says about the membership is taken (it knows the secret: it is a member), so the test asks
 * nothing that depends on the ring. Replay a failure with FUZZ_SEED=<seed>.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { statusOf } from '../../client/local-cluster.js';
import { decodeFrame, encodeFrame, MAX_WIRE_FRAME_BYTES, newNonce, peerProof, PROTOCOL_VERSION } from '../../protocol/index.js';
import { removeDir, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';
import { seededRandom } from '../helpers/random.js';

const MESSAGES = 5_000;
const SECRET = 'peer-fuzz-secret-0123456789';
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);

/** A raw peer link: hello, the node's welcome, our proof; then whatever we send. */
async function provenPeer(address: string, id: string): Promise<WebSocket> {
  const ws = new WebSocket(`ws://${address}/`);
  const inbox: unknown[] = [];
  ws.on('message', (d) => inbox.push(decodeFrame(d as Buffer, MAX_WIRE_FRAME_BYTES)));
  ws.on('error', () => {});
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const nonce = newNonce();
  ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'peer', cluster: 'tally', nodeId: id, nonce, rf: 1, retention: [14, 400], actor: `${id}#00ff00ff`, address: '127.0.0.1:9' }));
  await waitFor('welcome', 5_000, async () => (inbox.length > 0 ? true : undefined), 10);
  const w = inbox[0] as { t: string; nonce: string; nodeId: string };
  expect(w.t).toBe('welcome');
  ws.send(encodeFrame({ t: 'auth', proof: peerProof(SECRET, 'initiator', { cluster: 'tally', initiatorNonce: nonce, acceptorNonce: w.nonce, initiatorId: id, acceptorId: w.nodeId }) }));
  return ws;
}

describe(`an authenticated peer sending mutated messages (FUZZ_SEED=${SEED})`, () => {
  let dir: string;
  let node: NodeProcess;
  beforeAll(async () => {
    dir = await tempDir();
    node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 'n1', '--cluster-secret', SECRET]);
  });
  afterAll(async () => {
    if (node) await stopNode(node, 'SIGKILL');
    await removeDir(dir);
  });

  it('never makes the core fail, and the node keeps answering', async () => {
    const rand = seededRandom(SEED);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    const now = Date.now();
    const minute = now - (now % 60_000) - 2 * 86_400_000;
    const state = (id: string): Record<string, unknown> => ({ id, address: '127.0.0.1:9', zone: 'z9', generation: now, version: 1 + Math.floor(rand() * 5), lifecycle: 'normal', vnodes: 16, ringChecksum: '0123456789abcdef' });
    const slot = (): unknown[] => ['kept', 'view', pick(['m', 'h', 'd']), minute - (minute % 86_400_000), 'fz#00ff00ff', 1 + Math.floor(rand() * 5), 3, 1, 1];
    const id = (): number => Math.floor(rand() * 100);
    const templates = (): Record<string, unknown>[] => [
      { t: 'gossip-syn', seq: 1, sender: state('fz'), digests: [{ id: 'fz', generation: now, version: 1 }] },
      { t: 'gossip-ack', digests: [{ id: 'n1', generation: 1, version: 0 }], states: [state('fz')] },
      { t: 'gossip-ack2', states: [state('fz')] },
      { t: 'repl', id: id(), slots: [slot(), slot()] },
      { t: 'repl-ack', id: id() },
      { t: 'read', id: id(), spans: [['kept', 'view', 'h', minute - (minute % 86_400_000), minute - (minute % 86_400_000) + 86_400_000]] },
      { t: 'read-reply', id: id(), slots: [[0, 0, 'fz#00ff00ff', 1, 1, 1, 1]] },
      { t: 'fwd', id: id(), events: [['fz-v', 'view', now - 1_000, 1, 1]], cl: 'one', batch: `fz:${id()}>n1` },
      { t: 'fwd-reply', id: id(), code: 'TIMEOUT', message: 'late' },
      { t: 'ae-req', id: id() },
      { t: 'ae-tree', id: id(), hashes: new Array(512).fill(7) },
      { t: 'ae-leaves', id: id(), branches: [3], hashes: new Array(512).fill(1), last: true },
      { t: 'ae-leaves-reply', id: id(), branches: [], hashes: [] },
    ];
    const value = (depth = 0): unknown => {
      switch (Math.floor(rand() * (depth > 2 ? 7 : 9))) {
        case 0: return null;
        case 1: return rand() < 0.5;
        case 2: return Math.floor(rand() * 2 ** 40) * (rand() < 0.3 ? -1 : 1);
        case 3: return pick([Number.NaN, Infinity, -0, 1e300, 0.5, 2 ** 53, -1, 0, 1, 2 ** 32, now, minute]);
        case 4: return 'x'.repeat(Math.floor(rand() * 10));
        case 5: return pick(['m', 'h', 'd', 'one', 'all', 'fz', 'n1', 'kept', 'view', 'fz#00ff00ff', 'left', 'leaving', 'normal', '__proto__', '']);
        case 6: return {};
        case 7: return Array.from({ length: Math.floor(rand() * 4) }, () => value(depth + 1));
        default: return Object.fromEntries(['t', 'id', 'slots', 'code', 'states'].filter(() => rand() < 0.5).map((k) => [k, value(depth + 1)]));
      }
    };
    const mutate = (x: unknown): unknown => {
      if (Array.isArray(x)) {
        const y = [...x];
        if (y.length > 0 && rand() < 0.7) {
          const i = Math.floor(rand() * y.length);
          y[i] = rand() < 0.6 ? mutate(y[i]) : value();
        } else if (rand() < 0.5) y.push(value());
        else y.pop();
        return y;
      }
      if (x !== null && typeof x === 'object') {
        const y: Record<string, unknown> = { ...(x as Record<string, unknown>) };
        const k = pick(Object.keys(y));
        const r = rand();
        if (r < 0.7) y[k] = mutate(y[k]);
        else if (r < 0.85) delete y[k];
        else y[pick(['zz', 'seq', 'sender'])] = value();
        return y;
      }
      return rand() < 0.3 ? x : value();
    };

    let ws = await provenPeer(node.address, 'fz');
    let links = 1;
    for (let i = 0; i < MESSAGES; i++) {
      let m: unknown = pick(templates());
      if (rand() < 0.85) for (let j = 0, k = 1 + Math.floor(rand() * 3); j < k; j++) m = mutate(m);
      if (ws.readyState !== WebSocket.OPEN) {
        ws = await provenPeer(node.address, `fz${links}`);
        links += 1;
      }
      ws.send(encodeFrame(m));
      if (i % 250 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    // Everything sent is taken before the node is asked how it is.
    await new Promise((r) => setTimeout(r, 1_500));
    ws.close();
    expect(node.proc.exitCode).toBeNull();
    expect(node.output().split('\n').filter((l) => /the core failed/.test(l)), 'core failures logged').toEqual([]);
    const s = await statusOf(node.address);
    expect(s.nodeId).toBe('n1');
    expect(s.members.find((m) => m.id === 'n1')?.status).toBe('up');
    console.log(`peer fuzz seed ${SEED}: ${MESSAGES} messages over ${links} link(s); members now ${s.members.map((m) => m.id).join(', ')}`);
  });
});
