/**
 * Group commit: events from every connection are folded, in memory, into this node's own slot
 * of each touched bucket (minute, hour and day), and every few milliseconds one LevelDB batch
 * persists all the dirty buckets. A caller's promise resolves only once the batch holding its
 * events is in LevelDB (and fsynced, with `fsync`), so an acknowledged event survives SIGKILL.
 *
 * Slots are absolute: the batch writes the bucket's whole new state (read from a bounded cache
 * of recent states, or from the store on a miss), never a delta, so a retried or replayed write
 * can never double-count. One commit runs at a time; events that arrive meanwhile wait for the
 * next one.
 *
 * Memory is bounded by buckets, not events (one tuple may stand for a million events): `add`
 * refuses with OVERLOADED, applying nothing, when the request's buckets might not fit under
 * `maxDirtyBuckets`. Since a commit takes the whole dirty set, every commit is at most that many
 * buckets and is written as one atomic LevelDB batch: a crash or a disk error never leaves a
 * request half-applied.
 */
import { bucketsOf, RESOLUTIONS_OF_EVENT, type Resolution } from '../cluster/time-buckets.js';
import { type BucketState, type Slot } from '../cluster/bucket-state.js';
import { assert, ErrorCode, TallyError, type EventTuple } from '../protocol/index.js';
import { MAX_WRITE_BATCH_ENTRIES, type BucketKey, type Store } from './store.js';

interface Dirty {
  key: BucketKey;
  delta: Slot;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  events: number;
}

export interface GroupCommitOptions {
  actor: string;
  fsync: boolean;
  delayMs: number;
  /** Dirty buckets that start a commit at once rather than after the delay. */
  commitAtDirty: number;
  /** Dirty buckets awaiting the next commit, at most; also the largest commit. */
  maxDirtyBuckets: number;
  cacheEntries: number;
}

function dirtyKey(videoId: string, eventType: string, res: Resolution, start: number): string {
  return `${res}\u0000${start}\u0000${videoId}\u0000${eventType}`;
}

export class GroupCommit {
  private dirty = new Map<string, Dirty>();
  private waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  /** Most recently committed states, in LRU order (a Map iterates in insertion order). */
  private cache = new Map<string, BucketState>();
  /** Events accepted and not yet durable. */
  inFlightEvents = 0;
  /** Counters for status and benchmarks. */
  readonly stats = { commits: 0, bucketsWritten: 0, eventsCommitted: 0 };

  constructor(
    private readonly store: Store,
    private readonly opts: GroupCommitOptions,
  ) {}

