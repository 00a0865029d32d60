/**
 * The client against scripted nodes on real sockets: batching of concurrent calls, routing of each
 * event to a replica of its key, isolation of a bad call from its neighbours, PARTIAL_WRITE for a
 * call whose frames were partly acknowledged, retries (OVERLOADED anywhere; an unknown outcome only
 * at the same node with the same batch id), failover past a node that refuses the hello, hedged
 * reads, and honesty about replies it cannot match or validate.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { TallyClient } from '../../client/index.js';
import { MAX_EVENTS_PER_FRAME } from '../../client/tally-client.js';
import { decodeFrame, encodeFrame, PROTOCOL_VERSION, type CountRequest } from '../../protocol/index.js';

type Reply = Record<string, unknown> | undefined;
type Answer = (req: Record<string, unknown>, n: number) => Reply | Promise<Reply>;

interface FakeNode {
  address: string;
  frames: Record<string, unknown>[];
  /** Client connections open now. */
  open?: () => number;
  close(): Promise<void>;
}

/** What fake nodes answer to `topology`: by default each node alone, with rf 1. */
let topology: ((self: string) => Record<string, unknown>) | undefined;
const alone = (self: string): Record<string, unknown> => ({ rf: 1, members: [{ id: `n-${self}`, address: self, zone: 'z1', vnodes: 16, up: true, inRing: true }] });
/** Two nodes, as [id, node], in zones z1 and z2, both up. */
const pair = (rf: number, [i1, n1]: [string, FakeNode], [i2, n2]: [string, FakeNode]) => (): Record<string, unknown> => ({
  rf,
  members: [
    { id: i1, address: n1.address, zone: 'z1', vnodes: 16, up: true, inRing: true },
    { id: i2, address: n2.address, zone: 'z2', vnodes: 16, up: true, inRing: true },
  ],
});

