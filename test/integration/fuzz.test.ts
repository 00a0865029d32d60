/**
 * 10,000 random and mutated frames against a running node: each gets exactly one reply (an error
 * frame, or a reply if the mutation happened to stay valid) or a clean close; the node keeps
 * serving and the counts stored before are unchanged. Replay a failure with FUZZ_SEED=<seed>.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { TallyClient } from '../../client/index.js';
import { decodeFrame, encodeFrame, MAX_FRAME_BYTES, MAX_WIRE_FRAME_BYTES, PROTOCOL_VERSION } from '../../protocol/index.js';
import { removeDir, startNode, stopNode, tempDir, type NodeProcess } from '../helpers/node-process.js';
import { seededRandom } from '../helpers/random.js';
import { daysAgo } from '../helpers/time.js';

const FRAMES = 10_000;
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);

interface Raw {
  ws: WebSocket;
  next(): Promise<'closed' | Record<string, unknown>>;
}

function openRaw(address: string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${address}/`);
    const inbox: (Record<string, unknown> | 'closed')[] = [];
    let waiter: ((m: Record<string, unknown> | 'closed') => void) | undefined;
    const push = (m: Record<string, unknown> | 'closed'): void => {
      if (waiter) {
        const w = waiter;
        waiter = undefined;
        w(m);
      } else inbox.push(m);
    };
    ws.on('message', (d) => push(decodeFrame(d as Buffer, 8 * MAX_FRAME_BYTES) as Record<string, unknown>));
    ws.on('close', () => push('closed'));
    ws.on('error', () => {});
    ws.once('open', () =>
      resolve({
        ws,
        next: () =>
          inbox.length > 0
            ? Promise.resolve(inbox.shift() as Record<string, unknown>)
            : new Promise((r, rej) => {
                const t = setTimeout(() => rej(new Error('no reply within 5 s')), 5_000);
                waiter = (m) => {
                  clearTimeout(t);
                  r(m);
                };
              }),
      }),
    );
    ws.once('error', reject);
  });
}

async function helloed(address: string): Promise<Raw> {
  const raw = await openRaw(address);
  raw.ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'client' }));
  const w = await raw.next();
  expect(w).toMatchObject({ t: 'welcome' });
  return raw;
}

/** Valid frames to mutate. Their ids never collide with the series checked at the end. */
function templates(rand: () => number): unknown[] {
  const ts = daysAgo(12) + Math.floor(rand() * 1e9);
  return [
    { t: 'count', id: 7, events: [['fz-a', 'view', ts, 1, 1]] },
    { t: 'count', id: 8, events: [['fz-b', 'like', ts, 2.5, 3], ['fz-c', 'view', ts + 1, 0, 1]], cl: 'one' },
    { t: 'get', id: 9, queries: [['fz-a', 'view', 0, ts]] },
    { t: 'ping', id: 10 },
    { t: 'status', id: 11 },
    { t: 'hello', v: 1, role: 'client' },
  ];
}

function randomValue(rand: () => number, depth = 0): unknown {
  const k = Math.floor(rand() * (depth > 2 ? 7 : 10));
  switch (k) {
    case 0: return null;
    case 1: return rand() < 0.5;
    case 2: return Math.floor(rand() * 2 ** 40) * (rand() < 0.3 ? -1 : 1);
    case 3: return [Number.NaN, Infinity, -Infinity, -0, 1e300, 0.5][Math.floor(rand() * 6)];
    case 4: return 'x'.repeat(Math.floor(rand() * (rand() < 0.1 ? 400 : 10)));
    case 5: return ['count', 'get', 'ping', 'status', 'hello', 'one', 'all', '\u0000', 'view'][Math.floor(rand() * 9)];
    case 6: return Buffer.from([1, 2, 3]);
    case 7: return Array.from({ length: Math.floor(rand() * 6) }, () => randomValue(rand, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (const key of ['t', 'id', 'events', 'queries', 'cl', 'v', 'role', 'zz']) if (rand() < 0.5) o[key] = randomValue(rand, depth + 1);
      return o;
    }
  }
}

function mutate(bytes: Buffer, rand: () => number): Buffer {
  const b = Buffer.from(bytes);
  const kind = Math.floor(rand() * 4);
  if (kind === 0) {
    for (let i = 0, n = 1 + Math.floor(rand() * 4); i < n; i++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
    return b;
  }
  if (kind === 1) return b.subarray(0, Math.floor(rand() * b.length));
  if (kind === 2) return Buffer.concat([b, Buffer.from([Math.floor(rand() * 256)])]);
  const i = Math.floor(rand() * b.length);
  return Buffer.concat([b.subarray(0, i), Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xf0]), b.subarray(i)]);
}

