/**
 * The status report's recent load (node/recent-load.ts): quantiles within a bucket of the truth,
 * a window that forgets, totals that do not, errors kept out of the latency.
 */
import { describe, expect, it } from 'vitest';
import { LoadKind, RECENT_WINDOW_S, RecentLoad } from '../../node/recent-load.js';

describe('RecentLoad', () => {
  it('reports p50 and p99 within one bucket (a third) above the true quantile, never above the slowest', () => {
    const load = new RecentLoad();
    const t0 = 1_000_000;
    // 1..1000 ms, once each: p50 is 500 ms, p99 990 ms.
    for (let ms = 1; ms <= 1000; ms++) load.record(LoadKind.WRITE, ms, 2, true, t0 + ms);
    const w = load.status(t0 + 1000).writes;
    expect(w.recentOk).toBe(1000);
    expect(w.p50Ms!).toBeGreaterThanOrEqual(500);
    expect(w.p50Ms!).toBeLessThan(500 * 1.34);
    expect(w.p99Ms!).toBeGreaterThanOrEqual(990);
    expect(w.p99Ms!).toBeLessThanOrEqual(1000);
    expect(w.units).toBe(2000);
    expect(load.status(t0).reads).toEqual({ requests: 0, errors: 0, units: 0, recentOk: 0, p50Ms: null, p99Ms: null });
  });

  it('forgets latency older than the window but keeps the totals; errors count but have no latency', () => {
    const load = new RecentLoad();
    const t0 = 5_000_000;
    load.record(LoadKind.READ, 800, 3, true, t0);
    load.record(LoadKind.READ, 9_000, 1, false, t0);
    let r = load.status(t0 + 10).reads;
    expect(r).toMatchObject({ requests: 2, errors: 1, units: 3, recentOk: 1 });
    expect(r.p99Ms).toBe(800);
    load.record(LoadKind.READ, 0.05, 1, true, t0 + RECENT_WINDOW_S * 1000);
    r = load.status(t0 + RECENT_WINDOW_S * 1000).reads;
    expect(r).toMatchObject({ requests: 3, errors: 1, units: 4, recentOk: 1 });
    expect(r.p50Ms).toBe(0.05);
    expect(r.p99Ms).toBe(0.05);
    expect(load.status(t0 + 60_000).reads).toMatchObject({ requests: 3, recentOk: 0, p50Ms: null, p99Ms: null });
  });

  it('refuses a latency that is not a finite ms count', () => {
    expect(() => new RecentLoad().record(LoadKind.WRITE, Number.NaN, 1, true, 0)).toThrow(/assertion/);
    expect(() => new RecentLoad().record(LoadKind.WRITE, -1, 1, true, 0)).toThrow(/assertion/);
  });
});
