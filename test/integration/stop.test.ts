/**
 * A node stopped cleanly under load answers every request it was sent. It tells each client `bye`
 * (see ByeMessage), answers what is on its way (NOT_READY, nothing applied, once it no longer takes
 * writes) and closes once the client has its replies. Closing under requests in flight left their
 * outcome unknown: with a node decommissioned under load, calls ended in TIMEOUT after retrying a
 * node gone for good, up to every call outstanding at once.
 */
import { once } from 'node:events';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { TallyClient } from '../../client/tally-client.js';
import { decodeFrame, encodeFrame, ErrorCode, PROTOCOL_VERSION, TallyError } from '../../protocol/index.js';
import { removeDir, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';

const started: NodeProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((n) => stopNode(n, 'SIGKILL')));
  await Promise.all(dirs.splice(0).map((d) => removeDir(d)));
});

async function node(dir: string, id = 'n1', more: string[] = ['--rf', '1']): Promise<NodeProcess> {
  const n = await startNode(['--port', '0', '--data', join(dir, id), '--id', id, ...more]);
  started.push(n);
  return n;
}

describe('a clean stop under load', () => {
  test('pipelined writes: every request sent before the bye is answered, acknowledged or refused with nothing applied', async () => {
    const dir = await tempDir('tally-stop-');
    dirs.push(dir);
    const n = await node(dir);
    const ws = new WebSocket(`ws://${n.address}/`);
    await once(ws, 'open');
    ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'client' }));
    const [welcome] = (await once(ws, 'message')) as [Buffer];
    expect(decodeFrame(welcome)).toMatchObject({ t: 'welcome' });

    const answers = new Map<number, string>();
    let sent = 0;
    let bye = false;
    ws.on('message', (d: Buffer) => {
      const m = decodeFrame(d) as { t: string; id?: number; code?: string };
      if (m.t === 'bye') bye = true;
      else answers.set(m.id as number, m.t === 'error' ? (m.code as string) : m.t);
      if (bye && answers.size === sent) ws.close(1000);
    });
    // Five requests a millisecond, not waiting for replies, until the node says goodbye.
    const pump = setInterval(() => {
      if (bye || ws.readyState !== WebSocket.OPEN) return;
      for (let k = 0; k < 5; k++) {
        sent++;
        ws.send(encodeFrame({ t: 'count', id: sent, events: [[`v${sent % 50}`, 'view', Date.now(), 1, 1]], cl: 'one' }));
      }
    }, 1);
    try {
      await waitFor('writes acknowledged', 10_000, async () => ([...answers.values()].filter((t) => t === 'ack').length >= 500 ? true : undefined), 20);
      n.proc.kill('SIGTERM');
      await Promise.race([once(ws, 'close'), new Promise((_, reject) => setTimeout(() => reject(new Error('the connection did not close')), 20_000))]);
    } finally {
      clearInterval(pump);
    }
    expect(await n.exited).toBe(0);
    expect(bye, 'the node said bye').toBe(true);
    const unanswered = Array.from({ length: sent }, (_, i) => i + 1).filter((id) => !answers.has(id));
    expect(unanswered, `requests sent and never answered (of ${sent})`).toEqual([]);
    // Acknowledged, or refused with nothing applied: NOT_READY once it stops, OVERLOADED when the
    // writes outrun it (on a machine busy with other tests).
    const kinds = new Set(answers.values());
    expect([...kinds].every((k) => k === 'ack' || k === ErrorCode.NOT_READY || k === ErrorCode.OVERLOADED), [...kinds].join(',')).toBe(true);
    // The stop came while requests kept coming: some were refused rather than taken.
    expect([...answers.values()].filter((k) => k === ErrorCode.NOT_READY).length).toBeGreaterThan(0);
  }, 60_000);

  test('a client whose hello comes while the node stops is welcomed and told bye at once', async () => {
    const dir = await tempDir('tally-stop-');
    dirs.push(dir);
    const n = await node(dir);
    const hello = encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'client' });
    // One client that never closes after the bye, so the node waits out its grace period.
    const first = new WebSocket(`ws://${n.address}/`);
    await once(first, 'open');
    first.send(hello);
    await once(first, 'message');
    const firstBye = once(first, 'message');
    // A second connected, its hello not yet sent when the stop begins.
    const second = new WebSocket(`ws://${n.address}/`);
    await once(second, 'open');
    const frames: { t: string }[] = [];
    second.on('message', (d: Buffer) => frames.push(decodeFrame(d) as { t: string }));
    n.proc.kill('SIGTERM');
    const [bye] = (await firstBye) as [Buffer];
    expect(decodeFrame(bye)).toMatchObject({ t: 'bye' });
    second.send(hello);
    await waitFor('welcome and bye', 5_000, async () => (frames.length >= 2 ? true : undefined), 10);
    expect(frames.map((f) => f.t)).toEqual(['welcome', 'bye']);
    second.close(1000);
    expect(await n.exited).toBe(0);
  }, 30_000);

  test('through the client: each call is acknowledged or fails with nothing applied, and what is stored is exactly what was acknowledged', async () => {
    const dir = await tempDir('tally-stop-');
    dirs.push(dir);
    const n = await node(dir);
    const client = await TallyClient.connect({ nodes: [n.address], consistency: 'one', timeoutMs: 3_000 });
    const t = Date.now();
    let acked = 0;
    const failures = new Map<string, number>();
    let stopping = false;
    const caller = async (i: number): Promise<void> => {
      for (;;) {
        try {
          await client.countEvent(`s${i % 8}`, 'view', { timestamp: t });
          acked++;
        } catch (err) {
          const code = err instanceof TallyError ? err.code : 'CLIENT';
          failures.set(code, (failures.get(code) ?? 0) + 1);
          if (stopping) return;
        }
      }
    };
    const callers = Array.from({ length: 64 }, (_, i) => caller(i));
    await waitFor('writes acknowledged', 10_000, async () => (acked >= 2_000 ? true : undefined), 20);
    stopping = true;
    n.proc.kill('SIGTERM');
    await Promise.all(callers);
    await client.close();
    expect(await n.exited).toBe(0);
    const codes = [...failures.keys()];
    // Each a refusal with nothing applied: none of unknown outcome (TIMEOUT, CONNECTION_CLOSED, PARTIAL_WRITE).
    const nothingApplied: string[] = [ErrorCode.NOT_READY, ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED];
    expect(codes.every((c) => nothingApplied.includes(c)), `failures: ${JSON.stringify(Object.fromEntries(failures))}`).toBe(true);

    // Started again on the same data: every acknowledged event is there, and nothing more.
    started.splice(started.indexOf(n), 1);
    const again = await node(dir);
    const reader = await TallyClient.connect({ nodes: [again.address] });
    let stored = 0;
    for (let s = 0; s < 8; s++) stored += await reader.getCount(`s${s}`, 'view', t - 60_000, t + 60_000);
    await reader.close();
    expect(stored).toBe(acked);
  }, 60_000);

  test('a write awaiting a frozen replica when its node stops is answered as unknown (TIMEOUT), not as "nothing applied"', async () => {
    // Applied here and waiting for the replica: were it refused NOT_READY, the client would send it
    // elsewhere and it could count twice.
    const dir = await tempDir('tally-stop-');
    dirs.push(dir);
    const n1 = await node(dir, 'n1', ['--rf', '2']);
    const n2 = await node(dir, 'n2', ['--rf', '2', '--seeds', n1.address]);
    const client = await TallyClient.connect({ nodes: [n1.address], routing: 'direct', consistency: 'all' });
    await waitFor('both up, ring agreed', 15_000, async () => {
      await client.countEvent('warm', 'view');
      return true;
    });
    await client.close();
    const ws = new WebSocket(`ws://${n1.address}/`);
    await once(ws, 'open');
    ws.send(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, role: 'client' }));
    await once(ws, 'message');
    const replies: { t: string; id?: number; code?: string }[] = [];
    ws.on('message', (d: Buffer) => replies.push(decodeFrame(d) as { t: string; id?: number; code?: string }));
    n2.proc.kill('SIGSTOP');
    try {
      ws.send(encodeFrame({ t: 'count', id: 1, events: [['frozen', 'view', Date.now(), 1, 1]], cl: 'all' }));
      await new Promise((r) => setTimeout(r, 300));
      expect(replies, 'the write waits for the frozen replica').toEqual([]);
      n1.proc.kill('SIGTERM');
      await waitFor('the write answered', 15_000, async () => (replies.some((r) => r.id === 1) ? true : undefined), 20);
      expect(replies.find((r) => r.id === 1)).toMatchObject({ t: 'error', code: ErrorCode.TIMEOUT });
      expect(await n1.exited).toBe(0);
    } finally {
      n2.proc.kill('SIGCONT');
      ws.terminate();
    }
  }, 60_000);
});
