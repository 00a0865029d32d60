/**
 * Chaos check: no false `down` while the CPU is saturated.
 *
 * Starts a 5-node loopback cluster of real processes, waits until all are up, then runs one
 * busy-loop process per core for the given duration while polling every node's status twice a
 * second. Prints how many polls saw any live member `down`, the highest phi and heartbeat age
 * seen, and the nodes' own `is down` log lines. Exits 1 if any live node was ever marked down.
 *
 *   node dist/scripts/false-down.js [--seconds 60] [--nodes 5] [--burners <cores>] [--base-port 7601]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { statusOf } from '../client/local-cluster.js';
import { startArgs } from '../node/memory.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), 'cli.js');

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    nodes: { type: 'string', default: '5' },
    burners: { type: 'string', default: String(availableParallelism()) },
    'base-port': { type: 'string', default: '7601' },
  },
});
const seconds = Number(values.seconds);
const n = Number(values.nodes);
const burners = Number(values.burners);
const basePort = Number(values['base-port']);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'tally-false-down-'));
  const procs: ChildProcess[] = [];
  const downLines: string[] = [];
  const addresses = Array.from({ length: n }, (_, i) => `127.0.0.1:${basePort + i}`);
  try {
    for (let i = 0; i < n; i++) {
      const args = ['--port', String(basePort + i), '--data', join(dir, `n${i + 1}`), '--id', `n${i + 1}`];
      args.push('--zone', `z${(i % 3) + 1}`, '--seeds', addresses[0] as string);
      const p = spawn(process.execPath, startArgs(CLI, args), { stdio: ['ignore', 'pipe', 'inherit'] });
      p.stdout?.on('data', (d: Buffer) => {
        for (const line of d.toString().split('\n')) if (/ is down /.test(line)) downLines.push(`n${i + 1}: ${line}`);
      });
      procs.push(p);
    }
    for (;;) {
      const all = await Promise.all(addresses.map((a) => statusOf(a).catch(() => undefined)));
      if (all.every((s) => s !== undefined && s.members.length === n && s.members.every((m) => m.status === 'up'))) break;
      await sleep(200);
    }
    console.log(`${n} nodes up; saturating the CPU with ${burners} busy loop(s) for ${seconds} s`);
    const burn: ChildProcess[] = [];
    for (let i = 0; i < burners; i++) burn.push(spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
    procs.push(...burn);

    let polls = 0;
    let pollsWithDown = 0;
    let maxPhi = 0;
    let maxAgeMs = 0;
    let failedPolls = 0;
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      const all = await Promise.all(addresses.map((a) => statusOf(a).catch(() => undefined)));
      for (const s of all) {
        if (s === undefined) {
          failedPolls += 1;
          continue;
        }
        polls += 1;
        if (s.members.some((m) => m.status === 'down')) pollsWithDown += 1;
        for (const m of s.members) {
          if (m.self) continue;
          maxPhi = Math.max(maxPhi, m.phi);
          maxAgeMs = Math.max(maxAgeMs, m.lastHeartbeatAgeMs);
        }
      }
      await sleep(500);
    }
    for (const b of burn) b.kill('SIGKILL');
    console.log(
      `status polls: ${polls} answered, ${failedPolls} unanswered; polls showing a live member down: ${pollsWithDown}\n` +
        `highest phi seen: ${maxPhi.toFixed(2)} (threshold 8); longest heartbeat age seen: ${maxAgeMs} ms\n` +
        `'is down' log lines: ${downLines.length}${downLines.length > 0 ? `\n  ${downLines.join('\n  ')}` : ''}`,
    );
    return pollsWithDown === 0 && downLines.length === 0 ? 0 : 1;
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
