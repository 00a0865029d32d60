/**
 * `tally chaos`: real node processes under faults, checked the way Jepsen checks a counter.
 *
 * It starts a cluster (default 5 nodes, RF 3), each node in its own network namespace when it can
 * make them (root and iproute2; see chaos-net.ts), drives writers and readers through the real
 * client over many series with explicit timestamps over three days, and injects faults on a
 * schedule drawn from the seed: SIGKILL and restart on the same data, SIGSTOP/SIGCONT, a wiped data
 * directory (the node returns as a new actor), a restart with the clock set off by a few seconds,
 * and, with namespaces, a node isolated, a link cut one way, the cluster split in two. Three lanes
 * run independently, one fault at a time each: wipes (each waits until every node is up and the
 * node wiped before has been rebuilt), the other process faults (never on a node being wiped), and
 * network faults. Nodes run anti-entropy every 2 s.
 *
 * Per series it records increments attempted, acknowledged, refused (nothing applied) and of
 * unknown outcome. Every `quorum` read during the run must lie in [acknowledged before it began,
 * attempted before it ended]. At the end it heals everything, waits for the replicas of every series
 * to agree, each read alone at `one` (chaos-check.ts), then reads every series at `all` and reports
 * lost and over-counted increments. A run that acknowledged nothing, or checked no read, fails.
 * The seed replays the fault schedule (the timing of a real cluster does not replay exactly).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Prng } from '../cluster/prng.js';
import { statusOf } from '../client/local-cluster.js';
import { TallyClient } from '../client/tally-client.js';
import { Consistency, ErrorCode, TallyError } from '../protocol/index.js';
import { ChaosNet } from './chaos-net.js';
import { awaitLevel, nodeFault, vacuous } from './chaos-check.js';
import { startArgs } from '../node/memory.js';

/** The built CLI: beside this file once built, or under dist/ when this runs from source (tests). */
const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = existsSync(join(HERE, 'cli.js')) ? join(HERE, 'cli.js') : join(HERE, '../dist/scripts/cli.js');
const SECRET = 'chaos-cluster-secret-0123456789';
const DAY_MS = 86_400_000;
/** The replication factor the run's nodes are started with. */
const RF = 3;
/** Each node compares with its next peer this often: the schedule is part of what is tested. */
const REPAIR_INTERVAL_MS = 2_000;

/** How long the other process faults go on while a wiped node is rebuilt; then they wait for it. */
const REBUILD_GRACE_MS = 2_000;

/** Codes after which nothing of the write was applied. */
const NOTHING_APPLIED = new Set<string>([ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED, ErrorCode.NOT_READY, ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE]);

export interface ChaosOptions {
  seed: number;
  nodes: number;
  durationS: number;
  /** Target write rate, events per second. */
  rate: number;
  series: number;
  writers: number;
  readers: number;
  /** Use network namespaces if they can be made. */
  netns: boolean;
  /** Fault kinds to leave out. */
  without: string[];
  basePort: number;
  log: (line: string) => void;
}

export function defaultChaosOptions(): ChaosOptions {
  return { seed: 1, nodes: 5, durationS: 60, rate: 2_000, series: 200, writers: 16, readers: 8, netns: true, without: [], basePort: 7501, log: () => {} };
}

export const PROCESS_FAULTS = ['kill', 'freeze', 'wipe', 'clock'] as const;
export const NETWORK_FAULTS = ['isolate', 'one-way', 'split'] as const;

export interface ChaosSummary {
  seed: number;
  nodes: number;
  durationS: number;
  network: string;
  writes: Record<string, number>;
  reads: Record<string, number>;
  increments: { attempted: number; acknowledged: number; refused: number; unknown: number };
  faults: Record<string, number>;
  lost: number;
  overCounted: number;
  readsOutOfBounds: number;
  replicasDiffering: number;
  convergeMs: number | null;
  violations: string[];
  ok: boolean;
}

interface Series {
  id: string;
  attempted: number;
  acked: number;
}

