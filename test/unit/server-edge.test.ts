/**
 * The server's edge on real loopback sockets, without a node behind it: the bounds that keep a
 * socket from holding its place in the connection table for good.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { decodeFrame, encodeFrame, ErrorCode, PROTOCOL_VERSION, TallyError } from '../../protocol/index.js';
import { httpApi } from '../../node/http-api.js';
import { sourceOf, TallyServer, type ServerOptions } from '../../node/server.js';
import { statusPage } from '../../node/status-page.js';
import { ClientTokens } from '../../node/tokens.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server(overrides: Partial<ServerOptions> = {}, handle: () => Promise<never> = () => Promise.reject(new Error('no requests here'))): Promise<{ server: TallyServer; port: number }> {
  const s = new TallyServer(
    {
      host: '127.0.0.1', port: 0, nodeId: 'n1', zone: 'z1', cluster: 'tally', clusterSecret: undefined, rf: 1, retention: [14, 400],
      maxInFlightPerConnection: 8, maxSocketBufferedBytes: 1 << 20, maxConnections: 16, maxConnectionsPerAddress: 16,
      handshakeTimeoutMs: 1_000, helloTimeoutMs: 1_000, frameTimeoutMs: 1_000, idleTimeoutMs: 0, maxPartialBytes: 64 << 20,
      ...overrides,
    },
    { handle: () => Promise.reject(new Error('no requests here')) },
  );
  s.setHttpHandler(
    httpApi({
      handle,
      status: () => ({}),
      ready: () => ({ ready: true, reason: 'serving' }),
      metrics: async () => ({ contentType: 'text/plain', body: '' }),
      page: statusPage,
    }),
  );
  const { port } = await s.listen();
  cleanups.push(() => s.close());
  return { server: s, port };
}

function socket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => resolve(s));
    s.once('error', reject);
    s.on('error', () => {});
    cleanups.push(() => void s.destroy());
  });
}

const closed = (s: Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.once('close', () => r())));

/** One masked client-to-node WebSocket frame (binary, final) holding `payload`. */
function wsFrame(payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x82, 0x80 | n]) : n < 65_536 ? Buffer.from([0x82, 0x80 | 126, n >> 8, n & 0xff]) : Buffer.alloc(10);
  if (n >= 65_536) {
    head[0] = 0x82;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  const mask = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < n; i++) body[i] = (body[i] as number) ^ (mask[i & 3] as number);
  return Buffer.concat([head, mask, body]);
}

