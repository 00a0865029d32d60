#!/usr/bin/env node
/**
 * The `tally` command: start a node, count events, read counts. Errors print
 * `error CODE: message` on stderr and exit with a documented code (EXIT below); results go to
 * stdout, bare, so scripts can use them. Every option may also come from the environment
 * (`TALLY_PORT` for --port) and from a JSON file (`--config tally.json`): flags win over the
 * environment, which wins over the file, which wins over the defaults. The flags here are a
 * contract (scripts and checks depend on them): add, never rename.
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import yargs, { type Arguments, type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
// Only what every command needs is imported here; the client, the node and the rest load when a
// command asks for them. `tally start` runs the node in a child process given its heap limit, and
// waits for it: that process stays smaller (63 MB resident here, against 74 with the client loaded).
import { ErrorCode, TallyError } from '../protocol/errors.js';
import { MAX_EVENT_COUNT, MAX_EVENTS_PER_BATCH, MAX_RETENTION_DAYS } from '../protocol/limits.js';
import { Consistency } from '../protocol/messages.js';
import { looksLikeCompactDate, parseTimeText } from '../protocol/validate.js';
import type { EventInput, TallyClient } from '../client/tally-client.js';
import type { ConnectionAuth } from '../client/connection.js';
import type { NodeStatus } from '../protocol/status.js';
import { defaultRetention, validateRetention, type Retention } from '../cluster/retention.js';
import { LOG_LEVELS, LogFormat, type LogLevel } from '../node/log-options.js';
import { DEFAULT_MEMORY_MB, heapLimitGiven, heapMBOf, memoryEnv, MIN_HEAP_MB, NATIVE_RESERVE_MB, runWithHeap } from '../node/memory.js';

const DEFAULT_NODE = '127.0.0.1:7401';
/**
 * Most events one `tally count` records: a batch's most events, each of the largest count. Past it
 * the command would build millions of events and time out with their outcome unknown.
 */
const MAX_COUNT_N = MAX_EVENTS_PER_BATCH * MAX_EVENT_COUNT;

/** Exit codes, documented in the README (CLI). */
export const EXIT = {
  OK: 0,
  /** The command failed: a node down, a quorum not reached, a port in use… (`error CODE: …`). */
  FAILED: 1,
  /** The command line, environment or configuration file is wrong, or a value over a limit (`error BAD_REQUEST: …`, `error TOO_LARGE: …`). */
  USAGE: 2,
  /** `tally status`: the cluster answered, and is degraded (a member down, a ring not agreed…). */
  DEGRADED: 3,
} as const;


/**
 * TIME on the command line: epoch milliseconds, or an ISO-8601 date or date-time. A date-time
 * without a zone is read as UTC, as the buckets are, never in the local time zone: 10:00 means
 * 10:00Z wherever the command runs.
 */
export function parseTime(text: string, what: string): number {
  const s = String(text).trim();
  const ms = parseTimeText(s);
  if (!Number.isFinite(ms)) {
    const hint = looksLikeCompactDate(s) ? ` (a date? write it with dashes: ${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6)})` : '';
    throw new TallyError(ErrorCode.BAD_REQUEST, `${what} must be epoch milliseconds or an ISO-8601 date or date-time (2026-11-26, 2026-11-26T10:00, read as UTC, or with a zone: 2026-11-26T10:00+01:00), got ${JSON.stringify(s)}${hint}`);
  }
  return ms;
}

/** This package's version, from its package.json (two levels up from dist/scripts/). */
function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * A configuration file (`--config`): a JSON object of options by their flag names, e.g.
 * `{ "port": 7401, "data": "./data/n1", "seeds": ["10.0.0.1:7401"] }`.
 */
function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `cannot read the configuration file ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (err) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `the configuration file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new TallyError(ErrorCode.BAD_REQUEST, `the configuration file ${path} must hold a JSON object of options, e.g. {"port": 7401}`);
  const scalar = (v: unknown): boolean => typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
  for (const [k, v] of Object.entries(o)) {
    if (scalar(v) || (Array.isArray(v) && v.every((x) => typeof x === 'string' || typeof x === 'number'))) continue;
    throw new TallyError(ErrorCode.BAD_REQUEST, `the configuration file ${path}: ${JSON.stringify(k)} must be a string, a number, true or false, or a list of strings or numbers, got ${JSON.stringify(v)}`);
  }
  configGiven = { path, values: o as Record<string, unknown> };
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : v]));
}

/** The options of the --config file read, as written: a switch's value is checked against them. */
let configGiven: { path: string; values: Record<string, unknown> } = { path: '', values: {} };

/** The text a number option was given as, to name it in a message rather than NaN. */
function rawText(argv: string[], name: string): string {
  const flag = `--${name}`;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === flag) return JSON.stringify(argv[i + 1] ?? '');
    if (argv[i]?.startsWith(`${flag}=`)) return JSON.stringify(argv[i]?.slice(flag.length + 1));
  }
  const env = process.env[`TALLY_${name.replace(/-/g, '_').toUpperCase()}`];
  return env === undefined ? 'something else' : `${JSON.stringify(env)} (from TALLY_${name.replace(/-/g, '_').toUpperCase()})`;
}

