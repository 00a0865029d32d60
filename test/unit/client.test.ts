/**
 * The client against a scripted node on a real socket: batching of concurrent calls, isolation of
 * a bad call from its neighbours, PARTIAL_WRITE for a call whose frames were partly acknowledged,
 * retries of OVERLOADED, failover past a node that refuses the hello, and honesty about replies
 * it cannot match.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { TallyClient } from '../../client/index.js';
import { decodeFrame, encodeFrame, PROTOCOL_VERSION, type CountRequest } from '../../protocol/index.js';

type Answer = (req: Record<string, unknown>, n: number) => Record<string, unknown> | undefined;

interface FakeNode {
  address: string;
  frames: Record<string, unknown>[];
  close(): Promise<void>;
}

const servers: FakeNode[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** A node that welcomes clients (unless `hello` says otherwise) and answers requests with `answer`. */
async function fakeNode(answer: Answer, hello: (m: Record<string, unknown>) => Record<string, unknown> = () => ({ t: 'welcome', v: PROTOCOL_VERSION, nodeId: 'fake', zone: 'z1', cluster: 'tally' })): Promise<FakeNode> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  const frames: Record<string, unknown>[] = [];
  const sockets = new Set<WebSocket>();
  wss.on('connection', (ws) => {
    sockets.add(ws);
    let greeted = false;
    ws.on('message', (d) => {
      const m = decodeFrame(d as Buffer) as Record<string, unknown>;
      if (!greeted) {
        greeted = true;
        ws.send(encodeFrame(hello(m)));
        return;
      }
      frames.push(m);
      const reply = answer(m, frames.length);
      if (reply !== undefined) ws.send(encodeFrame(reply));
    });
  });
  const node: FakeNode = {
    address: `127.0.0.1:${(wss.address() as AddressInfo).port}`,
    frames,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.terminate();
        wss.close(() => r());
      }),
  };
  servers.push(node);
  return node;
}

const ack: Answer = (m) => ({ t: 'ack', id: m.id, n: (m as unknown as CountRequest).events.reduce((a, e) => a + e[4], 0) });

describe('TallyClient', () => {
  it('sends concurrent calls in one frame and resolves each', async () => {
    const node = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [node.address] });
    await Promise.all(Array.from({ length: 500 }, (_, i) => client.countViewEvent(`v${i % 7}`)));
    expect(node.frames).toHaveLength(1);
    expect((node.frames[0] as unknown as CountRequest).events).toHaveLength(500);
    await client.close();
  });

  it('splits a large batch into frames of at most 10,000 events', async () => {
    const node = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [node.address] });
    await client.processEvents(Array.from({ length: 25_000 }, (_, i) => ({ videoId: `v${i}` })));
    expect(node.frames.map((f) => (f as unknown as CountRequest).events.length)).toEqual([10_000, 10_000, 5_000]);
    await client.close();
  });

  it('fails only the call the node refuses, not the others sharing its frame', async () => {
    const node = await fakeNode((m, n) => {
      const events = (m as unknown as CountRequest).events;
      if (events.some((e) => e[0] === 'refused')) return { t: 'error', id: m.id, code: 'BAD_REQUEST', message: `frame ${n}: no` };
      return ack(m, n);
    });
    const client = await TallyClient.connect({ nodes: [node.address] });
    const results = await Promise.allSettled([client.countViewEvent('a'), client.countViewEvent('refused'), client.countViewEvent('b')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'BAD_REQUEST' });
    expect(node.frames).toHaveLength(4); // the shared frame, then each call alone
    await client.close();
  });

  it('says PARTIAL_WRITE, with how many events are durable, when only some frames of a call were acknowledged', async () => {
    const node = await fakeNode((m, n) => (n === 2 ? { t: 'error', id: m.id, code: 'OVERLOADED', message: 'busy' } : ack(m, n)));
    const client = await TallyClient.connect({ nodes: [node.address], maxRetries: 0 });
    await expect(client.processEvents(Array.from({ length: 15_000 }, () => ({ videoId: 'p' })))).rejects.toMatchObject({
      code: 'PARTIAL_WRITE',
      message: expect.stringMatching(/^10000 of 15000 events are durable, the rest failed \(OVERLOADED: busy\)/),
    });
    await client.close();
  });

  it('retries OVERLOADED with backoff and then succeeds', async () => {
    const node = await fakeNode((m, n) => (n <= 2 ? { t: 'error', id: m.id, code: 'OVERLOADED', message: 'busy' } : ack(m, n)));
    const client = await TallyClient.connect({ nodes: [node.address] });
    await client.countViewEvent('r');
    expect(node.frames).toHaveLength(3);
    await client.close();
  });

  it('does not retry a write whose reply never came', async () => {
    const node = await fakeNode(() => undefined);
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 200 });
    await expect(client.countViewEvent('t')).rejects.toMatchObject({ code: 'TIMEOUT', message: expect.stringMatching(/whether it was applied is unknown/) });
    expect(node.frames).toHaveLength(1);
    await client.close();
  });

  it('moves on to the next node when one refuses the hello', async () => {
    const old = await fakeNode(ack, () => ({ t: 'error', id: null, code: 'VERSION_MISMATCH', message: 'speaks 2' }));
    const good = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [old.address, good.address] });
    await client.countViewEvent('f');
    await client.countViewEvent('f');
    expect(good.frames).toHaveLength(2);
    await client.close();
    await expect(TallyClient.connect({ nodes: [old.address] })).rejects.toMatchObject({ code: 'VERSION_MISMATCH' });
  });

  it('closes rather than guess when the node answers a frame it could not read', async () => {
    const node = await fakeNode(() => ({ t: 'error', id: null, code: 'BAD_REQUEST', message: 'unreadable' }));
    const client = await TallyClient.connect({ nodes: [node.address], maxRetries: 0 });
    await expect(client.countViewEvent('x')).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    await client.close();
  });

  it('checks events at the call, against its own clock', async () => {
    const node = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [node.address] });
    await expect(client.countViewEvent('v', { timestamp: Date.now() + 2 * 86_400_000 })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(client.processEvents([{ videoId: 'v', value: -2 }])).rejects.toMatchObject({ code: 'BAD_REQUEST', message: expect.stringMatching(/^events\[0\]\[3\] \(value\)/) });
    expect(node.frames).toHaveLength(0);
    await client.close();
  });
});
