/**
 * `tally cluster`: a local cluster of real node processes on one machine, for trying Tally out
 * and for tests. Node i is `n{i}` on base-port + i - 1, zones spread round-robin over z1..z3, the
 * first two nodes are the seeds. It prints the addresses and the status table once every node
 * sees every other up, passes the nodes' output through with a prefix, and on Ctrl-C (or
 * SIGTERM) stops every node cleanly.
 */
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, formatAddress, isErrorCode, MAX_REPLICATION_FACTOR, TallyError } from '../protocol/index.js';
import type { NodeStatus } from '../protocol/status.js';
import { formatStatus } from './status-format.js';
import { TallyClient } from './tally-client.js';
import { withoutUndefinedAuth, type ConnectionAuth } from './connection.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '../scripts/cli.js');
/** Zones of a local cluster: three, so replicas of N = 3 land in distinct zones. */
const LOCAL_ZONES = 3;
/** Most nodes a local cluster starts: every one is a full process. */
export const MAX_LOCAL_NODES = 50;
/** How long a node may take to stop cleanly before it is killed. */
const STOP_TIMEOUT_MS = 10_000;
/** How often the nodes are asked for their status while waiting for them to agree. */
const AGREE_POLL_MS = 200;
/** Timeout of one status request. */
const STATUS_TIMEOUT_MS = 3_000;
/** How long `tally cluster` waits for every node to see every other up. */
export const AGREE_TIMEOUT_MS = 30_000;

export interface LocalClusterOptions {
  nodes: number;
  basePort: number;
  host: string;
  dataDir: string;
  fsync: boolean;
  /** Replication factor; default the smaller of 3 and the node count. */
  rf?: number;
  /** Days minute and hour buckets are kept (0: for ever); the nodes' default if not set. */
  retention?: { minuteDays: number; hourDays: number };
  /** Start the nodes with --shorten-retention. */
  shortenRetention?: boolean;
  /** Given to every node (by its environment) as its cluster secret. */
  clusterSecret?: string;
  /** Given to every node (by its environment) as its client token, and shown by this process when it asks them. */
  clientToken?: string;
  /** How long to wait for every node to see every other up. */
  agreeTimeoutMs: number;
  /**
   * Each node's JavaScript heap limit in MiB (`--max-old-space-size`; the CLI gives the one the
   * default memory budget leaves, node/memory.ts); undefined: V8's own, several GiB, which V8 lets
   * grow to several times what is live before it collects hard.
   */
  heapMB?: number;
  /** Added to every node's environment (the CLI's memory settings: node/memory.ts `memoryEnv`). */
  env?: Record<string, string>;
}

/** Characters of a failed node's error output kept for the reason given. */
const MAX_REASON_CHARS = 4_096;

/**
 * Why a node exited before it was ready, with the code of its own `error CODE: message` line (a
 * port in use is IN_USE here too), or INTERNAL with what it printed when it gave none.
 */
function startFailure(id: string, exit: number | string | null, errors: string, seen: string): TallyError {
  const line = errors.split('\n').reverse().find((l) => /^error [A-Z_]+: /.test(l));
  const m = line === undefined ? null : /^error ([A-Z_]+): (.*)$/.exec(line);
  if (m !== null && isErrorCode(m[1])) return new TallyError(m[1], `node ${id} could not start: ${m[2]}`);
  const said = `${errors}${seen}`.trim();
  return new TallyError(ErrorCode.INTERNAL, `node ${id} exited (${exit}) before it was ready${said === '' ? ', saying nothing' : `:\n${said}`}`);
}

interface Child {
  id: string;
  address: string;
  proc: ChildProcess;
  ready: Promise<void>;
}

function prefixLines(id: string, out: NodeJS.WritableStream): (d: Buffer) => void {
  let partial = '';
  return (d) => {
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) out.write(`[${id}] ${l}\n`);
  };
}

export interface LocalCluster {
  addresses: string[];
  /** Stops every node cleanly (SIGTERM, then SIGKILL after STOP_TIMEOUT_MS). */
  stop(): Promise<void>;
  /** Whether `stop` has been called. */
  readonly stopping: boolean;
}

/**
 * Starts the nodes of a local cluster and waits until each sees every other up; returns the
 * addresses, the first node's status, and how to stop them. `quiet`: the nodes' output is not
 * passed through (benchmarks).
 */
