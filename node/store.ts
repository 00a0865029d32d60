/**
 * A node's storage, in the core's terms: slots by key, every slot of some spans, one atomic batch
 * per group commit (slots, hints and batch ids together), the hints and batch ids to recover at
 * start, expiry of old fine-grained buckets, and a few small metadata values.
 *
 * It sits on an ordered key-value store (kv.ts: LevelDB, or in memory for tests) and owns the key
 * layout (slot-keys.ts) and the stored bytes (slot-codec.ts). It does not merge or sum: the core
 * does that. Bounds: reads and batches are bounded by the core's own limits, asserted here.
 */
import type { Slot } from '../cluster/bucket-state.js';
import { batchRecordKey, type BatchRecord, type HintRecord, type JournalRecord, type PersistBatch } from '../cluster/node-core.js';
import type { SlotEntry, SlotKey } from '../cluster/slot-table.js';
import type { Resolution } from '../cluster/time-buckets.js';
import { assert, TallyError } from '../protocol/errors.js';
import type { Hash64 } from '../protocol/hash-ring.js';
import type { SpanSlot, SpanTuple } from '../protocol/peer.js';
import type { Kv, KvOp } from './kv.js';
import { decodeBatchRecord, decodeJournal, decodeSlot, decodeStarts, decodeTime, encodeBatchRecord, encodeJournal, encodeSlotValuesTransient, encodeStarts, encodeTime, SlotDamaged } from './slot-codec.js';
import { noStarts, type StartsByResolution } from '../cluster/written-filter.js';
import { MAX_EVENT_FUTURE_SKEW_MS } from '../protocol/limits.js';
import { DAMAGED, slotDominates } from '../cluster/bucket-state.js';
import type { CommitMark } from './commit-mark.js';
import {
  BATCH_PREFIX,
  batchKey,
  expiryKeyRange,
  HINT_PREFIX,
  hintKey,
  JOURNAL_PREFIX,
  journalKey,
  metaKey,
  metaPrefixRange,
  parseHintKey,
  parseSlotKey,
  KEY_TIMESTAMP_HEX_DIGITS,
  parseSlotTail,
  sectionRange,
  SLOT_SECTIONS,
  SlotKeys,
  type SpanRange,
} from './slot-keys.js';

/** Most keys one `getSlots` may ask for: a commit's worth. */
export const MAX_GET_SLOTS = 65_536;
/** Most entries one commit may write. */
export const MAX_COMMIT_ENTRIES = 200_000;
/** Meta key of the newest bucket start per resolution the store may hold. */
export const WRITTEN_STARTS_KEY = 'written-starts';
/** Meta key of the last commit's number. */
export const COMMIT_SEQ_KEY = 'commit-seq';
/** Meta keys of the last commits, one each (`c/{seq in hex}`): more than a LevelDB log holds. */
const COMMIT_KEY_PREFIX = 'c/';
const COMMITS_KEPT = 65_536;
const EMPTY = new Uint8Array(0);
/** Batch records and hints read a step at a time when the node starts (entriesOf). */
const LOAD_PAGE = 10_000;
const noop = (): void => {};
function commitKey(seq: number): string {
  return `${COMMIT_KEY_PREFIX}${seq.toString(16).padStart(12, '0')}`;
}

/**
 * Largest metadata value. Meta is for small things (epoch, generation, the members a node knew),
 * not bulk data; the largest is the members: up to 1,024 of about 600 bytes each at the longest
 * names gossip takes (~610 KB).
 */
export const MAX_META_VALUE_BYTES = 1024 * 1024;

export interface WriteOptions {
  sync?: boolean;
}

