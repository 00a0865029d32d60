/**
 * A month of retention in minutes: three nodes (RF 3, the default retention unless set) whose
 * clocks are all set back by the same amount, restarted once per simulated day with the clock a
 * day further on. Each day a day's steady load is written (every series, every five minutes), a
 * repair is run from one node (each in turn), the nodes stop, and each store is read directly: the
 * script checks that no minute or hour bucket past its retention is on any disk (after those
 * repairs too) and prints the store's keys and bytes per day, which level off once the first
 * minutes expire.
 * Prints numbers; exits non-zero if an expired bucket is found on a disk or a count is wrong.
 *   npm run measure:retention [-- --days 30 --series 100 --minute-retention-days 14]
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Level } from 'level';
import { statusOf } from '../client/local-cluster.js';
import { TallyClient } from '../client/tally-client.js';
import { bytesIn, startTallyNode, until } from './node-procs.js';
import { defaultRetention, keptFrom, validateRetention } from '../cluster/retention.js';

const { values } = parseArgs({
  options: {
    days: { type: 'string', default: '30' },
    series: { type: 'string', default: '100' },
    'minute-retention-days': { type: 'string', default: String(defaultRetention().minuteDays) },
    'hour-retention-days': { type: 'string', default: String(defaultRetention().hourDays) },
    'base-port': { type: 'string', default: '7871' },
  },
});
const DAYS = Number(values.days);
const SERIES = Number(values.series);
const RETENTION = validateRetention({ minuteDays: Number(values['minute-retention-days']), hourDays: Number(values['hour-retention-days']) });
const BASE = Number(values['base-port']);
const DAY = 86_400_000;
const MINUTE = 60_000;
/** Events per series per day: one every five minutes. */
const PER_DAY = 288;
const addresses = [0, 1, 2].map((i) => `127.0.0.1:${BASE + i}`);
const dir = await mkdtemp(join(tmpdir(), 'tally-retention-'));
const procs: (ChildProcess | undefined)[] = [];

function start(i: number, offsetMs: number): Promise<void> {
  const args = ['--port', String(BASE + i), '--data', join(dir, `n${i + 1}`), '--id', `n${i + 1}`, '--zone', `z${i + 1}`, '--rf', '3'];
  args.push('--clock-offset-ms', String(offsetMs), '--minute-retention-days', String(RETENTION.minuteDays), '--hour-retention-days', String(RETENTION.hourDays));
  if (i > 0) args.push('--seeds', addresses[0] as string);
  return startTallyNode(args, `n${i + 1}`).then((p) => {
    procs[i] = p;
  });
}

async function stop(i: number): Promise<void> {
  const p = procs[i];
  if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await exited;
}

