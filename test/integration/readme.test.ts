/**
 * The README's curl examples, run as written against a local cluster started as `npm start`
 * starts one (`tally cluster --nodes 3`), on other ports: each `curl` line's output must match the
 * `# …` line under it, where `…` stands for any text.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { CLI, ROOT, removeDir, tempDir } from '../helpers/node-process.js';

const BASE_PORT = 7461;

/** The curl lines of the README's HTTP section, each with the output it shows. */
function examples(): { command: string; expected: string }[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## HTTP and metrics'));
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  const lines = block.split('\n');
  const out: { command: string; expected: string }[] = [];
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i] as string;
    if (line.startsWith('curl ')) out.push({ command: line, expected: (lines[i + 1] ?? '').replace(/^# /, '') });
  }
  return out;
}

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await removeDir(d);
});

test('the README\'s curl examples work as written against a local cluster', async () => {
  const cases = examples();
  expect(cases.length).toBeGreaterThanOrEqual(5);
  const dir = await tempDir('tally-readme-');
  dirs.push(dir);
  const proc = spawn(process.execPath, [CLI, 'cluster', '--nodes', '3', '--base-port', String(BASE_PORT), '--data', dir], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the cluster did not agree in 30 s:\n${out}`)), 30_000);
      const check = setInterval(() => {
        if (/healthy: 3\/3 up/.test(out)) {
          clearTimeout(timer);
          clearInterval(check);
          resolve();
        }
      }, 50);
    });
    for (const { command, expected } of cases) {
      const run = command.replaceAll('localhost:7401', `localhost:${BASE_PORT}`);
      const got = execFileSync('bash', ['-c', run], { encoding: 'utf8' }).trim();
      const pattern = new RegExp(`^${expected.split('…').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
      expect({ command, got }).toEqual({ command, got: expect.stringMatching(pattern) });
    }
  } finally {
    proc.kill('SIGTERM');
    await exited;
  }
}, 60_000);