/** A raw socket upgraded to a WebSocket (the 101 read), for frames written by hand. */
async function upgraded(port: number): Promise<Socket> {
  const s = await socket(port);
  s.write(`GET / HTTP/1.1\r\nHost: tally\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  await new Promise<void>((r) => s.once('data', () => r()));
  return s;
}

const until = async (check: () => boolean, timeoutMs: number): Promise<void> => {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('TallyServer edge', () => {
  it('counts sockets per IPv4 address, and per /64 for IPv6, which one holder usually has whole', () => {
    expect(sourceOf('10.1.2.3')).toBe('10.1.2.3');
    expect(sourceOf('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(sourceOf('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(sourceOf('2001:db8:1:2::ffff')).toBe('2001:db8:1:2::/64');
    expect(sourceOf('2001:DB8:0001:0002:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(sourceOf('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(sourceOf('::1')).toBe('0:0:0:0::/64');
    expect(sourceOf('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(sourceOf('2001:db8:1:3::1')).not.toBe(sourceOf('2001:db8:1:2::1'));
  });

  it('holds pipelined HTTP requests on one connection to the same bound as a WebSocket\'s', async () => {
    let handled = 0;
    const { server: s, port } = await server({}, () => {
      handled += 1;
      return new Promise<never>(() => {}); // a read that never ends
    });
    const sock = await socket(port);
    sock.write('GET /v1/count?videoId=v1 HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(20));
    await until(() => s.stats.httpRequests >= 20, 2_000);
    expect(handled, 'requests passed on while 8 await replies').toBe(8);
  });

  it('cuts an HTTP client that asks and never reads its replies, so it cannot hold its place for good', async () => {
    const { server: s, port } = await server({ maxConnections: 2, maxInFlightPerConnection: 1_024 });
    // Two sockets take the table; each pipelines requests for the status page and reads nothing.
    const readers = [await socket(port), await socket(port)];
    for (const r of readers) {
      r.pause();
      r.write('GET / HTTP/1.1\r\nHost: tally\r\n\r\n'.repeat(1_000));
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(s.load.byStage.http).toBe(2);
    // Cut once a reply has waited unread past the frame deadline (1 s, swept every 250 ms).
    await until(() => s.load.connections === 0, 3_000);
    expect(s.stats.replyTimeouts).toBe(2);
    for (const r of readers) r.resume();
    await Promise.all(readers.map(closed));
    // The table has room again: a newcomer is served.
    const newcomer = await socket(port);
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      newcomer.on('data', (d: Buffer) => (text += d.toString()));
      newcomer.on('close', () => resolve(text));
      newcomer.write('GET /healthz HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n');
    });
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('keeps two sockets from one source address and port apart when it listens on several addresses', async () => {
    // On 0.0.0.0, 127.0.0.1 and 127.0.0.2 are two of the node's addresses: one source port may reach both.
    const { server: s, port } = await server({ host: '0.0.0.0', helloTimeoutMs: 500 });
    const sockets = await Promise.all(
      ['127.0.0.1', '127.0.0.2'].map(
        (host) =>
          new Promise<WebSocket>((resolve, reject) => {
            const ws = new WebSocket(`ws://${host}:${port}/`, { localAddress: '127.0.0.5', localPort: 40_000 + (process.pid % 20_000) });
            cleanups.push(() => ws.terminate());
            ws.once('open', () => resolve(ws));
            ws.once('error', reject);
          }),
      ),
    );
    expect(s.load.connections).toBe(2);
    // Neither says hello: both meet the hello deadline.
    const codes = await Promise.race([
      Promise.all(sockets.map((ws) => new Promise<number>((r) => ws.once('close', (code) => r(code))))),
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 3_000)),
    ]);
    expect(codes).toEqual([1008, 1008]);
    expect(s.stats.helloTimeouts).toBe(2);
  });

  it('lets a slow HTTP request that reads its reply keep its connection', async () => {
    const { server: s, port } = await server({ maxInFlightPerConnection: 1_024 });
    const r = await socket(port);
    let text = '';
    r.on('data', (d: Buffer) => (text += d.toString()));
    r.write('GET / HTTP/1.1\r\nHost: tally\r\n\r\n'.repeat(20));
    await new Promise((res) => setTimeout(res, 1_800));
    expect(r.destroyed).toBe(false);
    expect(text.split('HTTP/1.1 200 ').length - 1).toBe(20);
    expect(s.stats.replyTimeouts).toBe(0);
  });

  it('holds a frame begun in the same read as the one before it to the frame deadline', async () => {
    const { server: s, port } = await server();
    const sock = await upgraded(port);
    // The hello whole, and the first 60 KiB of a 3 MiB frame after it, in one write; then nothing.
    const hello = wsFrame(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'client' }));
    const big = wsFrame(Buffer.alloc(3 << 20));
    sock.write(Buffer.concat([hello, big.subarray(0, 60 << 10)]));
    await until(() => s.load.byStage.client === 1, 1_000);
    expect(s.load.partialBytes).toBeGreaterThan(50 << 10);
    // Cut once the frame has waited past the frame deadline (1 s, swept every 250 ms).
    await Promise.race([closed(sock), new Promise((r) => setTimeout(r, 3_000))]);
    expect(sock.destroyed).toBe(true);
    expect(s.stats.frameTimeouts).toBe(1);
    expect(s.load.partialBytes).toBe(0);
  });

  it('tells a read-only client that writes it may not, even while the node refuses writes for load', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tally-tokens-'));
    writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ readOnly: ['read-only-token-0001'] }));
    const s = new TallyServer(
      {
        host: '127.0.0.1', port: 0, nodeId: 'n1', zone: 'z1', cluster: 'tally', clusterSecret: 'a-cluster-secret-0001', rf: 1, retention: [14, 400],
        maxInFlightPerConnection: 8, maxSocketBufferedBytes: 1 << 20, maxConnections: 16, maxConnectionsPerAddress: 16,
        handshakeTimeoutMs: 1_000, helloTimeoutMs: 1_000, frameTimeoutMs: 1_000, idleTimeoutMs: 0, maxPartialBytes: 64 << 20,
        tokens: ClientTokens.from(undefined, join(dir, 'tokens.json')) as ClientTokens,
      },
      {
        handle: () => Promise.reject(new Error('no requests here')),
        refuseEarly: () => new TallyError(ErrorCode.OVERLOADED, 'busy'),
      },
    );
    const { port } = await s.listen();
    cleanups.push(() => s.close());
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    cleanups.push(() => ws.terminate());
    const replies: { t: string; code?: string }[] = [];
    ws.on('message', (d: Buffer) => replies.push(decodeFrame(d) as { t: string; code?: string }));
    await new Promise((r) => ws.once('open', r));
    ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'client', token: 'read-only-token-0001' }));
    ws.send(encodeFrame({ t: 'count', id: 1, events: [['v', 'view', Date.now(), 1, 1]] }));
    await until(() => replies.length === 2, 2_000);
    expect(replies[0]?.t).toBe('welcome');
    expect(replies[1]).toMatchObject({ t: 'error', code: ErrorCode.UNAUTHORIZED });
  });

  it('makes room at a full table by closing the HTTP client idle longest, as it does a WebSocket client', async () => {
    const { server: s, port } = await server({ maxConnections: 4 });
    const held: Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const h = await socket(port);
      h.write('GET /healthz HTTP/1.1\r\nHost: tally\r\n\r\n');
      await new Promise<void>((r) => h.once('data', () => r()));
      held.push(h);
    }
    await until(() => s.load.byStage.http === 4, 1_000);
    // Kept alive and idle past a second: the table is full of clients that await nothing.
    await new Promise((r) => setTimeout(r, 1_200));
    const fresh = await socket(port);
    fresh.write('GET /healthz HTTP/1.1\r\nHost: tally\r\n\r\n');
    const answered = await Promise.race([
      new Promise<boolean>((r) => fresh.once('data', () => r(true))),
      closed(fresh).then(() => false),
    ]);
    expect(answered).toBe(true);
    expect(s.stats.connectionsEvicted).toBe(1);
    await closed(held[0] as Socket);
  });

  it('answers a request it cannot parse with an error a client can read: its code, and why', async () => {
    const { port } = await server();
    const answer = async (request: string): Promise<string> => {
      const sock = await socket(port);
      let text = '';
      sock.on('data', (d: Buffer) => (text += d.toString()));
      sock.write(request);
      await closed(sock);
      return text;
    };
    const big = await answer(`GET /healthz HTTP/1.1\r\nHost: tally\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big).toMatch(/^HTTP\/1\.1 431 /);
    expect(JSON.parse(big.slice(big.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'TOO_LARGE', message: expect.stringMatching(/headers/) } });
    const garbled = await answer('NOT HTTP AT ALL\r\n\r\n');
    expect(garbled).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(garbled.slice(garbled.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'BAD_REQUEST' } });
  });
});
