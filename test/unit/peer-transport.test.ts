/**
 * Peer links on real loopback sockets: delivery with the sender's id, refusal of another cluster
 * and of a peer that cannot prove the cluster secret, backoff after a failed connect, and the bound
 * on what waits for a connection.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_PEER_LINKS, MAX_PEER_QUEUE_FRAMES, PeerTransport, defaultPeerTransportOptions } from '../../node/peer-transport.js';
import { TallyServer } from '../../node/server.js';
import type { PeerMessage } from '../../protocol/peer.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const msg = (i: number): PeerMessage => ({ t: 'repl-ack', id: i });

async function peer(id: string, cluster = 'tally', secret: string | undefined = undefined, port = 0, backoffMs: [number, number] = [200, 400], retention: [number, number] = [14, 400]) {
  const transport = new PeerTransport({ ...defaultPeerTransportOptions(id, cluster, secret, 3, retention), backoffBaseMs: backoffMs[0], backoffMaxMs: backoffMs[1] });
  const server = new TallyServer(
    { host: '127.0.0.1', port, nodeId: id, zone: 'z1', cluster, clusterSecret: secret, rf: 3, retention, maxInFlightPerConnection: 8, maxSocketBufferedBytes: 1 << 20, maxConnections: 16, maxConnectionsPerAddress: 16, handshakeTimeoutMs: 5_000, helloTimeoutMs: 5_000, frameTimeoutMs: 10_000, idleTimeoutMs: 0, maxPartialBytes: 64 << 20 },
    { handle: () => Promise.reject(new Error('no clients here')) },
    undefined,
  );
  server.setPeerHandler(transport);
  const listening = await server.listen();
  const inbox: [string, unknown][] = [];
  transport.onMessage = (from, m) => inbox.push([from, m]);
  cleanups.push(async () => {
    transport.close();
    await server.close();
  });
  return { transport, address: `127.0.0.1:${listening.port}`, port: listening.port, inbox };
}

const until = async (check: () => boolean, timeoutMs = 3000): Promise<void> => {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** A TCP port that accepts connections and never says a word. */
async function silentPort(): Promise<string> {
  const sockets: Socket[] = [];
  const server: Server = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('PeerTransport', () => {
  it('delivers frames in order, tagged with the id the sender gave in its hello', async () => {
    const a = await peer('a');
    const b = await peer('b');
    for (let i = 0; i < 5; i++) a.transport.send(b.address, msg(i));
    await until(() => b.inbox.length === 5);
    expect(b.inbox).toEqual([0, 1, 2, 3, 4].map((i) => ['a', msg(i)]));
    expect(a.transport.stats.connects).toBe(1);
  });

  it('is refused by a node of another cluster', async () => {
    const a = await peer('a', 'blue');
    const b = await peer('b', 'green');
    const dropped: PeerMessage[] = [];
    a.transport.onDropped = (_address, messages) => dropped.push(...messages);
    a.transport.send(b.address, msg(1));
    await until(() => a.transport.stats.connectFailures === 1);
    expect(b.inbox).toEqual([]);
    expect(dropped).toEqual([msg(1)]); // reported back, so a coordinator can hint what it carried
  });

  it('is refused by a node that keeps minute or hour buckets for another time', async () => {
    const a = await peer('a', 'tally', undefined, 0, [200, 400], [14, 400]);
    const b = await peer('b', 'tally', undefined, 0, [200, 400], [7, 400]);
    const refusals: string[] = [];
    a.transport.onRefused = (_address, reason) => refusals.push(reason);
    a.transport.send(b.address, msg(1));
    await until(() => refusals.length === 1);
    expect(refusals[0]).toMatch(/UNAUTHORIZED: .*minute buckets 7 days.*the peer 14 and 400; every member must agree/);
    expect(b.inbox).toEqual([]);
  });

  it('links peers that share the cluster secret, both ways', async () => {
    const secret = 'a-secret-of-32-characters-000000';
    const a = await peer('a', 'tally', secret);
    const b = await peer('b', 'tally', secret);
    a.transport.send(b.address, msg(1));
    b.transport.send(a.address, msg(2));
    await until(() => b.inbox.length === 1 && a.inbox.length === 1);
    expect(b.inbox).toEqual([['a', msg(1)]]);
  });

  it('refuses a peer with a wrong secret or none, in either direction, and delivers nothing', async () => {
    const good = await peer('good', 'tally', 'the-right-secret-0123456789');
    const wrong = await peer('wrong', 'tally', 'the-wrong-secret-0123456789');
    const none = await peer('none', 'tally', undefined);
    const refusals: string[] = [];
    for (const p of [wrong, none]) {
      p.transport.onRefused = (_address, reason) => refusals.push(reason);
      p.transport.send(good.address, msg(1));
    }
    good.transport.onRefused = (_address, reason) => refusals.push(reason);
    good.transport.send(wrong.address, msg(2));
    good.transport.send(none.address, msg(3));
    await until(() => refusals.length === 4);
    expect(refusals.every((r) => r.startsWith('UNAUTHORIZED'))).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(good.inbox).toEqual([]);
    expect(wrong.inbox).toEqual([]);
    expect(none.inbox).toEqual([]);
  });

  it('backs off after a failed connect, then tries again', async () => {
    const a = await peer('a');
    const lost: string[] = [];
    a.transport.onConnectionLost = (id) => lost.push(id);
    const nobody = '127.0.0.1:1'; // nothing listens on tcpmux: refused at once
    expect(a.transport.send(nobody, msg(0))).toBe(true); // queued while connecting
    await until(() => a.transport.stats.connectFailures === 1);
    expect(a.transport.send(nobody, msg(0))).toBe(false); // inside the backoff window: dropped
    await new Promise((r) => setTimeout(r, 650)); // past the longest first backoff (200 ms x 1.5)
    expect(a.transport.send(nobody, msg(0))).toBe(true);
    await until(() => a.transport.stats.connectFailures === 2);
    expect(lost).toEqual([]); // never connected: no evidence against anyone
  });

  it('keeps at most MAX_PEER_QUEUE_FRAMES for a peer that has not answered yet', async () => {
    const a = await peer('a');
    const silent = await silentPort();
    for (let i = 0; i < MAX_PEER_QUEUE_FRAMES + 36; i++) a.transport.send(silent, msg(i));
    expect(a.transport.stats.dropped).toBe(36);
  });

  it('keeps at most maxBufferedBytes of frames for a peer that has not answered yet', async () => {
    const a = await peer('a');
    const dropped: number[] = [];
    a.transport.onDropped = (_address, messages) => dropped.push(...messages.map((m) => (m as { id: number }).id));
    const silent = await silentPort();
    // Replication frames run to hundreds of KiB; ten of 900 KB are twice the 4 MiB bound.
    const big = (i: number): PeerMessage => ({ t: 'repl-ack', id: i, pad: Buffer.alloc(900_000) }) as unknown as PeerMessage;
    for (let i = 0; i < 10; i++) expect(a.transport.send(silent, big(i))).toBe(true);
    // The oldest go first: the newest four (3.6 MB) are kept.
    expect(dropped).toEqual([0, 1, 2, 3, 4, 5]);
    expect(a.transport.stats.dropped).toBe(6);
  });

  it('forgets old links rather than refuse new ones when addresses churn', async () => {
    const a = await peer('a');
    const b = await peer('b');
    // As many dead addresses as there is room for links (distinct loopback hosts, nothing listening).
    for (let i = 0; i < MAX_PEER_LINKS; i++) a.transport.send(`127.1.${i >> 8}.${(i & 255) + 1}:1`, msg(i));
    await until(() => a.transport.stats.connectFailures === MAX_PEER_LINKS, 10_000);
    a.transport.send(b.address, msg(7));
    await until(() => b.inbox.length === 1);
    expect(a.transport.stats.evicted).toBe(1);
  });

  it('opens a link on request and reports it when the peer goes away', async () => {
    const a = await peer('a');
    const b = await peer('b');
    const lost: string[] = [];
    a.transport.onConnectionLost = (id) => lost.push(id);
    a.transport.open(b.address);
    await until(() => a.transport.stats.connects === 1);
    await cleanups.splice(1, 1)[0]?.(); // stop b
    await until(() => lost.length > 0);
    expect(lost[0]).toBe('b');
  });

  it('ends a backoff when the peer is heard up again, so nothing sent to a restarted peer is dropped', async () => {
    const a = await peer('a', 'tally', undefined, 0, [60_000, 60_000]);
    const b = await peer('b');
    await cleanups.splice(1, 1)[0]?.(); // stop b
    expect(a.transport.send(b.address, msg(0))).toBe(true); // queued while connecting
    await until(() => a.transport.stats.connectFailures === 1);
    expect(a.transport.send(b.address, msg(1))).toBe(false); // backing off for 30 to 90 s
    const again = await peer('b', 'tally', undefined, b.port); // b restarts on its address
    a.transport.open(b.address); // as the node does when gossip shows b up
    expect(a.transport.send(b.address, msg(2))).toBe(true);
    await until(() => again.inbox.length === 1);
    expect(again.inbox[0]).toEqual(['a', msg(2)]);
  });
});
