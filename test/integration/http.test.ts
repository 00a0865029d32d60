/**
 * HTTP/JSON, client tokens, TLS and Prometheus metrics on real node processes: the routes as curl
 * would use them, with the same codes as the WebSocket protocol; tokens refused and allowed on
 * both; a cluster whose clients and peers speak TLS with a certificate the test makes; and
 * `promtool check metrics` on a live node's /metrics.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { TallyClient } from '../../client/tally-client.js';
import { ErrorCode } from '../../protocol/index.js';
import type { NodeStatus } from '../../protocol/status.js';
import { CLI, removeDir, runCli, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function node(args: string[], dir?: string): Promise<NodeProcess> {
  const d = dir ?? (await tempDir('tally-http-'));
  const n = await startNode(['--port', '0', '--data', `${d}/n-${Math.random().toString(36).slice(2, 8)}`, ...args]);
  cleanups.push(async () => {
    await stopNode(n, 'SIGKILL');
    if (dir === undefined) await removeDir(d);
  });
  return n;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => unknown;
}

/** One HTTP(S) request, as curl would make it. */
function call(url: string, opts: { method?: string; body?: string | Buffer; token?: string; ca?: Buffer } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, { method: opts.method ?? 'GET', headers, ...(opts.ca === undefined ? {} : { ca: opts.ca }) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const TOKEN_RW = 'rw-token-0123456789abcdef';
const TOKEN_RO = 'ro-token-0123456789abcdef';

describe('HTTP/JSON', () => {
  test('writes, reads, status and probes, with the protocol\'s codes as HTTP statuses', async () => {
    const n = await node(['--rf', '1']);
    const base = `http://${n.address}`;
    expect((await call(`${base}/healthz`)).json()).toEqual({ ok: true });
    expect(await call(`${base}/readyz`)).toMatchObject({ status: 200 });
    const at = Date.parse('2026-11-26T10:00:00Z');
    const w = await call(`${base}/v1/events`, {
      method: 'POST',
      body: JSON.stringify({ events: [{ videoId: 'v1' }, { videoId: 'v1', eventType: 'watch_ms', value: 1500, timestamp: '2026-11-26T10:00:30Z' }, { videoId: 'v1', count: 4, timestamp: at }] }),
    });
    expect(w.status).toBe(200);
    expect(w.json()).toEqual({ stored: 6 });
    // A bare list of events is a batch too.
    expect((await call(`${base}/v1/events`, { method: 'POST', body: JSON.stringify([{ videoId: 'v2', count: 2, timestamp: at }]) })).json()).toEqual({ stored: 2 });
    const count = await call(`${base}/v1/count?videoId=v1&from=2026-11-26T10:00:00Z&to=2026-11-26T10:01:00Z`);
    expect(count.json()).toEqual({ count: 4, from: at, to: at + 60_000, clipped: false });
    // A time without a zone is UTC, as buckets are; a date alone is its midnight.
    expect((await call(`${base}/v1/count?videoId=v1&from=2026-11-26T10:00&to=2026-11-26T10:01`)).json()).toMatchObject({ count: 4 });
    expect((await call(`${base}/v1/count?videoId=v2&from=2026-11-26&to=2026-11-27`)).json()).toMatchObject({ count: 2 });
    const stats = await call(`${base}/v1/stats?videoId=v1&type=watch_ms&from=${at}&to=${at + 60_000}&consistency=one`);
    expect(stats.json()).toEqual({ count: 1, sum: 1500, min: 1500, max: 1500, avg: 1500, from: at, to: at + 60_000, clipped: false });
    const status = (await call(`${base}/v1/status`)).json() as NodeStatus;
    expect(status.members.map((m) => m.address)).toEqual([n.address]);
    // The same validation, limits and codes as the WebSocket protocol.
    const cases: [string, { method?: string; body?: string }, number, string][] = [
      ['/v1/count?from=0', {}, 400, ErrorCode.BAD_REQUEST],
      ['/v1/count?videoId=v1&from=yesterday', {}, 400, ErrorCode.BAD_REQUEST],
      ['/v1/count?videoId=v1&color=red', {}, 400, ErrorCode.BAD_REQUEST],
      ['/v1/count?videoId=v1&consistency=most', {}, 400, ErrorCode.BAD_REQUEST],
      ['/v1/events', { method: 'POST', body: '{"events": [' }, 400, ErrorCode.BAD_REQUEST],
      ['/v1/events', { method: 'POST', body: JSON.stringify({ events: [{ videoId: '' }] }) }, 400, ErrorCode.BAD_REQUEST],
      ['/v1/events', { method: 'POST', body: JSON.stringify({ events: [{ videoId: 'v', value: -1 }] }) }, 400, ErrorCode.BAD_REQUEST],
      ['/v1/events', { method: 'POST', body: JSON.stringify({ events: [{ videoId: 'x'.repeat(300) }] }) }, 413, ErrorCode.TOO_LARGE],
      ['/v1/events', { method: 'POST', body: JSON.stringify({ events: Array.from({ length: 10_001 }, () => ({ videoId: 'v' })) }) }, 413, ErrorCode.TOO_LARGE],
      ['/v1/events', { method: 'POST', body: JSON.stringify({ events: [{ videoId: 'v' }], consistency: 'all' }) }, 200, ''],
      ['/v1/events', {}, 405, ErrorCode.BAD_REQUEST],
      ['/nowhere', {}, 404, ErrorCode.BAD_REQUEST],
    ];
    for (const [path, opts, want, code] of cases) {
      const r = await call(`${base}${path}`, opts);
      expect([path, r.status]).toEqual([path, want]);
      if (code !== '') expect((r.json() as { error: { code: string; message: string } }).error).toMatchObject({ code, message: expect.any(String) });
    }
    // Invalid UTF-8 in a body is refused, not merged into another id.
    const bad = Buffer.concat([Buffer.from('[{"videoId":"abc'), Buffer.from([0xff]), Buffer.from('"}]')]);
    expect((await call(`${base}/v1/events`, { method: 'POST', body: bad })).status).toBe(400);
    // A body declared over the limit is refused before it is read, and the connection closed
    // (sent by hand: a client still writing the body may see the close before the answer).
    const big = await new Promise<string>((resolve, reject) => {
      const sock = connect(n.port, '127.0.0.1', () => sock.write(`POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${5 * 1024 * 1024}\r\n\r\n[{"videoId":"v"}`));
      let text = '';
      sock.on('data', (d: Buffer) => (text += d.toString()));
      sock.on('close', () => resolve(text));
      sock.on('error', reject);
    });
    expect(big).toMatch(/^HTTP\/1\.1 413 /);
    expect(big).toMatch(/\r\nconnection: close\r\n/i);
    expect(big).toMatch(/"code":"TOO_LARGE"/);
    // Undeclared (chunked), it is read up to the limit and no further.
    const chunked = await new Promise<string>((resolve) => {
      const sock = connect(n.port, '127.0.0.1', () => {
        sock.write(`POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${(6 * 1024 * 1024).toString(16)}\r\n`);
        sock.write(Buffer.alloc(5 * 1024 * 1024, 0x20));
      });
      let text = '';
      sock.on('data', (d: Buffer) => (text += d.toString()));
      sock.on('close', () => resolve(text));
      sock.on('error', () => {});
    });
    expect(chunked).toMatch(/^HTTP\/1\.1 413 [\s\S]*"code":"TOO_LARGE"/);
    // Nothing refused was stored; what was acknowledged was.
    const all = (await call(`${base}/v1/count?videoId=v&from=0`)).json() as { count: number };
    expect(all.count).toBe(1);
  }, 60_000);

  test('a parameter given twice, or one a route does not take, is refused rather than one of them read and the rest ignored', async () => {
    const n = await node(['--rf', '1']);
    const base = `http://${n.address}`;
    expect((await call(`${base}/v1/events`, { method: 'POST', body: JSON.stringify([{ videoId: 'a' }]) })).json()).toEqual({ stored: 1 });
    const refused: [string, { method?: string; body?: string }, RegExp][] = [
      ['/v1/count?videoId=a&videoId=b', {}, /^videoId was given 2 times; give it once$/],
      ['/v1/stats?videoId=a&from=0&from=2026-11-26', {}, /^from was given 2 times; give it once$/],
      ['/v1/events?consistency=all&consistency=one', { method: 'POST', body: JSON.stringify([{ videoId: 'a' }]) }, /^consistency was given 2 times; give it once$/],
      ['/v1/events?videoId=b', { method: 'POST', body: JSON.stringify([{ videoId: 'a' }]) }, /^unknown parameter "videoId"; known: consistency$/],
      ['/v1/events?consistency=all', { method: 'POST', body: JSON.stringify({ events: [{ videoId: 'a' }], consistency: 'one' }) }, /consistency is given both in the path and in the body/],
      // Events are numbered from 1 in every message about one, as the node's own checks number them.
      ['/v1/events', { method: 'POST', body: JSON.stringify([{ videoId: 'a' }, { videoId: 'b', colour: 'red' }]) }, /^event 2 has an unknown field "colour"/],
      ['/v1/events', { method: 'POST', body: JSON.stringify([{ videoId: 'b', timestamp: 'soon' }]) }, /^event 1: timestamp must be epoch milliseconds or ISO-8601/],
      ['/v1/events', { method: 'POST', body: JSON.stringify([{ videoId: 'b', count: 0 }]) }, /^event 1: count must be an integer/],
      // A null is refused, not taken as left out (a view, a value of 1, now).
      ['/v1/events', { method: 'POST', body: JSON.stringify([{ videoId: 'b', eventType: null }]) }, /^event 1: eventType is null; leave it out for its default, or give a value$/],
      ['/v1/events', { method: 'POST', body: JSON.stringify([{ videoId: 'b', value: null }]) }, /^event 1: value is null/],
      ['/v1/events', { method: 'POST', body: JSON.stringify([{ videoId: 'b', timestamp: null }]) }, /^event 1: timestamp is null/],
      ['/v1/events', { method: 'POST', body: JSON.stringify({ events: [{ videoId: 'a' }], consistency: null }) }, /^consistency is null; leave it out for its default, or give a value$/],
      // A field is named as the request names it.
      ['/v1/events', { method: 'POST', body: JSON.stringify({ events: [{ videoId: 'a' }], batchId: 'a b' }) }, /^batchId must be 1-160 printable ASCII characters/],
    ];
    for (const [path, opts, message] of refused) {
      const r = await call(`${base}${path}`, opts);
      expect([path, r.status]).toEqual([path, 400]);
      expect((r.json() as { error: { code: string; message: string } }).error, path).toMatchObject({ code: ErrorCode.BAD_REQUEST, message: expect.stringMatching(message) });
    }
    // Nothing refused was stored.
    expect((await call(`${base}/v1/count?videoId=a`)).json()).toMatchObject({ count: 1 });
    expect((await call(`${base}/v1/count?videoId=b`)).json()).toMatchObject({ count: 0 });
  }, 30_000);

  test('client tokens: refused without, read-only may only read, on WebSocket and HTTP alike', async () => {
    const dir = await tempDir('tally-tokens-');
    cleanups.push(() => removeDir(dir));
    writeFileSync(`${dir}/tokens.json`, JSON.stringify({ readWrite: [TOKEN_RW], readOnly: [TOKEN_RO] }));
    // Without a cluster secret, anyone could say hello as a peer and skip the token: refused.
    const open = await node(['--rf', '1', '--client-token-file', `${dir}/tokens.json`], dir).catch((err: Error) => err.message);
    expect(open).toMatch(/error BAD_REQUEST: client tokens need a cluster secret too/);
    const n = await node(['--rf', '1', '--client-token-file', `${dir}/tokens.json`, '--cluster-secret', 'cluster-secret-0123456789'], dir);
    const connect = (token?: string): Promise<TallyClient> =>
      TallyClient.connect({ nodes: [n.address], timeoutMs: 3_000, maxRetries: 0, ...(token === undefined ? {} : { token }) });
    await expect(connect()).rejects.toMatchObject({ code: ErrorCode.UNAUTHORIZED, message: expect.stringMatching(/needs a client token/) });
    await expect(connect('not-the-token-0123456789')).rejects.toMatchObject({ code: ErrorCode.UNAUTHORIZED, message: expect.stringMatching(/not one this node accepts/) });
    const rw = await connect(TOKEN_RW);
    cleanups.push(() => rw.close());
    const ro = await connect(TOKEN_RO);
    cleanups.push(() => ro.close());
    await rw.processEvents([{ videoId: 'tok', count: 3 }]);
    expect(await ro.getViewsCount('tok', 0, Date.now() + 60_000)).toBe(3);
    await expect(ro.processEvents([{ videoId: 'tok' }])).rejects.toMatchObject({ code: ErrorCode.UNAUTHORIZED });
    const base = `http://${n.address}`;
    const write = { method: 'POST', body: JSON.stringify([{ videoId: 'tok' }]) };
    expect((await call(`${base}/v1/count?videoId=tok`)).status).toBe(401);
    expect((await call(`${base}/v1/count?videoId=tok`, { token: 'nope-nope-nope-nope' })).status).toBe(401);
    expect((await call(`${base}/v1/count?videoId=tok`, { token: TOKEN_RO })).json()).toMatchObject({ count: 3 });
    expect((await call(`${base}/v1/events`, { ...write, token: TOKEN_RO })).status).toBe(403);
    expect((await call(`${base}/v1/events`, { ...write, token: TOKEN_RW })).json()).toEqual({ stored: 1 });
    expect((await call(`${base}/metrics`)).status).toBe(401);
    expect((await call(`${base}/metrics`, { token: TOKEN_RO })).status).toBe(200);
    expect((await call(`${base}/v1/status`)).status).toBe(401);
    // Probes need none.
    expect((await call(`${base}/healthz`)).status).toBe(200);
    expect((await call(`${base}/readyz`)).status).toBe(200);
    expect(await rw.getViewsCount('tok', 0, Date.now() + 60_000)).toBe(4);
    // The CLI shows the token from --client-token or TALLY_CLIENT_TOKEN.
    const refused = await runCli(['count', 'tok', '--node', n.address]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/^error UNAUTHORIZED: .*needs a client token/);
    expect((await runCli(['count', 'tok', '--node', n.address], 20_000, { TALLY_CLIENT_TOKEN: TOKEN_RW })).code).toBe(0);
    const read = await runCli(['get', 'tok', '--node', n.address, '--client-token', TOKEN_RO]);
    expect(read.stdout.trim()).toBe('5');
    expect((await runCli(['count', 'tok', '--node', n.address, '--client-token', TOKEN_RO])).stderr).toMatch(/^error UNAUTHORIZED: .*may only read/);
    // A token too short to be a secret is refused at start.
    const short = await node(['--rf', '1', '--client-token', 'short', '--cluster-secret', 'cluster-secret-0123456789']).catch((err: Error) => err.message);
    expect(short).toMatch(/error BAD_REQUEST: the client token must be 16 to 256/);
  }, 60_000);

  test('tally cluster --client-token: its nodes need the token, get it and a cluster secret by their environment, never on a command line', async () => {
    const dir = await tempDir('tally-cluster-token-');
    cleanups.push(() => removeDir(dir));
    const token = 'cluster-token-0123456789';
    const proc = spawn(process.execPath, [CLI, 'cluster', '--nodes', '2', '--base-port', '7471', '--data', dir, '--client-token', token], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    cleanups.push(async () => {
      proc.kill('SIGTERM');
      await exited;
    });
    await waitFor('the cluster agrees', 30_000, async () => (/healthy: 2\/2 up/.test(out) ? true : undefined));
    // What `ps` shows every user: each process's command line.
    const commandLines = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ');
        } catch {
          return '';
        }
      })
      .filter((l) => l.includes(' start ') && l.includes(dir));
    expect(commandLines.length).toBe(2);
    for (const l of commandLines) expect(l).not.toMatch(/client-token|cluster-secret|cluster-token-0123456789/);
    expect((await runCli(['get', 'v', '--node', '127.0.0.1:7472'])).stderr).toMatch(/^error UNAUTHORIZED/);
    expect((await runCli(['count', 'v', '--node', '127.0.0.1:7472', '--client-token', token])).code).toBe(0);
    expect((await runCli(['get', 'v', '--node', '127.0.0.1:7471', '--client-token', token])).stdout.trim()).toBe('1');
  }, 60_000);

  test('TLS: clients and peers over TLS with a certificate the test makes; plain connections are not served', async () => {
    const dir = await tempDir('tally-tls-');
    cleanups.push(() => removeDir(dir));
    const ssl = (...args: string[]): void => {
      execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    };
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Tally test CA');
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'node.key', '-out', 'node.csr', '-subj', '/CN=127.0.0.1');
    writeFileSync(`${dir}/ext.cnf`, 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    ssl('x509', '-req', '-in', 'node.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'node.pem', '-days', '2', '-extfile', 'ext.cnf');
    const tls = ['--tls-cert', `${dir}/node.pem`, '--tls-key', `${dir}/node.key`, '--tls-ca', `${dir}/ca.pem`];
    const a = await node(['--rf', '2', '--zone', 'z1', ...tls], dir);
    const b = await node(['--rf', '2', '--zone', 'z2', '--seeds', a.address, ...tls], dir);
    const ca = readFileSync(`${dir}/ca.pem`);
    const c = await TallyClient.connect({ nodes: [a.address, b.address], tls: { ca }, timeoutMs: 5_000 });
    cleanups.push(() => c.close());
    // The two see each other up only over TLS: their peer links are wss://. Each must see both up
    // and done joining (a member still being sent its ranges counts for no `all`), not just one.
    await waitFor('both members up and joined, as each sees them', 20_000, async () => {
      const all = await Promise.all([a, b].map(async (n) => (await call(`https://${n.address}/v1/status`, { ca })).json() as NodeStatus));
      return all.every((s) => s.members.length === 2 && s.members.every((m) => m.status === 'up' && m.lifecycle === 'normal')) ? true : undefined;
    });
    // `all` needs both replicas: the write crosses the peer link.
    await c.processEvents([{ videoId: 'secure', count: 5 }], { consistency: 'all' });
    expect(await c.getViewsCount('secure', 0, Date.now() + 60_000, { consistency: 'all' })).toBe(5);
    expect((await call(`https://${b.address}/v1/count?videoId=secure&consistency=one`, { ca })).json()).toMatchObject({ count: 5 });
    // Without the CA the certificate is not trusted; plain WebSocket and HTTP are not served.
    await expect(TallyClient.connect({ nodes: [a.address], tls: true, timeoutMs: 2_000, maxRetries: 0 })).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    // A plain client is hung up on without a word; the error says what that usually means.
    await expect(TallyClient.connect({ nodes: [a.address], timeoutMs: 2_000, maxRetries: 0 })).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE, message: expect.stringMatching(/if the node serves TLS, connect with TLS/) });
    await expect(call(`http://${a.address}/healthz`)).rejects.toThrow();
  }, 60_000);
});

