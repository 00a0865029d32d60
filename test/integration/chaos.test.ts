/**
 * The short chaos run of `npm test`: five real nodes (RF 3) for about a minute of kills, freezes,
 * clock offsets, wiped data directories and — where network namespaces can be made, as in CI, as
 * root — partitions, with Jepsen's counter checks (`tally chaos`, scripts/chaos.ts). Without root a
 * run cannot make namespaces, says so in its summary line and runs the rest; as root one that could
 * not make them fails.
 *
 * Wiped data directories are in: a wiped node is rebuilt from its peers and anti-entropy runs every
 * 2 s; a wipe waits until no member is rebuilding (RF 3 keeps acknowledged writes through one disk
 * loss at a time), while kills, freezes and clock faults go on beside it. Writers stall while their
 * node is frozen or restarting, so the short run has twice the default writers, to keep the load
 * real on two shared cores.
 */
import { describe, expect, it } from 'vitest';
import { defaultChaosOptions, formatSummary, runChaos } from '../../scripts/chaos.js';

const SEED = Number(process.env['CHAOS_SEED'] ?? Math.floor(Math.random() * 2 ** 31));

describe('tally chaos, short run', () => {
  it(`loses nothing, counts nothing twice and reads within bounds under faults (seed ${SEED})`, async () => {
    const summary = await runChaos({ ...defaultChaosOptions(), seed: SEED, durationS: 45, rate: 1_500, writers: 32, basePort: 7561 });
    console.log(formatSummary(summary));
    expect(summary.violations, `replay: CHAOS_SEED=${SEED} npx vitest run test/integration/chaos.test.ts`).toEqual([]);
    expect(summary.ok).toBe(true);
    expect(summary.increments.acknowledged).toBeGreaterThan(2_000); // the load was real (two cores, beside other test files)
    expect(summary.faults['kill'] ?? 0).toBeGreaterThan(0);
    expect(summary.faults['freeze'] ?? 0).toBeGreaterThan(0);
    expect(summary.faults['wipe'] ?? 0).toBeGreaterThan(0);
    // As root (CI is) the namespaces must be made: a run that fell back to loopback skips every partition.
    if (process.getuid?.() === 0) expect(summary.network).toMatch(/^network namespaces/);
    if (summary.network.startsWith('network namespaces')) {
      expect((summary.faults['isolate'] ?? 0) + (summary.faults['one-way'] ?? 0) + (summary.faults['split'] ?? 0)).toBeGreaterThan(0);
    }
  }, 300_000);
});
