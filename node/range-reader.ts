/**
 * Reads' key ranges, read by a thread of their own (node/range-worker.ts) on its own handle to the
 * node's LevelDB (classic-level's `multithreading`: one database, shared by both handles).
 *
 * A read's ranges, on the node's thread, cost it a turn per step of each iterator and the
 * iterators' making (~0.2 ms of its time a 30-day read, five ranges), and each step waited for
 * that thread between group commits and frames of writes: at 40,000 events/s a scan took p50 0.1
 * ms and p99 3.8 ms, almost all of it waiting. Here the thread is asked once for all of a read's
 * ranges and answers once, with every value in one transferred buffer.
 *
 * The read thread sees what the store holds when it makes each iterator: every commit that was
 * durable when the read was asked, as on the node's thread. Reads in flight are bounded by the
 * core (reads a node coordinates and answers at once), not here.
 */
import { Worker } from 'node:worker_threads';
import type { KeyRange } from './slot-keys.js';

/** A range to read, and about how many entries it holds when the caller knows (see readRange). */
export interface RangeAsk extends KeyRange {
  expected?: number;
}

export interface RangeWorkerData {
  location: string;
}

export type ToRangeWorker = { t: 'read'; id: number; ranges: RangeAsk[] } | { t: 'close' };

/** A failure as plain data: LevelDB's message, and its cause's (which say what failed). */
export interface WorkerFailure {
  message: string;
  cause?: string;
}

export type FromRangeWorker =
  | { t: 'open' }
  | { t: 'openFailed'; error: WorkerFailure }
  /** Each range's keys; the values of all, in order, end to end in `bytes`, value i ending at `ends[i]`. */
  | { t: 'read'; id: number; keys: string[][]; bytes: ArrayBuffer; ends: Uint32Array }
  | { t: 'readFailed'; id: number; error: WorkerFailure }
  | { t: 'closed' };

/**
 * The worker's script. Under vitest the sources run as TypeScript, and the worker is the build's
 * (`npm test` builds first); from the build, the one beside this module.
 */
const WORKER_URL = import.meta.url.endsWith('.ts') ? new URL('../dist/node/range-worker.js', import.meta.url) : new URL('./range-worker.js', import.meta.url);

/** The read thread's own heap: a read's entries at a time, a few hundred of them. */
const WORKER_LIMITS = { maxOldGenerationSizeMb: 48, maxYoungGenerationSizeMb: 8 };

/** How long closing waits for the thread to close its handle before it is stopped. */
const CLOSE_WAIT_MS = 5_000;

interface Waiting {
  resolve: (entries: [string, Uint8Array][][]) => void;
  reject: (err: Error) => void;
}

export function failureOf(err: unknown): WorkerFailure {
  const message = err instanceof Error ? err.message : String(err);
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error ? { message, cause: cause.message } : { message };
}

function errorOf(f: WorkerFailure): Error {
  return f.cause === undefined ? new Error(f.message) : new Error(f.message, { cause: new Error(f.cause) });
}

export class RangeReader {
  private worker: Worker | undefined;
  private starting: Promise<Worker> | undefined;
  private readonly waiting = new Map<number, Waiting>();
  private seq = 0;
  private closed = false;

  /** `location` as the node's own handle opened it: the two share the database by that name. */
  constructor(private readonly location: string) {}

  /** Starts the thread and opens its handle; the node's own handle must be open (with `multithreading`). */
  async open(): Promise<void> {
    this.closed = false;
    await this.started();
  }

  /** Each range's entries, ascending. */
  async read(ranges: RangeAsk[]): Promise<[string, Uint8Array][][]> {
    if (ranges.length === 0) return [];
    const worker = await this.started();
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      worker.postMessage({ t: 'read', id, ranges } satisfies ToRangeWorker);
    });
  }

  /** Closes the thread's handle and ends it; reads still waiting fail. */
  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker ?? (await this.starting?.catch(() => undefined));
    this.worker = undefined;
    if (worker === undefined) return;
    const ended = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage({ t: 'close' } satisfies ToRangeWorker);
    const timer = setTimeout(() => void worker.terminate(), CLOSE_WAIT_MS);
    await ended;
    clearTimeout(timer);
    this.failAll(new Error('the store was closed'));
  }

  /** Ends the thread as a crash would (reads waiting fail; the next read starts another). For tests. */
  async terminate(): Promise<void> {
    await this.worker?.terminate();
  }

  /** The running thread, or one started (again, after one ended) and open. */
  private started(): Promise<Worker> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    if (this.worker !== undefined) return Promise.resolve(this.worker);
    this.starting ??= this.start().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private start(): Promise<Worker> {
    return new Promise<Worker>((resolve, reject) => {
      const worker = new Worker(WORKER_URL, { workerData: { location: this.location } satisfies RangeWorkerData, resourceLimits: WORKER_LIMITS });
      // Reads waiting keep the node's process busy, not the thread itself: a node that never
      // closes its store still exits.
      worker.unref();
      let open = false;
      worker.on('message', (m: FromRangeWorker) => {
        switch (m.t) {
          case 'open':
            open = true;
            this.worker = worker;
            return resolve(worker);
          case 'openFailed':
            void worker.terminate();
            return reject(errorOf(m.error));
          case 'read':
            return this.settle(m.id, undefined, unpack(m));
          case 'readFailed':
            return this.settle(m.id, errorOf(m.error));
          case 'closed':
            return;
        }
      });
      worker.on('error', (err) => {
        if (!open) reject(err);
        this.ended(worker, `the read thread failed: ${err.message}`);
      });
      worker.on('exit', (code) => {
        if (!open) reject(new Error(`the read thread ended (exit code ${code}) before its store was open`));
        this.ended(worker, `the read thread ended (exit code ${code})`);
      });
    });
  }

  /** The thread ended: what waited on it fails, and the next read starts another. */
  private ended(worker: Worker, why: string): void {
    if (this.worker === worker) this.worker = undefined;
    this.failAll(new Error(why));
  }

  private failAll(err: Error): void {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of all) w.reject(err);
  }

  private settle(id: number, err: Error | undefined, entries?: [string, Uint8Array][][]): void {
    const w = this.waiting.get(id);
    if (w === undefined) return;
    this.waiting.delete(id);
    if (err !== undefined) w.reject(err);
    else w.resolve(entries as [string, Uint8Array][][]);
  }
}

/** The ranges' entries, each value a view of the one buffer. */
function unpack(m: Extract<FromRangeWorker, { t: 'read' }>): [string, Uint8Array][][] {
  const out: [string, Uint8Array][][] = new Array(m.keys.length);
  let v = 0;
  let from = 0;
  for (let r = 0; r < m.keys.length; r++) {
    const keys = m.keys[r] as string[];
    const entries: [string, Uint8Array][] = new Array(keys.length);
    for (let j = 0; j < keys.length; j++) {
      const end = m.ends[v++] as number;
      entries[j] = [keys[j] as string, new Uint8Array(m.bytes, from, end - from)];
      from = end;
    }
    out[r] = entries;
  }
  return out;
}