interface NodeProc {
  i: number;
  proc: ChildProcess | undefined;
  address: string;
  offsetMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runChaos(given: ChaosOptions): Promise<ChaosSummary> {
  const kinds: readonly string[] = [...PROCESS_FAULTS, ...NETWORK_FAULTS];
  const unknown = (given.without ?? []).filter((k) => !kinds.includes(k));
  if (unknown.length > 0) throw new TallyError(ErrorCode.BAD_REQUEST, `--without: no fault kind ${unknown.map((k) => JSON.stringify(k)).join(', ')}; the kinds are ${kinds.join(', ')}`);
  // TALLY_CHAOS_LOGS=dir also keeps the run's own journal there (chaos.log): each fault and each
  // write's outcome, timed, to read beside the nodes' logs when a run fails.
  const logs = process.env['TALLY_CHAOS_LOGS'];
  // Made if it is not there yet; a directory that cannot be made fails the run here, with its reason.
  if (logs !== undefined && logs !== '') await mkdir(logs, { recursive: true });
  const journal = logs === undefined || logs === '' ? undefined : createWriteStream(join(logs, 'chaos.log'), { flags: 'a' });
  const note = (line: string): void => {
    journal?.write(`${new Date().toISOString()} ${line}\n`);
  };
  const o: ChaosOptions = { ...given, log: (line) => (note(line), given.log(line)) };
  const rng = new Prng(o.seed);
  const dir = await mkdtemp(join(tmpdir(), 'tally-chaos-'));
  let net: ChaosNet | undefined;
  let network = 'loopback: partitions skipped (namespaces not requested)';
  if (o.netns) {
    const made = await ChaosNet.create(o.nodes);
    if (made instanceof ChaosNet) {
      net = made;
      network = `network namespaces on a bridge (${made.bridge})`;
    } else {
      network = `loopback: partitions skipped, network namespaces could not be made (${made.error})`;
    }
  }
  o.log(`chaos seed ${o.seed}: ${o.nodes} nodes, ${o.durationS} s, ${network}`);
  const nodes: NodeProc[] = Array.from({ length: o.nodes }, (_, i) => ({
    i,
    proc: undefined,
    address: net === undefined ? `127.0.0.1:${o.basePort + i}` : `${net.address(i)}:7400`,
    offsetMs: 0,
  }));
  const seeds = nodes.slice(0, 2).map((n) => n.address).join(',');

  const start = async (n: NodeProc): Promise<void> => {
    const [host, port] = n.address.split(':') as [string, string];
    const args = ['--host', host, '--port', port, '--data', join(dir, `n${n.i + 1}`), '--id', `n${n.i + 1}`, '--zone', `z${(n.i % 3) + 1}`];
    args.push('--seeds', seeds, '--rf', String(RF), '--cluster-secret', SECRET, '--stop-on-stdin-close', '--repair-interval-ms', String(REPAIR_INTERVAL_MS));
    if (n.offsetMs !== 0) args.push('--clock-offset-ms', String(n.offsetMs));
    const cmd = [...(net === undefined ? [] : net.exec(n.i)), process.execPath, ...startArgs(CLI, args)];
    // Every commit is checked never to lower a stored slot (node/store.ts, verifyCommits): a run
    // names the first such commit as a violation, rather than only the increments it lost.
    const proc = spawn(cmd[0] as string, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TALLY_VERIFY_COMMITS: '1' } });
    n.proc = proc;
    let lastLine = '';
    // Whole lines of both streams (the node logs to stdout, the CLI's errors go to stderr), for
    // the faults a node logs and goes on from (nodeFault).
    const watch = (stream: NodeJS.ReadableStream | null): void => {
      let partLine = '';
      stream?.on('data', (d: Buffer) => {
        // A chunk may end inside a line.
        const lines = (partLine + d.toString()).split('\n');
        partLine = (lines.pop() ?? '').slice(-4096);
        for (const line of lines) {
          if (line.trim() !== '') lastLine = line.slice(0, 300);
          const fault = nodeFault(line);
          if (fault !== undefined) violate(`n${n.i + 1}: ${fault}`);
        }
      });
    };
    watch(proc.stdout);
    watch(proc.stderr);
    // Every exit the run makes goes through kill(), which lets go of the process first: any other is
    // the node's own (a failed assertion, a fatal error), a fault in Tally. It is restarted by the
    // next process fault that picks it, or after healing.
    proc.once('exit', (code, signal) => {
      if (n.proc !== proc) return;
      n.proc = undefined;
      violate(`n${n.i + 1} exited by itself (${signal ?? `exit code ${code}`})${lastLine === '' ? '' : `: ${lastLine}`}`);
    });
    // TALLY_CHAOS_LOGS=dir keeps every node's output, one file per node, for reading a run afterwards.
    if (logs !== undefined && logs !== '') {
      const file = createWriteStream(join(logs, `n${n.i + 1}.log`), { flags: 'a' });
      proc.stdout?.on('data', (d: Buffer) => file.write(d));
      proc.stderr?.on('data', (d: Buffer) => file.write(d));
      proc.once('exit', () => file.end());
    }
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`n${n.i + 1} not ready in 20 s:\n${out}`)), 20_000);
      const onData = (d: Buffer): void => {
        out += d.toString();
        if (/ ready on /.test(out)) {
          clearTimeout(timer);
          proc.stdout?.off('data', onData);
          proc.stdout?.resume();
          resolve();
        }
      };
      proc.stdout?.on('data', onData);
      proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`n${n.i + 1} exited (${code}) before it was ready:\n${out}`));
      });
    });
  };
  const kill = async (n: NodeProc): Promise<void> => {
    const p = n.proc;
    n.proc = undefined;
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGCONT');
    p.kill('SIGKILL');
    await exited;
  };

  const faults: Record<string, number> = {};
  const writes: Record<string, number> = {};
  const reads: Record<string, number> = {};
  const violations: string[] = [];
  /** A violation: in the journal always, in the summary up to 20. */
  const violate = (what: string): void => {
    note(`violation: ${what}`);
    if (violations.length < 20) violations.push(what);
  };
  let readsOutOfBounds = 0;
  const increments = { attempted: 0, acknowledged: 0, refused: 0, unknown: 0 };
  const series: Series[] = Array.from({ length: o.series }, (_, i) => ({ id: `chaos-${o.seed}-${i}`, attempted: 0, acked: 0 }));
  let client: TallyClient | undefined;

  try {
    for (const n of nodes) await start(n);
    client = await TallyClient.connect({ nodes: nodes.map((n) => n.address), timeoutMs: 8_000 });
    // Wait until every node serves (gossip settled), so the run starts from a healthy cluster.
    await waitUntil(60_000, async () => {
      for (const n of nodes) await directRead(n.address, (series[0] as Series).id, Consistency.QUORUM);
      return true;
    });
    const now = Date.now();
    const window = { from: now - 4 * DAY_MS, to: now + DAY_MS };
    const endAt = Date.now() + o.durationS * 1000;
    let running = true;

    // --- workload
    const writer = async (w: number): Promise<void> => {
      const wrng = new Prng(o.seed * 1000 + w);
      const perCall = 3;
      const interval = (o.writers * perCall * 1000) / o.rate;
      while (running) {
        const t0 = Date.now();
        const s = wrng.pick(series);
        const n = 1 + wrng.int(5);
        const ts = now - Math.floor(wrng.next() * 3 * DAY_MS);
        s.attempted += n;
        increments.attempted += n;
        try {
          await (client as TallyClient).processEvents([{ videoId: s.id, timestamp: ts, count: n }], { consistency: Consistency.QUORUM });
          note(`write ${s.id} +${n} at ${new Date(ts).toISOString()}: ok in ${Date.now() - t0} ms`);
          s.acked += n;
          increments.acknowledged += n;
          writes['ok'] = (writes['ok'] ?? 0) + 1;
        } catch (err) {
          const code = err instanceof TallyError ? err.code : 'ERROR';
          note(`write ${s.id} +${n} at ${new Date(ts).toISOString()}: ${code} in ${Date.now() - t0} ms: ${(err as Error).message}`);
          writes[code] = (writes[code] ?? 0) + 1;
          if (NOTHING_APPLIED.has(code)) {
            s.attempted -= n;
            increments.attempted -= n;
            increments.refused += n;
          } else {
            increments.unknown += n;
          }
        }
        await sleep(Math.max(0, interval - (Date.now() - t0)));
      }
    };
    const reader = async (r: number): Promise<void> => {
      const rrng = new Prng(o.seed * 1000 + 500 + r);
      while (running) {
        const s = rrng.pick(series);
        const lower = s.acked;
        try {
          const v = await (client as TallyClient).getViewsCount(s.id, window.from, window.to, { consistency: Consistency.QUORUM });
          reads['ok'] = (reads['ok'] ?? 0) + 1;
          const upper = s.attempted;
          if (v < lower || v > upper) {
            readsOutOfBounds++;
            violate(`quorum read of ${s.id} said ${v}, outside [${lower} acknowledged before it, ${upper} attempted by its end]`);
          }
        } catch (err) {
          const code = err instanceof TallyError ? err.code : 'ERROR';
          reads[code] = (reads[code] ?? 0) + 1;
        }
        await sleep(20);
      }
    };

    // --- faults
    const kinds = {
      process: PROCESS_FAULTS.filter((k) => !o.without.includes(k)),
      network: net === undefined ? [] : NETWORK_FAULTS.filter((k) => !o.without.includes(k)),
    };
    // Kinds are dealt from shuffled rounds, so every kind comes about equally often.
    const dealer = <T>(all: readonly T[], r: typeof rng): { next: () => T } => {
      let deck: T[] = [];
      return {
        next: () => {
          if (deck.length === 0) deck = r.shuffle([...all]);
          return deck.pop() as T;
        },
      };
    };
    // Process faults go in two lanes, each with its own stream of the seed: wipes in one (a wipe
    // waits for the last wiped node to be rebuilt, seconds), kills, freezes and clock faults in the
    // other, kept to the same pace by count. The lanes never fault the same node at once.
    const wipeRng = rng.fork();
    const otherRng = rng.fork();
    const otherDeck = dealer(kinds.process.filter((k) => k !== 'wipe'), otherRng);
    const busy = new Set<number>();
    const pickNode = (r: typeof rng): NodeProc | undefined => {
      const free = nodes.filter((n) => !busy.has(n.i));
      return free.length === 0 ? undefined : r.pick(free);
    };
    // RF 3 with W = 2 keeps every acknowledged write through the loss of one disk at a time: the
    // wiped node is rebuilt from its peers (so what only it and one other held is on two disks
    // again), and anti-entropy puts it on the third. A second disk lost while the first is still
    // being rebuilt can take the last copy — the promise of Dynamo and Cassandra too (repair
    // between losses). So a wipe comes only once no member is rebuilding. A node killed or frozen
    // by the other lane keeps its disk, so it takes no copy away; and while it is down it holds up
    // any rebuild (it may hold the only copy of something), so no second wipe comes before it has
    // streamed what it holds.
    const noneRebuilding = async (): Promise<boolean> => {
      const asked = nodes.filter((n) => !busy.has(n.i));
      const answers = (await Promise.allSettled(asked.map((n) => statusOf(n.address)))).flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      // Most nodes answer (gossip carries a rebuild to all of them within a round or two).
      if (answers.length <= o.nodes / 2) return false;
      return answers.every((st) => st.members.length === o.nodes && st.members.every((m) => !m.lifecycle.includes('rebuilding')));
    };
    const processFault = async (kind: (typeof PROCESS_FAULTS)[number], n: NodeProc, r: typeof rng): Promise<void> => {
      const lasts = 300 + r.int(900);
      faults[kind] = (faults[kind] ?? 0) + 1;
      o.log(`fault ${kind} n${n.i + 1} for ${lasts} ms`);
      busy.add(n.i);
      try {
        if (kind === 'freeze') {
          n.proc?.kill('SIGSTOP');
          await sleep(lasts);
          n.proc?.kill('SIGCONT');
        } else {
          await kill(n);
          if (kind === 'wipe') await rm(join(dir, `n${n.i + 1}`), { recursive: true, force: true });
          await sleep(lasts);
          if (kind === 'clock') n.offsetMs = (r.next() < 0.5 ? -1 : 1) * (1_000 + r.int(4_000));
          await start(n);
          if (kind === 'clock') {
            // Runs a while with its clock off, then comes back right.
            await sleep(lasts);
            await kill(n);
            n.offsetMs = 0;
            await start(n);
          }
        }
      } finally {
        busy.delete(n.i);
      }
    };
    /** When the last wipe's node came back, while it is being rebuilt. */
    let rebuildSince: number | undefined;
    // The two lanes keep pace by count: wipes neither run ahead of the least dealt other kind nor
    // fall behind it for long.
    const otherKinds = kinds.process.filter((k) => k !== 'wipe');
    const leastOther = (): number => Math.min(...otherKinds.map((k) => faults[k] ?? 0));
    const wipesAhead = (): boolean => otherKinds.length > 0 && (faults['wipe'] ?? 0) > leastOther();
    const wipesBehind = (): boolean => (faults['wipe'] ?? 0) < leastOther();
    const wipeLane = async (): Promise<void> => {
      if (!kinds.process.includes('wipe')) return;
      await sleep(3_000);
      while (Date.now() < endAt - 3_000) {
        // Ahead of the least dealt other kind: let the other lane catch up first.
        if (wipesAhead()) {
          await sleep(250);
          continue;
        }
        const none = await noneRebuilding();
        if (none) rebuildSince = undefined;
        const n = none ? pickNode(wipeRng) : undefined;
        if (n === undefined) {
          await sleep(250);
          continue;
        }
        await processFault('wipe', n, wipeRng);
        rebuildSince = Date.now();
        await sleep(100 + wipeRng.int(300));
      }
    };
    /** Whether `n` says it is being rebuilt (being sent its ranges after a wipe), or else a node that answers says so of it. */
    const rebuilding = async (n: NodeProc): Promise<boolean> => {
      const own = await statusOf(n.address).catch(() => undefined);
      if (own?.members.some((x) => x.id === `n${n.i + 1}` && x.lifecycle.includes('rebuilding')) === true) return true;
      for (const m of nodes) {
        if (busy.has(m.i)) continue;
        const st = await statusOf(m.address).catch(() => undefined);
        if (st !== undefined) return st.members.some((x) => x.id === `n${n.i + 1}` && x.lifecycle.includes('rebuilding'));
      }
      return false;
    };
    const otherLane = async (): Promise<void> => {
      if (kinds.process.every((k) => k === 'wipe')) return;
      await sleep(2_000);
      while (Date.now() < endAt - 3_000) {
        // A rebuild needs every peer to stream once, and a restarted peer waits a few seconds
        // first: while wipes are behind, once a rebuild has run REBUILD_GRACE_MS the other
        // process faults hold off until it is done, so every kind keeps its share of the run.
        const holdOff = rebuildSince !== undefined && Date.now() - rebuildSince > REBUILD_GRACE_MS && wipesBehind();
        const n = holdOff ? undefined : pickNode(otherRng);
        if (n === undefined) {
          await sleep(100);
          continue;
        }
        // Taken at once, so the wipe lane cannot pick it while we look. A node being rebuilt is
        // left alone: a restart starts its rebuild over, and wipes wait for it (its peers are
        // faulted meanwhile, and any of them down holds the rebuild up).
        busy.add(n.i);
        const skip = await rebuilding(n);
        busy.delete(n.i);
        if (skip) {
          await sleep(100);
          continue;
        }
        await processFault(otherDeck.next(), n, otherRng);
        await sleep(100 + otherRng.int(300));
      }
    };
    const nextNetwork = dealer(kinds.network, rng).next;
    const networkFaults = async (): Promise<void> => {
      if (net === undefined) return;
      await sleep(2_500);
      while (Date.now() < endAt - 3_000 && kinds.network.length > 0) {
        const kind = nextNetwork();
        const lasts = 500 + rng.int(1_500);
        faults[kind] = (faults[kind] ?? 0) + 1;
        const a = rng.int(o.nodes);
        if (kind === 'isolate') await net.isolate(a);
        else if (kind === 'one-way') await net.cut(a, (a + 1 + rng.int(o.nodes - 1)) % o.nodes);
        else {
          const order = rng.shuffle(nodes.map((n) => n.i));
          const half = Math.floor(o.nodes / 2);
          await net.split(order.slice(0, half), order.slice(half));
        }
        o.log(`fault ${kind} (n${a + 1}) for ${lasts} ms`);
        await sleep(lasts);
        await net.heal();
        await sleep(200 + rng.int(600));
      }
    };
    const load = [...Array.from({ length: o.writers }, (_, w) => writer(w)), ...Array.from({ length: o.readers }, (_, r) => reader(r))];
    await Promise.all([wipeLane(), otherLane(), networkFaults(), sleep(o.durationS * 1000).then(() => (running = false))]);
    running = false;
    await Promise.all(load);

    // --- heal and check
    await net?.heal();
    for (const n of nodes) {
      n.proc?.kill('SIGCONT');
      if (n.proc === undefined) await start(n);
    }
    o.log('healed; waiting for the replicas to agree');
    const level = await awaitLevel(
      series.map((s) => s.id),
      {
        replicasOf: (id) => (client as TallyClient).replicasOf(id).map((r) => r.address),
        // Every node answers, knows every member, and none is being rebuilt (a node being rebuilt
        // answers a read at `one` from another replica, so its own copy would not be compared).
        ready: async () => {
          const st = await Promise.all(nodes.map((n) => statusOf(n.address)));
          return st.every((x) => x.members.length === o.nodes && x.members.every((m) => m.status === 'up' && !m.lifecycle.includes('rebuilding')));
        },
        readOne: (address, id) => directRead(address, id, Consistency.ONE, window),
        readAll: (id) => (client as TallyClient).getViewsCount(id, window.from, window.to, { consistency: Consistency.ALL }),
      },
      { rf: RF, timeoutMs: 120_000, finalReadMs: 30_000, pauseMs: 1_000 },
    );
    const convergeMs = level.levelMs;
    let lost = 0;
    let over = 0;
    let unread = 0;
    for (const s of series) {
      const v = level.finals.get(s.id);
      if (v === undefined) {
        unread++;
        continue;
      }
      if (v < s.acked) {
        lost += s.acked - v;
        violate(`${s.id}: ${v} after healing, but ${s.acked} were acknowledged`);
      }
      if (v > s.attempted) {
        over += v - s.attempted;
        violate(`${s.id}: ${v} after healing, but only ${s.attempted} were attempted`);
      }
    }
    // Always in the summary, past the 20 others.
    if (convergeMs === null) violations.push(`the replicas of ${level.differing} series still differ 120 s after healing`);
    if (unread > 0) violations.push(`${unread} series could not be read at all after healing: their counts were not checked`);
    violations.push(...vacuous(increments.acknowledged, reads['ok'] ?? 0));
    return {
      seed: o.seed,
      nodes: o.nodes,
      durationS: o.durationS,
      network,
      writes,
      reads,
      increments,
      faults,
      lost,
      overCounted: over,
      readsOutOfBounds,
      replicasDiffering: level.differing,
      convergeMs,
      violations,
      ok: lost === 0 && over === 0 && readsOutOfBounds === 0 && convergeMs !== null && violations.length === 0,
    };
  } finally {
    await client?.close();
    for (const n of nodes) await kill(n);
    await net?.teardown();
    await rm(dir, { recursive: true, force: true });
    journal?.end();
  }

  async function directRead(address: string, id: string, cl: Consistency, w = { from: 0, to: Date.now() + DAY_MS }): Promise<number> {
    const c = await TallyClient.connect({ nodes: [address], routing: 'direct', timeoutMs: 5_000, maxRetries: 2 });
    try {
      return await c.getViewsCount(id, w.from, w.to, { consistency: cl });
    } finally {
      await c.close();
    }
  }
}

async function waitUntil(ms: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await sleep(500);
  }
  throw new Error(`the cluster did not come up within ${ms} ms: ${(last as Error)?.message ?? ''}`);
}

export function formatSummary(s: ChaosSummary): string {
  const kv = (o: Record<string, number>): string => Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  return [
    `chaos seed ${s.seed}: ${s.nodes} nodes, ${s.durationS} s; ${s.network}`,
    `writes: ${kv(s.writes)}`,
    `reads:  ${kv(s.reads)}`,
    `increments: attempted ${s.increments.attempted}, acknowledged ${s.increments.acknowledged}, refused ${s.increments.refused}, unknown ${s.increments.unknown}`,
    `faults: ${kv(s.faults)}`,
    `lost ${s.lost}, over-counted ${s.overCounted}, reads out of bounds ${s.readsOutOfBounds}, converged ${s.convergeMs === null ? 'NOT' : `in ${s.convergeMs} ms`}`,
    ...s.violations.map((v) => `violation: ${v}`),
    s.ok ? 'OK' : `FAILED: replay the fault schedule with --seed ${s.seed}`,
  ].join('\n');
}
