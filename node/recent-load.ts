/**
 * The writes and reads a node coordinated, for its status report and status page: totals since
 * start, and the latency of the last few seconds, so p50 and p99 say how the node serves now
 * rather than since it started. Prometheus's histograms (node/metrics.ts) are the record over
 * time; this is the glance.
 *
 * Bounded: RECENT_WINDOW_S one-second slots per kind, each a fixed array of log-scale buckets,
 * whatever the rate. A quantile is the upper bound of the bucket it falls in (buckets are an
 * eighth of a decade, about 33 % wide), never above the slowest request seen. Pure: the caller
 * passes nowMs.
 */
import type { LoadFigures, LoadStatus } from '../protocol/status.js';

/** Seconds of latency the quantiles cover: long enough for a p99 to mean something at a few hundred requests a second. */
export const RECENT_WINDOW_S = 5;
const BUCKETS_PER_DECADE = 8;
const FASTEST_MS = 0.1;
/** Upper bounds in ms: 0.1 ms to 10 s; a last bucket holds anything slower. */
const BOUNDS_MS = Array.from({ length: 5 * BUCKETS_PER_DECADE + 1 }, (_, i) => FASTEST_MS * 10 ** (i / BUCKETS_PER_DECADE));

export const LoadKind = { WRITE: 'write', READ: 'read' } as const;
export type LoadKind = (typeof LoadKind)[keyof typeof LoadKind];

interface Slot {
  second: number;
  counts: Uint32Array;
  n: number;
  maxMs: number;
}

class KindLoad {
  requests = 0;
  errors = 0;
  units = 0;
  private readonly slots: Slot[] = Array.from({ length: RECENT_WINDOW_S }, () => ({ second: -1, counts: new Uint32Array(BOUNDS_MS.length + 1), n: 0, maxMs: 0 }));

  record(ms: number, units: number, ok: boolean, nowMs: number): void {
    this.requests++;
    if (!ok) {
      this.errors++;
      return;
    }
    this.units += units;
    const second = Math.floor(nowMs / 1000);
    const slot = this.slots[second % RECENT_WINDOW_S] as Slot;
    if (slot.second !== second) {
      slot.second = second;
      slot.counts.fill(0);
      slot.n = 0;
      slot.maxMs = 0;
    }
    slot.counts[bucketOf(ms)]!++;
    slot.n++;
    slot.maxMs = Math.max(slot.maxMs, ms);
  }

  figures(nowMs: number): LoadFigures {
    const second = Math.floor(nowMs / 1000);
    const live = this.slots.filter((s) => s.second > second - RECENT_WINDOW_S && s.second <= second);
    const counts = new Uint32Array(BOUNDS_MS.length + 1);
    let n = 0;
    let maxMs = 0;
    for (const s of live) {
      for (let i = 0; i < counts.length; i++) counts[i]! += s.counts[i]!;
      n += s.n;
      maxMs = Math.max(maxMs, s.maxMs);
    }
    const quantile = (q: number): number | null => {
      if (n === 0) return null;
      const rank = Math.max(1, Math.ceil(q * n));
      let seen = 0;
      for (let i = 0; i < counts.length; i++) {
        seen += counts[i]!;
        if (seen >= rank) return round(Math.min(BOUNDS_MS[i] ?? maxMs, maxMs));
      }
      throw new Error('assertion failed: the buckets hold every request counted');
    };
    return { requests: this.requests, errors: this.errors, units: this.units, recentOk: n, p50Ms: quantile(0.5), p99Ms: quantile(0.99) };
  }
}

function bucketOf(ms: number): number {
  if (!(ms > FASTEST_MS)) return 0;
  return Math.min(BOUNDS_MS.length, Math.ceil(Math.log10(ms / FASTEST_MS) * BUCKETS_PER_DECADE - 1e-9));
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

export class RecentLoad {
  private readonly writes = new KindLoad();
  private readonly reads = new KindLoad();

  /** One request answered in `ms`; `units`: events in a write, queries in a read (counted when ok); `ok`: answered without error. */
  record(kind: LoadKind, ms: number, units: number, ok: boolean, nowMs: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) throw new Error(`assertion failed: a latency is a finite ms count, got ${ms}`);
    (kind === LoadKind.WRITE ? this.writes : this.reads).record(ms, units, ok, nowMs);
  }

  status(nowMs: number): LoadStatus {
    return { windowS: RECENT_WINDOW_S, writes: this.writes.figures(nowMs), reads: this.reads.figures(nowMs) };
  }
}
