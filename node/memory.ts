/**
 * A node's memory budget: the resident memory of its own (RSS less the pages of files it maps)
 * `tally start` keeps it under, 300 MiB unless `--memory-mb` says otherwise (0: no budget, V8's
 * own heap limit of several GiB).
 *
 * Most of a node's memory is V8's heap, and V8 lets a heap grow to several times what is live
 * before it collects hard: a node at full load with ~90 MB live sat at 600-700 MB resident. The
 * heap's limit can only be set when the process starts (`--max-old-space-size`), so `tally start`
 * runs the node in a child process with the limit the budget leaves (see `heapMBOf`), unless one
 * was given already. Under that limit the node sizes its slot cache and dirty bound to fit
 * (config.ts `fitToHeap`) and refuses writes with OVERLOADED while the heap is nearly full.
 *
 * The rest is native: the process itself (29 MB of its own when idle), LevelDB's write buffers,
 * block cache and open tables, and what the thread pool's work allocates. glibc gives each
 * thread that allocates an arena of its own, which LevelDB's and the thread pool's threads leave
 * fragmented; two arenas took ~25 MB less at the same load (MALLOC_ARENA_MAX=2, set for the node
 * unless the environment sets it).
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { ErrorCode, TallyError } from '../protocol/errors.js';

/** The budget a node keeps to unless told otherwise, MiB. */
export const DEFAULT_MEMORY_MB = 300;
/**
 * The node's own resident memory (anonymous pages) besides its JavaScript heap's limit, MiB. Under
 * a 200 MiB limit its own memory peaked at 215-259 MB in `tally bench` runs of one node and three,
 * Zipf and uniform, twice the load, and 32 readers. Pages of files it maps come on top of the
 * budget (see ProcessStatus): LevelDB's tables, which the kernel takes back when it needs to.
 */
export const NATIVE_RESERVE_MB = 100;
/** Smallest heap a node under full load can hold its own bounds in (slots awaiting a commit, filters), MiB. */
export const MIN_HEAP_MB = 128;
/** Smallest budget other than 0. */
export const MIN_MEMORY_MB = MIN_HEAP_MB + NATIVE_RESERVE_MB;
const MAX_MEMORY_MB = 1 << 20;

/** Throws BAD_REQUEST unless `v` is 0 or a whole number of MiB from MIN_MEMORY_MB. */
export function checkMemoryMB(v: number): void {
  if (!(Number.isInteger(v) && (v === 0 || (v >= MIN_MEMORY_MB && v <= MAX_MEMORY_MB)))) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `--memory-mb must be 0 (no budget) or a whole number of MiB from ${MIN_MEMORY_MB} (a ${MIN_HEAP_MB} MiB heap and ${NATIVE_RESERVE_MB} MiB besides) to ${MAX_MEMORY_MB}, not ${String(v)}`);
  }
}

/** The JavaScript heap limit a budget leaves, MiB; undefined for no budget (0). */
export function heapMBOf(memoryMB: number): number | undefined {
  checkMemoryMB(memoryMB);
  return memoryMB === 0 ? undefined : memoryMB - NATIVE_RESERVE_MB;
}

/** Node.js flags that give a process a heap limit of `heapMB` (none for undefined: V8's own). */
export function heapFlags(heapMB: number | undefined): string[] {
  return heapMB === undefined ? [] : [`--max-old-space-size=${heapMB}`];
}

/** What a node process's environment gets beside `env`: glibc's arenas at two, unless `env` says otherwise. */
export function memoryEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return env['MALLOC_ARENA_MAX'] === undefined ? { MALLOC_ARENA_MAX: '2' } : {};
}

/** Whether this process was given a heap limit, by its flags or NODE_OPTIONS: that one stands. */
export function heapLimitGiven(): boolean {
  const given = (s: string): boolean => /--max[-_]old[-_]space[-_]size/.test(s);
  return process.execArgv.some(given) || given(process.env['NODE_OPTIONS'] ?? '');
}

/** Signals passed on to the node, one for one. */
const PASSED_ON = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Runs this same command again in a child process with a heap limit of `heapMB`, and waits for it;
 * resolves with the exit status to end with (the node's, or 128 + its signal's number).
 *
 * SIGINT, SIGTERM and SIGHUP are passed on one for one. The child is in a process group of its
 * own, so a Ctrl-C reaches it once, through this process (a second signal makes a node exit at
 * once, without its clean stop); a signal sent to both, as a process manager sends one to every
 * process of a service, reaches the node twice within a second, which it takes as once. Its stdin is a pipe from this process: however this
 * process ends, SIGKILL included, the pipe closes and the node stops cleanly rather than run on
 * unseen (`--stop-on-stdin-close`). Tests and scripts that kill a node's process for real start
 * it with a heap limit of their own (`heapFlags`), so theirs is the node's process.
 */
export function runWithHeap(heapMB: number): Promise<number> {
  const args = [...heapFlags(heapMB), ...process.execArgv, ...process.argv.slice(1)];
  // Asked to stop when its own stdin closes (`tally cluster` asks its nodes): the pipe to the node closes then.
  const askedToWatchStdin = args.includes('--stop-on-stdin-close');
  if (!askedToWatchStdin) args.push('--stop-on-stdin-close');
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'inherit', 'inherit'], detached: true, env: { ...process.env, ...memoryEnv(process.env) } });
  if (askedToWatchStdin) {
    const passOn = (): void => {
      child.stdin?.end();
    };
    process.stdin.on('data', () => {});
    process.stdin.on('end', passOn);
    process.stdin.on('error', passOn);
  }
  for (const signal of PASSED_ON) process.on(signal, () => child.kill(signal));
  return new Promise((resolve) => {
    child.once('error', (err) => {
      process.stderr.write(`error ${ErrorCode.INTERNAL}: could not start the node's process: ${err.message}\n`);
      resolve(1);
    });
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal === null ? 0 : (constants.signals[signal] ?? 0))));
  });
}

/**
 * Node.js arguments that run `tally start …args` (from the CLI script `cli`) as the node's own
 * process, with the default budget's heap limit: for tests and scripts that signal or kill a
 * node's process and must reach the node, not a process that started it.
 */
export function startArgs(cli: string, args: readonly string[]): string[] {
  return [...heapFlags(heapMBOf(DEFAULT_MEMORY_MB)), cli, 'start', ...args];
}
