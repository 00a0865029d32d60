/**
 * The node's configuration: every default, with the reason for it, and the checks of how the
 * values relate. The CLI and tests build a config from `defaultConfig()` plus overrides and pass
 * it through `validateConfig()` once, at start.
 */
import { RESOLUTIONS_OF_EVENT } from '../cluster/time-buckets.js';
import {
  ErrorCode,
  MAX_ADDRESS_BYTES,
  MAX_EVENTS_PER_BATCH,
  MAX_NAME_BYTES,
  TallyError,
  checkName,
  parseAddress,
} from '../protocol/index.js';
import { MAX_GET_MANY_KEYS, MAX_WRITE_BATCH_ENTRIES } from './store.js';

export interface NodeConfig {
  host: string;
  port: number;
  /** host:port peers and clients are told to use; default `host:port`. */
  advertise: string | undefined;
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
  /** Buckets awaiting the next group commit; past it: OVERLOADED. Also the largest (atomic) commit. */
  maxDirtyBuckets: number;
  /** Range queries being answered, across all connections; past it: OVERLOADED. */
  maxInFlightQueries: number;
  /** Open client and peer connections; past it a new one is refused. */
  maxConnections: number;
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
    advertise: undefined, // host:port, right unless host is a wildcard or behind NAT
    dataDir: './data',
    id: undefined,
    zone: 'z1',
    cluster: 'tally', // one name per cluster; peers with another name are refused
    seeds: [],
    fsync: false, // the LevelDB log survives a process crash without fsync; power loss needs it
    groupCommitDelayMs: 2, // a few ms adds little latency and turns thousands of updates into one batch
    groupCommitMaxDirty: 20_000, // about 2 MB of batch: large enough to amortise, small enough to stay fast
    maxDirtyBuckets: 60_000, // two full requests of distinct keys (3 buckets an event); ~20 MB with the commit under way
    maxInFlightQueries: 20_000, // twenty full get requests; each query is a handful of LevelDB seeks
    maxConnections: 1_024, // far above a cluster's peers plus its clients' pools; with the socket bound, at most 4 GiB unread
    maxInFlightPerConnection: 1_024, // more than a pipelining client needs, bounded per socket
    maxSocketBufferedBytes: 4 * 1024 * 1024, // a hundred full replies; a client that stops reading is cut off
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
  for (const s of c.seeds) parseAddress(s, 'seed address');
  if (c.advertise !== undefined) parseAddress(c.advertise, 'advertise address');
  else if (['0.0.0.0', '::', '[::]'].includes(c.host)) {
    bad(`host ${c.host} listens on every interface; say which address peers should use with --advertise host:port`);
  }
  const positive: (keyof NodeConfig)[] = [
    'groupCommitMaxDirty',
    'maxDirtyBuckets',
    'maxInFlightQueries',
    'maxConnections',
    'maxInFlightPerConnection',
    'maxSocketBufferedBytes',
    'bucketCacheEntries',
  ];
  for (const k of positive) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) bad(`${k} must be a positive integer, got ${String(v)}`);
  }
  // One full request of distinct keys must fit into an empty dirty set, and a whole dirty set
  // must fit into one atomic LevelDB batch.
  const minDirty = MAX_EVENTS_PER_BATCH * RESOLUTIONS_OF_EVENT.length;
  const maxDirty = Math.min(MAX_WRITE_BATCH_ENTRIES, MAX_GET_MANY_KEYS);
  if (c.maxDirtyBuckets < minDirty || c.maxDirtyBuckets > maxDirty) {
    bad(`maxDirtyBuckets must be in [${minDirty}, ${maxDirty}], got ${c.maxDirtyBuckets}`);
  }
  if (c.groupCommitMaxDirty > c.maxDirtyBuckets) {
    bad(`groupCommitMaxDirty (${c.groupCommitMaxDirty}) must not exceed maxDirtyBuckets (${c.maxDirtyBuckets})`);
  }
  if (!(c.groupCommitDelayMs >= 0 && c.groupCommitDelayMs <= 1000)) {
    bad(`groupCommitDelayMs must be in [0, 1000], got ${c.groupCommitDelayMs}`);
  }
  return c;
}