export class Store {
  readonly keys: SlotKeys;
  /** Damaged slots met since the store opened (by loads and walks; one slot may count more than once). */
  damagedSlots = 0;
  /** The number of the last commit (kept with each commit under COMMIT_SEQ_KEY); see node/commit-mark.ts. */
  private commitSeq = 0;
  /** About how many slots a bucket of a read span holds, learnt from reads (see scanRange). */
  private slotsPerBucket = 1;
  /** Settles once every commit begun so far is written or failed: the next is written after it. */
  private lastCommit: Promise<void> = Promise.resolve();
  /** Settles once every commit begun so far is made (in its batch) or failed. */
  private lastMade: Promise<void> = Promise.resolve();
  /** Why the last commit handed to the store failed, once it has; undefined once it was written. */
  private lastFailure: Promise<unknown> = Promise.resolve(undefined);
  private mark: CommitMark | undefined;
  /**
   * TALLY_VERIFY_COMMITS=1: every commit first reads back the slots it writes and fails, naming
   * the slot, if it would lower one (a G-counter slot only grows). A read per slot, so for fault
   * runs (tally chaos), not for production.
   */
  verifyCommits = process.env['TALLY_VERIFY_COMMITS'] === '1';

  constructor(
    private readonly kv: Kv,
    hash64: Hash64,
  ) {
    this.keys = new SlotKeys(hash64);
  }

  open(): Promise<void> {
    return this.kv.open();
  }

  async close(): Promise<void> {
    // Taken away first: a commit that lands while the file closes writes no mark to a closed file.
    const mark = this.mark;
    this.mark = undefined;
    await mark?.close();
    await this.kv.close();
  }

  /** Each key's stored slot: undefined if none, DAMAGED if its bytes do not check (counted in `damagedSlots`). */
  async getSlots(keys: readonly SlotKey[]): Promise<(Slot | undefined | typeof DAMAGED)[]> {
    if (keys.length > MAX_GET_SLOTS) throw new TallyError('TOO_LARGE', `getSlots of ${keys.length} keys, limit ${MAX_GET_SLOTS}`);
    const strings = keys.map((k) => this.keys.slotKey(k));
    const values = await this.kv.getMany(strings);
    return values.map((v, i) => (v === undefined ? undefined : this.decode(strings[i] as string, v, DAMAGED)));
  }

  private decode<T>(key: string, bytes: Uint8Array, onDamaged: T): Slot | T {
    try {
      return decodeSlot(key, bytes);
    } catch (err) {
      if (!(err instanceof SlotDamaged)) throw err;
      this.damagedSlots++;
      return onDamaged;
    }
  }

  /** Every stored slot of the spans, as [spanIndex, start, actor, count, sum, min, max], ascending per span. */
  async scan(spans: readonly SpanTuple[]): Promise<SpanSlot[]> {
    // Every range of every span at once (a span of minutes or hours has one per UTC day), each
    // asked for about as many entries as it holds, so most are read in one step.
    const ranges: SpanRange[] = [];
    const spanOf: number[] = [];
    for (let i = 0; i < spans.length; i++) {
      for (const range of this.keys.spanRanges(spans[i] as SpanTuple)) {
        ranges.push(range);
        spanOf.push(i);
      }
    }
    const got = await this.kv.ranges(ranges.map((r) => ({ gte: r.gte, lt: r.lt, expected: r.buckets * this.slotsPerBucket })));
    const out: SpanSlot[] = [];
    for (let r = 0; r < ranges.length; r++) this.scanned(spanOf[r] as number, ranges[r] as SpanRange, got[r] as [string, Uint8Array][], out);
    return out;
  }

  /** One span range's entries, as scan gives them, added to `out`. */
  private scanned(span: number, range: SpanRange, entries: [string, Uint8Array][], out: SpanSlot[]): void {
    // Every key of a range shares the prefix before the bucket's start.
    const prefixLength = range.gte.length - KEY_TIMESTAMP_HEX_DIGITS;
    let buckets = 0;
    let lastStart = -1;
    for (let j = 0; j < entries.length; j++) {
      const [key, bytes] = entries[j] as [string, Uint8Array];
      const tail = parseSlotTail(key, prefixLength);
      if (tail === undefined) throw new TallyError('INTERNAL', `corrupt slot key ${JSON.stringify(key)}`);
      // A damaged slot fails the read at this replica (the coordinator asks another): never served.
      const s = decodeSlot(key, bytes);
      out.push([span, tail.start, tail.actor, s.count, s.sum, s.min, s.max]);
      if (tail.start !== lastStart) buckets++;
      lastStart = tail.start;
    }
    // Slots per bucket held (the actors that wrote it): RF of them, more after members changed.
    if (buckets > 0) this.slotsPerBucket += (entries.length / buckets - this.slotsPerBucket) / 8;
  }