const servers: FakeNode[] = [];
afterEach(async () => {
  topology = undefined;
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/**
 * A node that welcomes clients (unless `hello` says otherwise; the nth connection's welcome after
 * `welcomeDelayMs(n)`) and answers requests with `answer` (`{ t: 'DROP' }`: the connection is cut).
 */
async function fakeNode(
  answer: Answer,
  hello: (m: Record<string, unknown>) => Record<string, unknown> = () => ({ t: 'welcome', v: PROTOCOL_VERSION, nodeId: 'fake', zone: 'z1', cluster: 'tally' }),
  welcomeDelayMs: (n: number) => number = () => 0,
): Promise<FakeNode> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  const frames: Record<string, unknown>[] = [];
  const sockets = new Set<WebSocket>();
  let connections = 0;
  wss.on('connection', (ws) => {
    sockets.add(ws);
    const nth = ++connections;
    let greeted = false;
    ws.on('message', (d) => {
      const m = decodeFrame(d as Buffer) as Record<string, unknown>;
      if (!greeted) {
        greeted = true;
        const delay = welcomeDelayMs(nth);
        if (delay === 0) ws.send(encodeFrame(hello(m)));
        else setTimeout(() => ws.readyState === ws.OPEN && ws.send(encodeFrame(hello(m))), delay);
        return;
      }
      if (m.t === 'topology') {
        ws.send(encodeFrame({ t: 'topology', id: m.id, ...(topology ?? alone)(node.address) }));
        return;
      }
      frames.push(m);
      const reply = answer(m, frames.length);
      const send = (r: Reply): void => {
        if (r === undefined || ws.readyState !== ws.OPEN) return;
        if (r.t === 'DROP') ws.terminate();
        else ws.send(encodeFrame(r));
      };
      if (reply instanceof Promise) void reply.then(send);
      else send(reply);
    });
  });
  const node: FakeNode = {
    address: `127.0.0.1:${(wss.address() as AddressInfo).port}`,
    frames,
    open: () => [...sockets].filter((s) => s.readyState === s.OPEN).length,
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

  it('splits a large batch into frames of at most MAX_EVENTS_PER_FRAME (2,000) events', async () => {
    const node = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [node.address] });
    await client.processEvents(Array.from({ length: 5_000 }, (_, i) => ({ videoId: `v${i}` })));
    expect(MAX_EVENTS_PER_FRAME).toBe(2_000);
    expect(node.frames.map((f) => (f as unknown as CountRequest).events.length)).toEqual([2_000, 2_000, 1_000]);
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
    const node = await fakeNode((m, n) => (n % 3 === 2 ? { t: 'error', id: m.id, code: 'OVERLOADED', message: 'busy' } : ack(m, n)));
    const client = await TallyClient.connect({ nodes: [node.address], maxRetries: 0 });
    // Three frames of 2,000: the second of each call is refused.
    await expect(client.processEvents(Array.from({ length: 6_000 }, () => ({ videoId: 'p' })))).rejects.toMatchObject({
      code: 'PARTIAL_WRITE',
      message: expect.stringMatching(/^4000 of 6000 events are durable, the rest failed \(OVERLOADED: busy\)/),
    });
    // Entries of several events each: both are said.
    await expect(client.processEvents(Array.from({ length: 6_000 }, () => ({ videoId: 'p', count: 3 })))).rejects.toMatchObject({
      code: 'PARTIAL_WRITE',
      message: expect.stringMatching(/^4000 of 6000 entries \(12000 of 18000 events, by their counts\) are durable, the rest failed \(OVERLOADED: busy\)/),
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

  it('sends a write whose outcome is unknown again only to the same node, with the same batch id, then says TIMEOUT', async () => {
    const node = await fakeNode((m, n) => (n <= 2 ? { t: 'error', id: m.id, code: 'TIMEOUT', message: 'replicas slow' } : undefined));
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 400 });
    await expect(client.countViewEvent('t')).rejects.toMatchObject({ code: 'TIMEOUT', message: expect.stringMatching(/unknown/) });
    expect(node.frames.length).toBeGreaterThanOrEqual(3);
    const batches = new Set(node.frames.map((f) => f.batch));
    expect(batches.size).toBe(1);
    expect([...batches][0]).toMatch(/^[\x21-\x7e]+$/);
    await client.close();
  });

  it('never sends a frame elsewhere, nor calls it refused, once an attempt may have been applied', async () => {
    const a = await fakeNode((m, n) => ({ t: 'error', id: m.id, code: n === 2 ? 'UNAVAILABLE' : 'TIMEOUT', message: `attempt ${n}` }));
    const b = await fakeNode(ack);
    topology = pair(2, ['a', a], ['b', b]);
    // Long enough for three attempts even on a saturated machine (the third follows the UNAVAILABLE).
    const client = await TallyClient.connect({ nodes: [a.address], timeoutMs: 2_000 });
    const video = Array.from({ length: 100 }, (_, i) => `v${i}`).find((v) => client.replicasOf(v)[0]!.id === 'a') as string;
    const err = await client.countViewEvent(video).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'TIMEOUT', message: expect.stringMatching(/unknown/) });
    expect(a.frames.length).toBeGreaterThanOrEqual(3);
    expect(new Set(a.frames.map((f) => f.batch)).size).toBe(1);
    expect(b.frames).toHaveLength(0);
    await client.close();
  });

  it('keeps no more events in flight to a busy node than it takes, so few frames are refused and none times out', async () => {
    // A node that takes 6,000 events at a time, each frame for 20 ms, and refuses past that.
    let inFlight = 0;
    let refused = 0;
    let acked = 0;
    const node = await fakeNode(async (m) => {
      const n = (m as unknown as CountRequest).events.length;
      if (inFlight + n > 6_000) {
        refused++;
        return { t: 'error', id: m.id, code: 'OVERLOADED', message: 'busy' };
      }
      inFlight += n;
      await new Promise((r) => setTimeout(r, 20));
      inFlight -= n;
      acked += n;
      return ack(m, 0);
    });
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 20_000 });
    // 200,000 events at once: 100 frames of 2,000.
    await Promise.all(Array.from({ length: 100 }, (_, i) => client.processEvents(Array.from({ length: 2_000 }, () => ({ videoId: `w${i}` })))));
    expect(acked).toBe(200_000);
    // Sent all at once, 97 frames would be refused in the first round alone, and most again on each
    // retry (the client before the window: 847 refusals). The window sends 10 (7 refused), halves
    // until it fits, then probes: a frame more each round trip of ~3 frames, refused when it
    // overshoots, so about one refusal in three rounds of the ~35 it takes.
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThan(50);
    await client.close();
  });

  it('fails a write that finds no room at a busy node within busyWaitMs with OVERLOADED, never sending it', async () => {
    const node = await fakeNode(() => undefined); // takes frames and never answers
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 1_500, busyWaitMs: 100 });
    const first = client.processEvents(Array.from({ length: 20_000 }, (_, i) => ({ videoId: `f${i}` }))).then(() => undefined, (e: unknown) => e);
    const started = Date.now();
    const err = await client.countViewEvent('late').then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'OVERLOADED', message: expect.stringMatching(/is busy: 20000 events are in flight to it .* waited 100 ms for room; nothing was applied/) });
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(node.frames).toHaveLength(10); // the first call's frames, filling the first window
    expect(node.frames.some((f) => (f as unknown as CountRequest).events.some((e) => e[0] === 'late'))).toBe(false);
    expect(await first).toMatchObject({ code: 'TIMEOUT', message: expect.stringMatching(/unknown/) });
    await client.close();
  });

  it('fails a write at once with OVERLOADED when as many events as it may hold already wait for a slow node', async () => {
    const node = await fakeNode((m) => new Promise((r) => setTimeout(() => r(ack(m, 0)), 1_000)));
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 5_000, busyWaitMs: 2_000 });
    const call = (tag: string): Promise<unknown> => client.processEvents(Array.from({ length: 2_000 }, (_, i) => ({ videoId: `${tag}${i}` }))).then(() => undefined, (e: unknown) => e);
    // 20,000 events in flight (the first window) and 200,000 waiting (the most the client holds).
    const held = Array.from({ length: 110 }, (_, i) => call(`h${i}-`));
    // Past slowAfterMs (250 ms) with no answer: the node looks stuck as well as busy.
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const late = await Promise.all(Array.from({ length: 20 }, (_, i) => call(`l${i}-`)));
    expect(Date.now() - started).toBeLessThan(500);
    for (const e of late) expect(e).toMatchObject({ code: 'OVERLOADED', message: expect.stringMatching(/200000 events already wait for room; nothing was applied/) });
    expect(node.frames.some((f) => (f as unknown as CountRequest).events.some((e) => e[0].startsWith('l')))).toBe(false);
    // Refused before any of its events is looked at: none of their fields is read.
    let read = 0;
    const watched = Array.from({ length: 10 }, () => ({
      get videoId(): string {
        read++;
        return 'watched';
      },
    }));
    expect(await client.processEvents(watched).then(() => undefined, (e: unknown) => e)).toMatchObject({ code: 'OVERLOADED' });
    expect(read).toBe(0);
    await client.close();
    await Promise.all(held);
  });

  it('sends what waited for a node that answers nothing to another replica, never to the silent one', async () => {
    const a = await fakeNode(() => undefined); // frozen: takes frames, answers nothing
    const b = await fakeNode(ack);
    topology = pair(2, ['a', a], ['b', b]);
    const client = await TallyClient.connect({ nodes: [b.address], timeoutMs: 2_000, busyWaitMs: 300 });
    const onA = Array.from({ length: 2_000 }, (_, i) => `v${i}`).filter((v) => client.replicasOf(v)[0]!.id === 'a');
    const events = (n: number, tag: string): { videoId: string; eventType: string }[] => Array.from({ length: n }, (_, i) => ({ videoId: onA[i % onA.length] as string, eventType: tag }));
    // Fills a's first window (20,000 events), never answered.
    const first = client.processEvents(events(20_000, 'first')).then(() => undefined, (e: unknown) => e);
    await new Promise((r) => setImmediate(r));
    // Routed to a too (it has not been silent long yet), so it waits for room there.
    await client.processEvents(events(500, 'second'));
    expect(b.frames.flatMap((f) => (f as unknown as CountRequest).events).filter((e) => e[1] === 'second')).toHaveLength(500);
    expect(a.frames.some((f) => (f as unknown as CountRequest).events.some((e) => e[1] === 'second'))).toBe(false);
    expect(await first).toMatchObject({ code: 'TIMEOUT' });
    await client.close();
  });

  it('sends each event to a replica of its key, in one frame per node', async () => {
    const a = await fakeNode(ack);
    const b = await fakeNode(ack);
    topology = pair(1, ['a', a], ['b', b]);
    const client = await TallyClient.connect({ nodes: [a.address] });
    const ids = Array.from({ length: 200 }, (_, i) => `video${i}`);
    await client.processEvents(ids.map((videoId) => ({ videoId })));
    const want = (address: string): string[] => ids.filter((v) => client.replicasOf(v)[0]!.address === address).sort();
    const got = (n: FakeNode): string[] => n.frames.flatMap((f) => (f as unknown as CountRequest).events.map((e) => e[0])).sort();
    expect(got(a)).toEqual(want(a.address));
    expect(got(b)).toEqual(want(b.address));
    expect(got(a).length).toBeGreaterThan(30);
    expect(got(b).length).toBeGreaterThan(30);
    expect(a.frames).toHaveLength(1);
    await client.close();
  });

  it('asks another node for a read the first does not answer in time, and gives new work only to the one that answers', async () => {
    const frozen = await fakeNode(() => undefined);
    const live = await fakeNode((m) => ({ t: 'result', id: m.id, stats: (m.queries as unknown[]).map(() => [4, 4, 1, 1]) }));
    topology = pair(2, ['f', frozen], ['l', live]);
    const client = await TallyClient.connect({ nodes: [live.address], readHedgeMs: 20, slowAfterMs: 100 });
    const firstOnFrozen = Array.from({ length: 100 }, (_, i) => `v${i}`).find((v) => client.replicasOf(v)[0]!.id === 'f') as string;
    const t0 = Date.now();
    expect(await client.getViewsCount(firstOnFrozen, 0, Date.now())).toBe(4);
    expect(Date.now() - t0).toBeLessThan(1_000);
    await new Promise((r) => setTimeout(r, 150));
    const before = frozen.frames.length;
    for (let i = 0; i < 5; i++) expect(await client.getViewsCount(firstOnFrozen, 0, Date.now())).toBe(4);
    expect(frozen.frames.length).toBe(before); // stuck: no new work for it
    await client.close();
  });

  it('refuses a reply that breaks the protocol', async () => {
    const node = await fakeNode((m) => ({ t: 'result', id: m.id, stats: [[1, 1, null, 1]] }));
    const client = await TallyClient.connect({ nodes: [node.address], maxRetries: 0 });
    await expect(client.getViewsCount('x', 0, 1)).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/malformed reply/) });
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
    const client = await TallyClient.connect({ nodes: [node.address], maxRetries: 0, timeoutMs: 300 });
    const err = await client.countViewEvent('x').then(() => undefined, (e: unknown) => e);
    expect(['CONNECTION_CLOSED', 'TIMEOUT']).toContain((err as { code: string }).code);
    // Every attempt was the same frame: the same batch id, so a node that did apply it never counts it twice.
    expect(new Set(node.frames.map((f) => f.batch)).size).toBe(1);
    await client.close();
  });

  it('refuses a node address that is not host:port as BAD_REQUEST, not as a node unavailable', async () => {
    await expect(TallyClient.connect({ nodes: ['7401'] })).rejects.toMatchObject({ code: 'BAD_REQUEST', message: 'a node address must be host:port (IPv6 as [::1]:7401), got "7401"' });
    const node = await fakeNode(ack);
    await expect(TallyClient.connect({ nodes: [node.address, 'localhost'] })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });

  it('refuses options it cannot run with at connect, and a call\'s consistency by its own name', async () => {
    const node = await fakeNode(ack);
    const refused: [Record<string, unknown>, string][] = [
      [{ consistency: 'most' }, 'consistency must be one of one, quorum, all, got "most"'],
      [{ timeoutMs: -1 }, 'timeoutMs must be a number of milliseconds above 0, got -1'],
      [{ timeoutMs: Number.NaN }, 'timeoutMs must be a number of milliseconds above 0, got NaN'],
      [{ maxRetries: -2 }, 'maxRetries must be a whole number from 0, got -2'],
      [{ routing: 'nearest' }, 'routing must be ring or direct, got "nearest"'],
    ];
    for (const [opts, message] of refused) {
      await expect(TallyClient.connect({ nodes: [node.address], ...opts } as Parameters<typeof TallyClient.connect>[0]), JSON.stringify(opts)).rejects.toMatchObject({ code: 'BAD_REQUEST', message });
    }
    const client = await TallyClient.connect({ nodes: [node.address] });
    const two = { consistency: 'two' } as unknown as { consistency: 'one' };
    await expect(client.countViewEvent('v', two)).rejects.toMatchObject({ code: 'BAD_REQUEST', message: 'consistency must be one of one, quorum, all, got "two"' });
    await expect(client.getViewsCount('v', 0, 1, two)).rejects.toMatchObject({ code: 'BAD_REQUEST', message: 'consistency must be one of one, quorum, all, got "two"' });
    expect(node.frames).toHaveLength(0);
    await client.close();
  });

  it('names no replicas for a key no write would take', async () => {
    const node = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [node.address] });
    expect(() => client.replicasOf('')).toThrow(expect.objectContaining({ code: 'BAD_REQUEST', message: 'videoId must not be empty' }));
    expect(() => client.replicasOf('v'.repeat(10_000))).toThrow(expect.objectContaining({ code: 'TOO_LARGE' }));
    await client.close();
  });

  it('checks events at the call, against its own clock', async () => {
    const node = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [node.address] });
    await expect(client.countViewEvent('v', { timestamp: Date.now() + 2 * 86_400_000 })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(client.processEvents([{ videoId: 'v', value: -2 }])).rejects.toMatchObject({ code: 'BAD_REQUEST', message: expect.stringMatching(/^the event: value must be a finite number in \[0, 1000000000\], got -2$/) });
    expect(node.frames).toHaveLength(0);
    await client.close();
  });

  it('refuses a read without its start or end, rather than count from or to 1970', async () => {
    const node = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [node.address] });
    const none = undefined as unknown as number;
    await expect(client.getViewsCount('v', 0, none)).rejects.toMatchObject({ code: 'BAD_REQUEST', message: 'endTime is missing: give epoch milliseconds or a Date' });
    await expect(client.getCount('v', 'like', none, Date.now())).rejects.toMatchObject({ code: 'BAD_REQUEST', message: 'startTime is missing: give epoch milliseconds or a Date' });
    await expect(client.getStats('v', 'like', 0, none)).rejects.toMatchObject({ code: 'BAD_REQUEST', message: 'endTime is missing: give epoch milliseconds or a Date' });
    expect(node.frames).toHaveLength(0);
    await client.close();
  });

  it('refuses an event with a field it does not know, rather than count it with the default in its place', async () => {
    const node = await fakeNode(ack);
    const client = await TallyClient.connect({ nodes: [node.address] });
    // A misspelt eventType would otherwise count a view; a misspelt timestamp, an event now.
    const typo = [{ videoId: 'v', evenType: 'like' }] as unknown as Parameters<TallyClient['processEvents']>[0];
    await expect(client.processEvents(typo)).rejects.toMatchObject({
      code: 'BAD_REQUEST',
      message: 'the event has an unknown field "evenType"; the fields are videoId, eventType, timestamp, value, count',
    });
    const second = [{ videoId: 'v' }, { videoId: 'v', timestmap: 0 }] as unknown as Parameters<TallyClient['processEvents']>[0];
    await expect(client.processEvents(second)).rejects.toMatchObject({ code: 'BAD_REQUEST', message: expect.stringMatching(/^event 2 has an unknown field "timestmap"/) });
    await expect(client.processEvents([null] as unknown as Parameters<TallyClient['processEvents']>[0])).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    // A null is not a field left out: it would count a view, or a value of 1, without a word.
    for (const field of ['eventType', 'value', 'timestamp', 'count']) {
      const nulled = [{ videoId: 'v' }, { videoId: 'v', [field]: null }] as unknown as Parameters<TallyClient['processEvents']>[0];
      await expect(client.processEvents(nulled)).rejects.toMatchObject({ code: 'BAD_REQUEST', message: `event 2: ${field} is null; leave it out for its default, or give a value` });
    }
    expect(node.frames).toHaveLength(0);
    await client.close();
  });
});

