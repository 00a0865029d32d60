/**
 * The node's configuration: every default, with the reason for it, and the checks of how the
 * values relate. The CLI and tests build a config from `defaultConfig()` plus overrides and pass
 * it through `validateConfig()` once, at start.
 */
import { ErrorCode, MAX_ADDRESS_BYTES, MAX_NAME_BYTES, TallyError, checkName } from '../protocol/index.js';

export interface NodeConfig {
  host: string;
  port: number;
  dataDir: string;
  /** Node id; undefined: the one stored in dataDir, or a new random one. */
  id: string | undefined;
  zone: string;
  cluster: string;
  /** host:port of nodes to contact when joining; only used for discovery. */
  seeds: string[];
  /** fsync every group commit: survives power loss, not only a process crash. */
  fsync: boolean;
  /** How long the first dirty bucket waits for others to join its group commit. */
  groupCommitDelayMs: number;
  /** Dirty buckets that trigger a group commit at once rather than after the delay. */
  groupCommitMaxDirty: number;
  /** Events accepted but not yet durable, across all connections; past it: OVERLOADED. */
  maxInFlightEvents: number;
  /** Requests of one connection awaiting a reply; past it: OVERLOADED. */
  maxInFlightPerConnection: number;
  /** Bytes queued to one socket that it is not reading; past it the connection is closed. */
  maxSocketBufferedBytes: number;
  /** Decoded bucket states kept for the group commit's read-modify-write. */
  bucketCacheEntries: number;
}

export function defaultConfig(): NodeConfig {
  return {
    host: '127.0.0.1', // loopback: a node is not exposed to the network unless asked
    port: 7401,
    dataDir: './data',
    id: undefined,
    zone: 'z1',
    cluster: 'tally', // one name per cluster; peers with another name are refused
    seeds: [],
    fsync: false, // the LevelDB log survives a process crash without fsync; power loss needs it
    groupCommitDelayMs: 2, // a few ms adds little latency and turns thousands of updates into one batch
    groupCommitMaxDirty: 20_000, // about 2 MB of batch: large enough to amortise, small enough to stay fast
    maxInFlightEvents: 2_000_000, // 200 full client batches; about 200 MB in the worst case
    maxInFlightPerConnection: 1_024, // more than a pipelining client needs, bounded per socket
    maxSocketBufferedBytes: 16 * 1024 * 1024, // a client that stops reading is cut off before it costs much memory
    bucketCacheEntries: 200_000, // hot buckets skip the LevelDB read in read-modify-write; ~60 MB
  };
}

/** Throws TallyError BAD_REQUEST naming the first bad setting. */
export function validateConfig(c: NodeConfig): NodeConfig {
  const bad = (m: string): never => {
    throw new TallyError(ErrorCode.BAD_REQUEST, m);
  };
  checkName(c.host, 'host', MAX_ADDRESS_BYTES);
  if (!Number.isInteger(c.port) || c.port < 0 || c.port > 65535) bad(`port must be an integer in [0, 65535], got ${c.port}`);
  if (c.dataDir.length === 0) bad('data directory must not be empty');
  if (c.id !== undefined) checkName(c.id, 'id', MAX_NAME_BYTES);
  if (c.id !== undefined && /[#\s]/.test(c.id)) bad(`id must not contain '#' or spaces, got ${JSON.stringify(c.id)}`);
  checkName(c.zone, 'zone', MAX_NAME_BYTES);
  checkName(c.cluster, 'cluster', MAX_NAME_BYTES);
  for (const s of c.seeds) parseAddress(s);
  const positive: (keyof NodeConfig)[] = [
    'groupCommitMaxDirty',
    'maxInFlightEvents',
    'maxInFlightPerConnection',
    'maxSocketBufferedBytes',
    'bucketCacheEntries',
  ];
  for (const k of positive) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) bad(`${k} must be a positive integer, got ${String(v)}`);
  }
  if (!(c.groupCommitDelayMs >= 0 && c.groupCommitDelayMs <= 1000)) {
    bad(`groupCommitDelayMs must be in [0, 1000], got ${c.groupCommitDelayMs}`);
  }
  return c;
}

/** Parses `host:port` (IPv6 as `[::1]:7401`). */
export function parseAddress(address: string): { host: string; port: number } {
  checkName(address, 'address', MAX_ADDRESS_BYTES);
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `address must be host:port, got ${JSON.stringify(address)}`);
  }
  return { host: (m[1] ?? m[2]) as string, port };
}
