/**
 * A small seeded pseudo-random generator (sfc32, seeded through splitmix32).
 *
 * Why: the core never calls the platform's random source, so that a simulation with the same seed
 * replays exactly. The node seeds one from real entropy; tests and the simulator seed one from a
 * number they print. sfc32 passes PractRand to 2^40 bytes, needs only 32-bit integer arithmetic
 * and is a few lines, which is all gossip target choice needs.
 * Not for anything secret: it is predictable by design.
 */

import { assert } from '../protocol/errors.js';

/** What the core asks of a random source; `Prng` implements it, tests may pass a stub. */
export interface Rng {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [0, n); n ≥ 1. */
  int(n: number): number;
  /** A uniformly chosen element of a non-empty array. */
  pick<T>(items: readonly T[]): T;
  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[];
}

const TWO_POW_32 = 4294967296;

export class Prng implements Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** `seed` is any integer (only its low 32 bits matter) or a string, which is folded to one. */
  constructor(seed: number | string) {
    let s = typeof seed === 'string' ? foldString(seed) : seed >>> 0;
    const splitmix32 = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = splitmix32();
    this.b = splitmix32();
    this.c = splitmix32();
    this.d = splitmix32();
    // Discard the first outputs: sfc32 mixes its state over its first few rounds.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** An integer in [0, 2^32). */
  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  next(): number {
    return this.nextUint32() / TWO_POW_32;
  }

  int(n: number): number {
    assert(Number.isSafeInteger(n) && n >= 1, `int(n) needs an integer n >= 1, got ${n}`);
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    assert(items.length > 0, 'pick() from an empty array');
    return items[this.int(items.length)] as T;
  }

  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }

  /** A new generator seeded from this one: independent streams for independent parts of a test. */
  fork(): Prng {
    return new Prng(this.nextUint32());
  }
}

/** FNV-1a over UTF-16 code units: only to turn a string seed into 32 bits. */
function foldString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