describe(`fuzzing a running node (FUZZ_SEED=${SEED})`, () => {
  let dir: string;
  let node: NodeProcess;
  beforeAll(async () => {
    dir = await tempDir();
    node = await startNode(['--rf', '1', '--port', '0', '--data', dir, '--id', 'fuzz']);
  });
  afterAll(async () => {
    if (node && (node.proc.exitCode !== null || node.proc.signalCode !== null)) console.log(`the node had exited:\n${node.output()}`);
    if (node) await stopNode(node, 'SIGKILL');
    await removeDir(dir);
  });

  it('answers every bad frame, keeps serving, and loses nothing stored', async () => {
    const rand = seededRandom(SEED);
    const client = await TallyClient.connect({ nodes: [node.address] });
    const t0 = daysAgo(2);
    await client.processEvents([
      { videoId: 'kept', timestamp: t0, count: 41 },
      { videoId: 'kept', eventType: 'watch_ms', timestamp: t0 + 1, value: 1234.5, count: 2 },
    ]);
    const before = await client.getStats('kept', 'watch_ms', 0, t0 + 60_000);
    expect(await client.getViewsCount('kept', 0, t0 + 60_000)).toBe(41);

    let raw = await helloed(node.address);
    const counts = { error: 0, reply: 0, closed: 0 };
    const codes = new Map<string, number>();
    for (let i = 0; i < FRAMES; i++) {
      const pick = rand();
      let frame: Buffer | string;
      if (pick < 0.3) frame = Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256)));
      else if (pick < 0.6) frame = mutate(encodeFrame(templates(rand)[Math.floor(rand() * 6)]), rand);
      else if (pick < 0.97) frame = encodeFrame(randomValue(rand));
      else if (pick < 0.99) frame = 'not binary';
      else frame = Buffer.alloc(MAX_FRAME_BYTES + 1 + Math.floor(rand() * 1000), 0x90);
      raw.ws.send(frame);
      const reply = await raw.next();
      if (reply === 'closed') {
        counts.closed += 1;
        raw = await helloed(node.address);
        continue;
      }
      if (reply.t === 'error') {
        counts.error += 1;
        expect(typeof reply.code).toBe('string');
        expect(typeof reply.message).toBe('string');
        codes.set(reply.code as string, (codes.get(reply.code as string) ?? 0) + 1);
      } else {
        counts.reply += 1;
        expect(['ack', 'result', 'pong', 'status', 'welcome']).toContain(reply.t);
      }
    }
    raw.ws.close();
    console.log(`fuzz seed ${SEED}: ${JSON.stringify(counts)} codes ${JSON.stringify(Object.fromEntries(codes))}`);
    expect(counts.error + counts.reply + counts.closed).toBe(FRAMES);
    expect(counts.error).toBeGreaterThan(FRAMES * 0.8);
    expect(codes.get('TOO_LARGE') ?? 0).toBeGreaterThan(0);

    // Still serving, and what was stored before is intact.
    expect(await client.getViewsCount('kept', 0, t0 + 60_000)).toBe(41);
    expect(await client.getStats('kept', 'watch_ms', 0, t0 + 60_000)).toEqual(before);
    await client.countViewEvent('kept', { timestamp: t0 });
    expect(await client.getViewsCount('kept', 0, t0 + 60_000)).toBe(42);
    await client.close();
  });

  it('answers frames that declare more than they hold with BAD_REQUEST, and stays up', async () => {
    // The first is ten bytes a fuzz run sent (FUZZ_SEED=381289): an array32 header declaring
    // 27,940,291 elements, which the decoder made before reading one, and the node died out of heap.
    const chain = Buffer.alloc(MAX_FRAME_BYTES - 1);
    for (let i = 0; i + 3 <= chain.length; i += 3) chain.set([0xdc, 0xff, 0xff], i);
    const bombs = [Buffer.from('dd01aa55c316bebeba09', 'hex'), Buffer.from('ddffffffff', 'hex'), chain, Buffer.alloc(100_000, 0x91)];
    const raw = await helloed(node.address);
    for (const frame of bombs) {
      raw.ws.send(frame);
      expect(await raw.next()).toMatchObject({ t: 'error', code: 'BAD_REQUEST', message: expect.stringMatching(/values are owed|nests deeper/) });
    }
    raw.ws.send(encodeFrame({ t: 'ping', id: 2 }));
    expect(await raw.next()).toMatchObject({ t: 'pong', id: 2 });
    raw.ws.close();
  });

  it('needs a hello first, and closes on a wrong version or a foreign cluster', async () => {
    const raw = await openRaw(node.address);
    raw.ws.send(encodeFrame({ t: 'ping', id: 5 }));
    expect(await raw.next()).toMatchObject({ t: 'error', id: 5, code: 'NOT_READY', message: expect.stringMatching(/say hello first/) });
    raw.ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION + 1, role: 'client' }));
    expect(await raw.next()).toMatchObject({ t: 'error', code: 'VERSION_MISMATCH' });
    expect(await raw.next()).toBe('closed');

    const peer = await openRaw(node.address);
    peer.ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'peer', cluster: 'other', nodeId: 'x', nonce: '0'.repeat(32), rf: 1, retention: [14, 400] }));
    expect(await peer.next()).toMatchObject({ t: 'error', code: 'UNAUTHORIZED', message: expect.stringMatching(/cluster "tally", the peer to "other"/) });
    expect(await peer.next()).toBe('closed');
  });

  it('closes a connection that sends a frame over the wire limit, and serves the next', async () => {
    const raw = await helloed(node.address);
    raw.ws.send(Buffer.alloc(MAX_WIRE_FRAME_BYTES + 1));
    expect(await raw.next()).toBe('closed');
    const again = await helloed(node.address);
    again.ws.send(encodeFrame({ t: 'ping', id: 1 }));
    expect(await again.next()).toMatchObject({ t: 'pong', id: 1 });
    again.ws.close();
  });
});

