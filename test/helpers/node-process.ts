/**
 * Real Tally node processes for integration and chaos tests: started from the built CLI
 * (`dist/scripts/cli.js`), each with its own data directory, and killed for real.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startArgs } from '../../node/memory.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = join(ROOT, 'dist/scripts/cli.js');

export interface NodeProcess {
  proc: ChildProcess;
  address: string;
  port: number;
  output: () => string;
  /** Resolves with the exit code (or signal) once the process has exited. */
  exited: Promise<number | string>;
}

export async function tempDir(prefix = 'tally-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Starts `tally start` (after `prefix`, e.g. `ip netns exec ns`; with `env` added) and waits for its ready line. */
export function startNode(args: string[], readyTimeoutMs = 15_000, prefix: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<NodeProcess> {
  const cmd = [...prefix, process.execPath, ...startArgs(CLI, args)];
  const proc = spawn(cmd[0] as string, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  const exited = new Promise<number | string>((res) => proc.once('exit', (code, signal) => res(code ?? signal ?? -1)));
  return new Promise((res, rej) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      rej(new Error(`node did not become ready in ${readyTimeoutMs} ms:\n${out}`));
    }, readyTimeoutMs);
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = /ready on (\S+):(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        const port = Number(m[2]);
        res({ proc, port, address: `${m[1]}:${port}`, output: () => out, exited });
      }
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`node exited (${code}) before it was ready:\n${out}`));
    });
  });
}

/**
 * Starts a node that must refuse to start, and returns its error output. If it starts after all,
 * it is killed (no process outlives a failed test) and this throws.
 */
export async function refusedStart(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  let node: NodeProcess;
  try {
    node = await startNode(args, 15_000, [], env);
  } catch (err) {
    return (err as Error).message;
  }
  await stopNode(node, 'SIGKILL');
  throw new Error(`the node started, but should have refused:\n${node.output()}`);
}

/** Runs a `tally` CLI command to completion. */
export function runCli(args: string[], timeoutMs = 20_000, env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      rej(new Error(`tally ${args.join(' ')} did not finish in ${timeoutMs} ms`));
    }, timeoutMs);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      res({ code: code ?? -1, stdout, stderr });
    });
  });
}

export async function stopNode(n: NodeProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | string> {
  if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill(signal);
  return n.exited;
}

/** Polls `check` every `everyMs` until it returns a value other than undefined; returns it and the time it took. */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined>,
  everyMs = 100,
): Promise<{ value: T; ms: number }> {
  const t0 = Date.now();
  let lastError: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return { value: v, ms: Date.now() - t0 };
    } catch (err) {
      lastError = err;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`${what}: not within ${timeoutMs} ms${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
