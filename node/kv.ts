/**
 * The ordered key-value store under a node's `Store`: LevelDB for real, a sorted in-memory map for
 * tests. Keys are strings, values bytes; `write` is one atomic batch. Both implementations are held
 * to the same behaviour by one conformance suite (test/unit/store.test.ts).
 */
import { statSync, type Stats } from 'node:fs';
import { stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import { TallyError } from '../protocol/errors.js';
import { readRange } from './level-range.js';
import { RangeReader, type RangeAsk } from './range-reader.js';
import type { KeyRange } from './slot-keys.js';

export type { RangeAsk } from './range-reader.js';

export interface KvOp {
  type: 'put' | 'del';
  key: string;
  value?: Uint8Array;
}

export interface Kv {
  open(): Promise<void>;
  /** Data stays: opening again (or a new instance on the same location) sees it. */
  close(): Promise<void>;
  getMany(keys: readonly string[]): Promise<(Uint8Array | undefined)[]>;
  /**
   * One atomic batch: all of it or none. `sync` fsyncs the log before resolving. `ops` may be made
   * as they are read (a generator): if reading them throws, nothing is written. Each is taken (its
   * key and value copied) before the next is read: a maker may give the same object, and value
   * bytes, again, changed. `last`, when
   * given, is awaited once `ops` are in the batch, and the entries it gives end the batch: the
   * batch is made before `last` settles, written after.
   */
  write(ops: Iterable<KvOp>, sync: boolean, last?: () => Promise<readonly KvOp[]>): Promise<void>;
  /**
   * Entries with gte <= key < lt, ascending, at most `limit`. `expected`, when the caller knows
   * about how many the range holds, lets a store read that many (and one more, to see the end) at
   * once rather than in small steps.
   */
  range(range: KeyRange, limit?: number, expected?: number): Promise<[string, Uint8Array][]>;
  /**
   * Each range's entries, as `range` gives them without a limit: the ranges of one read, read
   * together (LevelKv's, while the store is busy, by a thread of their own, off the node's).
   */
  ranges(ranges: RangeAsk[]): Promise<[string, Uint8Array][][]>;
  clear(range: KeyRange): Promise<void>;
  /** Hands the space of deleted keys in `range` back to the file system (LevelDB compacts it). */
  compact(range: KeyRange): Promise<void>;
}

export function notOpen(): TallyError {
  return new TallyError('NOT_READY', 'store is not open');
}

/** classic-level hands out Buffers for 'view'; callers get a plain Uint8Array (no copy). */
function plainBytes(bytes: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(bytes) === Uint8Array.prototype ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function statOrUndefined(path: string): Stats | undefined {
  return statSync(path, { throwIfNoEntry: false });
}

/** LevelDB's write buffer (its memtable) and table file size; see openLevel. */
const WRITE_BUFFER_BYTES = 16 * 1024 * 1024;
const TABLE_FILE_BYTES = 8 * 1024 * 1024;

/**
 * Entries made and added to a LevelDB batch between turns of the event loop: ~0.3 ms of work, so
 * a read that arrives while a commit is made waits little (1,024 a slice: read p99 9.2/9.7/10.2 ms
 * at 42,000 events/s offered, against 8.8/9.1/8.8 with 256, in turn).
 */
const WRITE_SLICE = 256;

/** How long ago two reads at once still send a read to the read thread (see LevelKv.ranges): 10-20 ms. */
const READS_WINDOW_MS = 10;

/** How LevelDB and the file system say a disk is full. */
const NO_SPACE = /No space left|ENOSPC/i;
/**
 * Whether LevelDB's message is its Corruption status ("Corruption: block checksum mismatch: …"),
 * which stops the node: by that status word, not by the word anywhere (a data directory named
 * /srv/corruption-tests is no damage).
 */
export function reportsCorruption(message: string): boolean {
  return /(^|: |\()Corruption: /.test(message);
}
/** How LevelDB and the file system say the node may not write where its data is (not damage to it). */
const NOT_WRITABLE = /Permission denied|EACCES|EPERM|Read-only file system|EROFS|Not a directory|ENOTDIR/i;

/** Free bytes a full disk must have again before writes resume: a few LevelDB log and table files. */
const MIN_FREE_BYTES_TO_RESUME = 16 * 1024 * 1024;

/**
 * Locations open in this process. Both handles on a database open it with classic-level's
 * `multithreading`, under which a second open of the same directory in the process shares the
 * database rather than fail on LevelDB's lock; a second node of this process on the same
 * directory is refused here instead.
 */
const openHere = new Set<string>();

export class LevelKv implements Kv {
  /**
   * Made in `open`, not in the constructor: abstract-level opens a new instance by itself on the
   * next tick, so two instances constructed on one directory would race for its lock.
   */
  private level: Level<string, Uint8Array> | undefined;
  private opening: Promise<void> | undefined;
  /** A write failed for want of space: reopen before the next (see recoverFromFull). */
  private full = false;
  private recovering: Promise<void> | undefined;
  /** The database directory's inode when opened: a directory deleted or replaced since is noticed before a write. */
  private dirIno: number | undefined;
  /** Reads' ranges, read on a thread of their own (see range-reader.ts). */
  private reader: RangeReader | undefined;
  /** This instance holds `location` in `openHere`. */
  private holds = false;
  private closing: Promise<void> | undefined;

  /** Writes under way, and reads of ranges on this thread (see `ranges`). */
  private writing = 0;
  private readingHere = 0;
  /** The most reads under way at once in this window of READS_WINDOW_MS and the one before. */
  private readsPeak = 0;
  private readsPeakBefore = 0;
  private readsWindowFrom = 0;
  /** Reads of ranges (`ranges` calls) made on this thread and on the read thread. */
  readonly stats = { rangeReadsHere: 0, rangeReadsOnThread: 0 };

  /**
   * `maxOpenFiles`: table files LevelDB keeps open (its own default is 1,000); the node sets it
   * from its file limit. `readsOnThread`: where `ranges` reads ('busy': on the read thread
   * whenever anything else is read or written; 'always': there every time).
   */
  constructor(
    readonly location: string,
    private readonly maxOpenFiles = 1_000,
    private readonly readsOnThread: 'busy' | 'always' = 'busy',
  ) {}

  async open(): Promise<void> {
    if (this.level !== undefined) return;
    this.opening ??= this.openLevel().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async openLevel(): Promise<void> {
    if (!this.holds && openHere.has(this.location)) {
      throw new TallyError('IN_USE', `the database in ${this.location} is in use by another process (another node of this one)`);
    }
    const level = new Level<string, Uint8Array>(this.location, {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
      maxOpenFiles: this.maxOpenFiles,
      // Slot keys arrive in no order, so every flush of the write buffer overlaps all of level 1,
      // and each compaction of level 0 rewrites it. Flushing 16 MiB rather than LevelDB's 4 MiB
      // does that a quarter as often: three local nodes (RF 3) took 16-18% more events/s in runs
      // taken in turn, for at most 24 MiB more memory (the buffer, and the one being flushed).
      writeBufferSize: WRITE_BUFFER_BYTES,
      maxFileSize: TABLE_FILE_BYTES,
    });
    try {
      await level.open({ createIfMissing: true, multithreading: true });
    } catch (err) {
      // LevelDB's own message ("Database failed to open") hides the usual cause: another process holds the lock.
      if ((err as { cause?: { code?: string } }).cause?.code === 'LEVEL_LOCKED') {
        throw new TallyError('IN_USE', `the database in ${this.location} is in use by another process (is a node already running on this data directory?)`, { cause: err });
      }
      const cause = (err as { cause?: Error }).cause?.message;
      // Opening writes (a killed node's log goes into a table file): a full disk is not damage,
      // and a --rebuild would only throw away a whole database.
      if (NO_SPACE.test(cause ?? '') || NO_SPACE.test((err as Error).message)) {
        throw new TallyError('STORAGE_FULL', `store open ${this.location} failed: the disk holding it is full (${cause ?? (err as Error).message}); free some space and start the node again`, { cause: err });
      }
      // Its owner, mode or mount: nothing is wrong with the data, and --rebuild would throw it away.
      if (NOT_WRITABLE.test(cause ?? '') || NOT_WRITABLE.test((err as Error).message)) {
        throw new TallyError(
          'BAD_REQUEST',
          `store open ${this.location} failed: this process may not write there (${cause ?? (err as Error).message}); its data is not damaged: give the user the node runs as the directory (owner, mode, a writable mount), or start it with another --data, and start it again`,
          { cause: err },
        );
      }
      // Anything else (LevelDB's "Corruption: …", a missing table file) is damage to the data.
      throw new TallyError('STORAGE_DAMAGED', `store open ${this.location} failed: ${(err as Error).message}${cause === undefined ? '' : ` (${cause})`}`, { cause: err });
    }
    openHere.add(this.location);
    this.holds = true;
    // The read thread's handle only while this one is open: it shares the database this one
    // opened, with its options and block cache.
    const reader = new RangeReader(this.location);
    try {
      await reader.open();
      this.dirIno = (await stat(this.location)).ino;
    } catch (err) {
      await reader.close().catch(() => {});
      await level.close().catch(() => {});
      this.release();
      throw new TallyError('INTERNAL', `store open ${this.location} failed: ${(err as Error).message}`, { cause: err });
    }
    this.level = level;
    this.reader = reader;
  }

  private release(): void {
    if (this.holds) openHere.delete(this.location);
    this.holds = false;
  }

  /**
   * Throws STORAGE_DAMAGED if the database directory is gone or replaced since it was opened:
   * LevelDB would go on writing to files nobody can open again, and every write acknowledged from
   * then on would be lost at the next start.
   */
  private checkPresent(): void {
    // Synchronous on purpose: two stats cost microseconds, while on the thread pool they would
    // queue behind the store's own reads and hold every commit up.
    const dir = statOrUndefined(this.location);
    const current = dir === undefined ? undefined : statOrUndefined(join(this.location, 'CURRENT'));
    if (dir !== undefined && dir.ino === this.dirIno && current !== undefined) return;
    throw new TallyError(
      'STORAGE_DAMAGED',
      `the database directory ${this.location} was deleted or replaced while the node ran: nothing more is written or acknowledged; ` +
        'stop the node, and start it with --rebuild to come back as a new actor that its replicas refill',
    );
  }

  /** Once closed, the directory is free (for this process and any other); closing twice closes once. */
  close(): Promise<void> {
    this.closing ??= this.closeHandles().finally(() => {
      this.closing = undefined;
    });
    return this.closing;
  }

  private async closeHandles(): Promise<void> {
    // An open or a reopen under way ends first, and what it opened is closed here.
    await this.opening?.catch(() => {});
    await this.recovering?.catch(() => {});
    const level = this.level;
    const reader = this.reader;
    this.level = undefined;
    this.reader = undefined;
    try {
      // The read thread's handle first: LevelDB closes (and unlocks its directory) with the last.
      await reader?.close();
      if (level !== undefined) await this.io('close', () => level.close());
    } finally {
      this.release();
    }
  }

  async getMany(keys: readonly string[]): Promise<(Uint8Array | undefined)[]> {
    if (keys.length === 0) return [];
    const values = await this.io('getMany', () => this.db.getMany(keys as string[]));
    return values.map((v) => (v === undefined ? undefined : plainBytes(v)));
  }

  async write(ops: Iterable<KvOp>, sync: boolean, last?: () => Promise<readonly KvOp[]>): Promise<void> {
    if (Array.isArray(ops) && ops.length === 0 && last === undefined) return;
    this.checkPresent();
    this.writing++;
    try {
      await this.writeBatch(ops, sync, last);
    } finally {
      this.writing--;
    }
  }

  private async writeBatch(ops: Iterable<KvOp>, sync: boolean, last?: () => Promise<readonly KvOp[]>): Promise<void> {
    if (this.full) await this.recoverFromFull();
    await this.io('write', async () => {
      // The chained form: equally atomic, several times cheaper per entry than the array form.
      // Filled in slices with turns of the event loop between them, so a large commit does not
      // hold reads back; nothing is written before `write`.
      const batch = this.db.batch();
      try {
        const add = (op: KvOp): void => {
          if (op.type === 'put') batch.put(op.key, op.value as Uint8Array);
          else batch.del(op.key);
        };
        let i = 0;
        for (const op of ops) {
          // Taken before the turn is given up: an entry's bytes may be valid only until the next is made.
          add(op);
          if (++i % WRITE_SLICE === 0) await new Promise((r) => setImmediate(r));
        }
        if (last !== undefined) for (const op of await last()) add(op);
      } catch (err) {
        await batch.close();
        throw err;
      }
      return batch.write({ sync });
    });
  }

  /** On this thread (metadata, walks, a key's presence); a read's slots come by `ranges`. */
  async range(range: KeyRange, limit?: number, expected?: number): Promise<[string, Uint8Array][]> {
    const entries = await this.io('scan', () => readRange(this.db, range, limit, expected));
    for (const e of entries) e[1] = plainBytes(e[1]);
    return entries;
  }

  /**
   * On this thread for a lone reader of an idle store: no write under way, and no two reads at
   * once lately (the read thread's two wake-ups cost a lone reader p50 0.12 and p99 ~0.5 ms).
   * Else on the read thread (see range-reader.ts), as always with `readsOnThread` 'always'. With
   * 32 readers, a read taken here whenever none was under way (readers' calls come in bursts, as
   * their answers do) made p99 13.0-13.9 ms against 9.9-10.3 with every read there.
   */
  async ranges(ranges: RangeAsk[]): Promise<[string, Uint8Array][][]> {
    const reader = this.reader;
    if (this.level === undefined || reader === undefined) throw notOpen();
    const together = this.readsTogether(this.readingHere + reader.reading + 1);
    if (this.readsOnThread === 'always' || this.writing > 0 || together > 1) {
      this.stats.rangeReadsOnThread++;
      return this.io('scan', () => reader.read(ranges));
    }
    this.stats.rangeReadsHere++;
    this.readingHere++;
    try {
      return await Promise.all(ranges.map((r) => this.range(r, undefined, r.expected)));
    } finally {
      this.readingHere--;
    }
  }

  /** Notes `now` reads under way at once; the most under way at once lately, this window and the last. */
  private readsTogether(now: number): number {
    const t = performance.now();
    if (t - this.readsWindowFrom >= READS_WINDOW_MS) {
      this.readsPeakBefore = t - this.readsWindowFrom >= 2 * READS_WINDOW_MS ? 0 : this.readsPeak;
      this.readsPeak = 0;
      this.readsWindowFrom = t;
    }
    if (now > this.readsPeak) this.readsPeak = now;
    return Math.max(this.readsPeak, this.readsPeakBefore);
  }

  async clear(range: KeyRange): Promise<void> {
    await this.io('clear', () => this.db.clear({ gte: range.gte, lt: range.lt }));
  }

  async compact(range: KeyRange): Promise<void> {
    // `level` types the browser's database too; in Node it is classic-level, which compacts.
    const db = this.db as unknown as { compactRange(start: string, end: string): Promise<void> };
    await this.io('compaction', () => db.compactRange(range.gte, range.lt));
  }

  private get db(): Level<string, Uint8Array> {
    if (this.level === undefined) throw notOpen();
    return this.level;
  }

  /**
   * After a write failed for want of space, LevelDB refuses every later write (its background
   * error sticks) until it is reopened. So the next write first checks that space came back, then
   * reopens the database; until then it fails STORAGE_FULL again without touching LevelDB.
   */
  private recoverFromFull(): Promise<void> {
    // One reopen at a time: a commit and a metadata write may both find the store full.
    this.recovering ??= this.reopenAfterFull().finally(() => {
      this.recovering = undefined;
    });
    return this.recovering;
  }

  private async reopenAfterFull(): Promise<void> {
    const fs = await statfs(this.location).catch(() => undefined);
    const free = fs === undefined ? 0 : fs.bavail * fs.bsize;
    if (free < MIN_FREE_BYTES_TO_RESUME) {
      throw new TallyError('STORAGE_FULL', `the disk holding ${this.location} is still full (${free} bytes free); writes resume by themselves when space returns`);
    }
    const level = this.level;
    const reader = this.reader;
    this.level = undefined;
    this.reader = undefined;
    // Both handles closed: LevelDB reopens only once the last is, and with it the error that stuck.
    await reader?.close().catch(() => {});
    await level?.close().catch(() => {});
    try {
      await this.openLevel();
    } catch (err) {
      // Full again already (or the open failed for another reason): still full as far as writes go.
      throw new TallyError('STORAGE_FULL', `could not reopen ${this.location} after the disk was full: ${(err as Error).message}; retried with the next write`, { cause: err });
    }
    this.full = false;
  }

  /**
   * One LevelDB call; its failures become TallyErrors that keep the original as cause: LevelDB's
   * "Corruption: …" is STORAGE_DAMAGED (a damaged table: reads and writes fail until the node is
   * rebuilt), anything else INTERNAL.
   */
  private async io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof TallyError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      const detail = (err as { cause?: Error }).cause?.message ?? message;
      if (NO_SPACE.test(detail) || NO_SPACE.test(message)) {
        this.full = true;
        throw new TallyError('STORAGE_FULL', `store ${what} failed: the disk holding ${this.location} is full (${detail}); writes resume by themselves when space returns`, { cause: err });
      }
      if (reportsCorruption(detail) || reportsCorruption(message)) {
        throw new TallyError('STORAGE_DAMAGED', `store ${what} failed: the database in ${this.location} is damaged (${detail}); stop the node and start it with --rebuild to be refilled by its replicas`, { cause: err });
      }
      throw new TallyError('INTERNAL', `store ${what} failed: ${message}`, { cause: err });
    }
  }
}

/** Index of the first element of sorted `keys` that is >= `key`. */
function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((keys[mid] as string) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Sorted in memory, for the core's fast tests and the simulator. Closing keeps the data; opening
 * the same instance again is a restart. Not for production: inserts are O(n).
 */
export class MemoryKv implements Kv {
  private readonly values = new Map<string, Uint8Array>();
  private readonly keys: string[] = [];
  private isOpen = false;

  async open(): Promise<void> {
    this.isOpen = true;
  }

  async close(): Promise<void> {
    this.isOpen = false;
  }

  async getMany(keys: readonly string[]): Promise<(Uint8Array | undefined)[]> {
    this.check();
    return keys.map((k) => this.values.get(k));
  }

  async write(ops: Iterable<KvOp>, _sync: boolean, last?: () => Promise<readonly KvOp[]>): Promise<void> {
    this.check();
    // All made first: one that fails to be made leaves the store as it was. Each copied as it is
    // read: the maker may reuse the object and its bytes for the next.
    const all: KvOp[] = [];
    for (const op of ops) all.push(op.value === undefined ? { type: op.type, key: op.key } : { type: op.type, key: op.key, value: new Uint8Array(op.value) });
    if (last !== undefined) all.push(...(await last()));
    this.check();
    for (const op of all) {
      if (op.type === 'put') {
        if (!this.values.has(op.key)) this.keys.splice(lowerBound(this.keys, op.key), 0, op.key);
        this.values.set(op.key, new Uint8Array(op.value as Uint8Array));
      } else if (this.values.delete(op.key)) {
        this.keys.splice(lowerBound(this.keys, op.key), 1);
      }
    }
  }

  async ranges(ranges: RangeAsk[]): Promise<[string, Uint8Array][][]> {
    this.check();
    return Promise.all(ranges.map((r) => this.range(r)));
  }

  async range(range: KeyRange, limit?: number): Promise<[string, Uint8Array][]> {
    this.check();
    const out: [string, Uint8Array][] = [];
    for (let i = lowerBound(this.keys, range.gte); i < this.keys.length; i++) {
      const k = this.keys[i] as string;
      if (k >= range.lt || (limit !== undefined && out.length >= limit)) break;
      out.push([k, this.values.get(k) as Uint8Array]);
    }
    return out;
  }

  async clear(range: KeyRange): Promise<void> {
    this.check();
    const from = lowerBound(this.keys, range.gte);
    const to = lowerBound(this.keys, range.lt);
    for (const k of this.keys.splice(from, to - from)) this.values.delete(k);
  }

  async compact(_range: KeyRange): Promise<void> {
    this.check();
  }

  private check(): void {
    if (!this.isOpen) throw notOpen();
  }
}
