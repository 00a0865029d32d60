/**
 * The arithmetic of a coordinated read: which bucket spans a query asks the replicas for, and how
 * their answers become one figure and the repairs each replica needs.
 *
 * A query `[start, end)` becomes the fewest aligned buckets (time-buckets.ts), cut so that one
 * replica message covers at most MAX_BUCKETS_PER_READ of them. The answers are joined slot by slot
 * (the same `joinSlot` every write path uses), summed over slots, and compared with what each
 * replica said: what a replica lacked is its read repair. Pure: no I/O, no clock.
 */
import { MAX_BUCKETS_PER_READ, type SpanSlot, type SpanTuple } from '../protocol/peer.js';
import { MAX_EVENT_FUTURE_SKEW_MS, MIN_EVENT_TIME_MS } from '../protocol/limits.js';
import type { StatsTuple } from '../protocol/messages.js';
import { addStats, EMPTY_STATS, joinSlot, slotDominates, type Slot, type Stats } from './bucket-state.js';
import type { SlotEntry } from './slot-table.js';
import { DAY_MS, decomposeRange, RESOLUTION_MS } from './time-buckets.js';

/**
 * The spans to ask replicas for, for one series over `[startMs, endMs)`. No bucket before
 * MIN_EVENT_TIME_MS can hold anything (every edge refuses an earlier event), so none is asked
 * for: a count since 1970 would otherwise read 30 years of empty days, half its reads. Given the
 * coordinator's clock, none after `latestEventDayEnd(nowMs)` either: a count to 2100 would read
 * 75 years of days no event can be in yet, and a few requests of 1,000 of them held a node's
 * thread for seconds.
 */
export function planSpans(videoId: string, eventType: string, startMs: number, endMs: number, nowMs?: number): SpanTuple[] {
  const spans: SpanTuple[] = [];
  const from = Math.max(startMs, MIN_EVENT_TIME_MS);
  const to = nowMs === undefined ? endMs : Math.min(endMs, latestEventDayEnd(nowMs));
  if (to <= from) return spans;
  for (const span of decomposeRange(from, to)) {
    const width = RESOLUTION_MS[span.res];
    for (let s = span.start; s < span.end; s += width * MAX_BUCKETS_PER_READ) {
      spans.push([videoId, eventType, span.res, s, Math.min(span.end, s + width * MAX_BUCKETS_PER_READ)]);
    }
  }
  return spans;
}

/**
 * The end of the last UTC day an event may be in, by a clock reading `nowMs`: every edge refuses
 * an event more than MAX_EVENT_FUTURE_SKEW_MS ahead of its own clock, and twice that leaves room
 * for a node whose clock is up to that far ahead of this one's.
 */
export function latestEventDayEnd(nowMs: number): number {
  return Math.ceil((nowMs + 2 * MAX_EVENT_FUTURE_SKEW_MS) / DAY_MS) * DAY_MS;
}

export interface MergedRead {
  stats: StatsTuple;
  /** Per replica that answered, the slots it lacked or held older (empty when it was current). */
  repairs: Map<string, SlotEntry[]>;
}

/**
 * Joins the replicas' answers to one query (`answers`: replica → slots, indexed by the query's
 * `spans`), sums them, and says what each replica lacked.
 */
export function mergeRead(spans: readonly SpanTuple[], answers: ReadonlyMap<string, readonly SpanSlot[]>): MergedRead {
  const key = (span: number, start: number, actor: string): string => `${span}\u0000${start}\u0000${actor}`;
  const merged = new Map<string, { span: number; start: number; actor: string; slot: Slot }>();
  for (const slots of answers.values()) {
    for (const [span, start, actor, count, sum, min, max] of slots) {
      const k = key(span, start, actor);
      const cur = merged.get(k);
      const joined = joinSlot(cur?.slot, { count, sum, min, max });
      if (cur === undefined) merged.set(k, { span, start, actor, slot: joined });
      else cur.slot = joined;
    }
  }
  let total: Stats = EMPTY_STATS;
  for (const m of merged.values()) total = addStats(total, { count: m.slot.count, sum: m.slot.sum, min: m.slot.min, max: m.slot.max });
  const repairs = new Map<string, SlotEntry[]>();
  for (const [node, slots] of answers) {
    const have = new Map<string, Slot>();
    for (const [span, start, actor, count, sum, min, max] of slots) have.set(key(span, start, actor), { count, sum, min, max });
    const missing: SlotEntry[] = [];
    for (const [k, m] of merged) {
      if (slotDominates(have.get(k), m.slot)) continue;
      const span = spans[m.span] as SpanTuple;
      missing.push({ ref: { videoId: span[0], eventType: span[1], res: span[2], start: m.start }, actor: m.actor, slot: m.slot });
    }
    repairs.set(node, missing);
  }
  return { stats: [total.count, total.sum, total.min, total.max], repairs };
}

/**
 * A replica message's spans (and, beside each, what it stands for) in two halves, for a replica
 * whose answer to them would not fit one message (TOO_LARGE: a bucket holds a slot per actor, so
 * MAX_BUCKETS_PER_READ buckets can hold more than MAX_SLOTS_PER_MESSAGE slots): the spans split
 * in two lists, or a lone span at its middle bucket. Undefined for a lone bucket, which cannot be
 * split.
 */
export function halveRead<P>(spans: readonly SpanTuple[], parts: readonly P[]): [spans: SpanTuple[], parts: P[]][] | undefined {
  if (spans.length > 1) {
    const mid = Math.ceil(spans.length / 2);
    return [
      [spans.slice(0, mid), parts.slice(0, mid)],
      [spans.slice(mid), parts.slice(mid)],
    ];
  }
  const span = spans[0];
  const part = parts[0] as P;
  if (span === undefined) return undefined;
  const [videoId, eventType, res, start, end] = span;
  const width = RESOLUTION_MS[res];
  const buckets = (end - start) / width;
  if (buckets < 2) return undefined;
  const mid = start + Math.floor(buckets / 2) * width;
  return [
    [[[videoId, eventType, res, start, mid]], [part]],
    [[[videoId, eventType, res, mid, end]], [part]],
  ];
}
