/**
 * The status page at `/`, loaded in headless Chromium against real node processes: a three-node
 * cluster under a light load shows every member up, the health line, an arc of the ring per member
 * and the write latency; a node with a client token shows the token form and nothing of its status.
 *
 * Chromium is Debian's package: .ci/run installs it; on a machine without it (and not in CI) these
 * tests are skipped, and say why.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statusOf } from '../../client/local-cluster.js';
import type { NodeStatus } from '../../protocol/status.js';
import { removeDir, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';

const CHROMIUM = '/usr/bin/chromium';
const chromium = existsSync(CHROMIUM) && spawnSync(CHROMIUM, ['--version'], { timeout: 30_000 }).status === 0;
const skip = !chromium && process.env.CI === undefined;
if (skip) console.warn(`${CHROMIUM} is not installed (apt-get install chromium): the status page tests are skipped`);

const IDS = ['page-a', 'page-b', 'page-c'];

/** Loads `url` in headless Chromium with a fresh profile and returns the DOM once the page has run for 5 s of virtual time. */
async function dumpDom(url: string, dir: string): Promise<string> {
  const profile = await tempDir('tally-chromium-');
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', `--user-data-dir=${profile}`,
    '--virtual-time-budget=5000', '--dump-dom', url,
  ];
  // Its own process group, so that on a timeout the browser's helper processes go with it.
  const proc = spawn(CHROMIUM, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, cwd: dir });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  try {
    const code = await new Promise<number | string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`chromium did not finish in 60 s:\n${err.slice(-2000)}`)), 60_000);
      proc.once('exit', (c, signal) => {
        clearTimeout(timer);
        resolve(c ?? signal ?? -1);
      });
    });
    expect(code, err.slice(-2000)).toBe(0);
    return out;
  } finally {
    try {
      process.kill(-(proc.pid as number), 'SIGKILL');
    } catch {
      // the group has already exited
    }
    await removeDir(profile);
  }
}

/** The element with this id, as serialized: its start tag and text up to its end tag. */
function elementById(dom: string, id: string): string {
  const m = new RegExp(`<(\\w+)[^>]*\\bid="${id}"[^>]*>[\\s\\S]*?</\\1>`).exec(dom);
  expect(m, `no element #${id} in the page`).not.toBeNull();
  return (m as RegExpExecArray)[0];
}

const textOf = (html: string): string => html.replace(/<[^>]*>/g, '');
/** The document without its script and style, which name the markup they make. */
const markupOf = (dom: string): string => dom.replace(/<(script|style)\b[^>]*>[\s\S]*?<\/\1>/g, '');