/**
 * A node stopping: on the first connection's first write it says bye and never answers it; later
 * connections are acknowledged. Each connection's close, and whether the client made it.
 */
async function stoppingNode(): Promise<{ address: string; closes: { atMs: number; code: number }[]; sockets: number; close(): Promise<void> }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  const state = { address: `127.0.0.1:${(wss.address() as AddressInfo).port}`, closes: [] as { atMs: number; code: number }[], sockets: 0 };
  const open = new Set<WebSocket>();
  wss.on('connection', (ws) => {
    const nth = ++state.sockets;
    open.add(ws);
    ws.on('close', (code) => {
      open.delete(ws);
      state.closes[nth - 1] = { atMs: Date.now(), code };
    });
    let greeted = false;
    ws.on('message', (d) => {
      const m = decodeFrame(d as Buffer) as Record<string, unknown>;
      if (!greeted) {
        greeted = true;
        ws.send(encodeFrame({ t: 'welcome', v: PROTOCOL_VERSION, nodeId: 'fake', zone: 'z1', cluster: 'tally' }));
      } else if (m.t === 'topology') ws.send(encodeFrame({ t: 'topology', id: m.id, ...alone(state.address) }));
      else if (nth === 1) ws.send(encodeFrame({ t: 'bye', message: 'node is stopping' }));
      else ws.send(encodeFrame(ack(m, 0) as Record<string, unknown>));
    });
  });
  const node = {
    ...state,
    get closes() {
      return state.closes;
    },
    get sockets() {
      return state.sockets;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of open) s.terminate();
        wss.close(() => r());
      }),
  };
  servers.push(node as unknown as FakeNode);
  return node;
}

