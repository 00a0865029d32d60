/**
 * The chaos run's checks after healing, apart from its processes so they can be tested alone:
 * whether the replicas of every series come level by themselves, the count of record of each
 * series, and whether the run did enough for its checks to mean anything.
 *
 * Replicas are compared at `one` through each replica, before any read at `all`: a read at `all`
 * repairs every replica that is behind before it answers (read repair), so replicas compared after
 * one are level whatever hints and anti-entropy did. The read at `all` comes last, as the count of
 * record, once they agree (or the time is up, to count what was lost).
 */

export interface ReplicaReads {
  /** The addresses of a series' replicas, as the client places it. */
  replicasOf(id: string): readonly string[];
  /** Whether every replica answers from its own copy (none is down or being rebuilt). */
  ready(): Promise<boolean>;
  /** The series through the replica at `address`, at `one`: its own copy, with no read repair. */
  readOne(address: string, id: string): Promise<number>;
  /** The series at `all`: every replica's copy joined (and the ones behind repaired). */
  readAll(id: string): Promise<number>;
}

export interface LevelOptions {
  /** Replicas each series must have. */
  rf: number;
  /** How long the replicas have to agree. */
  timeoutMs: number;
  /** Then how long the reads at `all` are tried again. */
  finalReadMs: number;
  /** Between two comparisons. */
  pauseMs: number;
}

export interface Levelled {
  /** Series not found level at the last comparison (0 once they all are). */
  differing: number;
  /** From the start until the replicas agreed; null if they did not in time. */
  levelMs: number | null;
  /** Each series read at `all`; one that could not be read in time is missing. */
  finals: Map<string, number>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function awaitLevel(ids: readonly string[], reads: ReplicaReads, o: LevelOptions): Promise<Levelled> {
  const startedAt = Date.now();
  let differing = ids.length;
  for (;;) {
    differing = (await reads.ready().catch(() => false)) ? await compare(ids, reads, o.rf) : ids.length;
    if (differing === 0 || Date.now() - startedAt >= o.timeoutMs) break;
    await sleep(o.pauseMs);
  }
  const levelMs = differing === 0 ? Date.now() - startedAt : null;
  const finals = new Map<string, number>();
  const until = Date.now() + o.finalReadMs;
  for (const id of ids) {
    for (;;) {
      try {
        finals.set(id, await reads.readAll(id));
        break;
      } catch {
        if (Date.now() >= until) break;
        await sleep(o.pauseMs);
      }
    }
  }
  return { differing, levelMs, finals };
}

/** The series whose replicas disagree, or could not all be read (the rest are not read once one fails). */
async function compare(ids: readonly string[], reads: ReplicaReads, rf: number): Promise<number> {
  let differing = 0;
  for (const [i, id] of ids.entries()) {
    const replicas = reads.replicasOf(id);
    // Fewer replicas than the cluster keeps: the ones left out were not compared.
    if (replicas.length !== rf) {
      differing++;
      continue;
    }
    try {
      const seen = new Set<number>();
      for (const r of replicas) seen.add(await reads.readOne(r, id));
      if (seen.size !== 1) differing++;
    } catch {
      return differing + ids.length - i;
    }
  }
  return differing;
}

/**
 * Why a run's checks prove nothing, if they do not: no increment acknowledged (nothing to lose),
 * or no read answered during the run (no read checked against its bounds).
 */
export function vacuous(acknowledged: number, readsAnswered: number): string[] {
  const why: string[] = [];
  if (acknowledged === 0) why.push('no increment was acknowledged: there was nothing to lose');
  if (readsAnswered === 0) why.push('no read was answered during the run: none was checked against its bounds');
  return why;
}

/**
 * The fault a node's log line (either stream) reports, or undefined: a commit the store refused
 * because it would lower a slot (TALLY_VERIFY_COMMITS), or a broken invariant in the core, which
 * the node logs and goes on from. Either is a fault in Tally whatever the counts say after.
 */
export function nodeFault(line: string): string | undefined {
  let text = line;
  try {
    // A JSON log record: its message, unescaped.
    const record = JSON.parse(line) as { msg?: unknown };
    if (typeof record.msg === 'string') text = record.msg;
  } catch {
    // a plain line
  }
  return /commit would lower.*|the core failed on \S+: .*/.exec(text)?.[0].slice(0, 300);
}
