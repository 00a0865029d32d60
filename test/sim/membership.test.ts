/**
 * Membership under simulation: convergence, failure detection, partitions, restarts, leaves.
 *
 * Each test runs with a fresh seed (or SIM_SEED) and prints the replay command when it fails.
 * SIM_VERBOSE=1 prints the times measured, which is how the bounds below were chosen.
 * Bounds are in simulated time; each test takes well under a few seconds of wall time.
 */

import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../cluster/membership-config.js';
import type { Membership } from '../../cluster/membership.js';
import { Lifecycle } from '../../protocol/gossip.js';
import { ClusterSim, type SimNode } from './cluster-sim.js';
import type { NetworkOptions } from './network.js';
import { report, simTest } from './sim-seed.js';

const FILE = 'test/sim/membership.test.ts';
const ROUND_MS = defaultConfig().gossipIntervalMs;
/** Membership tests need no realistic ring; small vnode counts keep ring rebuilds cheap. */
const SIM_VNODES = 16;

/** Jitter to 20 ms (so messages overtake each other), some duplicates and late stragglers. */
const JITTERY: Partial<NetworkOptions> = {
  minDelayMs: 0.2,
  maxDelayMs: 20,
  duplicateRate: 0.01,
  reorderRate: 0.05,
  reorderDelayMs: 100,
};
const LOSSY: Partial<NetworkOptions> = { ...JITTERY, lossRate: 0.1, maxDelayMs: 50 };
/** Loopback: what the acceptance tests on a real local cluster will see. */
const LOOPBACK: Partial<NetworkOptions> = { minDelayMs: 0.05, maxDelayMs: 1 };

/**
 * Convergence bound, in gossip rounds after the last node started: 2·⌈log2 n⌉ / (1 - loss)³,
 * which is 14 rounds for 100 nodes on a clean network and 20 at 10% loss.
 * - One wave: push-pull gossip informs all n nodes of a rumour in log3(n) + O(log log n) rounds
 *   when each node calls one peer a round (Karp et al., "Randomized rumor spreading", 2000); each
 *   member's state is such a rumour, starting at a seed in the member's first round, and our nodes
 *   call two live peers a round, so ⌈log2 n⌉ rounds cover a wave with room.
 * - Two waves: the states themselves, then each node's ring checksum computed from them (we count
 *   a cluster converged only when every node sees every member gossip the same checksum).
 * - Loss: an exchange helps only if its SYN, ACK and ACK2 all arrive.
 * Measured over 300 seeds (SIM_VERBOSE=1 prints it): 7-8.25 rounds clean, 9.5-14.5 at 10% loss.
 * Anything that spread in O(n) rounds (a seed relaying everything) would blow the bound.
 */
function convergenceRounds(n: number, lossRate = 0): number {
  return Math.ceil((2 * Math.ceil(Math.log2(n))) / (1 - lossRate) ** 3);
}

function others(sim: ClusterSim, id: string): SimNode[] {
  return sim.aliveNodes().filter((n) => n.id !== id);
}

function seenBy(observers: readonly SimNode[], subject: string, up: boolean): boolean {
  return observers.every((o) => (o.core as Membership).isUp(subject) === up);
}

/** Records every verdict that calls a running node down, for the test to assert none happened. */
function watchFalseDowns(sim: ClusterSim): string[] {
  const wrong: string[] = [];
  sim.onStatus = (e) => {
    const subject = sim.node(e.subject);
    if (!e.up && subject.alive && sim.nowMs >= subject.pausedUntilMs) {
      wrong.push(`${(sim.nowMs / 1000).toFixed(2)}s: ${e.observer} marked ${e.subject} down (${e.reason})`);
    }
  };
  return wrong;
}