  /** One group commit, atomically: its slots, hints and batch ids are all durable or none is. */
  async commit(batch: PersistBatch): Promise<void> {
    const n = batch.slots.length + batch.hintsPut.length + batch.hintsDelete.length + batch.batchesPut.length + batch.batchesDelete.length + batch.journalPut.length + batch.journalDelete.length;
    assert(n <= MAX_COMMIT_ENTRIES, `a commit of ${n} entries is over the limit`);
    // Made while the commit before is still being written, but written only after it, and numbered
    // then: commit numbers on disk stay gapless (a gap is how a dropped log record shows), and a
    // later commit, whose slots hold at least the earlier one's values, never lands first.
    // Made only once the one before is made, too: two made at once would share this thread and
    // finish later both, while the point is to make this one while the store writes that one.
    // Its place in line is taken here, before anything is awaited: a commit whose check
    // (verifyCommits) took longer than the next one's landed after it, over its newer values.
    const prior = this.lastCommit;
    const priorMade = this.lastMade;
    const priorFailure = this.lastFailure;
    let made = noop;
    this.lastMade = new Promise<void>((resolve) => (made = resolve));
    let seq = 0;
    const mine = (async () => {
      try {
        await priorMade;
        // A failed check fails this commit like any other failure: one made on top of it fails too.
        if (this.verifyCommits && batch.slots.length > 0) await this.verifyGrowth([...batch.slots]);
        await this.kv.write(this.commitOps(batch), batch.sync, async () => {
          made();
          await prior;
          // Made on top of the one before (see PersistBatch.afterInFlight): not without it.
          const before = batch.afterInFlight ? await priorFailure : undefined;
          if (before !== undefined) {
            throw new TallyError(before instanceof TallyError ? before.code : 'INTERNAL', `the commit before it failed: ${(before as Error).message}`);
          }
          seq = this.commitSeq + 1;
          return this.seqOps(seq);
        });
      } finally {
        made();
      }
      this.commitSeq = seq;
      this.mark?.write(seq);
    })();
    this.lastCommit = mine.then(noop, noop).then(() => prior);
    this.lastFailure = mine.then(
      () => undefined,
      (err: unknown) => err ?? new Error('the commit failed'),
    );
    // Told in the order made, as the node settles them (the oldest under way first): one that
    // fails before it is written (a full disk, a bad entry) waits for the one before to be told.
    return mine.then(
      () => prior,
      (err: unknown) => prior.then(() => Promise.reject(err)),
    );
  }

  /** The commit number's entries: the last number, and one small key per recent commit. */
  private seqOps(seq: number): KvOp[] {
    const ops: KvOp[] = [{ type: 'put', key: metaKey(COMMIT_SEQ_KEY), value: encodeTime(seq) }];
    // One small key per recent commit, so a record dropped from the middle of the log shows as a gap.
    ops.push({ type: 'put', key: metaKey(commitKey(seq)), value: EMPTY });
    if (seq > COMMITS_KEPT) ops.push({ type: 'del', key: metaKey(commitKey(seq - COMMITS_KEPT)) });
    return ops;
  }