/** The retention the user set, the other part at its default; undefined when neither was set. */
function retentionOf(minuteDays: number | undefined, hourDays: number | undefined): Retention | undefined {
  if (minuteDays === undefined && hourDays === undefined) return undefined;
  const d = defaultRetention();
  const r = { minuteDays: minuteDays ?? d.minuteDays, hourDays: hourDays ?? d.hourDays };
  // The rules of validateRetention, in the words of the flags the user gave.
  const bad = (m: string): TallyError => new TallyError(ErrorCode.BAD_REQUEST, m);
  for (const [flag, days] of [['--minute-retention-days', r.minuteDays], ['--hour-retention-days', r.hourDays]] as const) {
    if (!Number.isSafeInteger(days) || days < 0 || days > MAX_RETENTION_DAYS) throw bad(`${flag} must be a whole number of days from 0 (for ever) to ${MAX_RETENTION_DAYS}, got ${days}`);
  }
  if (r.minuteDays === 0 && r.hourDays !== 0) throw bad('--minute-retention-days 0 keeps minutes for ever, and hours must then be kept for ever too: add --hour-retention-days 0');
  if (r.hourDays !== 0 && r.hourDays < r.minuteDays) throw bad(`--hour-retention-days must be 0 (for ever) or at least --minute-retention-days (${r.minuteDays}), got ${r.hourDays}`);
  return validateRetention(r);
}

function fail(err: unknown): never {
  // yargs reports what it finds wrong in the command line or the --config file as a YError (the
  // file's own TallyError comes back as one, its code lost): bad usage, not a failure of Tally.
  const usage = err instanceof Error && err.name === 'YError';
  const code = err instanceof TallyError ? err.code : usage ? ErrorCode.BAD_REQUEST : ErrorCode.INTERNAL;
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`error ${code}: ${message}\n`);
  process.exit(code === ErrorCode.BAD_REQUEST || code === ErrorCode.TOO_LARGE ? EXIT.USAGE : EXIT.FAILED);
}

/** Polls `check` every second, printing its line when it changes, until it says done; TIMEOUT after `timeoutMs`. */
/**
 * How long a decommissioning node may be silent while its peers do not yet see it removed: it says
 * `removed` and waits for every live peer to know before it stops, so a silence longer than a few
 * gossip rounds is a crash.
 */
const DECOMMISSION_SILENCE_MS = 15_000;

async function waitRingChange(timeoutMs: number, check: () => Promise<{ done: boolean; line: string }>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const { done, line } = await check();
    if (line !== last) process.stdout.write(`${line}\n`);
    last = line;
    if (done) return;
    if (Date.now() > deadline) throw new TallyError(ErrorCode.TIMEOUT, `not done within ${timeoutMs} ms; it goes on: tally status shows where it stands`);
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

/** The token and TLS settings client commands show the nodes (`--client-token`, `--tls`, `--tls-ca`). */
let clientAuth: ConnectionAuth = {};

const clientAuthOptions = {
  'client-token': { type: 'string', describe: 'the token the nodes need (or TALLY_CLIENT_TOKEN)' },
  tls: { type: 'boolean', describe: 'speak TLS to the nodes, trusting the system\'s CAs' },
  'tls-ca': { type: 'string', describe: 'speak TLS to the nodes, trusting this CA (PEM file)' },
} as const;

/** Sets `clientAuth` from a client command's options; a CA file that cannot be read is BAD_REQUEST. */
function setClientAuth(a: { 'client-token'?: string; tls?: boolean; 'tls-ca'?: string }): void {
  let tls: ConnectionAuth['tls'];
  if (a['tls-ca'] !== undefined) {
    try {
      tls = { ca: readFileSync(a['tls-ca']) };
    } catch (err) {
      throw new TallyError(ErrorCode.BAD_REQUEST, `--tls-ca ${a['tls-ca']} cannot be read: ${(err as Error).message}`);
    }
  } else if (a.tls === true) {
    tls = true;
  }
  clientAuth = { token: a['client-token'], tls };
}

async function withClient<T>(node: string, fn: (c: TallyClient) => Promise<T>, consistency?: string): Promise<T> {
  // The CLI asks the node it is given (it coordinates, or forwards to a replica), so
  // `--consistency one --node X` reads what X holds.
  const { TallyClient } = await import('../client/tally-client.js');
  const { withoutUndefinedAuth } = await import('../client/connection.js');
  const client = await TallyClient.connect({
    nodes: node.split(',').map((s) => s.trim()).filter(Boolean),
    consistency: consistency as Consistency | undefined,
    routing: 'direct',
    ...withoutUndefinedAuth(clientAuth),
  });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

const memoryOption = {
  type: 'number',
  describe: `resident memory to keep each node under, MiB: each runs with the JavaScript heap limit this leaves (${NATIVE_RESERVE_MB} MiB less); 0: V8's own limit [${DEFAULT_MEMORY_MB}]`,
} as const;
const nodeOption = { type: 'string', default: DEFAULT_NODE, describe: 'node to ask (it coordinates), host:port[,host:port to fall back on]' } as const;
const consistencyOption = {
  type: 'string',
  choices: Object.values(Consistency),
  default: Consistency.QUORUM,
  describe: 'replicas that must answer: one, quorum (a majority of the replication factor) or all',
} as const;

/** A node heap limit: below MIN_HEAP_MB a node under full load cannot hold its own bounds (slots awaiting a commit, filters). */
function checkHeapMB(v: number | undefined): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= MIN_HEAP_MB && v <= 65_536)) throw new TallyError(ErrorCode.BAD_REQUEST, `--heap-mb must be a whole number of MiB from ${MIN_HEAP_MB} to 65536, not ${String(v)}`);
}

