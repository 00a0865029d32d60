/**
 * How many events a client keeps in flight to one node: a window that grows while the node
 * acknowledges and halves when it refuses a write as OVERLOADED (additive increase, multiplicative
 * decrease, as TCP does with packets). Frames past the window wait here, in order, and are sent as
 * answers make room.
 *
 * Without it, a client offered more than a node can take sends all of it: the node's socket
 * buffers fill with frames it will refuse, each refusal is sent again, and a frame spends seconds
 * queued in the socket behind others, until calls end in TIMEOUT with their outcome unknown, while
 * the node spends its time reading frames it then refuses. With it, what waits, waits in the
 * client, where nothing of it has been applied: a frame that finds no room within its wait fails
 * with OVERLOADED, a known outcome.
 */
import { ErrorCode, TallyError } from '../protocol/errors.js';

export interface WindowOptions {
  /** Events in flight to start with, and while the node has not refused anything. */
  initial: number;
  /** Never fewer: one full frame. */
  min: number;
  max: number;
  /** Events waiting for room, at most; past it a frame is refused at once. */
  maxWaiting: number;
}

/** A frame that waited its whole time for room, and was not sent. */
export class NoRoom extends TallyError {}

interface Waiter {
  events: number;
  resolve: () => void;
  reject: (err: TallyError) => void;
  timer: NodeJS.Timeout;
}

export class WriteWindow {
  /** Events the node may have in flight from this client. */
  size: number;
  /** Events sent and not answered. */
  inFlight = 0;
  /** Events waiting for room. */
  waitingEvents = 0;
  /** Doubling each round trip until the first refusal. */
  private slowStart = true;
  /** When the window was last halved: refusals of frames sent before it do not halve it again. */
  private cutAtMs = -Infinity;
  private readonly waiting: Waiter[] = [];

  constructor(
    readonly address: string,
    private readonly opts: WindowOptions,
  ) {
    this.size = opts.initial;
  }

  /**
   * Resolves when a frame of `events` may be sent (its events then count as in flight until
   * `done`), in the order frames asked; rejects with OVERLOADED if none is made by `untilMs`, or at
   * once when too many events wait already. One frame may always be in flight, whatever its size.
   * A `retry` (a frame an earlier attempt may have applied, which only this node can confirm) goes
   * to the head of the queue and is never refused for its length.
   */
  admit(events: number, untilMs: number, nowMs: number, retry = false): Promise<void> {
    if ((this.waiting.length === 0 || retry) && (this.inFlight === 0 || this.inFlight + events <= this.size)) {
      this.inFlight += events;
      return Promise.resolve();
    }
    const refused = retry ? undefined : this.refuses(events);
    if (refused !== undefined) return Promise.reject(refused);
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        events,
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiting.indexOf(w);
          if (i < 0) return;
          this.waiting.splice(i, 1);
          this.waitingEvents -= events;
          reject(this.refusal(`the write waited ${Math.max(0, Math.round(untilMs - nowMs))} ms for room`, true));
          this.pump();
        }, Math.max(0, untilMs - nowMs)),
      };
      if (retry) this.waiting.unshift(w);
      else this.waiting.push(w);
      this.waitingEvents += events;
    });
  }

  /**
   * A frame admitted at `sentAtMs` was answered: `ok` (acknowledged) grows the window, `overloaded`
   * halves it once per round of refusals, anything else only frees its room.
   */
  done(events: number, outcome: 'ok' | 'overloaded' | 'other', sentAtMs: number, nowMs: number): void {
    this.inFlight -= events;
    if (outcome === 'ok') {
      const grow = this.slowStart ? events : (events * this.opts.min) / this.size;
      this.size = Math.min(this.opts.max, this.size + grow);
    } else if (outcome === 'overloaded' && sentAtMs >= this.cutAtMs) {
      this.size = Math.max(this.opts.min, Math.floor(this.size / 2));
      this.slowStart = false;
      this.cutAtMs = nowMs;
    }
    this.pump();
  }

  /** The refusal `admit` would give a new frame of `events` at once (too many wait already), or undefined. */
  refuses(events: number): TallyError | undefined {
    return this.waitingEvents + events > this.opts.maxWaiting ? this.refusal(`${this.waitingEvents} events already wait for room`) : undefined;
  }

  /** Fails every waiting frame (the client is closing). */
  close(err: TallyError): void {
    for (const w of this.waiting.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.waitingEvents = 0;
  }

  private pump(): void {
    while (this.waiting.length > 0) {
      const w = this.waiting[0] as Waiter;
      if (this.inFlight > 0 && this.inFlight + w.events > this.size) return;
      this.waiting.shift();
      this.waitingEvents -= w.events;
      clearTimeout(w.timer);
      this.inFlight += w.events;
      w.resolve();
    }
  }

  private refusal(why: string, waited = false): TallyError {
    return new (waited ? NoRoom : TallyError)(
      ErrorCode.OVERLOADED,
      `${this.address} is busy: ${Math.round(this.inFlight)} events are in flight to it (at most ${Math.round(this.size)} now) and ${why}; nothing was applied, retry with backoff`,
    );
  }
}