describe('TallyClient, when a node says bye', () => {
  it('closes the connection once the last request it awaited there has timed out', async () => {
    const node = await stoppingNode();
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 300 });
    const started = Date.now();
    await client.countViewEvent('a').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    // The first connection is the client's to close (the node waits for it): not left open.
    expect(node.closes[0], 'the connection the node said bye on was closed').toBeDefined();
    expect(node.closes[0]?.code).toBe(1000);
    expect((node.closes[0]?.atMs ?? Infinity) - started).toBeLessThan(600);
    await client.close();
  });

  it('closes, at close(), a connection the node said bye on that still awaits a reply', async () => {
    const node = await stoppingNode();
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 10_000 });
    const first = client.countViewEvent('a').then(
      () => 'acknowledged',
      (err: { code?: string }) => err.code,
    );
    // Once the bye is in, the next call goes on a new connection, acknowledged there.
    await new Promise((r) => setTimeout(r, 200));
    expect(await client.countViewEvent('b').catch((err: { code?: string }) => err.code)).toBeUndefined();
    expect(node.sockets).toBeGreaterThanOrEqual(2);
    expect(node.closes[0], 'still open while its request awaits a reply').toBeUndefined();
    const closing = Date.now();
    await client.close();
    expect(await first).toBe('CONNECTION_CLOSED');
    await new Promise((r) => setTimeout(r, 200));
    expect(node.closes[0], 'closed by close()').toBeDefined();
    expect((node.closes[0]?.atMs ?? Infinity) - closing).toBeLessThan(200);
  });
});

