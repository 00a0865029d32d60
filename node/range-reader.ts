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
 * durable when the read was asked, as on the node's thread. Its handle shares the database the
 * node's handle opened (with that handle's options and block cache, which classic-level frees
 * when that handle closes), so it is open only while the node's is: opened after it, closed
 * before it (LevelKv).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ErrorCode, TallyError } from '../protocol/errors.js';
import type { KeyRange } from './slot-keys.js';
import { Fifo } from './fifo.js';

/** A range to read, and about how many entries it holds when the caller knows (see readRange). */
export interface RangeAsk extends KeyRange {
  expected?: number;
}

export interface RangeWorkerData {
  location: string;
}

export type ToRangeWorker = { t: 'read'; id: number; ranges: RangeAsk[] } | { t: 'close' };

/** A failure as plain data: LevelDB's message, and its cause's (which say what failed); `closing`: the store was closing. */
export interface WorkerFailure {
  message: string;
  cause?: string;
  closing?: true;
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

/**
 * Reads asked of the thread at once, at most, as its heap holds the entries of every read under
 * way. A 30-day read holds a few hundred.
 */
export const MAX_READS_IN_FLIGHT = 512;
/**
 * Reads waiting, past those, for a place on the thread (their key ranges only, nothing read yet);
 * past it a read is refused OVERLOADED (nothing read). One client request alone may need many: a
 * query's day buckets go 1,024 to a read (MAX_BUCKETS_PER_READ), so a count since 1970 (read from
 * 2000, the earliest event time, to two days past tomorrow at most, whatever its end) is ~10 reads, and a request holds up to 1,000 queries (MAX_QUERIES_PER_GET).
 * Refused at MAX_READS_IN_FLIGHT, such a request failed whenever it was asked, however idle the node.
 */
export const MAX_READS_WAITING = 65_536;

/** The read thread's own heap: MAX_READS_IN_FLIGHT reads' entries with room to spare. */
const WORKER_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 };

/** How long closing waits for the thread to close its handle before it is stopped. */
const CLOSE_WAIT_MS = 5_000;

interface Queued {
  ranges: RangeAsk[];
  resolve: (entries: [string, Uint8Array][][]) => void;
  reject: (err: Error) => void;
}

interface Waiting {
  /** The thread asked: if it ends, this read fails (not those asked of the one after it). */
  worker: Worker;
  resolve: (entries: [string, Uint8Array][][]) => void;
  reject: (err: Error) => void;
}

export function failureOf(err: unknown): WorkerFailure {
  const message = err instanceof Error ? err.message : String(err);
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error ? { message, cause: cause.message } : { message };
}

function errorOf(f: WorkerFailure): Error {
  if (f.closing === true) return closingError();
  return f.cause === undefined ? new Error(f.message) : new Error(f.message, { cause: new Error(f.cause) });
}

function closingError(): TallyError {
  return new TallyError(ErrorCode.NOT_READY, 'the store is closing');
}

export class RangeReader {
  private worker: Worker | undefined;
  private starting: Promise<Worker> | undefined;
  private readonly waiting = new Map<number, Waiting>();
  private seq = 0;
  /** Reads asked and not answered, counted from the ask (`waiting` holds them once sent). */
  private inFlight = 0;
  /** Reads asked of the thread and not answered: at most MAX_READS_IN_FLIGHT. */
  private sent = 0;
  /** Reads waiting for a place on the thread, oldest first. */
  private readonly queued = new Fifo<Queued>();
  private closed = false;

  /** `location` as the node's own handle opened it: the two share the database by that name. */
  constructor(private readonly location: string) {}

  /** Reads asked of the thread and not answered. */
  get reading(): number {
    return this.inFlight;
  }

  /** Starts the thread and opens its handle; the node's own handle must be open (with `multithreading`). */
  async open(): Promise<void> {
    this.closed = false;
    await this.started();
  }

  /** Each range's entries, ascending. */
  read(ranges: RangeAsk[]): Promise<[string, Uint8Array][][]> {
    if (ranges.length === 0) return Promise.resolve([]);
    if (this.inFlight >= MAX_READS_IN_FLIGHT + MAX_READS_WAITING) {
      return Promise.reject(new TallyError(ErrorCode.OVERLOADED, `${this.inFlight} reads are waiting for the store, the limit is ${MAX_READS_IN_FLIGHT + MAX_READS_WAITING}; nothing was read, retry with backoff`));
    }
    this.inFlight++;
    const read =
      this.sent < MAX_READS_IN_FLIGHT
        ? this.send(ranges)
        : new Promise<[string, Uint8Array][][]>((resolve, reject) => {
            this.queued.push({ ranges, resolve, reject });
          });
    return read.finally(() => {
      this.inFlight--;
    });
  }

  /** Asks the thread for `ranges`; once answered, the next read waiting takes its place. */
  private send(ranges: RangeAsk[]): Promise<[string, Uint8Array][][]> {
    this.sent++;
    return this.started()
      .then(
        (worker) =>
          new Promise<[string, Uint8Array][][]>((resolve, reject) => {
            const id = ++this.seq;
            this.waiting.set(id, { worker, resolve, reject });
            worker.postMessage({ t: 'read', id, ranges } satisfies ToRangeWorker);
          }),
      )
      .finally(() => {
        this.sent--;
        this.sendQueued();
      });
  }

  private sendQueued(): void {
    while (this.sent < MAX_READS_IN_FLIGHT && this.queued.size > 0) {
      const q = this.queued.shift() as Queued;
      this.send(q.ranges).then(q.resolve, q.reject);
    }
  }

  /** Closes the thread's handle and ends it; reads still waiting fail. */
  async close(): Promise<void> {
    this.closed = true;
    for (const q of this.queued.drain()) q.reject(closingError());
    const worker = this.worker ?? (await this.starting?.catch(() => undefined));
    this.worker = undefined;
    if (worker === undefined) return;
    const ended = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage({ t: 'close' } satisfies ToRangeWorker);
    const timer = setTimeout(() => void worker.terminate(), CLOSE_WAIT_MS);
    await ended;
    clearTimeout(timer);
    this.fail(worker, closingError());
  }

  /** Ends the thread as a crash would (reads waiting fail; the next read starts another). For tests. */
  async terminate(): Promise<void> {
    await this.worker?.terminate();
  }

  /** The running thread, or one started (again, after one ended) and open. */
  private started(): Promise<Worker> {
    if (this.closed) return Promise.reject(closingError());
    if (this.worker !== undefined) return Promise.resolve(this.worker);
    this.starting ??= this.start().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private start(): Promise<Worker> {
    if (!existsSync(fileURLToPath(WORKER_URL))) {
      return Promise.reject(new Error(`the read thread's script ${fileURLToPath(WORKER_URL)} is missing (from the sources, run \`npm run build\` first)`));
    }
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
    this.fail(worker, this.closed ? closingError() : new Error(why));
  }

  /** Fails the reads asked of `worker`. */
  private fail(worker: Worker, err: Error): void {
    for (const [id, w] of [...this.waiting]) {
      if (w.worker !== worker) continue;
      this.waiting.delete(id);
      w.reject(err);
    }
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