  /**
   * A commit's entries, encoded as the store takes them into a batch that nothing reads until it
   * is written whole: an entry that fails to encode fails the commit before any of it is written.
   * Made one at a time, so none outlives the turn of the event loop it was made in. Under load a
   * commit spans many turns (the store yields between slices), and entries made all at once
   * outlived two young-generation collections, which then copied them: that copying was most of
   * the node's garbage collection time.
   */
  private *commitOps(batch: PersistBatch): Generator<KvOp> {
    const c = batch.slots;
    const v = c.values;
    // One entry object, its key and bytes replaced for each slot: the Kv takes each before the next.
    const op: KvOp = { type: 'put', key: '', value: EMPTY };
    for (let i = 0; i < c.length; i++) {
      const key = this.keys.slotKeyOf(c.videoIds[i] as string, c.eventTypes[i] as string, c.resolutions[i] as Resolution, c.starts[i] as number, c.actors[i] as string);
      op.key = key;
      op.value = encodeSlotValuesTransient(key, v[4 * i] as number, v[4 * i + 1] as number, v[4 * i + 2] as number, v[4 * i + 3] as number);
      yield op;
    }
    for (const h of batch.hintsDelete) yield { type: 'del', key: hintKey(h.node, h.ref) };
    for (const h of batch.hintsPut) yield { type: 'put', key: hintKey(h.node, h.ref), value: encodeTime(h.atMs) };
    for (const b of batch.batchesDelete) yield { type: 'del', key: batchKey(b) };
    for (const b of batch.batchesPut) yield { type: 'put', key: batchKey(batchRecordKey(b)), value: encodeBatchRecord(b) };
    for (const j of batch.journalDelete) yield { type: 'del', key: journalKey(j) };
    for (const j of batch.journalPut) yield { type: 'put', key: journalKey(j.key), value: encodeJournal(j) };
    if (batch.written !== undefined) yield { type: 'put', key: metaKey(WRITTEN_STARTS_KEY), value: encodeStarts(batch.written) };
  }

  /** Throws INTERNAL if writing `slots` would lower a slot the store holds (see verifyCommits). */
  private async verifyGrowth(slots: readonly SlotEntry[]): Promise<void> {
    for (let from = 0; from < slots.length; from += MAX_GET_SLOTS) {
      const part = slots.slice(from, from + MAX_GET_SLOTS);
      const stored = await this.getSlots(part);
      for (let i = 0; i < part.length; i++) {
        const had = stored[i];
        const s = part[i] as SlotEntry;
        if (had === undefined || had === DAMAGED) continue;
        if (!slotDominates(s.slot, had)) {
          const e = new TallyError('INTERNAL', `commit would lower the slot of ${s.actor} in ${JSON.stringify(s.ref)}: stored ${JSON.stringify(had)}, writing ${JSON.stringify(s.slot)}`);
          process.stderr.write(`error INTERNAL: ${e.message}\n`);
          throw e;
        }
      }
    }
  }

  /**
   * Per resolution, the newest bucket start this store may hold (see PersistBatch.written). A store
   * that has commits or slots but never kept the starts may hold buckets up to the furthest future
   * an event may have: that is what it answers then. Slots are looked for too, not only commit
   * numbers: a store from before commits were numbered holds slots and no number.
   */
  async loadWrittenStarts(nowMs: number): Promise<StartsByResolution> {
    const v = await this.getMeta(WRITTEN_STARTS_KEY);
    if (v !== undefined) return decodeStarts(v);
    if ((await this.getMeta(COMMIT_SEQ_KEY)) === undefined && !(await this.holdsSlots())) return noStarts();
    const furthest = nowMs + MAX_EVENT_FUTURE_SKEW_MS;
    return { m: furthest, h: furthest, d: furthest };
  }

  /** Whether any slot is stored. */
  private async holdsSlots(): Promise<boolean> {
    for (const section of SLOT_SECTIONS) if ((await this.kv.range(section, 1)).length > 0) return true;
    return false;
  }

  /** The number of the last commit the database holds (0 before the first); commits go on from it. */
  async loadCommitSeq(): Promise<number> {
    const v = await this.getMeta(COMMIT_SEQ_KEY);
    this.commitSeq = v === undefined ? 0 : decodeTime(v);
    return this.commitSeq;
  }

  /**
   * The numbers of the last COMMITS_KEPT commits missing from the database: a commit whose record
   * LevelDB dropped from a damaged log (it says nothing). Empty for a whole database.
   */
  async missingCommits(): Promise<number[]> {
    const last = this.commitSeq;
    const first = Math.max(1, last - COMMITS_KEPT + 1);
    const have = new Set((await this.scanMeta(COMMIT_KEY_PREFIX, COMMITS_KEPT + 1)).map((e) => parseInt(e.key.slice(COMMIT_KEY_PREFIX.length), 16)));
    // A database from before commit keys holds none of its early commits' keys: only gaps after the first key count.
    const known = [...have].filter((s) => s >= first);
    if (known.length === 0) return [];
    const from = Math.min(...known);
    const missing: number[] = [];
    for (let s = from; s <= last && missing.length < 100; s++) if (!have.has(s)) missing.push(s);
    return missing;
  }