export async function startLocalCluster(o: LocalClusterOptions & { quiet?: boolean }): Promise<{ cluster: LocalCluster; status: NodeStatus }> {
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > MAX_LOCAL_NODES) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `--nodes must be an integer in [1, ${MAX_LOCAL_NODES}], got ${o.nodes}`);
  }
  if (!Number.isInteger(o.basePort) || o.basePort < 1 || o.basePort + o.nodes - 1 > 65_535) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `--base-port must be an integer from 1 to ${65_536 - o.nodes} for ${o.nodes} node${o.nodes === 1 ? '' : 's'}, got ${o.basePort}`);
  }
  // More replicas than nodes: no key could have them all, and every quorum write would be refused.
  if (o.rf !== undefined && !(Number.isInteger(o.rf) && o.rf >= 1 && o.rf <= o.nodes)) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `--rf must be an integer from 1 to the number of nodes (${o.nodes}), got ${o.rf}`);
  }
  // Past the most a node takes: every node would refuse it, after the cluster had begun to start.
  if (o.rf !== undefined && o.rf > MAX_REPLICATION_FACTOR) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `--rf must be an integer from 1 to ${MAX_REPLICATION_FACTOR} (the most replicas Tally takes), got ${o.rf}`);
  }
  const addresses = Array.from({ length: o.nodes }, (_, i) => formatAddress(o.host, o.basePort + i));
  // Nodes that need client tokens need a cluster secret too (peers would otherwise skip the token):
  // one made for this run when none is given.
  const clusterSecret = o.clusterSecret ?? (o.clientToken === undefined ? undefined : randomBytes(16).toString('hex'));
  const seeds = addresses.slice(0, Math.min(2, o.nodes)).join(',');
  const children: Child[] = addresses.map((address, i) => {
    const id = `n${i + 1}`;
    // The heap limit given here, so the node's process is this child (no second one to set it);
    // none given: none at all (`--memory-mb 0`).
    const args = [...(o.heapMB === undefined ? [] : [`--max-old-space-size=${o.heapMB}`]), CLI, 'start', ...(o.heapMB === undefined ? ['--memory-mb', '0'] : []), '--host', o.host, '--port', String(o.basePort + i), '--data', join(o.dataDir, id)];
    args.push('--id', id, '--zone', `z${(i % LOCAL_ZONES) + 1}`, '--seeds', seeds, '--rf', String(o.rf ?? Math.min(3, o.nodes)), ...(o.fsync ? ['--fsync'] : []));
    if (o.retention !== undefined) args.push('--minute-retention-days', String(o.retention.minuteDays), '--hour-retention-days', String(o.retention.hourDays));
    if (o.shortenRetention === true) args.push('--shorten-retention');
    // Each node in its own process group: Ctrl-C reaches only this process, which stops the
    // nodes with one SIGTERM each (a second signal would make a node exit without flushing).
    // Its stdin is a pipe from this process: however this process ends, the pipe closes and
    // the node stops cleanly rather than run on as an orphan.
    args.push('--stop-on-stdin-close');
    // The nodes' logs are passed through: readable if this process writes to a terminal.
    args.push('--log-format', process.stdout.isTTY === true ? 'pretty' : 'json');
    // The nodes get their settings from these flags alone: a TALLY_* variable meant for this
    // command (TALLY_CONFIG, TALLY_ADVERTISE, TALLY_TLS_CERT…) would give every node the same one.
    const env = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TALLY_'))), ...o.env };
    // Secrets by the environment, not the command line, where any user's `ps` would show them.
    if (clusterSecret !== undefined) env.TALLY_CLUSTER_SECRET = clusterSecret;
    if (o.clientToken !== undefined) env.TALLY_CLIENT_TOKEN = o.clientToken;
    const proc = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env });
    const ready = new Promise<void>((resolve, reject) => {
      let seen = '';
      let errors = '';
      const onData = (d: Buffer): void => {
        seen += d.toString();
        if (/ ready on /.test(seen)) {
          proc.stdout?.off('data', onData);
          proc.stderr?.off('data', onErrors);
          proc.off('exit', onExit);
          resolve();
        }
      };
      const onErrors = (d: Buffer): void => {
        if (errors.length < MAX_REASON_CHARS) errors += d.toString();
      };
      const onExit = (code: number | null, signal: string | null): void => reject(startFailure(id, code ?? signal, errors, seen));
      proc.stdout?.on('data', onData);
      proc.stderr?.on('data', onErrors);
      proc.once('exit', onExit);
    });
    if (o.quiet === true) {
      proc.stdout?.resume();
      proc.stderr?.resume();
    } else {
      proc.stdout?.on('data', prefixLines(id, process.stdout));
      proc.stderr?.on('data', prefixLines(id, process.stderr));
    }
    return { id, address, proc, ready };
  });

  // The terminal may be gone (SIGHUP): writing to it must not crash this process mid-stop.
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});
  const cluster = {
    addresses,
    stopping: false,
    stop: async (): Promise<void> => {
      cluster.stopping = true;
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.proc.exitCode !== null || c.proc.signalCode !== null) return resolve();
              c.proc.once('exit', () => resolve());
              c.proc.kill('SIGTERM');
              setTimeout(() => c.proc.kill('SIGKILL'), STOP_TIMEOUT_MS).unref();
            }),
        ),
      );
    },
  };
  for (const c of children) {
    c.proc.once('exit', (code, signal) => {
      if (!cluster.stopping) process.stderr.write(`node ${c.id} exited (${code ?? signal}); the others keep running\n`);
    });
  }
  try {
    await Promise.all(children.map((c) => c.ready));
    const status = await waitForAgreement(addresses, o.agreeTimeoutMs, o.clientToken === undefined ? {} : { token: o.clientToken });
    return { cluster, status };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

export async function runLocalCluster(o: LocalClusterOptions): Promise<void> {
  let cluster: LocalCluster | undefined;
  const onSignal = (): void => {
    // Still starting: exit; each node's stdin closes with us and it stops cleanly by itself.
    if (cluster === undefined) process.exit(130);
    if (cluster.stopping) return;
    process.stdout.write('stopping the local cluster…\n');
    void cluster.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  watchParent(onSignal);
  const started = await startLocalCluster(o);
  cluster = started.cluster;
  process.stdout.write(
    `\nTally local cluster of ${o.nodes} node${o.nodes === 1 ? '' : 's'} is up: ${cluster.addresses.join(' ')}\n` +
      `data in ${o.dataDir}; try: npx tally count video42 --n 5 && npx tally get video42\n\n` +
      `${formatStatus(started.status)}\n\nCtrl-C stops every node cleanly.\n`,
  );
}

/** How often `tally cluster` looks whether the process that started it is still there. */
const PARENT_POLL_MS = 500;

/**
 * Calls `onGone` once the process that started this one has gone, however it went (SIGKILL
 * included): this process is then handed to another parent. `npm start` runs us under a shell
 * that does not pass signals on, so a SIGTERM or SIGINT to npm ends npm and the shell and would
 * leave this process and its nodes running on as orphans.
 */
function watchParent(onGone: () => void): void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    process.stdout.write('the process that started this cluster has gone; ');
    onGone();
  }, PARENT_POLL_MS);
  timer.unref();
}

