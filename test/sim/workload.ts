/**
 * The simulated clients of the replication and topology simulations: writers and readers over a
 * few series through random nodes, checked at every read as Jepsen checks a counter (see
 * replication.test.ts for the checks).
 */
import type { CoreReply } from '../../cluster/node-core.js';
import { DAY_MS, HOUR_MS } from '../../cluster/time-buckets.js';
import { Consistency, type EventTuple } from '../../protocol/messages.js';
import { EPOCH_MS, type ReplicationSim, type RequestOutcome } from './replication-sim.js';

export const NOTHING_APPLIED = new Set(['UNAVAILABLE', 'OVERLOADED', 'BAD_REQUEST', 'TOO_LARGE', 'NOT_READY']);
/** Events fall in the three hours from the start of the day before the simulated clock's start. */
export const T0 = Math.floor(EPOCH_MS / DAY_MS) * DAY_MS - DAY_MS;
export const WINDOW_MS = 3 * HOUR_MS;
/**
 * Queries that between them read every bucket of the window at every resolution: half hours
 * (minute buckets only), [T0, T0 + 23 h) (hours) and the day. An `all` read of each repairs every
 * bucket an event can touch.
 */
export const EVERY_BUCKET: [number, number][] = [
  ...Array.from({ length: (2 * WINDOW_MS) / HOUR_MS }, (_, i): [number, number] => [T0 + (i * HOUR_MS) / 2, T0 + ((i + 1) * HOUR_MS) / 2]),
  [T0, T0 + 23 * HOUR_MS],
  [T0, T0 + DAY_MS],
];

export interface Series {
  id: string;
  attempted: number;
  ackedQuorum: number;
  /** Highest value a completed quorum read returned, and when it completed. */
  reads: { value: number; endMs: number }[];
}

export interface Run {
  sim: ReplicationSim;
  series: Series[];
  violations: string[];
  counts: Record<string, number>;
}

export function workload(sim: ReplicationSim, seriesCount: number, clients: number, untilMs: () => number): Run {
  const rng = sim.rng.fork();
  const series: Series[] = Array.from({ length: seriesCount }, (_, i) => ({ id: `video-${i}`, attempted: 0, ackedQuorum: 0, reads: [] }));
  const run: Run = { sim, series, violations: [], counts: {} };
  const count = (k: string): void => {
    run.counts[k] = (run.counts[k] ?? 0) + 1;
  };
  const nodeIds = sim.nodes.map((n) => n.id);

  const client = (c: number): void => {
    let seq = 0;
    const next = (): void => {
      if (sim.nowMs >= untilMs()) return;
      sim.queue.schedule(sim.nowMs + rng.next() * 20, rng.next() < 0.6 ? write : read);
    };
    const write = (): void => {
      const node = rng.pick(nodeIds);
      const picked = rng.shuffle([...series]).slice(0, 1 + Math.floor(rng.next() * 3));
      const events: EventTuple[] = picked.map((s) => [s.id, 'view', T0 + Math.floor(rng.next() * WINDOW_MS), 1 + Math.floor(rng.next() * 9), 1 + Math.floor(rng.next() * 3)]);
      const r = rng.next();
      const cl = r < 0.8 ? Consistency.QUORUM : r < 0.9 ? Consistency.ONE : Consistency.ALL;
      const batch = `c${c}:${++seq}`;
      const per = new Map<Series, number>();
      events.forEach((e, i) => per.set(picked[i] as Series, (per.get(picked[i] as Series) ?? 0) + e[4]));
      for (const [s, n] of per) s.attempted += n;
      let tries = 0;
      let actor: string | undefined;
      const attempt = (): void => {
        tries++;
        // As the real client: a retry goes only to the actor that took the first attempt (a
        // wiped node is a new actor that no longer knows the batch id).
        const now = sim.actorOf(sim.node(node));
        if (actor !== undefined && now !== actor) {
          count('write unknown new actor');
          return next();
        }
        actor = now;
        sim.write(node, events, cl, batch, (o: RequestOutcome) => {
          const reply = o.kind === 'reply' ? o.reply : undefined;
          if (reply?.ok === true) {
            count(`write ok ${cl}`);
            if (cl !== Consistency.ONE) for (const [s, n] of per) s.ackedQuorum += n;
            return next();
          }
          const code = reply === undefined ? 'LOST' : (reply as Extract<CoreReply, { ok: false }>).code;
          if (NOTHING_APPLIED.has(code) && tries === 1) {
            count(`write ${code}`);
            for (const [s, n] of per) s.attempted -= n;
            return next();
          }
          // Unknown outcome: retry with the same batch id at the same node, a few times.
          count(`write unknown ${code}`);
          if (tries < 4) sim.queue.schedule(sim.nowMs + 200 + rng.next() * 800, attempt);
          else next();
        });
      };
      attempt();
    };
    const read = (): void => {
      const node = rng.pick(nodeIds);
      const s = rng.pick(series);
      const cl = rng.next() < 0.85 ? Consistency.QUORUM : Consistency.ONE;
      const startMs = sim.nowMs;
      const lower = s.ackedQuorum;
      const floor = Math.max(0, ...s.reads.filter((r) => r.endMs < startMs).map((r) => r.value));
      sim.read(node, [[s.id, 'view', T0, T0 + DAY_MS]], cl, (o) => {
        const reply = o.kind === 'reply' ? o.reply : undefined;
        if (reply?.ok !== true) {
          count(`read ${reply === undefined ? 'LOST' : (reply as Extract<CoreReply, { ok: false }>).code}`);
          return next();
        }
        count(`read ok ${cl}`);
        const value = (reply.stats?.[0] ?? [NaN])[0];
        const at = `t=${sim.nowMs.toFixed(0)} ${cl} read of ${s.id} at ${node}`;
        if (value > s.attempted) run.violations.push(`${at}: ${value} is more than the ${s.attempted} attempted`);
        if (cl === Consistency.QUORUM) {
          if (value < lower) run.violations.push(`${at}: ${value} is less than the ${lower} acknowledged before it began`);
          if (value < floor) run.violations.push(`${at}: ${value} is less than the ${floor} an earlier quorum read saw`);
          s.reads.push({ value, endMs: sim.nowMs });
          if (s.reads.length > 50) s.reads.splice(0, s.reads.length - 50);
        }
        next();
      });
    };
    next();
  };
  for (let c = 0; c < clients; c++) client(c);
  return run;
}