  /** From now on each commit also writes its number to `mark`, once the database has it. */
  attachMark(mark: CommitMark): void {
    this.mark = mark;
  }

  /** Every entry of the section under `prefix`, in key order, read LOAD_PAGE at a time. */
  private async *entriesOf(prefix: Parameters<typeof sectionRange>[0]): AsyncGenerator<[string, Uint8Array]> {
    const section = sectionRange(prefix);
    let gte = section.gte;
    for (;;) {
      const page = await this.kv.range({ gte, lt: section.lt }, LOAD_PAGE);
      yield* page;
      const last = page[page.length - 1];
      if (last === undefined || page.length < LOAD_PAGE) return;
      gte = `${last[0]}\u0000`;
    }
  }

  /**
   * The hints kept, oldest first: the newest `perNode` of each node, and of those the newest
   * `total`; the rest are deleted, and counted in `dropped` (as the hint table drops what exceeds
   * its bounds; anti-entropy repairs what they were for). Every record is read, in pages: keys are
   * in node order, so a limit on the records read would leave the last nodes' hints on disk, never
   * replayed nor deleted. An unreadable one is left out.
   */
  async loadHints(perNode: number, total = Number.POSITIVE_INFINITY): Promise<{ hints: HintRecord[]; dropped: number }> {
    const kept: { h: HintRecord; key: string }[] = [];
    const over: KvOp[] = [];
    // One node's hints at a time (they are contiguous): its newest perNode kept.
    let group: { h: HintRecord; key: string }[] = [];
    const flush = (): void => {
      group.sort((a, b) => a.h.atMs - b.h.atMs);
      const from = Math.max(0, group.length - perNode);
      for (let i = 0; i < group.length; i++) {
        const g = group[i] as { h: HintRecord; key: string };
        if (i < from) over.push({ type: 'del', key: g.key });
        else kept.push(g);
      }
      group = [];
    };
    for await (const [key, bytes] of this.entriesOf(HINT_PREFIX)) {
      const h = parseHintKey(key);
      if (h === undefined) continue;
      if (group.length > 0 && (group[0] as { h: HintRecord }).h.node !== h.node) flush();
      group.push({ h: { node: h.node, ref: h.ref, atMs: decodeTime(bytes) }, key });
    }
    flush();
    kept.sort((a, b) => a.h.atMs - b.h.atMs);
    const cut = Math.max(0, kept.length - total);
    for (let i = 0; i < cut; i++) over.push({ type: 'del', key: (kept[i] as { key: string }).key });
    for (let i = 0; i < over.length; i += MAX_COMMIT_ENTRIES) await this.kv.write(over.slice(i, i + MAX_COMMIT_ENTRIES), false);
    const hints: HintRecord[] = [];
    for (let i = cut; i < kept.length; i++) hints.push((kept[i] as { h: HintRecord }).h);
    return { hints, dropped: over.length };
  }

  /**
   * The newest `limit` applied batch ids and the newest `limit` forward records, oldest first;
   * older ones are deleted. Every record is read (in pages): keys are in batch id order, which
   * says nothing of age, and a retry of an id left out would be applied again.
   */
  async loadBatches(limit: number): Promise<BatchRecord[]> {
    const applied: BatchRecord[] = [];
    const forwards: BatchRecord[] = [];
    const keyOf = new Map<BatchRecord, string>();
    for await (const [key, bytes] of this.entriesOf(BATCH_PREFIX)) {
      const r = decodeBatchRecord(key.slice(BATCH_PREFIX.length), bytes);
      (r.forwardedTo === undefined ? applied : forwards).push(r);
      keyOf.set(r, key);
    }
    // The rest are older than every id kept, left by a burst past the cap: deleted here, since
    // nothing else would ever delete them (a crash before it is done leaves them for the next start).
    const older: KvOp[] = [];
    const newest = (records: BatchRecord[]): BatchRecord[] => {
      records.sort((a, b) => a.atMs - b.atMs);
      const from = Math.max(0, records.length - limit);
      for (let i = 0; i < from; i++) older.push({ type: 'del', key: keyOf.get(records[i] as BatchRecord) as string });
      return records.slice(from);
    };
    const kept = [...newest(applied), ...newest(forwards)].sort((a, b) => a.atMs - b.atMs);
    for (let i = 0; i < older.length; i += MAX_COMMIT_ENTRIES) await this.kv.write(older.slice(i, i + MAX_COMMIT_ENTRIES), false);
    return kept;
  }