/** Polls every node until each sees every member up, none still being sent its ranges, and all compute the same ring; returns the first node's status. */
async function waitForAgreement(addresses: string[], timeoutMs: number, auth: ConnectionAuth): Promise<NodeStatus> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const statuses = await Promise.all(addresses.map((a) => statusOf(a, auth).catch(() => undefined)));
    const agreed = statuses.every(
      (s) => s !== undefined && s.members.length === addresses.length && s.health.startsWith('healthy'),
    );
    if (agreed) return statuses[0] as NodeStatus;
    last = statuses.map((s, i) => `${addresses[i]}: ${s === undefined ? 'no answer' : `${s.members.filter((m) => m.status === 'up').length} up`}`).join(', ');
    if (Date.now() > deadline) {
      throw new TallyError(ErrorCode.TIMEOUT, `the nodes did not agree on the membership within ${timeoutMs} ms (${last})`);
    }
    await new Promise((r) => setTimeout(r, AGREE_POLL_MS));
  }
}

/** The status report of the node at `address`; `auth`: the token and TLS settings the node needs. */
export async function statusOf(address: string, auth: ConnectionAuth = {}): Promise<NodeStatus> {
  // Direct: this node's own view, never another member's in its place should it stop meanwhile.
  const client = await TallyClient.connect({ nodes: [address], routing: 'direct', timeoutMs: STATUS_TIMEOUT_MS, maxRetries: 0, ...withoutUndefinedAuth(auth) });
  try {
    return (await client.status()) as NodeStatus;
  } finally {
    await client.close();
  }
}

