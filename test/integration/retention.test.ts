/**
 * Retention with real processes and real LevelDB: `scripts/retention-month.ts`, short (five
 * simulated days, minutes kept one day and hours two), restarts three nodes once per simulated day
 * with their clocks a day further on. After each day's load and a repair from one node, it opens
 * each store and fails if a minute or hour bucket past its retention is on any disk, if the whole
 * history does not count exactly, or if a range whose start fell in expired minutes is not
 * answered from the next hour and refused by a plain count (RANGE_EXPIRED).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/node-process.js';

describe('retention with real processes', () => {
  it('deletes expired minutes and hours from every disk, keeps them gone through repairs, and says when a read was clipped', async () => {
    const args = ['--days', '5', '--series', '20', '--minute-retention-days', '1', '--hour-retention-days', '2', '--base-port', '17871'];
    const proc = spawn(process.execPath, [join(ROOT, 'dist/scripts/retention-month.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => proc.once('exit', r));
    console.log(out);
    expect(code, out).toBe(0);
    const days = out.split('\n').filter((l) => /^\d{4}-\d\d-\d\d /.test(l));
    expect(days).toHaveLength(5);
    const cols = days.map((l) => l.split(/\s{2,}/));
    // Minutes are two days deep once the first has expired: the oldest minute day moves on daily,
    // and the count of minute keys stays flat while days go on being written.
    expect(new Set(cols.slice(1).map((c) => c[4])).size).toBe(4);
    const minuteKeys = cols.map((c) => Number((c[2] as string).split(' / ')[0]));
    expect(minuteKeys[1]).toBeGreaterThan(minuteKeys[0] as number);
    expect(new Set(minuteKeys.slice(1))).toEqual(new Set([minuteKeys[1]]));
    expect(cols.every((c) => c[5] === 'none')).toBe(true);
  }, 180_000);
});
