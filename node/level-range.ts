/**
 * Reading one key range from LevelDB, as the node's thread does (`LevelKv.range`) and as its read
 * thread does (node/range-worker.ts): one implementation, so both read a range the same way.
 */
import type { Level } from 'level';
import type { KeyRange } from './slot-keys.js';

/** Entries a range read asks LevelDB for first, doubling each step after up to the most. */
const RANGE_FIRST_STEP = 8;
const RANGE_MOST_STEP = 1_000;
/** The most a first step asks for when the caller expects more: 256 entries reserve ~16 KB. */
const RANGE_MOST_FIRST_STEP = 256;

/**
 * Entries with gte <= key < lt, ascending, at most `limit`: read in steps of RANGE_FIRST_STEP
 * entries, doubling, to the iterator's end (where classic-level reports any error LevelDB met on
 * the way), not with `all()`: each step reserves native room for as many entries as it asks, and
 * `all()` asks 1,000 at a time, 64 KB that stays until the iterator is collected. 32 readers of
 * 30-day counts (five ranges a read) grew a node's own memory by ~10 MB a second that way; a
 * script of 150,000 small ranges: +48 MB with `all()`, +11 MB in steps from 8.
 *
 * With `expected`, the first step asks for one entry more than expected: a range that holds no
 * more is then read in one round trip to LevelDB's threads (classic-level marks the iterator
 * ended when a step finds the range's end, and answers the next step itself, at once). Each
 * round trip costs the calling thread ~20 us here (waking a thread of the pool) and waits for
 * that thread again to finish; a range of 60 entries took four in steps from 8.
 *
 * Values are as classic-level gives them (Buffers for 'view').
 */
export async function readRange(db: Level<string, Uint8Array>, range: KeyRange, limit?: number, expected?: number): Promise<[string, Uint8Array][]> {
  const it = db.iterator({ gte: range.gte, lt: range.lt, limit: limit ?? -1 });
  const out: [string, Uint8Array][] = [];
  const first = expected === undefined ? RANGE_FIRST_STEP : Math.min(Math.max(Math.ceil(expected) + 1, RANGE_FIRST_STEP), RANGE_MOST_FIRST_STEP);
  try {
    for (let step = first; ; step = Math.min(2 * step, RANGE_MOST_STEP)) {
      const got = await it.nextv(step);
      if (got.length === 0) break;
      for (const e of got) out.push(e);
    }
  } catch (err) {
    // The read's error is the one to report, whatever closing says.
    await it.close().catch(() => {});
    throw err;
  }
  await it.close();
  return out;
}
