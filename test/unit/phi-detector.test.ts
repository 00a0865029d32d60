import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import {
  ArrivalWindow,
  ESTIMATE_RETIRED_AFTER_SAMPLES,
  PhiAccrualDetector,
  Verdict,
  phiOf,
  type PhiDetectorConfig,
} from '../../cluster/phi-detector.js';

const CONFIG: PhiDetectorConfig = {
  phiThreshold: 8,
  minStdDevMs: 250,
  acceptableHeartbeatPauseMs: 2000,
  firstHeartbeatEstimateMs: 1000,
  arrivalWindowSize: 200,
  connectionLostGraceMs: 1500,
  minArrivalIntervalMs: 0,
};

/** Beats every `intervalMs` from t = 0; returns the time of the last one. */
function beat(d: PhiAccrualDetector, peer: string, count: number, intervalMs: number, fromMs = 0): number {
  let t = fromMs;
  for (let i = 0; i < count; i++, t += intervalMs) d.heartbeat(peer, t);
  return t - intervalMs;
}

describe('PhiAccrualDetector', () => {
  test('a peer never heard has no heartbeat verdict and phi 0', () => {
    const d = new PhiAccrualDetector(CONFIG);
    expect(d.verdict('b', 0)).toBe(Verdict.NO_HEARTBEAT);
    expect(d.phi('b', 1e9)).toBe(0);
    expect(d.suspectAtMs('b')).toBeUndefined();
  });

  test('one arrival is enough to judge, from the first-heartbeat estimate', () => {
    const d = new PhiAccrualDetector(CONFIG);
    d.heartbeat('b', 10_000);
    const deadline = d.suspectAtMs('b') as number;
    // Estimate 1000 ± 250 (std dev 250, the floor too) plus the 2000 pause: 5.2 std devs past 3 s.
    expect(deadline - 10_000).toBeGreaterThan(3000 + 5 * 250);
    expect(deadline - 10_000).toBeLessThan(3000 + 5.5 * 250);
    expect(d.verdict('b', deadline - 1)).toBe(Verdict.UP);
    expect(d.verdict('b', deadline)).toBe(Verdict.PHI);
    expect(d.phi('b', deadline - 1)).toBeLessThan(CONFIG.phiThreshold);
    expect(d.phi('b', deadline + 1)).toBeGreaterThanOrEqual(CONFIG.phiThreshold);
  });

  test('regular beats: the std dev floor and the acceptable pause set the margin', () => {
    const d = new PhiAccrualDetector(CONFIG);
    const last = beat(d, 'b', 100, 1000);
    // The estimate samples have left the window: the mean is exactly 1000 and the std dev 0.
    expect(d.stats('b')).toEqual({ meanMs: 1000, stdDevMs: 0, samples: 99 });
    const margin = (d.suspectAtMs('b') as number) - last;
    expect(margin).toBeGreaterThan(1000 + 2000 + 5 * CONFIG.minStdDevMs);
    expect(margin).toBeLessThan(1000 + 2000 + 5.5 * CONFIG.minStdDevMs);
    // A silence of the mean plus the whole acceptable pause is still a live peer.
    expect(d.verdict('b', last + 3000)).toBe(Verdict.UP);
    expect(d.phi('b', last + 1000)).toBeLessThan(1);
  });

  test('phi rises with silence, is finite however long the silence, and agrees with the verdict', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 60 }), fc.array(fc.integer({ min: 0, max: 60_000 }), { minLength: 2, maxLength: 20 }), (intervals, probes) => {
        const d = new PhiAccrualDetector(CONFIG);
        let t = 0;
        d.heartbeat('b', t);
        for (const i of intervals) d.heartbeat('b', (t += i));
        let previous = -Infinity;
        for (const p of [...probes].sort((a, b) => a - b)) {
          const phi = d.phi('b', t + p);
          expect(Number.isFinite(phi)).toBe(true);
          expect(phi).toBeGreaterThanOrEqual(previous);
          previous = phi;
          const down = d.verdict('b', t + p) === Verdict.PHI;
          // The verdict uses a precomputed deadline; phi is recomputed. They agree off the edge.
          if (Math.abs(phi - CONFIG.phiThreshold) > 1e-6) expect(down).toBe(phi >= CONFIG.phiThreshold);
        }
        expect(Number.isFinite(d.phi('b', t + 1e12))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  test('phiOf is monotonic and matches -log10 of the logistic tail where that is computable', () => {
    for (let y = -10; y < 40; y += 0.25) {
      expect(phiOf(y + 0.25)).toBeGreaterThan(phiOf(y));
      const e = Math.exp(-y * (1.5976 + 0.070566 * y * y));
      const naive = -Math.log10(e / (1 + e));
      if (Number.isFinite(naive) && naive > 1e-9) expect(Math.abs(phiOf(y) - naive) / naive).toBeLessThan(1e-6);
    }
  });

  test('a dropped connection convicts after the grace unless the connection is restored', () => {
    const d = new PhiAccrualDetector(CONFIG);
    const last = beat(d, 'b', 30, 1000);
    expect(d.connectionLost('b', last + 100)).toBe(true);
    expect(d.connectionLost('b', last + 200)).toBe(false); // not new evidence: the clock keeps its start
    expect(d.verdict('b', last + 100 + 1499)).toBe(Verdict.UP);
    // A relayed heartbeat may be the last beat of a dead process: it does not clear the evidence...
    d.heartbeat('b', last + 1000);
    expect(d.verdict('b', last + 100 + 1500)).toBe(Verdict.CONNECTION_LOST);
    expect(d.suspectAtMs('b')).toBe(last + 100 + 1500);
    // So does any word from the peer: it may have been in flight before the drop.
    d.heardFrom('b', last + 1700);
    expect(d.verdict('b', last + 1700)).toBe(Verdict.CONNECTION_LOST);
    // An answer to something sent after the drop (the caller's judgement) clears it.
    d.connectionRestored('b');
    expect(d.verdict('b', last + 1700)).toBe(Verdict.UP);
  });

  test('a new incarnation clears connection evidence about the old process', () => {
    const d = new PhiAccrualDetector(CONFIG);
    const last = beat(d, 'b', 10, 1000);
    d.connectionLost('b', last);
    d.heartbeat('b', last + 500, true);
    // Past the grace of the old connection's loss, and the new process is judged by phi alone.
    expect(d.verdict('b', last + 3000)).toBe(Verdict.UP);
  });

  test('an outage or a restart is not a sample: the window keeps the rhythm of a live peer', () => {
    const d = new PhiAccrualDetector(CONFIG);
    const last = beat(d, 'b', 50, 1000);
    const before = d.stats('b');
    d.heartbeat('b', last + 60_000); // back after a minute down
    expect(d.stats('b')).toEqual(before);
    d.heartbeat('b', last + 61_500, true); // a restart right after: not a sample either
    expect(d.stats('b')).toEqual(before);
    d.heartbeat('b', last + 62_500);
    expect(d.stats('b')?.samples).toBe((before?.samples ?? 0) + 1);
  });

  test('our own stall is forgiven to every peer', () => {
    const d = new PhiAccrualDetector(CONFIG);
    beat(d, 'b', 20, 1000);
    beat(d, 'c', 20, 1000, 500);
    const b = d.suspectAtMs('b') as number;
    const c = d.suspectAtMs('c') as number;
    d.forgive(4000);
    expect(d.suspectAtMs('b')).toBe(b + 4000);
    expect(d.suspectAtMs('c')).toBe(c + 4000);
    expect(d.verdict('b', b + 3999)).toBe(Verdict.UP);
  });

  test(`the first-heartbeat estimate leaves the window after ${ESTIMATE_RETIRED_AFTER_SAMPLES} real intervals`, () => {
    const d = new PhiAccrualDetector({ ...CONFIG, firstHeartbeatEstimateMs: 5000 });
    beat(d, 'b', ESTIMATE_RETIRED_AFTER_SAMPLES, 1000);
    expect(d.stats('b')?.samples).toBe(ESTIMATE_RETIRED_AFTER_SAMPLES + 1); // all but one real, + 2 estimates
    expect(d.stats('b')?.meanMs).toBeGreaterThan(1000);
    d.heartbeat('b', ESTIMATE_RETIRED_AFTER_SAMPLES * 1000);
    expect(d.stats('b')).toEqual({ meanMs: 1000, stdDevMs: 0, samples: ESTIMATE_RETIRED_AFTER_SAMPLES });
  });
});

describe('pushed changes between heartbeats', () => {
  test('a version sooner than minArrivalIntervalMs after the last arrival is not a sample, nor the new last arrival', () => {
    const d = new PhiAccrualDetector({ ...CONFIG, minArrivalIntervalMs: 500 });
    const last = beat(d, 'b', 40, 1000);
    const before = d.stats('b');
    // Pushes 100 ms apart within the floor (a cluster whose ring keeps changing): none is a sample.
    for (let t = last + 100; t < last + 500; t += 100) d.heartbeat('b', t);
    expect(d.stats('b')).toEqual(before);
    // The next round's heartbeat is one interval after the last arrival counted.
    d.heartbeat('b', last + 1000);
    expect(d.stats('b')?.meanMs).toBe(1000);
    // Without the floor, the same pushes teach the window intervals of 100 ms.
    const e = new PhiAccrualDetector({ ...CONFIG, minArrivalIntervalMs: 0 });
    const lastE = beat(e, 'b', 40, 1000);
    for (let t = lastE + 100; t <= lastE + 1000; t += 100) e.heartbeat('b', t);
    expect(e.stats('b')?.meanMs).toBeLessThan(900);
  });
});

describe('ArrivalWindow', () => {
  test('keeps the last `capacity` intervals and their exact mean and std dev', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 16 }),
        fc.array(fc.oneof(fc.integer({ min: 0, max: 100_000 }), fc.constant(-1)), { maxLength: 200 }),
        (capacity, ops) => {
          const w = new ArrivalWindow(capacity);
          let model: number[] = [];
          for (const op of ops) {
            if (op === -1) {
              w.dropOldest(1);
              model = model.slice(1);
            } else {
              w.add(op);
              model = [...model, op].slice(-capacity);
            }
            expect(w.size).toBe(model.length);
            const mean = model.length === 0 ? 0 : model.reduce((a, b) => a + b, 0) / model.length;
            const sd = model.length === 0 ? 0 : Math.sqrt(model.reduce((a, b) => a + (b - mean) ** 2, 0) / model.length);
            expect(w.meanMs).toBeCloseTo(mean, 6);
            expect(Math.abs(w.stdDevMs - sd)).toBeLessThan(1e-3 * Math.max(1, mean));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
