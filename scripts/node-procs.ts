/**
 * Real node processes for the measuring scripts: start one from the built CLI and wait for its
 * ready line, and wait for a condition with a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startArgs } from '../node/memory.js';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The built CLI: beside this file once built, or under dist/ when this runs from source. */
export const CLI = existsSync(join(HERE, 'cli.js')) ? join(HERE, 'cli.js') : join(HERE, '../dist/scripts/cli.js');

/** Runs `tally start …args`; resolves with the process once it prints its ready line. */
export function startTallyNode(args: string[], name: string): Promise<ChildProcess> {
  const p = spawn(process.execPath, startArgs(CLI, args), { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    p.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(' ready on ')) resolve(p);
    });
    p.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    p.once('exit', (code) => reject(new Error(`${name} exited (${code}):\n${out}`)));
  });
}

/** Resolves once `check` says true (errors count as false); throws after `ms`. */
export async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/** Bytes of the files directly in `path` (a LevelDB directory). */
export async function bytesIn(path: string): Promise<number> {
  let total = 0;
  for (const f of await readdir(path)) total += (await stat(join(path, f))).size;
  return total;
}