/** Starts every node within the first second and runs until all agree, or fails. */
function converge(sim: ClusterSim, boundRounds: number): number {
  sim.startAll(ROUND_MS);
  sim.run(ROUND_MS);
  const tookMs = sim.runUntil(() => sim.agreesOn() && sim.ringsAgree(), boundRounds * ROUND_MS, 250);
  expect(tookMs, `not converged within ${boundRounds} rounds`).toBeDefined();
  return tookMs as number;
}

describe('membership simulation', () => {
  for (const [label, network] of [
    ['jittery network', JITTERY],
    ['10% loss', LOSSY],
  ] as const) {
    const bound = convergenceRounds(100, network.lossRate ?? 0);
    simTest(FILE, `100 nodes converge on full membership within ${bound} rounds (${label})`, (seed) => {
      const sim = new ClusterSim({
        seed,
        nodes: 100,
        seedCount: 3,
        config: { vnodes: SIM_VNODES },
        network,
        validateWire: label === 'jittery network',
      });
      const falseDowns = watchFalseDowns(sim);
      const tookMs = converge(sim, bound);
      report(`converged, 100 nodes, ${label} (rounds)`, tookMs / ROUND_MS);
      for (const node of sim.nodes) {
        const view = (node.core as Membership).view(sim.localNow(node));
        expect(view).toHaveLength(100);
        expect(view.every((m) => m.status === 'up' && m.lifecycle === Lifecycle.NORMAL)).toBe(true);
        // The checksum each node gossips about itself shows they agree.
        expect(new Set(view.map((m) => m.ringChecksum)).size).toBe(1);
      }
      expect(falseDowns).toEqual([]);
    });
  }

  simTest(FILE, 'a killed node (its connections drop) is down everywhere within 3 s', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 30, config: { vnodes: SIM_VNODES }, network: JITTERY });
    converge(sim, convergenceRounds(30));
    sim.run(30_000);
    for (const victim of sim.rng.shuffle(sim.ids).slice(0, 3)) {
      sim.crash(victim);
      const tookMs = sim.runUntil(() => seenBy(others(sim, victim), victim, false), 3_000, 50);
      expect(tookMs, `${victim} still up somewhere 3 s after SIGKILL`).toBeDefined();
      report('SIGKILL → down everywhere (s)', (tookMs as number) / 1000);
      sim.run(10_000);
    }
  });

  simTest(FILE, 'SIGSTOP: down everywhere within 10 s; after SIGCONT, up everywhere within 5 s (5 nodes)', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 5, seedCount: 1, config: { vnodes: SIM_VNODES }, network: LOOPBACK });
    converge(sim, convergenceRounds(5));
    // The first victim stops while the detectors are young (a few samples and the first-heartbeat
    // estimate), as in an acceptance run right after start; the later ones after minutes.
    sim.run(5_000);
    for (const victim of sim.rng.shuffle(sim.ids)) {
      const observers = others(sim, victim);
      sim.pause(victim, 15_000);
      const downMs = sim.runUntil(() => seenBy(observers, victim, false), 10_000, 50);
      expect(downMs, `${victim} still up somewhere 10 s after SIGSTOP`).toBeDefined();
      report('SIGSTOP → down everywhere (s)', (downMs as number) / 1000);
      sim.run(15_000 - (downMs as number));
      const upMs = sim.runUntil(() => seenBy(observers, victim, true), 5_000, 50);
      expect(upMs, `${victim} still down somewhere 5 s after SIGCONT`).toBeDefined();
      report('SIGCONT → up everywhere (s)', (upMs as number) / 1000);
      // The resumed node forgave its own stall instead of convicting everyone it had not heard.
      expect(observers.every((o) => (sim.node(victim).core as Membership).isUp(o.id))).toBe(true);
      sim.run(60_000);
    }
  });

  simTest(FILE, 'a node that goes silent without dropping connections is down everywhere within 15 s (30 nodes)', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 30, config: { vnodes: SIM_VNODES }, network: JITTERY });
    converge(sim, convergenceRounds(30));
    sim.run(60_000);
    const victim = sim.rng.pick(sim.ids);
    sim.pause(victim, 60_000);
    const tookMs = sim.runUntil(() => seenBy(others(sim, victim), victim, false), 15_000, 50);
    expect(tookMs, `${victim} still up somewhere 15 s after going silent`).toBeDefined();
    report('silent node, 30 nodes → down everywhere (s)', (tookMs as number) / 1000);
  });

  const noFalseDowns = (seed: number): void => {
    const sim = new ClusterSim({ seed, nodes: 50, config: { vnodes: SIM_VNODES }, network: LOSSY });
    const falseDowns = watchFalseDowns(sim);
    converge(sim, convergenceRounds(50, 0.1));
    sim.run(600_000);
    report('messages sent in 10 min, 50 nodes', sim.net.stats.sent);
    expect(falseDowns).toEqual([]);
    expect(sim.agreesOn() && sim.ringsAgree()).toBe(true);
  };
  simTest(FILE, 'no live node is ever marked down at 10% loss and jittered delays over 10 minutes (50 nodes)', noFalseDowns);

  it('the same, seed 846042668: a young window of tight intervals once convicted a live peer 16 s in', () => {
    // With the first-heartbeat estimate retired after 8 real intervals: "n035 marked n048 down (phi)".
    noFalseDowns(846042668);
  });

  simTest(FILE, 'event-loop stalls of up to 500 ms on every node for 60 s trip no verdict (5 nodes)', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 5, seedCount: 1, config: { vnodes: SIM_VNODES }, network: LOOPBACK });
    converge(sim, convergenceRounds(5));
    sim.run(30_000);
    const falseDowns = watchFalseDowns(sim);
    // Both cores saturated by another process: every event loop keeps getting stalled.
    const endMs = sim.nowMs + 60_000;
    for (const node of sim.nodes) {
      for (let t = sim.nowMs + sim.rng.next() * 1000; t < endMs; t += 200 + sim.rng.next() * 1500) {
        const stallMs = 50 + sim.rng.next() * 450;
        sim.queue.schedule(t, () => sim.pause(node.id, stallMs));
      }
    }
    sim.run(70_000);
    // One long stall of one node: it is not convicted, and it convicts nobody when it wakes.
    sim.pause(sim.rng.pick(sim.ids), 2_500);
    sim.run(20_000);
    expect(falseDowns).toEqual([]);
  });

  simTest(FILE, 'a healed two-way partition re-converges', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 30, config: { vnodes: SIM_VNODES }, network: JITTERY });
    const bound = convergenceRounds(30);
    converge(sim, bound);
    const ringBefore = (sim.nodes[0]?.core as Membership).ring().checksum();
    const minority = sim.rng.shuffle(sim.ids).slice(0, 10);
    const majority = sim.ids.filter((id) => !minority.includes(id));
    sim.net.partition(minority, majority);
    sim.run(60_000);
    // Each side sees the other down and itself up; nobody forgot anybody.
    for (const node of sim.nodes) {
      const core = node.core as Membership;
      const mySide = minority.includes(node.id) ? minority : majority;
      for (const id of sim.ids) if (id !== node.id) expect(core.isUp(id)).toBe(mySide.includes(id));
      expect(core.ring().checksum()).toBe(ringBefore);
    }
    sim.net.heal();
    const tookMs = sim.runUntil(() => sim.agreesOn() && sim.ringsAgree(), bound * ROUND_MS, 100);
    expect(tookMs, `not re-converged within ${bound} rounds of the heal`).toBeDefined();
    report('two-way partition healed → converged (rounds)', (tookMs as number) / ROUND_MS);
  });

  simTest(FILE, 'a node down for a dropped connection is up everywhere within a few rounds of the network healing', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 20, config: { vnodes: SIM_VNODES }, network: JITTERY });
    converge(sim, convergenceRounds(20));
    sim.run(30_000);
    const victim = sim.rng.pick(sim.ids);
    const rest = sim.ids.filter((id) => id !== victim);
    // Its links reset and it is cut off for longer than the grace: a down verdict on the evidence.
    sim.net.partition([victim], rest);
    sim.dropLinks(victim);
    sim.run(5_000);
    expect(seenBy(others(sim, victim), victim, false)).toBe(true);
    sim.net.heal();
    // Alive and heard of again: as quickly up as a node that stalled (phi), not after each peer
    // happened to pick it among those it believes down (one chance in 19 a round).
    const tookMs = sim.runUntil(() => seenBy(others(sim, victim), victim, true) && rest.every((id) => (sim.node(victim).core as Membership).isUp(id)), 5 * ROUND_MS, 50);
    expect(tookMs, `${victim} not up everywhere within 5 rounds of the heal`).toBeDefined();
    report('dropped links healed → up everywhere (s)', (tookMs as number) / 1000);
  });

  simTest(FILE, 'a one-way partition hides the side that cannot send; healed, it re-converges', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 20, config: { vnodes: SIM_VNODES }, network: JITTERY });
    const bound = convergenceRounds(20);
    converge(sim, bound);
    const mute = sim.rng.shuffle(sim.ids).slice(0, 5);
    const rest = sim.ids.filter((id) => !mute.includes(id));
    sim.net.partition(mute, rest, true);
    sim.run(60_000);
    // Nothing of the mute side reaches the rest, not even relayed: it is down for all of them.
    // (The mute side hears only the SYNs that probe it, so what it thinks of the rest varies.)
    for (const id of rest) {
      const core = sim.node(id).core as Membership;
      for (const m of mute) expect(core.isUp(m)).toBe(false);
    }
    sim.net.heal();
    const tookMs = sim.runUntil(() => sim.agreesOn() && sim.ringsAgree(), bound * ROUND_MS, 100);
    expect(tookMs, `not re-converged within ${bound} rounds of the heal`).toBeDefined();
    report('one-way partition healed → converged (rounds)', (tookMs as number) / ROUND_MS);
  });

  simTest(FILE, 'a restarted node (new generation) is the same member, not a new one', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 20, config: { vnodes: SIM_VNODES }, network: JITTERY });
    const bound = convergenceRounds(20);
    converge(sim, bound);
    const ringBefore = (sim.nodes[0]?.core as Membership).ring().checksum();
    const [slow, fast] = sim.rng.shuffle(sim.ids);
    const oldGeneration = sim.node(slow as string).lastGeneration;

    // Down first, then back: the new generation replaces the old state.
    sim.crash(slow as string);
    expect(sim.runUntil(() => seenBy(others(sim, slow as string), slow as string, false), 3_000, 50)).toBeDefined();
    sim.run(5_000);
    sim.start(slow as string);
    // Back before anyone noticed it was gone: the new generation still wins.
    sim.crash(fast as string);
    sim.start(fast as string);

    const tookMs = sim.runUntil(() => sim.agreesOn() && sim.ringsAgree(), bound * ROUND_MS, 100);
    expect(tookMs, 'restarted nodes not seen up everywhere').toBeDefined();
    report('restarted → up everywhere (rounds)', (tookMs as number) / ROUND_MS);
    for (const node of sim.nodes) {
      const core = node.core as Membership;
      const view = core.view(sim.localNow(node));
      expect(view).toHaveLength(20);
      expect(core.stateOf(slow as string)?.generation).toBeGreaterThan(oldGeneration);
      expect(core.stateOf(slow as string)?.generation).toBe(sim.node(slow as string).lastGeneration);
      expect(core.stateOf(fast as string)?.generation).toBe(sim.node(fast as string).lastGeneration);
      // Same id, same tokens: the ring did not move.
      expect(core.ring().checksum()).toBe(ringBefore);
    }
  });

  simTest(FILE, 'a graceful leave is seen at once, keeps the ring, and the node returns as itself', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 20, config: { vnodes: SIM_VNODES }, network: JITTERY });
    const bound = convergenceRounds(20);
    converge(sim, bound);
    const ringBefore = (sim.nodes[0]?.core as Membership).ring().checksum();
    const leaver = sim.rng.pick(sim.ids);
    const observers = others(sim, leaver);
    const reasons = new Set<string>();
    sim.onStatus = (e) => {
      if (e.subject === leaver && !e.up) reasons.add(e.reason);
    };
    sim.leave(leaver);
    // Far sooner than any detector: one network delay.
    const tookMs = sim.runUntil(() => seenBy(observers, leaver, false), 200, 10);
    expect(tookMs, 'leave not seen everywhere within 200 ms').toBeDefined();
    expect([...reasons]).toEqual([Lifecycle.LEFT]);
    for (const o of observers) {
      const core = o.core as Membership;
      expect(core.stateOf(leaver)?.lifecycle).toBe(Lifecycle.LEFT);
      expect(core.ring().checksum()).toBe(ringBefore);
    }
    sim.run(10_000);
    sim.start(leaver);
    expect(sim.runUntil(() => sim.agreesOn() && sim.ringsAgree(), bound * ROUND_MS, 100)).toBeDefined();
    const observer = observers[0] as SimNode;
    const back = (observer.core as Membership).view(sim.localNow(observer)).find((m) => m.id === leaver);
    expect(back).toMatchObject({ status: 'up', lifecycle: Lifecycle.NORMAL, generation: sim.node(leaver).lastGeneration });
    expect((observer.core as Membership).view(sim.localNow(observer))).toHaveLength(20);
  });

  simTest(FILE, 'a ring change (a decommission) is agreed everywhere within a few network delays, not at the next rounds (10 nodes)', (seed) => {
    // Every node refuses client requests while a live peer's ring differs from its own: each
    // pushes its new checksum at once, or writes would wait for gossip rounds a second apart.
    const sim = new ClusterSim({ seed, nodes: 10, config: { vnodes: SIM_VNODES }, network: JITTERY });
    converge(sim, convergenceRounds(10));
    const before = (sim.nodes[0]?.core as Membership).topologyChecksum();
    sim.run(sim.rng.next() * ROUND_MS);
    sim.decommission(sim.rng.pick(sim.ids));
    const agreed = (): boolean => {
      const cores = sim.aliveNodes().map((n) => n.core as Membership);
      const checksums = new Set(cores.map((c) => c.topologyChecksum()));
      return checksums.size === 1 && !checksums.has(before) && cores.every((c) => c.agreed() && c.settled(sim.localNow(sim.node(c.id))));
    };
    const tookMs = sim.runUntil(agreed, ROUND_MS / 2, 5);
    expect(tookMs, `not agreed within ${ROUND_MS / 2} ms`).toBeDefined();
    report('10 nodes: a decommission agreed after (ms)', tookMs as number);
  });

  simTest(FILE, '5 nodes started one after another from one seed are all up within 5 s of the last start', (seed) => {
    const sim = new ClusterSim({ seed, nodes: 5, seedCount: 1, config: { vnodes: SIM_VNODES }, network: LOOPBACK });
    // A script starting processes: the seed first, then the rest, each 0.3-1 s after the last.
    let atMs = 0;
    for (const [i, node] of sim.nodes.entries()) {
      if (i > 0) atMs += 300 + sim.rng.next() * 700;
      sim.queue.schedule(atMs, () => sim.start(node.id));
    }
    sim.queue.runUntil(atMs);
    const tookMs = sim.runUntil(() => sim.aliveNodes().length === 5 && sim.agreesOn() && sim.ringsAgree(), 5_000, 50);
    expect(tookMs, 'not all up within 5 s of the last start').toBeDefined();
    report('5 nodes, one seed: all up after the last start (s)', (tookMs as number) / 1000);
  });
});