describe.skipIf(skip)('the status page in headless Chromium', () => {
  let dir: string;
  const nodes: NodeProcess[] = [];
  beforeAll(async () => {
    dir = await tempDir();
  });
  afterAll(async () => {
    await Promise.all(nodes.map((n) => stopNode(n, 'SIGKILL')));
    await removeDir(dir);
  });

  it('shows every member up, the health line, a ring arc per member and the write latency', async () => {
    for (const [i, id] of IDS.entries()) {
      const seeds = i === 0 ? [] : ['--seeds', nodes[0]!.address];
      nodes.push(await startNode(['--port', '0', '--data', `${dir}/${id}`, '--id', id, '--zone', `z${i + 1}`, '--rf', '3', ...seeds]));
    }
    await waitFor('three members up and the ring agreed on every node', 20_000, async () => {
      const all = await Promise.all(nodes.map((n) => statusOf(n.address)));
      return all.every((s) => s.members.length === 3 && /^healthy: 3\/3 up; ring agreed$/.test(s.health)) ? true : undefined;
    });
    const page = `http://${nodes[0]!.address}`;
    // A light load through the first node while the page runs, so its latency window is not empty.
    let writing = true;
    let stored = 0;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        const res = await fetch(`${page}/v1/events`, { method: 'POST', body: JSON.stringify({ events: [{ videoId: `v${i % 7}`, count: 3 }, { videoId: 'v-page' }] }) });
        expect(res.status).toBe(200);
        stored += ((await res.json()) as { stored: number }).stored;
        await fetch(`${page}/v1/count?videoId=v-page`);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    let dom: string;
    try {
      await waitFor('some events stored', 10_000, async () => (stored > 0 ? true : undefined));
      dom = markupOf(await dumpDom(`${page}/`, dir));
      // What the page draws from: the node's own load figures.
      const { load } = (await (await fetch(`${page}/v1/status`)).json()) as NodeStatus;
      expect(load?.windowS).toBe(5);
      expect(load?.writes.units).toBeGreaterThanOrEqual(stored);
      expect(load?.writes.p50Ms).toBeGreaterThan(0);
      expect(load?.writes.p99Ms).toBeGreaterThanOrEqual(load?.writes.p50Ms ?? Infinity);
      expect(load?.reads.requests).toBeGreaterThan(0);
    } finally {
      writing = false;
      await writer;
    }

    expect(elementById(dom, 'token-form')).toMatch(/^<form[^>]*\bhidden\b/);
    expect(elementById(dom, 'dash')).not.toMatch(/^<main[^>]*\bhidden\b/);
    expect(textOf(elementById(dom, 'health'))).toMatch(/^healthy: 3\/3 up; ring agreed$/);
    const rows = [...dom.matchAll(/<tr class="member" data-member="([^"]+)">([\s\S]*?)<\/tr>/g)];
    expect(rows.map((r) => r[1]).sort()).toEqual(IDS);
    for (const [, id, row] of rows) {
      expect(row, id).toMatch(/<td class="status up"[^>]*>up<\/td>/);
      expect(row, id).toMatch(/>normal</);
      expect(row, id).toMatch(/>\d+\.\d%</);
    }
    expect(rows.find((r) => r[1] === IDS[0])![2]).toContain('(this node)');
    const arcs = [...dom.matchAll(/<path\b[^>]*>/g)].map((m) => m[0]).filter((tag) => /\bclass="ring-arc\b/.test(tag)).map((tag) => /\bdata-member="([^"]+)"/.exec(tag)?.[1]);
    expect(arcs.sort()).toEqual(IDS);
    // Written every 50 ms while the page ran: the node's 5 s window has write latencies.
    const latency = elementById(dom, 'chart-write-latency');
    expect(textOf(latency)).toMatch(/\d[\d.]* \/ \d[\d.]* ms/);
    expect(latency).toMatch(/<path d="M[\d.]+ [\d.]+ /);
  }, 120_000);

  it('asks for the client token when the node needs one, and shows nothing of its status', async () => {
    const node = await startNode(['--port', '0', '--data', `${dir}/locked`, '--id', 'page-locked', '--rf', '1', '--client-token', 'page-secret-0123456789', '--cluster-secret', 'cluster-secret-0123456789']);
    nodes.push(node);
    const page = `http://${node.address}`;
    const served = await fetch(`${page}/`);
    expect(served.status).toBe(200);
    expect(served.headers.get('content-security-policy')).toMatch(/^default-src 'none'; script-src 'sha256-[\w+/=]+'; style-src 'sha256-[\w+/=]+'; connect-src 'self'/);
    expect((await fetch(`${page}/v1/status`)).status).toBe(401);
    expect((await fetch(`${page}/v1/status`, { headers: { authorization: 'Bearer page-secret-0123456789' } })).status).toBe(200);
    const dom = await dumpDom(`${page}/`, dir);
    const form = elementById(dom, 'token-form');
    expect(form).not.toMatch(/^<form[^>]*\bhidden\b/);
    expect(form).toMatch(/<input id="token" type="password"/);
    expect(textOf(form)).toContain('This node needs a client token');
    expect(elementById(dom, 'dash')).toMatch(/^<main[^>]*\bhidden\b/);
    const markup = markupOf(dom);
    expect(markup).toContain('<tbody id="members"></tbody>');
    expect(markup).not.toContain('page-locked');
    expect(markup).not.toContain('data-member');
  }, 60_000);
});