describe('TallyClient, its promises and bounds', () => {
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const waitUntil = async (ok: () => boolean, ms: number): Promise<void> => {
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`not within ${ms} ms`);
      await sleep(5);
    }
  };
  const firstOn = (client: TallyClient, id: string): string => Array.from({ length: 1_000 }, (_, i) => `v${i}`).find((v) => client.replicasOf(v)[0]!.id === id) as string;
  const result = (m: Record<string, unknown>): Reply => ({ t: 'result', id: m.id, stats: (m.queries as unknown[]).map(() => [1, 1, 1, 1]) });
  /** The codes a call of unknown outcome may end with (README: Retries, and what an outcome means). */
  const UNKNOWN = ['TIMEOUT', 'CONNECTION_CLOSED', 'PARTIAL_WRITE', 'INTERNAL', 'STORAGE_FULL'];

  it('ends a read awaiting its reply when the client closes', async () => {
    const node = await fakeNode(() => undefined);
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 3_000 });
    const read = client.getCount('v', 'view', 0, Date.now()).then(
      () => 'resolved',
      (err: { code?: string }) => err.code,
    );
    await sleep(100);
    await client.close();
    expect(await Promise.race([read, sleep(1_000).then(() => 'still pending')])).toBe('CONNECTION_CLOSED');
  });

  it('says a call is of unknown outcome when one frame may have been applied, though another was refused', async () => {
    const a = await fakeNode((m) => ({ t: 'error', id: m.id, code: 'NOT_READY', message: 'not ready' }));
    const b = await fakeNode((m) => ({ t: 'error', id: m.id, code: 'INTERNAL', message: 'the commit failed' }));
    topology = pair(1, ['a', a], ['b', b]);
    const client = await TallyClient.connect({ nodes: [a.address], maxRetries: 0, timeoutMs: 1_000 });
    const err = await client.processEvents([{ videoId: firstOn(client, 'a') }, { videoId: firstOn(client, 'b') }]).then(
      () => undefined,
      (e: { code?: string }) => e,
    );
    // b may have applied its frame: NOT_READY ("nothing applied") would invite a resend that counts it twice.
    expect(b.frames.length).toBeGreaterThan(0);
    expect(UNKNOWN, String(err)).toContain(err?.code);
    await client.close();
  });

  it('takes STORAGE_FULL as of unknown outcome: the same batch to the same node until the deadline', async () => {
    const node = await fakeNode((m) => ({ t: 'error', id: m.id, code: 'STORAGE_FULL', message: 'disk full; kept in memory' }));
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 1_000 });
    const err = await client.countViewEvent('v').then(
      () => undefined,
      (e: { code?: string; message?: string }) => e,
    );
    expect(UNKNOWN, String(err)).toContain(err?.code);
    expect(node.frames.length).toBeGreaterThan(1);
    expect(new Set(node.frames.map((f) => f.batch)).size).toBe(1);
    await client.close();
  });

  it('keeps a call within its timeoutMs while it reconnects to retry', async () => {
    // The first write's connection is cut; every later connection is welcomed only after 2.5 s.
    const node = await fakeNode((_m, n) => (n === 1 ? { t: 'DROP' } : undefined), undefined, (n) => (n === 1 ? 0 : 2_500));
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 1_000 });
    const t0 = Date.now();
    const err = await client.countViewEvent('v').then(
      () => undefined,
      (e: { code?: string }) => e,
    );
    expect(Date.now() - t0).toBeLessThan(1_500);
    // The first attempt may have been applied: the outcome stays unknown.
    expect(UNKNOWN, String(err)).toContain(err?.code);
    await client.close();
  });

  it('bounds the requests awaiting replies per node: a frozen node does not hold back writes to another', async () => {
    const a = await fakeNode(() => undefined); // frozen after its hello
    const b = await fakeNode(ack);
    topology = pair(1, ['a', a], ['b', b]);
    const client = await TallyClient.connect({ nodes: [b.address], timeoutMs: 4_000 });
    const onA = firstOn(client, 'a');
    const stuck: Promise<unknown>[] = [];
    for (let i = 0; i < 1_000 && a.frames.length < 1_000; i++) {
      stuck.push(client.countViewEvent(onA).catch(() => undefined));
      await sleep(1);
    }
    await sleep(50);
    const t0 = Date.now();
    expect(await client.countViewEvent(firstOn(client, 'b')).then(() => 'acknowledged')).toBe('acknowledged');
    expect(Date.now() - t0, `with ${a.frames.length} requests awaiting the frozen node`).toBeLessThan(1_000);
    await client.close();
    await Promise.all(stuck);
  });

  it('takes nothing but an ack as an ack of a write', async () => {
    const node = await fakeNode((m) => ({ t: 'pong', id: m.id, nowMs: Date.now() }));
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 500 });
    const err = await client.countViewEvent('v').then(
      () => undefined,
      (e: { code?: string }) => e,
    );
    expect(UNKNOWN, String(err)).toContain(err?.code);
    await client.close();
  });

  it('ends a write sleeping its backoff at close(), without waiting the backoff out', async () => {
    const node = await fakeNode((m) => ({ t: 'error', id: m.id, code: 'OVERLOADED', message: 'busy' }));
    const client = await TallyClient.connect({ nodes: [node.address], timeoutMs: 30_000, maxRetries: 20 });
    const call = client.countViewEvent('v').then(
      () => 'acknowledged',
      (e: { code?: string }) => e.code,
    );
    // Six refusals in, the backoff is 0.6-1.9 s.
    await waitUntil(() => node.frames.length >= 7, 10_000);
    const closing = Date.now();
    await client.close();
    expect(await call).toBe('CONNECTION_CLOSED');
    expect(Date.now() - closing).toBeLessThan(100);
  });

  it('gives new work again to a node whose hedged read ended in an error', async () => {
    let slow = true;
    const a = await fakeNode((m, n) => {
      if (m.t !== 'get') return ack(m, n);
      if (!slow) return result(m);
      slow = false;
      // Past readHedgeMs (the read is asked of b too), then an error.
      return sleep(60).then(() => ({ t: 'error', id: m.id, code: 'OVERLOADED', message: 'busy' }));
    });
    const b = await fakeNode((m, n) => (m.t === 'get' ? result(m) : ack(m, n)));
    topology = pair(2, ['a', a], ['b', b]);
    const client = await TallyClient.connect({ nodes: [b.address] });
    const key = firstOn(client, 'a');
    await client.getCount(key, 'view', 0, Date.now());
    await sleep(200);
    const before = a.frames.length;
    for (let i = 0; i < 10; i++) await client.countViewEvent(key);
    expect(a.frames.length - before, 'writes for a key whose first replica is a').toBeGreaterThan(0);
    await client.close();
  });
});