  /**
   * Folds the events into the dirty set; resolves once they are durable. Rejects at once, having
   * applied nothing, with NOT_READY when closing or OVERLOADED when the buckets might not fit.
   */
  add(events: readonly EventTuple[]): Promise<void> {
    if (this.closed) return Promise.reject(new TallyError(ErrorCode.NOT_READY, 'node is stopping'));
    const mostBuckets = events.length * RESOLUTIONS_OF_EVENT.length;
    if (this.dirty.size + mostBuckets > this.opts.maxDirtyBuckets) {
      return Promise.reject(
        new TallyError(
          ErrorCode.OVERLOADED,
          `${this.dirty.size} buckets await the next group commit and this request may add ${mostBuckets}, ` +
            `the limit is ${this.opts.maxDirtyBuckets}; retry with backoff`,
        ),
      );
    }
    let n = 0;
    for (const [videoId, eventType, ts, value, count] of events) {
      const starts = bucketsOf(ts);
      for (let i = 0; i < RESOLUTIONS_OF_EVENT.length; i++) {
        const res = RESOLUTIONS_OF_EVENT[i] as Resolution;
        const start = starts[i] as number;
        const k = dirtyKey(videoId, eventType, res, start);
        const d = this.dirty.get(k);
        if (d === undefined) {
          this.dirty.set(k, {
            key: { videoId, eventType, res, start },
            delta: { count, sum: value * count, min: value, max: value },
          });
        } else {
          d.delta.count += count;
          d.delta.sum += value * count;
          if (value < d.delta.min) d.delta.min = value;
          if (value > d.delta.max) d.delta.max = value;
        }
      }
      n += count;
    }
    this.inFlightEvents += n;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject, events: n }));
    this.schedule();
    return done;
  }

  /** Commits whatever is dirty and waits for every commit under way. */
  async flush(): Promise<void> {
    while (this.dirty.size > 0 || this.running !== undefined) {
      if (this.running === undefined) this.startCommit();
      await this.running;
    }
  }

  /** Refuses new work, then flushes what was accepted. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private schedule(): void {
    if (this.running !== undefined) return; // the running commit schedules the next one
    if (this.dirty.size >= this.opts.commitAtDirty) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      this.startCommit();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        if (this.running === undefined) this.startCommit();
      }, this.opts.delayMs);
    }
  }

  private startCommit(): void {
    assert(this.running === undefined, 'one group commit at a time');
    if (this.dirty.size === 0) return;
    const dirty = this.dirty;
    const waiters = this.waiters;
    this.dirty = new Map();
    this.waiters = [];
    this.running = this.commit(dirty, waiters).finally(() => {
      this.running = undefined;
      if (this.dirty.size > 0) this.schedule();
    });
  }

  private async commit(dirty: Map<string, Dirty>, waiters: Waiter[]): Promise<void> {
    const events = waiters.reduce((a, w) => a + w.events, 0);
    try {
      const keys = [...dirty.keys()];
      const missing: string[] = [];
      for (const k of keys) if (!this.cache.has(k)) missing.push(k);
      assert(keys.length <= MAX_WRITE_BATCH_ENTRIES, `a commit of ${keys.length} buckets is over the batch limit`);
      const loaded = missing.length > 0 ? await this.store.getMany(missing.map((k) => (dirty.get(k) as Dirty).key)) : [];
      const states = new Map<string, BucketState>();
      missing.forEach((k, i) => states.set(k, loaded[i] ?? new Map()));
      const entries: { key: BucketKey; state: BucketState }[] = [];
      for (const k of keys) {
        const d = dirty.get(k) as Dirty;
        // Copy on write: the cached state stays what LevelDB holds until the batch is written.
        const base = states.get(k) ?? (this.cache.get(k) as BucketState);
        const state: BucketState = new Map(base);
        const own = state.get(this.opts.actor);
        state.set(
          this.opts.actor,
          own === undefined
            ? { ...d.delta }
            : {
                count: own.count + d.delta.count,
                sum: own.sum + d.delta.sum,
                min: Math.min(own.min, d.delta.min),
                max: Math.max(own.max, d.delta.max),
              },
        );
        states.set(k, state);
        entries.push({ key: d.key, state });
      }
      await this.store.writeBatch(entries, { sync: this.opts.fsync });
      for (const [k, state] of states) this.remember(k, state);
      this.stats.commits += 1;
      this.stats.bucketsWritten += entries.length;
      this.stats.eventsCommitted += events;
      this.inFlightEvents -= events;
      for (const w of waiters) w.resolve();
    } catch (err) {
      // Nothing of this batch is in LevelDB (batches are atomic) and the cache was not touched;
      // drop what it holds of these keys all the same, so the next commit reads them back.
      for (const k of dirty.keys()) this.cache.delete(k);
      this.inFlightEvents -= events;
      const e = new TallyError(ErrorCode.INTERNAL, `group commit failed: ${(err as Error).message}`, { cause: err });
      for (const w of waiters) w.reject(e);
    }
  }

  private remember(k: string, state: BucketState): void {
    this.cache.delete(k);
    this.cache.set(k, state);
    if (this.cache.size > this.opts.cacheEntries) {
      const oldest = this.cache.keys().next().value as string;
      this.cache.delete(oldest);
    }
  }
}
