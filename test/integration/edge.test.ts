/**
 * The node's edge under abuse, on a real node process and real sockets: each hole once measured
 * (silent sockets past the file limit, one address taking every slot, frames sent in part and
 * left, invalid UTF-8 merging ids) replayed, while a legitimate client goes on writing and is
 * timed, and the node's own writes must never fail.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { TallyClient } from '../../client/tally-client.js';
import { encodeFrame, decodeFrame, ErrorCode, PROTOCOL_VERSION, TallyError } from '../../protocol/index.js';
import type { NodeStatus } from '../../protocol/status.js';
import { removeDir, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function node(args: string[], prefix: string[] = []): Promise<NodeProcess> {
  const dir = await tempDir('tally-edge-');
  const n = await startNode(['--port', '0', '--data', `${dir}/n`, '--rf', '1', ...args], 15_000, prefix);
  cleanups.push(async () => {
    await stopNode(n, 'SIGKILL');
    await removeDir(dir);
  });
  return n;
}

async function client(address: string): Promise<TallyClient> {
  const c = await TallyClient.connect({ nodes: [address], timeoutMs: 5_000 });
  cleanups.push(() => c.close());
  return c;
}

/** A raw TCP socket from `localAddress` (any 127.x.y.z is this machine) that says nothing. */
function silentSocket(port: number, localAddress: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, localAddress });
    s.on('error', () => resolve(undefined));
    s.once('connect', () => resolve(s));
  });
}

/** A WebSocket from `localAddress` that has said hello; undefined if the node would not have it. */
function helloSocket(port: number, localAddress: string): Promise<WebSocket | undefined> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { localAddress });
    ws.on('error', () => resolve(undefined));
    ws.once('close', () => resolve(undefined));
    ws.once('open', () => ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'client' })));
    ws.once('message', (data) => {
      const m = decodeFrame(data as Buffer) as { t: string };
      resolve(m.t === 'welcome' ? ws : undefined);
    });
  });
}

/**
 * Writes 10 events every 20 ms until `stop` says so; returns each write's latency. A failed write
 * fails the test: the legitimate client must be served throughout.
 */
async function writeWhile(c: TallyClient, stop: () => boolean, videoId: string): Promise<{ latencies: number[]; events: number }> {
  const latencies: number[] = [];
  let events = 0;
  while (!stop()) {
    const t0 = performance.now();
    await c.processEvents(Array.from({ length: 10 }, () => ({ videoId })));
    latencies.push(performance.now() - t0);
    events += 10;
    await new Promise((r) => setTimeout(r, 20));
  }
  return { latencies, events };
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};

async function statusOf(c: TallyClient): Promise<NodeStatus> {
  return (await c.status()) as NodeStatus;
}