  /**
   * Up to `limit` slots in key order, after the key `after` (from the start when undefined), and
   * the key to go on after (undefined at the end): a walk of everything this node holds.
   */
  async walk(after: string | undefined, limit: number): Promise<{ entries: SlotEntry[]; next: string | undefined }> {
    const entries: SlotEntry[] = [];
    let last: string | undefined;
    // Keys read, damaged ones included: the page is full when `limit` keys were read, whatever was left out.
    let read = 0;
    for (const section of SLOT_SECTIONS) {
      if (after !== undefined && after >= section.lt) continue;
      const gte = after !== undefined && after >= section.gte ? `${after}\u0000` : section.gte;
      for (const [key, bytes] of await this.kv.range({ gte, lt: section.lt }, limit - read)) {
        read++;
        const k = parseSlotKey(key);
        if (k === undefined) throw new TallyError('INTERNAL', `corrupt slot key ${JSON.stringify(key)}`);
        // A damaged slot is left out: to a rebuild or a comparison it looks missing, so the other
        // replicas send theirs, which overwrites it.
        const slot = this.decode(key, bytes, undefined);
        if (slot !== undefined) entries.push({ ref: k.ref, actor: k.actor, slot });
        last = key;
      }
      if (read >= limit) return { entries, next: last };
    }
    return { entries, next: undefined };
  }

  /** The replication journal records kept (commits whose replication was not seen through). */
  async loadJournal(limit: number): Promise<JournalRecord[]> {
    const out: JournalRecord[] = [];
    for (const [key, bytes] of await this.kv.range(sectionRange(JOURNAL_PREFIX), limit)) out.push(decodeJournal(key.slice(JOURNAL_PREFIX.length), bytes));
    return out;
  }

  /**
   * Deletes every slot of `res` whose UTC day partition ends at or before `cutoffMs`, and has the
   * store hand the space back. Returns whether anything was there to delete.
   */
  async expireBefore(res: 'm' | 'h', cutoffMs: number): Promise<boolean> {
    const range = expiryKeyRange(res, cutoffMs);
    if (range === undefined) return false;
    // One look first: the hourly sweep of an already empty range costs a seek, not a compaction.
    if ((await this.kv.range(range, 1)).length === 0) return false;
    await this.kv.clear(range);
    await this.kv.compact(range);
    return true;
  }

  async getMeta(key: string): Promise<Uint8Array | undefined> {
    return (await this.kv.getMany([metaKey(key)]))[0];
  }

  async putMeta(key: string, value: Uint8Array, opts?: WriteOptions): Promise<void> {
    if (value.byteLength > MAX_META_VALUE_BYTES) throw new TallyError('TOO_LARGE', `meta value of ${value.byteLength} bytes, limit ${MAX_META_VALUE_BYTES}`);
    await this.kv.write([{ type: 'put', key: metaKey(key), value }], opts?.sync ?? false);
  }

  async deleteMeta(key: string, opts?: WriteOptions): Promise<void> {
    await this.kv.write([{ type: 'del', key: metaKey(key) }], opts?.sync ?? false);
  }

  async scanMeta(prefix: string, limit?: number): Promise<{ key: string; value: Uint8Array }[]> {
    const entries = await this.kv.range(metaPrefixRange(prefix), limit);
    return entries.map(([k, value]) => ({ key: k.slice(2), value }));
  }
}