describe('TallyClient, its view of the cluster', () => {
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const firstOn = (client: TallyClient, id: string): string => Array.from({ length: 1_000 }, (_, i) => `v${i}`).find((v) => client.replicasOf(v)[0]!.id === id) as string;

  it('with direct routing asks the listed node alone for its status, never another member in its place', async () => {
    const status = (name: string): Answer => (m) => (m.t === 'status' ? ({ t: 'status', id: m.id, status: { nodeId: name } } as unknown as Reply) : ack(m, 0));
    const a = await fakeNode(status('a'));
    const b = await fakeNode(status('b'));
    topology = pair(1, ['a', a], ['b', b]);
    const direct = await TallyClient.connect({ nodes: [a.address], routing: 'direct', maxRetries: 0, timeoutMs: 2_000 });
    const ring = await TallyClient.connect({ nodes: [a.address], maxRetries: 0, timeoutMs: 2_000 });
    expect(await direct.status()).toEqual({ nodeId: 'a' });
    await a.close();
    const err = await direct.status().then(() => undefined, (e: unknown) => e as { code: string });
    expect(['UNAVAILABLE', 'CONNECTION_CLOSED'], 'a failure, not b\'s status').toContain(err?.code);
    expect(await ring.status(), 'with ring routing any member answers').toEqual({ nodeId: 'b' });
    await direct.close();
    await ring.close();
  });

  it('forgets a member that left once nothing is in flight to it, and closes its connection', async () => {
    const a = await fakeNode(ack);
    const b = await fakeNode(ack);
    topology = pair(1, ['a', a], ['b', b]);
    const client = await TallyClient.connect({ nodes: [a.address], topologyRefreshMs: 100 });
    await client.countViewEvent(firstOn(client, 'b'));
    expect(b.frames.length).toBe(1);
    expect(b.open?.()).toBe(1);
    topology = () => alone(a.address);
    const deadline = Date.now() + 3_000;
    while (b.open?.() !== 0 && Date.now() < deadline) await sleep(20);
    expect(b.open?.(), 'connections to the member that left').toBe(0);
    // Its key now goes to the member left, with no entry for the old address kept.
    await client.countViewEvent('v-after');
    expect(a.frames.length).toBe(1);
    await client.close();
  });

  it('takes no older answer to a topology refresh after a newer one', async () => {
    // The second refresh's answer (one member) is held until the third's (two members) is in,
    // then sent; no later refresh is answered.
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    const address = `127.0.0.1:${(wss.address() as AddressInfo).port}`;
    const one = { rf: 2, members: [{ id: 'a', address, zone: 'z1', vnodes: 16, up: true, inRing: true }] };
    const two = { rf: 2, members: [...one.members, { id: 'b', address, zone: 'z2', vnodes: 16, up: true, inRing: true }] };
    let asked = 0;
    let held: (() => void) | undefined;
    let oldSent = false;
    const sockets = new Set<WebSocket>();
    wss.on('connection', (ws) => {
      sockets.add(ws);
      let greeted = false;
      ws.on('message', (d) => {
        const m = decodeFrame(d as Buffer) as Record<string, unknown>;
        if (!greeted) {
          greeted = true;
          ws.send(encodeFrame({ t: 'welcome', v: PROTOCOL_VERSION, nodeId: 'a', zone: 'z1', cluster: 'tally' }));
          return;
        }
        if (m.t !== 'topology') return;
        const n = ++asked;
        if (n === 1) ws.send(encodeFrame({ t: 'topology', id: m.id, ...one }));
        else if (n === 2) held = () => ws.send(encodeFrame({ t: 'topology', id: m.id, ...one }));
        else if (n === 3) {
          ws.send(encodeFrame({ t: 'topology', id: m.id, ...two }));
          setTimeout(() => {
            held?.();
            oldSent = true;
          }, 50);
        }
      });
    });
    servers.push({ address, frames: [], close: () => new Promise((r) => { for (const s of sockets) s.terminate(); wss.close(() => r()); }) });
    const client = await TallyClient.connect({ nodes: [address], topologyRefreshMs: 100, timeoutMs: 2_000 });
    const deadline = Date.now() + 5_000;
    while (!oldSent && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(oldSent).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(client.replicasOf('v1').map((r) => r.id).sort()).toEqual(['a', 'b']);
    await client.close();
  });
});