describe('the edge under abuse', () => {
  test('1,100 silent sockets against a 512-file limit: the node keeps its files, serves a client, and lets them go', async () => {
    // 512 files: the store keeps 128, 128 are reserved, so at most 256 sockets.
    const n = await node(['--handshake-timeout-ms', '2000'], ['bash', '-c', 'ulimit -n 512 && exec "$0" "$@"']);
    expect(n.output()).toMatch(/open file limit 512: up to 256 connections/);
    const sockets: Socket[] = [];
    cleanups.push(async () => {
      for (const s of sockets) s.destroy();
    });
    const c = await client(n.address);
    await c.processEvents([{ videoId: 'warm' }]);
    let attacking = true;
    const writer = writeWhile(c, () => !attacking, 'legit-a');
    const began = Date.now();
    // 1,100 at least, and for 2 s at least, so the client's writes are timed through the attack.
    for (let i = 0; i < 1_100 || Date.now() - began < 2_000; i += 1) {
      const s = await silentSocket(n.port, `127.0.0.${3 + (i % 10)}`);
      if (s !== undefined) {
        s.on('error', () => {});
        sockets.push(s);
      }
    }
    // A newcomer while the table is full of silent sockets: it takes a silent one's place.
    const t0 = performance.now();
    const newcomer = await client(n.address);
    await newcomer.processEvents([{ videoId: 'legit-b', count: 7 }]);
    const newcomerMs = performance.now() - t0;
    const during = await statusOf(c);
    attacking = false;
    const { latencies, events } = await writer;
    const p50 = quantile(latencies, 0.5);
    const max = Math.max(...latencies);
    console.log(`silent sockets: ${sockets.length} connected in ${Date.now() - began} ms; edge ${JSON.stringify(during.edge)}; refused ${during.peers.connectionsRefused}, evicted ${during.peers.connectionsEvicted}; ` +
      `legit writes ${latencies.length}, p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms; newcomer in ${newcomerMs.toFixed(1)} ms`);
    expect(during.edge?.maxConnections).toBe(256);
    expect(during.edge?.connections).toBeLessThanOrEqual(256);
    expect((during.peers.connectionsRefused ?? 0) + (during.peers.connectionsEvicted ?? 0)).toBeGreaterThanOrEqual(sockets.length - 256);
    expect(p50).toBeLessThan(50);
    expect(newcomerMs).toBeLessThan(1_000);
    // Every write was acknowledged, so every count is exact: nothing failed for want of a file.
    expect(await c.getViewsCount('legit-a', 0, Date.now() + 60_000)).toBe(events);
    expect(await c.getViewsCount('legit-b', 0, Date.now() + 60_000)).toBe(7);
    expect(n.output()).not.toMatch(/EMFILE|too many open files/i);
    // The silent sockets miss their handshake deadline and are let go.
    const after = await waitFor('silent sockets let go', 10_000, async () => {
      const s = await statusOf(c);
      return (s.edge?.byStage.new ?? 1) === 0 ? s : undefined;
    });
    expect(after.value.peers.handshakeTimeouts).toBeGreaterThan(0);
  }, 90_000);

  test('one address cannot take every slot; idle clients, and sockets that never say hello, are let go', async () => {
    const n = await node(['--max-connections-per-address', '32', '--idle-timeout-ms', '1500', '--hello-timeout-ms', '1000']);
    const c = await client(n.address);
    // Upgraded, then silent: closed at the hello deadline.
    const mute = new WebSocket(`ws://${n.address}/`, { localAddress: '127.0.0.12' });
    const muteClosed = new Promise<{ code: number; ms: number }>((r) => {
      const t0 = Date.now();
      mute.once('close', (code) => r({ code, ms: Date.now() - t0 }));
    });
    const opened = await Promise.all(Array.from({ length: 100 }, () => helloSocket(n.port, '127.0.0.9')));
    const held = opened.filter((w): w is WebSocket => w !== undefined);
    expect(held.length).toBe(32);
    // Another address is served at once, and so is the client already connected.
    const t0 = performance.now();
    const other = await helloSocket(n.port, '127.0.0.10');
    expect(other).toBeDefined();
    other?.close();
    await c.processEvents([{ videoId: 'one-address', count: 3 }]);
    expect(performance.now() - t0).toBeLessThan(1_000);
    // The 32 say nothing more: closed once idle, while the busy client stays.
    const closed = held.map((w) => new Promise<number>((r) => w.once('close', (code) => r(code))));
    let busy = true;
    const writer = writeWhile(c, () => !busy, 'busy');
    const codes = await Promise.all(closed);
    busy = false;
    const { events } = await writer;
    expect(codes.every((code) => code === 1000)).toBe(true);
    const m = await muteClosed;
    expect(m.code).toBe(1008);
    expect(m.ms).toBeLessThan(1_000 + 1_000);
    expect(await c.getViewsCount('busy', 0, Date.now() + 60_000)).toBe(events);
    const s = await statusOf(c);
    expect(s.peers.idleClosed).toBeGreaterThanOrEqual(32);
    expect(s.peers.connectionsRefused).toBeGreaterThanOrEqual(68);
    expect(s.peers.helloTimeouts).toBe(1);
  }, 60_000);

  test('a full table of idle clients makes room: the one idle longest goes for a new socket', async () => {
    const n = await node(['--max-connections', '20']);
    const c = await client(n.address);
    await c.processEvents([{ videoId: 'busy' }]);
    const idle = (await Promise.all(Array.from({ length: 19 }, () => helloSocket(n.port, '127.0.0.15')))).filter((w): w is WebSocket => w !== undefined);
    expect(idle.length).toBe(19);
    const closed = idle.map((w) => new Promise<boolean>((r) => w.once('close', () => r(true))));
    await new Promise((r) => setTimeout(r, 1_200));
    await c.processEvents([{ videoId: 'busy' }]); // the busy client is not idle
    // The table holds 20 established sockets, none in its handshake: a newcomer still gets in.
    const newcomer = await helloSocket(n.port, '127.0.0.16');
    expect(newcomer).toBeDefined();
    expect(await Promise.race([Promise.any(closed), new Promise((r) => setTimeout(() => r(false), 2_000))])).toBe(true);
    newcomer?.close();
    await c.processEvents([{ videoId: 'busy' }]);
    const s = await statusOf(c);
    expect(s.peers.connectionsEvicted).toBeGreaterThanOrEqual(1);
    expect(await c.getViewsCount('busy', 0, Date.now() + 60_000)).toBe(3);
    for (const w of idle) w.terminate();
  }, 30_000);

  test('frames sent in part and left: their memory stays under the bound, and the senders are cut', async () => {
    const n = await node(['--max-partial-mb', '16', '--frame-timeout-ms', '3000']);
    const c = await client(n.address);
    const before = await statusOf(c);
    const rss0 = before.process?.rssBytes ?? 0;
    // Each sends 4 MiB - 2 bytes of a 4 MiB - 1 byte binary frame (masked, as a client's must be) and stops.
    const payload = 4 * 1024 * 1024 - 1;
    const header = Buffer.alloc(14);
    header[0] = 0x82;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(payload), 2);
    const part = Buffer.alloc(payload - 1, 7);
    const senders = (await Promise.all(Array.from({ length: 64 }, () => helloSocket(n.port, '127.0.0.11')))).filter((w): w is WebSocket => w !== undefined);
    expect(senders.length).toBe(64);
    const closed = senders.map((w) => new Promise<void>((r) => w.once('close', () => r())));
    let attacking = true;
    const writer = writeWhile(c, () => !attacking, 'partial');
    let peakPartial = 0;
    let peakRss = 0;
    const sample = async (): Promise<void> => {
      const s = await statusOf(c);
      peakPartial = Math.max(peakPartial, s.edge?.partialBytes ?? 0);
      peakRss = Math.max(peakRss, s.process?.rssBytes ?? 0);
    };
    for (const w of senders) {
      const sock = (w as unknown as { _socket: Socket })._socket;
      sock.write(header);
      sock.write(part);
    }
    const sampler = (async () => {
      while (attacking) {
        await sample();
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const t0 = Date.now();
    await Promise.all(closed);
    const cutMs = Date.now() - t0;
    attacking = false;
    await sampler;
    await sample();
    const { latencies, events } = await writer;
    const s = await statusOf(c);
    console.log(`partial frames: 64 x ${payload - 1} bytes sent; all cut in ${cutMs} ms; paused ${s.peers.partialPaused}, frame timeouts ${s.peers.frameTimeouts}; ` +
      `peak partial ${(peakPartial / 1048576).toFixed(1)} MiB, rss ${(rss0 / 1048576).toFixed(0)} -> peak ${(peakRss / 1048576).toFixed(0)} MiB; ` +
      `legit writes ${latencies.length}, p50 ${quantile(latencies, 0.5).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms`);
    // The bound, plus at most the one read (64 KiB) that took each connection over it.
    expect(peakPartial).toBeLessThanOrEqual(16 * 1024 * 1024 + 64 * 64 * 1024);
    // 256 MiB were sent; without the bound the node held all of it.
    expect(peakRss - rss0).toBeLessThan(64 * 1024 * 1024);
    expect(s.peers.partialPaused).toBeGreaterThan(0);
    expect(s.edge?.partialBytes).toBe(0);
    expect(cutMs).toBeLessThan(10_000);
    expect(quantile(latencies, 0.5)).toBeLessThan(50);
    expect(await c.getViewsCount('partial', 0, Date.now() + 60_000)).toBe(events);
  }, 60_000);

  test('control frames between fragments do not hide a message held open, and nothing large comes before a hello', async () => {
    const n = await node(['--frame-timeout-ms', '2000']);
    const c = await client(n.address);
    const w = await helloSocket(n.port, '127.0.0.13');
    if (w === undefined) throw new Error('no hello');
    const sock = (w as unknown as { _socket: Socket })._socket;
    const masked = (opcode: number, fin: boolean, payload: Buffer): Buffer => {
      const len = payload.length;
      const head = len < 126 ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | len]) : Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 127, 0, 0, 0, 0, len >>> 24, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff]);
      return Buffer.concat([head, Buffer.alloc(4), payload]); // mask key 0: the payload as is
    };
    const closed = new Promise<number>((r) => {
      const t0 = Date.now();
      w.once('close', () => r(Date.now() - t0));
    });
    // Three fragments of one message that never ends, a ping after each, a second apart.
    for (let i = 0; i < 3; i += 1) {
      sock.write(masked(i === 0 ? 0x2 : 0x0, false, Buffer.alloc(256 * 1024, 1)));
      sock.write(masked(0x9, true, Buffer.from('still here')));
      if (i === 1) {
        // Once both fragments have arrived (the writes are asynchronous), both count, pings or not.
        await waitFor('two fragments counted', 1_000, async () => ((await statusOf(c)).edge?.partialBytes ?? 0) >= 2 * 256 * 1024 || undefined, 20);
      }
      await new Promise((r) => setTimeout(r, 700));
    }
    expect(await closed).toBeLessThan(2_000 + 1_500);
    // Upgraded and sending a large frame before any hello: cut at once, long before a deadline.
    const stranger = new WebSocket(`ws://${n.address}/`, { localAddress: '127.0.0.14' });
    const cut = new Promise<number>((r) => {
      stranger.once('open', () => {
        const t0 = Date.now();
        stranger.once('close', () => r(Date.now() - t0));
        (stranger as unknown as { _socket: Socket })._socket.write(masked(0x2, true, Buffer.alloc(1024 * 1024, 2)).subarray(0, 512 * 1024));
      });
    });
    stranger.on('error', () => {});
    expect(await cut).toBeLessThan(1_000);
    const s = await statusOf(c);
    expect(s.peers.frameTimeouts).toBeGreaterThanOrEqual(1);
    expect(s.edge?.partialBytes).toBe(0);
  }, 30_000);

  test('a web page cannot reach the node: upgrades with an Origin, and writes with one, are refused', async () => {
    const n = await node([]);
    const fromPage = new WebSocket(`ws://${n.address}/`, { origin: 'https://evil.example' });
    const outcome = await new Promise<string>((r) => {
      fromPage.once('open', () => r('open'));
      fromPage.once('error', (err) => r(err.message));
    });
    expect(outcome).toMatch(/401|403|Unexpected server response/);
    const post = await fetch(`http://${n.address}/v1/events`, { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'text/plain' }, body: '[{"videoId":"v"}]' });
    expect(post.status).toBe(403);
    // A request target that is not a path is answered 400, and the node goes on.
    const odd = await new Promise<string>((resolve) => {
      const sock = connect(n.port, '127.0.0.1', () => sock.write('GET //[ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'));
      let text = '';
      sock.on('data', (d: Buffer) => (text += d.toString()));
      sock.on('close', () => resolve(text));
      sock.on('error', () => resolve(text));
    });
    expect(odd).toMatch(/^HTTP\/1\.1 400 /);
    const c = await client(n.address);
    // The node still serves, and the page's write stored nothing.
    expect(await c.getViewsCount('v', 0, Date.now() + 60_000)).toBe(0);
  }, 30_000);

  test('invalid UTF-8 in a videoId is refused, not merged into another id', async () => {
    const n = await node([]);
    const ws = await helloSocket(n.port, '127.0.0.1');
    if (ws === undefined) throw new Error('no hello');
    const replies: { id: number; code?: string; t: string }[] = [];
    ws.on('message', (d) => replies.push(decodeFrame(d as Buffer) as { id: number; t: string }));
    // Two frames whose ids differ only in invalid bytes (0xff, 0xfe): both would decode to "abc\uFFFD".
    for (const [id, b] of [[1, 0xff], [2, 0xfe]] as const) {
      const frame = encodeFrame({ t: 'count', id, events: [['abcX', 'view', Date.now(), 1, 1]] });
      frame[frame.indexOf(Buffer.from('abcX')) + 3] = b;
      ws.send(frame);
    }
    await waitFor('two replies', 5_000, async () => (replies.length === 2 ? true : undefined), 20);
    expect(replies.map((r) => [r.t, r.code])).toEqual([['error', ErrorCode.BAD_REQUEST], ['error', ErrorCode.BAD_REQUEST]]);
    ws.close();
    const c = await client(n.address);
    await expect(c.getViewsCount('abc\uFFFD', 0, Date.now())).rejects.toMatchObject({ code: ErrorCode.BAD_REQUEST } satisfies Partial<TallyError>);
  }, 30_000);
});