/** Slot keys of a stopped node's store, by resolution, and the first day its minutes and hours hold. */
async function census(path: string): Promise<{ m: number; h: number; d: number; firstMinuteDay: number; firstHourDay: number }> {
  const db = new Level<string, Uint8Array>(path, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  try {
    const out = { m: 0, h: 0, d: 0, firstMinuteDay: Number.POSITIVE_INFINITY, firstHourDay: Number.POSITIVE_INFINITY };
    for (const res of ['m', 'h', 'd'] as const) {
      for await (const key of db.keys({ gte: `${res}\x00`, lt: `${res}\x01` })) {
        out[res]++;
        if (res === 'd') continue;
        // Minutes and hours are keyed by their UTC day first (node/slot-keys.ts).
        const day = parseInt(key.split('\x00')[1] as string, 16);
        if (res === 'm') out.firstMinuteDay = Math.min(out.firstMinuteDay, day);
        else out.firstHourDay = Math.min(out.firstHourDay, day);
      }
    }
    return out;
  } finally {
    await db.close();
  }
}

const iso = (t: number): string => new Date(t).toISOString().slice(0, 10);
let failed = false;
try {
  const today = Math.floor(Date.now() / DAY) * DAY;
  // Day k of the run is `first + k days`; its clock is set to 23:00 of that day, and its load
  // covers 00:00 to 22:55. The last day is yesterday, so every event is in the client's past.
  const first = today - DAYS * DAY;
  console.log(`${DAYS} simulated days from ${iso(first)}, ${SERIES} series x ${PER_DAY} events a day, 3 nodes RF 3; retention: minutes ${RETENTION.minuteDays} days, hours ${RETENTION.hourDays} days (0: for ever)`);
  console.log('day         clock        keys/node (m / h / d)      bytes/node (max)  oldest minute day  expired on disk  ms');
  let written = 0;
  for (let k = 0; k < DAYS; k++) {
    const t0 = Date.now();
    const day = first + k * DAY;
    const clock = day + 23 * 60 * MINUTE;
    const offsetMs = clock - Date.now();
    for (let i = 0; i < 3; i++) await start(i, offsetMs);
    await until('all up', 60_000, async () => {
      const all = await Promise.all(addresses.map((a) => statusOf(a)));
      return all.every((s) => s.members.length === 3 && s.members.every((m) => m.status === 'up' && m.lifecycle === 'normal'));
    });
    const client = await TallyClient.connect({ nodes: addresses });
    try {
      const events = [];
      for (let s = 0; s < SERIES; s++) for (let e = 0; e < PER_DAY; e++) events.push({ videoId: `rm-${s}`, timestamp: day + e * 5 * MINUTE });
      for (let i = 0; i < events.length; i += 1_000) await client.processEvents(events.slice(i, i + 1_000), { consistency: 'quorum' });
      written += events.length;
      // A repair a day, from each node in turn (it compares with every peer): none may bring an
      // expired bucket back.
      await client.repair(addresses[k % 3] as string);
      // The whole history still counts exactly at the day resolution (days are kept for ever).
      const total = await client.getViewsCount('rm-0', first, day + DAY, { consistency: 'all' });
      if (total !== (k + 1) * PER_DAY) {
        failed = true;
        console.log(`WRONG: rm-0 over every day read ${total}, expected ${(k + 1) * PER_DAY}`);
      }
      // A range from 10:37 of the first day: once that day's minutes are gone it is counted from
      // 11:00, once its hours are gone too from the next midnight, and says so; a plain count
      // refuses it rather than count another range.
      const edge = first + 10 * 60 * MINUTE + 37 * MINUTE;
      const minutesGone = keptFrom('m', clock, RETENTION) > first;
      const hoursGone = keptFrom('h', clock, RETENTION) > first;
      const stats = await client.getStats('rm-0', 'view', edge, day + DAY);
      const wantFrom = hoursGone ? first + DAY : minutesGone ? first + 11 * 60 * MINUTE : edge;
      // Events every five minutes from 00:00: 11:00 is the 133rd of the first day; 10:40 the 129th.
      const want = (k + 1) * PER_DAY - (hoursGone ? PER_DAY : minutesGone ? 132 : 128);
      const refused = await client.getViewsCount('rm-0', edge, day + DAY).then(() => undefined, (err: unknown) => (err as { code?: string }).code);
      if (stats.from !== wantFrom || stats.clipped !== minutesGone || stats.count !== want || refused !== (minutesGone ? 'RANGE_EXPIRED' : undefined)) {
        failed = true;
        console.log(`WRONG: from 10:37 of the first day: ${JSON.stringify(stats)} (count refused: ${refused}); expected from ${iso(wantFrom)} ${new Date(wantFrom).toISOString().slice(11, 16)}, count ${want}`);
      }
    } finally {
      await client.close();
    }
    for (let i = 0; i < 3; i++) await stop(i);
    const mFrom = keptFrom('m', clock, RETENTION);
    const hFrom = keptFrom('h', clock, RETENTION);
    const counts = await Promise.all([0, 1, 2].map((i) => census(join(dir, `n${i + 1}`, 'db'))));
    const bytes = await Promise.all([0, 1, 2].map((i) => bytesIn(join(dir, `n${i + 1}`, 'db'))));
    const expired = counts.filter((c) => c.firstMinuteDay < mFrom || c.firstHourDay < hFrom).length;
    if (expired > 0) failed = true;
    const c = counts[0] as (typeof counts)[number];
    console.log(
      `${iso(day)}  ${new Date(clock).toISOString().slice(5, 16)}  ${`${c.m} / ${c.h} / ${c.d}`.padEnd(25)}  ${String(Math.max(...bytes)).padEnd(16)}  ` +
        `${(Number.isFinite(c.firstMinuteDay) ? iso(c.firstMinuteDay) : '-').padEnd(17)}  ${expired === 0 ? 'none' : `${expired} nodes`}${' '.repeat(12)}  ${Date.now() - t0}`,
    );
  }
  console.log(`${written} events written; ${failed ? 'FAILED' : 'OK: no expired bucket on any disk after each day and its repairs'}`);
} finally {
  for (let i = 0; i < 3; i++) await stop(i).catch(() => {});
  await rm(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
