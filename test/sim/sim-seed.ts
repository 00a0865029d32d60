/**
 * Seeds for simulation tests, and the replay line a failure prints.
 *
 * Why: a simulation explores a different schedule with every seed, so runs use a fresh seed
 * unless SIM_SEED pins one; a failing run must say which seed failed and how to replay it
 * (tigerbeetle's VOPR prints the same). SIM_VERBOSE=1 makes tests print what they measured.
 * Not here: the simulator itself.
 */

import { randomInt } from 'node:crypto';
import { test } from 'vitest';

export const verbose = process.env['SIM_VERBOSE'] === '1';

/** SIM_SEED if set, otherwise a fresh random seed. */
export function simSeed(): number {
  const pinned = process.env['SIM_SEED'];
  if (pinned !== undefined && pinned !== '') {
    const seed = Number(pinned);
    if (!Number.isSafeInteger(seed)) throw new Error(`SIM_SEED must be an integer, got ${pinned}`);
    return seed;
  }
  return randomInt(1, 2 ** 31);
}

/**
 * A vitest test that runs `body` with a seed and, if it fails, puts the seed and the one command
 * that replays it at the top of the error.
 */
export function simTest(file: string, name: string, body: (seed: number) => void, timeoutMs?: number): void {
  test(
    name,
    () => {
      const seed = simSeed();
      try {
        body(seed);
      } catch (error) {
        const replay = `SIM_SEED=${seed} npx vitest run ${file} -t ${JSON.stringify(name)}`;
        const message = error instanceof Error ? error.message : String(error);
        console.error(`simulation failed with seed ${seed}; replay with:\n  ${replay}`);
        throw new Error(`[seed ${seed}] ${message}\n  replay: ${replay}`, { cause: error });
      }
    },
    timeoutMs,
  );
}

/** Prints a measurement when SIM_VERBOSE=1 (one grep-able line per number). */
export function report(what: string, value: number | string): void {
  if (verbose) console.log(`[sim] ${what}: ${value}`);
}
