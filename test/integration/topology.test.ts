/**
 * Ring changes with real processes (scripts/topology.ts), small: three nodes loaded with 20,000
 * events over 2,000 series; then, while writes go on at `quorum` and every `quorum` read is
 * checked, two nodes join one after the other, one is decommissioned, and one is killed for good
 * and removed with `removenode`. At the end each series is read at `one` from each of its three
 * replicas alone, and must be exact. `npm run measure:topology` runs it at full size.
 */
import { describe, expect, it } from 'vitest';
import { runTopology } from '../../scripts/topology.js';

describe('ring changes with real processes', () => {
  it('two joins, a decommission and a removenode under load: no read below what was acknowledged, every replica exact at the end', async () => {
    const s = await runTopology({ events: 20_000, videos: 2_000, rate: 500, basePort: 7821, log: (line) => console.log(line) });
    expect(s.violations).toEqual([]);
    expect(s.finalRing).toEqual(['n1', 'n4', 'n5']);
    expect(s.finalReads).toBe(3 * 2_000);
    expect(s.finalWrong).toBe(0);
    expect(s.reads['ok'] ?? 0).toBeGreaterThan(100);
    expect(s.writes['ok'] ?? 0).toBeGreaterThan(20);
  }, 300_000);
});