const promtool = spawnSync('promtool', ['--version']).status === 0;

describe('Prometheus metrics', () => {
  test.skipIf(!promtool && process.env.CI === undefined)('a live node\'s /metrics passes promtool check metrics and counts what it did', async () => {
    const n = await node(['--rf', '1']);
    const c = await TallyClient.connect({ nodes: [n.address] });
    cleanups.push(() => c.close());
    await c.processEvents(Array.from({ length: 50 }, (_, i) => ({ videoId: `m${i % 5}` })));
    await c.getViewsCount('m1', 0, Date.now() + 60_000);
    await expect(c.processEvents([{ videoId: 'x', value: -1 }])).rejects.toMatchObject({ code: ErrorCode.BAD_REQUEST });
    await call(`http://${n.address}/v1/count?from=0`);
    const m = await call(`http://${n.address}/metrics`);
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: m.text, encoding: 'utf8' });
    expect(check.error).toBeUndefined();
    expect(`${check.stdout}${check.stderr}`.trim()).toBe('');
    expect(check.status).toBe(0);
    const value = (line: RegExp): number => Number(m.text.split('\n').find((l) => line.test(l))?.split(' ').pop());
    expect(value(/^tally_events_total\{outcome="stored"\}/)).toBe(50);
    expect(value(/^tally_requests_total\{type="get",code="OK"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(/^tally_request_duration_seconds_count\{type="count",outcome="ok"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(/^tally_members\{status="up",lifecycle="normal"\}/)).toBe(1);
    expect(value(/^tally_ring_ownership_ratio\{/)).toBe(1);
    expect(value(/^tally_group_commits_total\{outcome="ok"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(/^tally_connections\{stage="client"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(/^tally_memory_bytes\{kind="own"\}/)).toBeGreaterThan(10 * 1024 * 1024);
    expect(value(/^tally_memory_bytes\{kind="heap_limit"\}/)).toBeGreaterThan(value(/^tally_memory_bytes\{kind="own"\}/) / 10);
    expect(value(/^tally_heap_refusals_total /)).toBe(0);
    expect(m.text).toMatch(/^nodejs_eventloop_lag_seconds /m);
    expect(m.text).toMatch(/^process_resident_memory_bytes /m);
    expect(m.text).toMatch(/^nodejs_heap_size_used_bytes /m);
    // The client checks a negative value itself; the HTTP call's missing videoId reached the node.
    expect(value(/^tally_errors_total\{code="BAD_REQUEST"\}/)).toBeGreaterThanOrEqual(1);
  }, 30_000);
});
