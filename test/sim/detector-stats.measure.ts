/**
 * The measurements behind the failure-detector defaults in cluster/membership-config.ts. Not a
 * check: it prints numbers, and runs only when asked (it takes about a minute):
 *   npm run measure:detector
 * Try another setting with e.g. SIM_CONFIG='{"acceptableHeartbeatPauseMs":1000}' npm run measure:detector.
 */

import { describe, test } from 'vitest';
import type { MembershipConfig } from '../../cluster/membership-config.js';
import type { Membership } from '../../cluster/membership.js';
import { ClusterSim } from './cluster-sim.js';

const overrides = JSON.parse(process.env['SIM_CONFIG'] ?? '{}') as Partial<MembershipConfig>;
const config = { vnodes: 16, ...overrides };
const LONG_MS = 600_000;

function percentiles(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number): string => (s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN).toFixed(2);
  return `p50 ${at(0.5)}  p90 ${at(0.9)}  p99 ${at(0.99)}  max ${at(1)}  (n=${s.length})`;
}

describe('failure-detector measurements', () => {
  test('SIGSTOP and SIGKILL detection, 5 nodes on loopback, 60 seeds', { timeout: 600_000 }, () => {
    const stop: number[] = [];
    const kill: number[] = [];
    for (let seed = 1; seed <= 60; seed++) {
      const sim = new ClusterSim({ seed, nodes: 5, seedCount: 1, config, network: { minDelayMs: 0.05, maxDelayMs: 1 } });
      sim.startAll(500);
      sim.run(60_000 + seed * 37);
      const victim = (sim.nodes[1 + (seed % 4)] as (typeof sim.nodes)[number]).id;
      const observers = sim.nodes.filter((n) => n.id !== victim);
      const downEverywhere = (): boolean => observers.every((o) => !(o.core as Membership).isUp(victim));
      sim.pause(victim, 20_000);
      stop.push((sim.runUntil(downEverywhere, 20_000, 50) ?? Infinity) / 1000);
      sim.run(40_000);
      sim.crash(victim);
      kill.push((sim.runUntil(downEverywhere, 20_000, 50) ?? Infinity) / 1000);
    }
    console.log(`SIGSTOP → down everywhere (s): ${percentiles(stop)}`);
    console.log(`SIGKILL → down everywhere (s): ${percentiles(kill)}`);
  });

  test('SIGSTOP detection in a young cluster: 5 nodes, SIGSTOP 6 s after the last start, 60 seeds', { timeout: 600_000 }, () => {
    const stop: number[] = [];
    for (let seed = 1; seed <= 60; seed++) {
      const sim = new ClusterSim({ seed, nodes: 5, seedCount: 1, config, network: { minDelayMs: 0.05, maxDelayMs: 1 } });
      for (const [i, node] of sim.nodes.entries()) sim.queue.schedule(i * 700, () => sim.start(node.id));
      sim.run(4 * 700 + 6_000);
      const victim = (sim.nodes[1 + (seed % 4)] as (typeof sim.nodes)[number]).id;
      const observers = sim.nodes.filter((n) => n.id !== victim);
      sim.pause(victim, 20_000);
      stop.push((sim.runUntil(() => observers.every((o) => !(o.core as Membership).isUp(victim)), 20_000, 50) ?? Infinity) / 1000);
    }
    console.log(`young cluster: SIGSTOP → down everywhere (s): ${percentiles(stop)}`);
  });

  test('false downs over 10 minutes at 10% loss, 100 nodes, 3 seeds', { timeout: 600_000 }, () => {
    for (const seed of [11, 12, 13]) {
      const sim = new ClusterSim({ seed, nodes: 100, config, network: { lossRate: 0.1, minDelayMs: 1, maxDelayMs: 50 } });
      sim.startAll(1000);
      sim.run(30_000);
      const startup = sim.statusLog.filter((e) => !e.up).length;
      sim.run(LONG_MS);
      const steady = sim.statusLog.filter((e) => !e.up).length - startup;
      console.log(`seed ${seed}: false downs while starting ${startup}, in the next 10 min ${steady}`);
    }
  });
});
