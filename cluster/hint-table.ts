/**
 * Hints a coordinator keeps: "this bucket is dirty for node X", at most one per (node, bucket),
 * with bounds on how many per node and how old. A hint hinted again is renewed (newer data to
 * ship) and moves to the back, so each node's hints stay in age order and expiry stops at the
 * first young one. What exceeds a bound is counted, never dropped silently. A renewed hint whose
 * stored time is a quarter of the window old is `restamped`: the caller writes it again, so a
 * node that restarts does not expire a hint it renewed lately (by much more than a quarter of the
 * window early), at a write per hint per quarter window rather than one per renewal.
 *
 * A replay takes the oldest hints of a node with their sequence numbers; `clear` removes a hint
 * only if it was not renewed since, so a bucket written again during a replay is shipped again.
 * Pure: no I/O, no clock (callers pass times). Persisting hints is the core's business.
 */
import { bucketId, type BucketRef } from './slot-table.js';

export interface Hint {
  ref: BucketRef;
  atMs: number;
  /** Bumped when the bucket is hinted again, so a replay only clears what it shipped. */
  seq: number;
  /** The time the store holds for it (the caller writes `added` and `restamped` hints). */
  storedMs: number;
}

export type HintOutcome = 'added' | 'renewed' | 'restamped' | 'dropped';

export class HintTable {
  private readonly byNode = new Map<string, Map<string, Hint>>();
  private readonly counts = new Map<string, { dropped: number; expired: number }>();
  private seq = 0;

  constructor(
    private readonly maxPerNode: number,
    private readonly windowMs: number,
  ) {}

  add(node: string, ref: BucketRef, atMs: number): HintOutcome {
    let hints = this.byNode.get(node);
    const key = bucketId(ref);
    const cur = hints?.get(key);
    if (cur !== undefined) {
      const restamp = atMs - cur.storedMs >= this.windowMs / 4;
      (hints as Map<string, Hint>).delete(key);
      (hints as Map<string, Hint>).set(key, { ref: cur.ref, atMs, seq: ++this.seq, storedMs: restamp ? atMs : cur.storedMs });
      return restamp ? 'restamped' : 'renewed';
    }
    if ((hints?.size ?? 0) >= this.maxPerNode) {
      this.count(node, 'dropped');
      return 'dropped';
    }
    if (hints === undefined) this.byNode.set(node, (hints = new Map()));
    hints.set(key, { ref, atMs, seq: ++this.seq, storedMs: atMs });
    return 'added';
  }

  /** Removes the hint of `key` for `node` if it is still the one numbered `seq`; returns its bucket. */
  clear(node: string, key: string, seq: number): BucketRef | undefined {
    const hints = this.byNode.get(node);
    const cur = hints?.get(key);
    if (hints === undefined || cur === undefined || cur.seq !== seq) return undefined;
    hints.delete(key);
    if (hints.size === 0) this.byNode.delete(node);
    return cur.ref;
  }

  /** Removes, counts and returns the hints older than the window. */
  expire(nowMs: number): { node: string; ref: BucketRef }[] {
    const out: { node: string; ref: BucketRef }[] = [];
    for (const [node, hints] of this.byNode) {
      for (const [key, h] of hints) {
        if (nowMs - h.atMs <= this.windowMs) break; // age order
        hints.delete(key);
        this.count(node, 'expired');
        out.push({ node, ref: h.ref });
      }
      if (hints.size === 0) this.byNode.delete(node);
    }
    return out;
  }

  /** Removes and returns every hint for `node` (a member gone for good). */
  forget(node: string): BucketRef[] {
    const hints = this.byNode.get(node);
    this.byNode.delete(node);
    return hints === undefined ? [] : [...hints.values()].map((h) => h.ref);
  }

  /** The oldest `n` hints for `node`, to replay. */
  oldest(node: string, n: number): { key: string; seq: number; ref: BucketRef }[] {
    const out: { key: string; seq: number; ref: BucketRef }[] = [];
    for (const [key, h] of this.byNode.get(node) ?? []) {
      if (out.length >= n) break;
      out.push({ key, seq: h.seq, ref: h.ref });
    }
    return out;
  }

  get nodes(): string[] {
    return [...this.byNode.keys()];
  }

  get size(): number {
    return this.byNode.size;
  }

  pending(node: string): number {
    return this.byNode.get(node)?.size ?? 0;
  }

  stats(): Record<string, { pending: number; dropped: number; expired: number }> {
    // Own properties whatever the id (a member may be called `__proto__`): not assignments.
    return Object.fromEntries(
      [...new Set([...this.byNode.keys(), ...this.counts.keys()])].map((node) => {
        const c = this.counts.get(node);
        return [node, { pending: this.pending(node), dropped: c?.dropped ?? 0, expired: c?.expired ?? 0 }];
      }),
    );
  }

  private count(node: string, what: 'dropped' | 'expired'): void {
    let c = this.counts.get(node);
    if (c === undefined) this.counts.set(node, (c = { dropped: 0, expired: 0 }));
    c[what]++;
  }
}
