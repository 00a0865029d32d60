/**
 * A simulated clock and network for driving many cluster cores in one process.
 *
 * Why: real sockets and timers make membership tests slow and irreproducible. Here time is a
 * number that jumps from event to event, and every fault the network can inflict — delay, jitter,
 * loss, duplication, reordering, one-way and two-way partitions — is drawn from one seeded Prng,
 * so a seed replays a run exactly. Modelled on tigerbeetle's packet_simulator.zig and etcd-io/raft's
 * test `network` (drop/cut/isolate).
 * Not here: nodes, crashes and what a message means (cluster-sim.ts).
 */

import type { Prng } from '../../cluster/prng.js';

interface ScheduledEvent {
  atMs: number;
  seq: number;
  run: () => void;
}

/** Events ordered by (time, insertion order); `nowMs` jumps to each event's time as it runs. */
export class EventQueue {
  nowMs = 0;
  private seq = 0;
  private readonly heap: ScheduledEvent[] = [];

  schedule(atMs: number, run: () => void): void {
    const event: ScheduledEvent = { atMs: Math.max(atMs, this.nowMs), seq: this.seq++, run };
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, heap[parent] as ScheduledEvent)) break;
      heap[i] = heap[parent] as ScheduledEvent;
      i = parent;
    }
    heap[i] = event;
  }

  get size(): number {
    return this.heap.length;
  }

  /** Runs events up to and including `endMs`; time then stands at `endMs`. */
  runUntil(endMs: number): void {
    while (this.heap.length > 0 && (this.heap[0] as ScheduledEvent).atMs <= endMs) {
      const event = this.pop();
      this.nowMs = event.atMs;
      event.run();
    }
    this.nowMs = Math.max(this.nowMs, endMs);
  }

  private pop(): ScheduledEvent {
    const heap = this.heap;
    const top = heap[0] as ScheduledEvent;
    const last = heap.pop() as ScheduledEvent;
    if (heap.length > 0) {
      // Sift `last` down from the root's hole.
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let child = i;
        let best = last;
        if (l < heap.length && before(heap[l] as ScheduledEvent, best)) {
          child = l;
          best = heap[l] as ScheduledEvent;
        }
        if (r < heap.length && before(heap[r] as ScheduledEvent, best)) {
          child = r;
          best = heap[r] as ScheduledEvent;
        }
        if (child === i) break;
        heap[i] = best;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}

function before(a: ScheduledEvent, b: ScheduledEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

export interface NetworkOptions {
  /** One-way delay is uniform in [minDelayMs, maxDelayMs]: the jitter reorders messages. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Probability that a message is lost. */
  lossRate: number;
  /** Probability that a message is delivered twice (the copy with its own delay). */
  duplicateRate: number;
  /** Probability that a message is held back an extra [0, reorderDelayMs]. */
  reorderRate: number;
  reorderDelayMs: number;
}

/** A LAN: sub-millisecond to a few ms, no faults. Tests add the faults they want. */
export function defaultNetworkOptions(): NetworkOptions {
  return { minDelayMs: 0.2, maxDelayMs: 3, lossRate: 0, duplicateRate: 0, reorderRate: 0, reorderDelayMs: 0 };
}

export interface NetworkStats {
  sent: number;
  delivered: number;
  lost: number;
  blocked: number;
  duplicated: number;
}

/** Carries messages between named endpoints through `deliver`, with the faults of `options`. */
export class SimNetwork<M> {
  readonly stats: NetworkStats = { sent: 0, delivered: 0, lost: 0, blocked: 0, duplicated: 0 };
  /** Cut links as `${from}>${to}`. */
  private readonly cut = new Set<string>();

  constructor(
    private readonly queue: EventQueue,
    private readonly rng: Prng,
    public options: NetworkOptions,
    private readonly deliver: (from: string, to: string, msg: M) => void,
  ) {}

  send(from: string, to: string, msg: M): void {
    this.stats.sent++;
    if (this.isBlocked(from, to)) {
      this.stats.blocked++;
      return;
    }
    if (this.rng.next() < this.options.lossRate) {
      this.stats.lost++;
      return;
    }
    this.schedule(from, to, msg);
    if (this.rng.next() < this.options.duplicateRate) {
      this.stats.duplicated++;
      this.schedule(from, to, msg);
    }
  }

  /** A delay drawn like a message's, for other things that travel the network (a dropped link). */
  delayMs(): number {
    const { minDelayMs, maxDelayMs } = this.options;
    return minDelayMs + this.rng.next() * (maxDelayMs - minDelayMs);
  }

  isBlocked(from: string, to: string): boolean {
    return this.cut.size > 0 && this.cut.has(`${from}>${to}`);
  }

  /** Nothing from any of `a` reaches any of `b`; and the reverse unless `oneWay`. */
  partition(a: readonly string[], b: readonly string[], oneWay = false): void {
    for (const x of a) {
      for (const y of b) {
        this.cut.add(`${x}>${y}`);
        if (!oneWay) this.cut.add(`${y}>${x}`);
      }
    }
  }

  heal(): void {
    this.cut.clear();
  }

  private schedule(from: string, to: string, msg: M): void {
    let delay = this.delayMs();
    if (this.rng.next() < this.options.reorderRate) delay += this.rng.next() * this.options.reorderDelayMs;
    this.queue.schedule(this.queue.nowMs + delay, () => {
      // A partition that began while the message was in flight catches it too.
      if (this.isBlocked(from, to)) {
        this.stats.blocked++;
        return;
      }
      this.stats.delivered++;
      this.deliver(from, to, msg);
    });
  }
}