async function main(argv: string[]): Promise<void> {
  const cli: Argv = yargs(argv)
    .scriptName('tally')
    .usage('$0 <command> [options]\n\nTally counts events per item over time, replicated and masterless.')
    .command(
      'start',
      'run a node in the foreground',
      (y) =>
        y
          .option('port', { type: 'number', describe: 'port for clients and peers [7401]' })
          .option('host', { type: 'string', describe: 'address to listen on [127.0.0.1]' })
          .option('advertise', { type: 'string', describe: 'host:port peers and clients should use (default host:port)' })
          .option('data', { type: 'string', describe: 'data directory (identity and LevelDB) [./data]' })
          .option('id', { type: 'string', describe: 'node id (default: the one in the data directory, or a new one)' })
          .option('zone', { type: 'string', describe: 'zone (data centre, rack) for replica placement [z1]' })
          .option('seeds', { type: 'string', describe: 'host:port,host:port of nodes to join through' })
          .option('cluster', { type: 'string', describe: 'cluster name; peers must share it [tally]' })
          .option('rf', { type: 'number', describe: 'replication factor, the same on every member [3]' })
          .option('cluster-secret', { type: 'string', describe: 'secret every member proves to its peers (or TALLY_CLUSTER_SECRET); needed beyond loopback' })
          .option('insecure', { type: 'boolean', describe: 'listen beyond loopback without a cluster secret' })
          .option('fsync', { type: 'boolean', describe: 'fsync every group commit' })
          .option('memory-mb', { type: 'number', describe: `resident memory to keep the node under, MiB: it runs with the JavaScript heap limit this leaves (${NATIVE_RESERVE_MB} MiB less) unless given one (--max-old-space-size, NODE_OPTIONS); 0: V8's own limit [${DEFAULT_MEMORY_MB}]` })
          .option('rebuild', { type: 'boolean', describe: 'move a lost or damaged database aside and come back as a new actor that the replicas refill' })
          .option('repair-interval-ms', { type: 'number', describe: 'start an anti-entropy comparison with the next peer this often; 0: only on `tally repair` [60000]' })
          .option('repair-slots-per-second', { type: 'number', describe: 'pace of each of anti-entropy\'s walks of the store, slots a second (a node walks for up to three comparisons at once) [100000]' })
          .option('minute-retention-days', { type: 'number', describe: 'keep minute buckets this many days after their day ends, the same on every member; 0: for ever [14]' })
          .option('hour-retention-days', { type: 'number', describe: 'keep hour buckets this many days after their day ends, the same on every member; 0: for ever [400]' })
          .option('shorten-retention', { type: 'boolean', describe: 'start with a shorter retention than the data was kept under, deleting the days past it (refused without it)' })
          .option('client-token', { type: 'string', describe: 'a read-write token every client must show (or TALLY_CLIENT_TOKEN); without it and --client-token-file, clients need none' })
          .option('client-token-file', { type: 'string', describe: 'JSON file of client tokens: { "readWrite": [...], "readOnly": [...] }' })
          .option('tls-cert', { type: 'string', describe: 'PEM certificate: serve clients and peers over TLS (wss://, https://) and dial peers over TLS' })
          .option('tls-key', { type: 'string', describe: 'PEM private key of --tls-cert' })
          .option('tls-ca', { type: 'string', describe: 'PEM CA that peers\' certificates must chain to [the system\'s CAs]' })
          .option('max-connections', { type: 'number', describe: 'open sockets of every kind, fitted under the open-file limit [1024]' })
          .option('max-connections-per-address', { type: 'number', describe: 'open sockets from one source address (an IPv6 /64 counts as one) [128]' })
          .option('idle-timeout-ms', { type: 'number', describe: 'close a client connection idle this long; 0: never [300000]' })
          .option('handshake-timeout-ms', { type: 'number', describe: 'a new socket must send its first request or upgrade within this [5000]' })
          .option('hello-timeout-ms', { type: 'number', describe: 'a WebSocket must say hello within this [5000]' })
          .option('frame-timeout-ms', { type: 'number', describe: 'a frame or request body begun must arrive whole within this [10000]' })
          .option('max-partial-mb', { type: 'number', describe: 'MiB of frames and bodies received in part, all connections together [64]' })
          .option('log-level', { type: 'string', choices: LOG_LEVELS, describe: 'least level logged [info]' })
          .option('log-format', { type: 'string', choices: Object.values(LogFormat), describe: 'log records as JSON lines, or readable lines [pretty on a terminal, json otherwise]' })
          .option('clock-offset-ms', { type: 'number', hidden: true, describe: 'fault tests: run this node with its clock off by this much' })
          .option('stop-on-stdin-close', { type: 'boolean', default: false, hidden: true }),
      async (a) => {
        const heapMB = heapMBOf(a['memory-mb'] ?? DEFAULT_MEMORY_MB);
        if (heapMB !== undefined && !heapLimitGiven()) {
          // The heap's limit is fixed when a process starts: the node runs as a child given it.
          process.exitCode = await runWithHeap(heapMB);
          return;
        }
        const { startNodeProcess } = await import('../node/main.js');
        // Only what the user set: every default lives in one place (node/config.ts and the configs it composes).
        await startNodeProcess({
          port: a.port,
          host: a.host,
          advertise: a.advertise,
          dataDir: a.data,
          id: a.id,
          zone: a.zone,
          cluster: a.cluster,
          seeds: a.seeds === undefined ? undefined : a.seeds.split(',').map((s) => s.trim()).filter(Boolean),
          clusterSecret: a['cluster-secret'],
          insecure: a.insecure,
          clockOffsetMs: a['clock-offset-ms'],
          rebuild: a.rebuild,
          shortenRetention: a['shorten-retention'],
          clientToken: a['client-token'],
          clientTokenFile: a['client-token-file'],
          tlsCert: a['tls-cert'],
          tlsKey: a['tls-key'],
          tlsCa: a['tls-ca'],
          maxConnections: a['max-connections'],
          maxConnectionsPerAddress: a['max-connections-per-address'],
          idleTimeoutMs: a['idle-timeout-ms'],
          handshakeTimeoutMs: a['handshake-timeout-ms'],
          helloTimeoutMs: a['hello-timeout-ms'],
          frameTimeoutMs: a['frame-timeout-ms'],
          maxPartialBytes: a['max-partial-mb'] === undefined ? undefined : Math.round(a['max-partial-mb'] * 1024 * 1024),
          replication: {
            rf: a.rf,
            fsync: a.fsync,
            repairIntervalMs: a['repair-interval-ms'],
            repairSlotsPerSecond: a['repair-slots-per-second'],
            retention: retentionOf(a['minute-retention-days'], a['hour-retention-days']),
          },
        }, { stopOnStdinClose: a['stop-on-stdin-close'], level: a['log-level'] as LogLevel | undefined, format: a['log-format'] as LogFormat | undefined });
      },
    )
    .command(
      'count <videoId>',
      'record events and wait until they are acknowledged',
      (y) =>
        y
          .positional('videoId', { type: 'string', demandOption: true })
          .option('type', { type: 'string', default: 'view', describe: 'event type' })
          .option('n', { type: 'number', default: 1, describe: 'how many events' })
          .option('value', { type: 'number', default: 1, describe: 'value of each event (watch time, latency…)' })
          .option('at', { type: 'string', describe: 'event time, epoch ms or ISO-8601 (default now)' })
          .option('consistency', consistencyOption)
          .option('node', nodeOption)
          .options(clientAuthOptions),
      async (a) => {
        const n = a.n;
        if (!Number.isInteger(n) || n < 1 || n > MAX_COUNT_N) throw new TallyError(ErrorCode.BAD_REQUEST, `--n must be an integer from 1 to ${MAX_COUNT_N}, got ${n}`);
        const timestamp = a.at === undefined ? Date.now() : parseTime(a.at, '--at');
        const events: EventInput[] = [];
        for (let left = n; left > 0; left -= MAX_EVENT_COUNT) {
          events.push({ videoId: a.videoId, eventType: a.type, timestamp, value: a.value, count: Math.min(left, MAX_EVENT_COUNT) });
        }
        await withClient(a.node, (c) => c.processEvents(events), a.consistency);
        process.stdout.write(`counted ${n} ${a.type} event${n === 1 ? '' : 's'} of ${a.videoId} at ${new Date(timestamp).toISOString()} (${a.consistency})\n`);
      },
    )
    .command(
      'get <videoId>',
      'print the count of a series over [from, to)',
      (y) =>
        y
          .positional('videoId', { type: 'string', demandOption: true })
          .option('type', { type: 'string', default: 'view', describe: 'event type' })
          .option('from', { type: 'string', default: '0', describe: 'range start, epoch ms or ISO-8601 (inclusive)' })
          .option('to', { type: 'string', describe: 'range end, epoch ms or ISO-8601 (exclusive; default now)' })
          .option('json', { type: 'boolean', default: false, describe: 'print {count, sum, min, max, avg, from, to, clipped}' })
          .option('consistency', consistencyOption)
          .option('node', nodeOption)
          .options(clientAuthOptions),
      async (a) => {
        const from = parseTime(a.from, '--from');
        const to = a.to === undefined ? Date.now() : parseTime(a.to, '--to');
        const stats = await withClient(a.node, (c) => c.getStats(a.videoId, a.type, from, to), a.consistency);
        process.stdout.write(a.json ? `${JSON.stringify(stats)}\n` : `${stats.count}\n`);
        if (stats.clipped && !a.json) {
          const iso = (t: number): string => `${new Date(t).toISOString().slice(0, 16)}Z`;
          process.stderr.write(`note: counted over [${iso(stats.from)}, ${iso(stats.to)}): the minute (or hour) buckets at an edge of the range asked for are past retention\n`);
        }
      },
    )
    .command(
      'status',
      'show every member of the cluster as one node sees it',
      (y) =>
        y
          .option('node', nodeOption)
          .options(clientAuthOptions)
          .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON' })
          .option('key', { type: 'string', describe: 'print the replicas of this video id instead, in the order writes try them' })
          .option('watch', { type: 'string', describe: 'print the report again every this many seconds (2 when given bare) until Ctrl-C' })
          .conflicts('key', 'watch')
          .epilogue(`exit status: ${EXIT.OK} healthy, ${EXIT.DEGRADED} degraded (a member down, being sent its ranges, or the ring not agreed), ${EXIT.FAILED} no answer`),
      async (a) => {
        if (a.key !== undefined) {
          const key = a.key;
          const replicas = await withClient(a.node, async (c) => c.replicasOf(key));
          process.stdout.write(
            a.json ? `${JSON.stringify({ key, replicas })}\n` : `${replicas.map((r) => `${r.id}\t${r.address}\t${r.up ? 'up' : 'down'}`).join('\n')}\n`,
          );
          return;
        }
        const { statusOf } = await import('../client/local-cluster.js');
        const { formatStatus } = await import('../client/status-format.js');
        const nodes = a.node.split(',').map((s) => s.trim()).filter(Boolean);
        // The listed nodes in turn, as --node says: the first that answers gives the report.
        const statusOfAny = async (): Promise<NodeStatus> => {
          let last: unknown = new TallyError(ErrorCode.BAD_REQUEST, 'name a node to ask with --node host:port');
          for (const node of nodes) {
            try {
              return await statusOf(node, clientAuth);
            } catch (err) {
              last = err;
            }
          }
          throw last;
        };
        const report = async (): Promise<void> => {
          const status = await statusOfAny();
          process.stdout.write(a.json ? `${JSON.stringify(status)}\n` : `${formatStatus(status)}\n`);
          process.exitCode = status.health.startsWith('healthy') ? EXIT.OK : EXIT.DEGRADED;
        };
        if (a.watch === undefined) return report();
        const everyS = a.watch.trim() === '' ? 2 : Number(a.watch);
        if (!(everyS >= 0.5 && everyS <= 3_600)) throw new TallyError(ErrorCode.BAD_REQUEST, `--watch must be from 0.5 to 3600 seconds, got ${JSON.stringify(a.watch)}`);
        // Until Ctrl-C: the exit status is that of the last report; a node that stops answering is shown, not fatal.
        process.once('SIGINT', () => process.exit(process.exitCode ?? EXIT.OK));
        for (;;) {
          if (!a.json && process.stdout.isTTY === true) process.stdout.write('\x1b[2J\x1b[H');
          await report().catch((err: unknown) => {
            process.stdout.write(`${new Date().toISOString()} error ${err instanceof TallyError ? err.code : ErrorCode.INTERNAL}: ${(err as Error).message}\n`);
            process.exitCode = EXIT.FAILED;
          });
          await new Promise((r) => setTimeout(r, everyS * 1_000));
        }
      },
    )
    .command(
      'repair',
      'compare a node with each of its peers now and send each other what differs (anti-entropy); print what it found',
      (y) =>
        y
          .options(clientAuthOptions)
          .option('node', { ...nodeOption, describe: 'node(s) to repair, host:port[,host:port…], one after another' })
          .option('json', { type: 'boolean', default: false, describe: 'print the figures as JSON' }),
      async (a) => {
        const nodes = a.node.split(',').map((s) => s.trim()).filter(Boolean);
        if (nodes.length === 0) throw new TallyError(ErrorCode.BAD_REQUEST, '--node names no node to repair: give host:port[,host:port…]');
        for (const node of nodes) {
          const started = Date.now();
          const r = await withClient(node, (c) => c.repair(node));
          const ms = Date.now() - started;
          process.stdout.write(
            a.json
              ? `${JSON.stringify({ node, ms, ...r })}\n`
              : `${node}: compared with ${r.sessions} of ${r.peers} peers in ${ms} ms: ${r.inSync} in sync, ${r.failed} failed; ` +
                  `${r.leavesDiffered} leaves differed; sent ${r.slotsSent} slots (${r.bytesSent} bytes)\n`,
          );
          if (r.failed > 0) process.exitCode = 1;
        }
      },
    )
    .command(
      'decommission',
      'take a live node off the ring for good: its ranges go to their new replicas first, then it stops',
      (y) =>
        y
          .options(clientAuthOptions)
          .option('node', { ...nodeOption, describe: 'the node that leaves, host:port' })
          .option('wait', { type: 'boolean', default: true, describe: 'wait until it has left, showing progress (--no-wait: return once it has begun)' })
          .option('timeout-ms', { type: 'number', default: 3_600_000, describe: 'give up waiting after this long' }),
      async (a) => {
        // The node that leaves, not one to fall back on: a list would take its first and drop the rest unsaid.
        const node = a.node.trim();
        if (node.includes(',')) throw new TallyError(ErrorCode.BAD_REQUEST, `--node names the one node that leaves, host:port; got ${JSON.stringify(a.node)}: decommission them one at a time`);
        const { statusOf } = await import('../client/local-cluster.js');
        const { ringChangeLine } = await import('../client/status-format.js');
        // Who it is and who its peers are, asked first: they are asked once it stops answering.
        const first = a.wait ? await statusOf(node, clientAuth) : undefined;
        process.stdout.write(`${await withClient(node, (c) => c.changeRing(node, 'decommission'))}\n`);
        if (first === undefined) return;
        const id = first.nodeId;
        const peers = first.members.filter((m) => m.id !== id).map((m) => m.address);
        let silentSince: number | undefined;
        await waitRingChange(a['timeout-ms'], async () => {
          const s = await statusOf(node, clientAuth).catch(() => undefined);
          if (s !== undefined) {
            silentSince = undefined;
            // A node that restarted meanwhile comes back as a normal member: its decommission is over, undone.
            const me = s.members.find((m) => m.id === id);
            if (me?.lifecycle === 'normal' && s.ringChange === undefined) {
              throw new TallyError(ErrorCode.UNAVAILABLE, `${id} is a normal member again (it restarted before it left the ring, or gave way to other ring changes begun at the same time that would have left too few members): nothing moved for good; tally decommission it again once the others are done`);
            }
            return { done: false, line: ringChangeLine(s) };
          }
          // It stops once it is off the ring and its peers know: asked of them, not taken on trust
          // from its silence (a node that crashed is silent too).
          silentSince ??= Date.now();
          for (const p of peers) {
            const ps = await statusOf(p, clientAuth).catch(() => undefined);
            const lifecycle = ps?.members.find((m) => m.id === id)?.lifecycle;
            if (lifecycle === undefined) continue;
            if (lifecycle === 'removed') return { done: true, line: `${id} has left the ring and stopped` };
            if (Date.now() - silentSince > DECOMMISSION_SILENCE_MS) {
              throw new TallyError(ErrorCode.UNAVAILABLE, `${id} stopped answering before it left the ring (${p} sees it ${lifecycle}): it crashed or was stopped; its peers hold it as leaving until it is back: start it again (a normal member then) and run tally decommission again, or take it off with tally removenode ${id}`);
            }
            return { done: false, line: `${id} is not answering; ${p} sees it ${lifecycle}` };
          }
          return { done: false, line: `neither ${node} nor its peers answer` };
        });
      },
    )
    .command(
      'removenode <id>',
      'take a dead node off the ring for good: the others re-replicate its ranges from the copies they hold',
      (y) =>
        y
          .positional('id', { type: 'string', demandOption: true, describe: 'id of the node to remove (it must be down)' })
          .options(clientAuthOptions)
          .option('node', { ...nodeOption, describe: 'a live node to drive the removal, host:port' })
          .option('wait', { type: 'boolean', default: true, describe: 'wait until it is done, showing progress (--no-wait: return once it has begun)' })
          .option('timeout-ms', { type: 'number', default: 3_600_000, describe: 'give up waiting after this long' }),
      async (a) => {
        const node = a.node.split(',')[0]?.trim() ?? DEFAULT_NODE;
        const id = String(a.id);
        if (id.trim() === '') throw new TallyError(ErrorCode.BAD_REQUEST, 'name the member to take off the ring: tally removenode <id> (its id in tally status)');
        process.stdout.write(`${await withClient(node, (c) => c.changeRing(node, 'removenode', id))}\n`);
        if (!a.wait) return;
        const { statusOf } = await import('../client/local-cluster.js');
        const { ringChangeLine } = await import('../client/status-format.js');
        await waitRingChange(a['timeout-ms'], async () => {
          const s = await statusOf(node, clientAuth);
          const removed = s.members.find((m) => m.id === id)?.lifecycle === 'removed' && s.ringChange === undefined;
          return removed ? { done: true, line: `${id} is off the ring for good; its ranges are on their new replicas` } : { done: false, line: ringChangeLine(s) };
        });
      },
    )
    .command(
      'cluster',
      'run a local cluster of real node processes; Ctrl-C stops them all',
      (y) =>
        y
          .option('nodes', { type: 'number', default: 3, describe: 'how many nodes' })
          .option('base-port', { type: 'number', default: 7401, describe: 'port of the first node; the others follow' })
          .option('host', { type: 'string', default: '127.0.0.1' })
          .option('data', { type: 'string', default: './data', describe: 'parent of the nodes\' data directories' })
          .option('fsync', { type: 'boolean', default: false, describe: 'fsync every group commit' })
          .option('rf', { type: 'number', describe: 'replication factor [the smaller of 3 and --nodes]' })
          .option('minute-retention-days', { type: 'number', describe: 'keep minute buckets this many days after their day ends; 0: for ever [14]' })
          .option('hour-retention-days', { type: 'number', describe: 'keep hour buckets this many days after their day ends; 0: for ever [400]' })
          .option('shorten-retention', { type: 'boolean', default: false, describe: 'start the nodes with a shorter retention than their data was kept under, deleting the days past it' })
          .option('memory-mb', memoryOption)
          .option('heap-mb', { type: 'number', describe: 'each node\'s JavaScript heap limit, MiB, instead of the one --memory-mb leaves' })
          .option('client-token', { type: 'string', describe: 'a read-write token every client must show (or TALLY_CLIENT_TOKEN)' }),
      async (a) => {
        const { runLocalCluster, AGREE_TIMEOUT_MS } = await import('../client/local-cluster.js');
        checkHeapMB(a['heap-mb']);
        await runLocalCluster({
          heapMB: a['heap-mb'] ?? heapMBOf(a['memory-mb'] ?? DEFAULT_MEMORY_MB),
          env: memoryEnv(process.env),
          nodes: a.nodes,
          basePort: a['base-port'],
          host: a.host,
          dataDir: a.data,
          fsync: a.fsync,
          rf: a.rf,
          retention: retentionOf(a['minute-retention-days'], a['hour-retention-days']),
          shortenRetention: a['shorten-retention'],
          agreeTimeoutMs: AGREE_TIMEOUT_MS,
          ...(a['client-token'] === undefined ? {} : { clientToken: a['client-token'] }),
        });
      },
    )
    .command(
      'bench',
      'load a cluster (or a local one it starts) through the client and print throughput, latency, errors and node usage',
      (y) =>
        y
          .option('node', nodeOption)
          .options(clientAuthOptions)
          .option('local', { type: 'number', describe: 'start a local cluster of this many nodes for the run (and stop and delete it after)' })
          .option('rf', { type: 'number', describe: 'with --local: replication factor [the smaller of 3 and --local]' })
          .option('fsync', { type: 'boolean', default: true, describe: 'with --local: fsync every group commit (--no-fsync: not)' })
          .option('base-port', { type: 'number', default: 7701, describe: 'with --local: port of the first node' })
          .option('memory-mb', { ...memoryOption, describe: `with --local: ${memoryOption.describe}` })
          .option('heap-mb', { type: 'number', describe: 'with --local: each node\'s JavaScript heap limit, MiB, instead of the one --memory-mb leaves' })
          .option('duration', { type: 'number', default: 10, describe: 'seconds of load measured' })
          .option('warmup', { type: 'number', default: 2, describe: 'seconds of load before measuring' })
          .option('events', { type: 'number', describe: 'stop once this many events were sent, if sooner' })
          .option('rate', { type: 'number', describe: 'offer this many events/s (open loop); without it, closed loop at --concurrency' })
          .option('videos', { type: 'number', default: 1_000_000, describe: 'distinct videos written to' })
          .option('zipf', { type: 'number', default: 1, describe: 'Zipf exponent of video popularity (0: uniform)' })
          .option('event-types', { type: 'string', default: 'view', describe: 'event types, comma-separated; each event picks one' })
          .option('batch', { type: 'number', default: 500, describe: 'events per write call (1: countEvent)' })
          .option('concurrency', { type: 'number', default: 64, describe: 'calls outstanding (at most, with --rate)' })
          .option('read-share', { type: 'number', default: 0, describe: 'share of the closed loop\'s calls that are reads, 0..1' })
          .option('readers', { type: 'number', default: 0, describe: 'readers alongside the writes, one read at a time each' })
          .option('read-ranges', { type: 'string', default: '1h,1d,30d', describe: 'range lengths reads pick from: 1h, 1d, 30d' })
          .option('history-days', { type: 'number', default: 0, describe: 'spread event times over this many days before now' })
          .option('consistency', consistencyOption)
          .option('prefix', { type: 'string', describe: 'video ids start with this [bench-{time}]' })
          .option('check', { type: 'number', default: 500, describe: 'series whose counts are checked at the end' })
          .option('json', { type: 'string', describe: 'also write the result as JSON to this file' })
          .option('quiet', { type: 'boolean', default: false, describe: 'no progress line' }),
      async (a) => {
        const { formatBench, READ_RANGES, runBench } = await import('../client/bench.js');
        const num = (name: string, v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): void => {
          if (v !== undefined && !(Number.isFinite(v) && v >= min && v <= max)) throw new TallyError(ErrorCode.BAD_REQUEST, `--${name} must be a number from ${min} to ${max}, not ${String(v)}`);
        };
        // The options of a local cluster, or a cluster named by --node: never some of each, which
        // would run without what was asked. Only the command line can say them (they have defaults).
        const given = (flag: string): boolean => argv.some((t) => t === flag || t.startsWith(`${flag}=`));
        if (a.local !== undefined && given('--node')) throw new TallyError(ErrorCode.BAD_REQUEST, '--node names a cluster to load and --local starts one: give one of them');
        const localOnly = ['--rf', '--base-port', '--fsync', '--no-fsync', '--memory-mb', '--heap-mb'].find(given);
        if (a.local === undefined && localOnly !== undefined) throw new TallyError(ErrorCode.BAD_REQUEST, `${localOnly} is for the cluster --local starts; a cluster named by --node keeps its own`);
        for (const k of ['duration', 'videos', 'batch', 'concurrency'] as const) num(k, a[k], 1);
        num('events', a.events, 1);
        num('warmup', a.warmup, 0, 3600);
        num('rate', a.rate, 1);
        num('zipf', a.zipf, 0, 10);
        num('read-share', a['read-share'], 0, 1);
        num('readers', a.readers, 0, 10_000);
        num('history-days', a['history-days'], 0, 365);
        num('check', a.check, 0);
        checkHeapMB(a['heap-mb']);
        const ranges = a['read-ranges'].split(',').map((s) => s.trim()).filter(Boolean);
        const bad = ranges.find((r) => !(r in READ_RANGES));
        if (bad !== undefined) throw new TallyError(ErrorCode.BAD_REQUEST, `--read-ranges: '${bad}' is not one of ${Object.keys(READ_RANGES).join(', ')}`);
        const r = await runBench({
          auth: clientAuth,
          nodes: a.node.split(',').map((s) => s.trim()).filter(Boolean),
          local: a.local,
          localRf: a.rf,
          localFsync: a.fsync,
          localBasePort: a['base-port'],
          localHeapMB: a['heap-mb'] ?? heapMBOf(a['memory-mb'] ?? DEFAULT_MEMORY_MB),
          localEnv: memoryEnv(process.env),
          durationS: a.duration,
          warmupS: a.warmup,
          events: a.events,
          rate: a.rate,
          videos: a.videos,
          zipf: a.zipf,
          eventTypes: a['event-types'].split(',').map((s) => s.trim()).filter(Boolean),
          batch: a.batch,
          concurrency: a.concurrency,
          readShare: a['read-share'],
          readers: a.readers,
          readRanges: ranges as (keyof typeof READ_RANGES)[],
          historyDays: a['history-days'],
          consistency: a.consistency as Consistency,
          prefix: a.prefix,
          checkVideos: a.check,
          progress: a.quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
        });
        process.stdout.write(`${formatBench(r)}\n`);
        if (a.json !== undefined) await writeFile(a.json, `${JSON.stringify(r, null, 2)}\n`);
        // A run that sent writes and had none acknowledged measured nothing: said by its exit code too.
        if (r.check.outside > 0 || (r.writes.eventsSent > 0 && r.writes.eventsAcked === 0)) process.exitCode = 1;
      },
    )
    .command(
      'chaos',
      'run a cluster of real nodes under kills, freezes, wiped disks, clock offsets and partitions, and check every count',
      (y) =>
        y
          .option('seed', { type: 'number', describe: 'seed of the fault schedule [random]' })
          .option('duration', { type: 'number', default: 60, describe: 'seconds of faults and load' })
          .option('nodes', { type: 'number', default: 5 })
          .option('rate', { type: 'number', default: 2_000, describe: 'target write rate, events per second' })
          .option('series', { type: 'number', default: 200 })
          .option('without', { type: 'string', default: '', describe: 'fault kinds to leave out, comma-separated (kill, freeze, wipe, clock, isolate, one-way, split)' })
          // Declared as netns: yargs reads --no-netns as netns=false, and would leave an option named no-netns false.
          .option('netns', { type: 'boolean', default: true, describe: 'as root, each node in a network namespace, for partitions (--no-netns: loopback, no partitions)' })
          .option('base-port', { type: 'number', default: 7501, describe: 'on loopback: port of the first node' })
          .option('json', { type: 'boolean', default: false }),
      async (a) => {
        const { runChaos, defaultChaosOptions, formatSummary } = await import('./chaos.js');
        const seed = a.seed ?? Math.floor(Math.random() * 2 ** 31);
        const summary = await runChaos({
          ...defaultChaosOptions(),
          seed,
          durationS: a.duration,
          nodes: a.nodes,
          rate: a.rate,
          series: a.series,
          without: a.without.split(',').map((k) => k.trim()).filter(Boolean),
          netns: a.netns,
          basePort: a['base-port'],
          log: a.json ? () => {} : (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
        });
        process.stdout.write(a.json ? `${JSON.stringify(summary)}\n` : `${formatSummary(summary)}\n`);
        if (!summary.ok) process.exitCode = 1;
      },
    )
    .demandCommand(1, 'name a command: start, cluster, status, count, get, bench (tally --help lists them all)')
    .env('TALLY')
    .config('config', 'read options from this JSON file, e.g. {"port": 7401, "seeds": ["h:p"]}; flags win over TALLY_* environment variables, which win over the file', readConfigFile)
    .middleware((a: Arguments) => {
      // TALLY_* variables are read for every command, but each names an option of some commands
      // only (TALLY_NODE is for the client commands, TALLY_PORT for start): one that is not an
      // option of this command is left alone rather than refused as an unknown argument.
      // (getOptions is yargs' own, missing from its type definitions.)
      const known = new Set(Object.keys((cli as unknown as { getOptions(): { key: Record<string, unknown> } }).getOptions().key));
      for (const k of Object.keys(a)) {
        if (k === '_' || k === '$0' || known.has(k)) continue;
        const kebab = k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
        const fromEnv = process.env[`TALLY_${kebab.replace(/-/g, '_').toUpperCase()}`] !== undefined;
        const onCommandLine = argv.some((t) => t === `--${kebab}` || t.startsWith(`--${kebab}=`) || t === `--${k}` || t.startsWith(`--${k}=`));
        if (fromEnv && !onCommandLine) delete a[k];
      }
      // An option given twice: yargs makes a list of it, which no option takes; say so rather than
      // fail later on a list where a string or number belongs.
      for (const [k, v] of Object.entries(a)) {
        if (k !== '_' && Array.isArray(v) && !/[A-Z]/.test(k)) throw new TallyError(ErrorCode.BAD_REQUEST, `--${k} was given ${v.length} times; give it once`);
      }
      // A switch set by the file or the environment to anything but true or false: yargs reads
      // "yes" (and any other word) as false, so "fsync": "yes" ran without fsync, unsaid. The words
      // "true" and "false" it reads right, in the file as in the environment: those are taken.
      const switches = (cli as unknown as { getOptions(): { boolean: string[] } }).getOptions().boolean;
      for (const k of switches) {
        const env = process.env[`TALLY_${k.replace(/-/g, '_').toUpperCase()}`];
        if (env !== undefined && env !== 'true' && env !== 'false' && known.has(k)) {
          throw new TallyError(ErrorCode.BAD_REQUEST, `TALLY_${k.replace(/-/g, '_').toUpperCase()} must be true or false, got ${JSON.stringify(env)}`);
        }
        const inFile = configGiven.values[k];
        if (inFile !== undefined && typeof inFile !== 'boolean' && inFile !== 'true' && inFile !== 'false') throw new TallyError(ErrorCode.BAD_REQUEST, `the configuration file ${configGiven.path}: ${JSON.stringify(k)} must be true or false, got ${JSON.stringify(inFile)}`);
      }
      // A number option given a word: name what was given, not NaN.
      for (const [k, v] of Object.entries(a)) {
        if (typeof v === 'number' && Number.isNaN(v) && !/[A-Z]/.test(k)) {
          throw new TallyError(ErrorCode.BAD_REQUEST, `--${k} must be a number, got ${rawText(argv, k)}`);
        }
      }
    }, true)
    .middleware((a: Arguments) => setClientAuth(a as { 'client-token'?: string; tls?: boolean; 'tls-ca'?: string }))
    .strict()
    .help()
    .alias('h', 'help')
    .version(version())
    .alias('v', 'version')
    .epilogue(
      `Every option may also be set as TALLY_<OPTION> (TALLY_PORT, TALLY_DATA, TALLY_SEEDS, TALLY_NODE…) or in a --config file; flags win over the environment, the environment over the file.\n` +
        `Exit status: ${EXIT.OK} done, ${EXIT.FAILED} failed, ${EXIT.USAGE} bad usage, ${EXIT.DEGRADED} degraded (tally status).`,
    )
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((msg, err) => {
      if (err !== undefined && err !== null) fail(err);
      process.stderr.write(`error ${ErrorCode.BAD_REQUEST}: ${msg}\n`);
      process.exit(EXIT.USAGE);
    });
  if (argv.length === 0) {
    // Bare `tally`: what it can do, not an error.
    cli.showHelp((text) => process.stdout.write(`${text}\n`));
    return;
  }
  await cli.parseAsync();
}

// A reader that goes before the output ends (`tally status --watch | head`) is no failure: stop
// quietly with the status so far, as a command killed by SIGPIPE would, not with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.OK);
  fail(err);
});

main(hideBin(process.argv)).catch(fail);
