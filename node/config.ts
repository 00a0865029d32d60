/**
 * The node's one configuration: its own settings (address, data, trust, connection bounds),
 * composed with the replication config (cluster/replication-config.ts) and the membership config
 * (cluster/membership-config.ts), each default with its reason in its own module. The CLI and tests
 * pass only what they set (`NodeOverrides`); `resolveConfig` fills in the defaults and validates
 * everything, and their relationships, once at start.
 */
import { readFileSync } from 'node:fs';
import type { EdgeLimits } from './server.js';
import { defaultConfig as defaultMembershipConfig, validateConfig as validateMembershipConfig, type MembershipConfig } from '../cluster/membership-config.js';
import { defaultReplicationConfig, validateReplicationConfig, type ReplicationConfig } from '../cluster/replication-config.js';
import { MAX_CLOCK_OFFSET_MS } from './clock.js';
import { RESOLUTIONS_OF_EVENT } from '../cluster/time-buckets.js';
import { MAX_EVENTS_PER_BATCH, MAX_WIRE_FRAME_BYTES } from '../protocol/limits.js';
import { ErrorCode, MAX_ADDRESS_BYTES, MAX_NAME_BYTES, TallyError, checkName, parseAddress } from '../protocol/index.js';

export interface NodeConfig extends EdgeLimits {
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
  /** Shared by every member; peers prove it in the hello. Undefined: peers prove only the cluster name. */
  clusterSecret: string | undefined;
  /** Allow listening beyond loopback without a cluster secret. */
  insecure: boolean;
  /**
   * Open sockets of every kind, counted from accept; past it a socket still in its handshake makes
   * room, or the new one is refused. Lowered at start to fit the process's file limit (`fitConnectionsToFiles`).
   */
  maxConnections: number;
  /** A read-write client token; with it (or a token file) every client must show one. */
  clientToken: string | undefined;
  /** A JSON file of read-write and read-only client tokens (node/tokens.ts). */
  clientTokenFile: string | undefined;
  /** PEM files: this node's certificate and key (serve TLS; peers are dialled over TLS), and the CA it trusts for peers. */
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsCa: string | undefined;
  /** Requests of one connection awaiting a reply; past it: OVERLOADED. */
  maxInFlightPerConnection: number;
  /** Bytes queued to one socket that it is not reading; past it the connection is closed. */
  maxSocketBufferedBytes: number;
  /** Added to this node's clocks, to play a node whose clock is off (fault tests); 0 otherwise. */
  clockOffsetMs: number;
  /**
   * Move the database aside (to `db.damaged-<time>`) and start as a new actor that its peers
   * refill: the way out when the database is lost or damaged. Never needed on a healthy node.
   */
  rebuild: boolean;
  /** Start with a shorter retention than the database was kept under (which deletes the days between); refused without it. */
  shortenRetention: boolean;
  replication: ReplicationConfig;
  membership: MembershipConfig;
}

export type NodeOverrides = Partial<Omit<NodeConfig, 'replication' | 'membership'>> & {
  replication?: Partial<ReplicationConfig>;
  membership?: Partial<MembershipConfig>;
};

/** Shortest cluster secret: 16 characters of a generated secret carry ~96 bits. */
export const MIN_CLUSTER_SECRET_LENGTH = 16;

export function defaultConfig(): NodeConfig {
  return {
    host: '127.0.0.1', // loopback: a node is not exposed to the network unless asked
    port: 7401,
    advertise: undefined, // host:port, right unless host is a wildcard or behind NAT
    dataDir: './data',
    id: undefined,
    zone: 'z1',
    cluster: 'tally', // one name per cluster; peers with another name are refused
    seeds: [], // a node with no seeds is a cluster of one until others join through it
    clusterSecret: undefined, // required beyond loopback (or --insecure)
    insecure: false,
    maxConnections: 1_024, // far above a cluster's peers plus its clients' pools
    maxConnectionsPerAddress: 128, // a host's client pools with room to spare; one host cannot take the table
    handshakeTimeoutMs: 5_000, // a real client upgrades within milliseconds; a silent socket is let go soon
    helloTimeoutMs: 5_000, // the same for the hello
    frameTimeoutMs: 10_000, // a full 1 MiB frame at 1 Mbit/s takes 8 s; a sender that stalls mid-frame is cut
    idleTimeoutMs: 300_000, // five minutes: pools reconnect on demand; held-open idle sockets are let go
    maxPartialBytes: 64 * 1024 * 1024, // 16 frames at the 4 MiB wire limit, far more at real sizes
    clientToken: undefined, // no token: any client that reaches the port may write (keep it on loopback or a private network)
    clientTokenFile: undefined,
    tlsCert: undefined, // plain TCP
    tlsKey: undefined,
    tlsCa: undefined, // with TLS: the system's CAs
    maxInFlightPerConnection: 1_024, // more than a pipelining client needs, bounded per socket
    maxSocketBufferedBytes: 4 * 1024 * 1024, // a hundred full replies; a client that stops reading is cut off
    clockOffsetMs: 0, // the machine's clock as it is
    rebuild: false, // a node starts on the database it has
    shortenRetention: false, // a slip of a retention flag must not delete data
    replication: defaultReplicationConfig(),
    membership: defaultMembershipConfig(),
  };
}

function withoutUndefined<T extends object>(o: T | undefined): Partial<T> {
  return Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined)) as Partial<T>;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|\[::1\]|localhost)$/;

/**
 * Bytes of JavaScript heap to allow per slot in the core's table, with its share of the structures
 * around it and room for the garbage a busy node makes. As objects, a heap snapshot under load
 * showed 86 MB live with ~210,000 slots cached (~350 bytes a slot, everything else included). Kept
 * in columns (slot-table.ts) a slot takes ~74 bytes of typed arrays outside the heap and a pointer in it,
 * and ~28 MB stay live after a full collection under load with the cache full; twice the slots
 * (250 bytes a slot) gave the same events/s in runs taken in turn (uniform 37,756/32,582 against
 * 34,657/36,314; Zipf 73,085/73,200 against 71,289/72,810), so the share is left as it was.
 */
export const HEAP_BYTES_PER_SLOT = 500;
/** Shares of the heap limit the slot cache, and the slots awaiting a commit, may take. */
const CACHE_HEAP_SHARE = 0.35;
const DIRTY_HEAP_SHARE = 0.15;

/**
 * The slot cache and the dirty-slot bound, lowered to fit a heap of `heapLimitBytes` (V8's limit,
 * `--max-old-space-size`): the cache may hold 35% of it and slots awaiting a commit 15%. Under
 * V8's default limit (several GiB) the configured values stand. Without this, a node with a small
 * heap fills it with cached slots and ends for want of memory.
 */
export function fitToHeap(r: ReplicationConfig, heapLimitBytes: number): ReplicationConfig {
  const cache = Math.max(1_000, Math.floor((heapLimitBytes * CACHE_HEAP_SHARE) / HEAP_BYTES_PER_SLOT));
  const minDirty = MAX_EVENTS_PER_BATCH * RESOLUTIONS_OF_EVENT.length;
  const dirty = Math.max(minDirty, Math.floor((heapLimitBytes * DIRTY_HEAP_SHARE) / HEAP_BYTES_PER_SLOT));
  const out = { ...r, maxCachedSlots: Math.min(r.maxCachedSlots, cache), maxDirtySlots: Math.min(r.maxDirtySlots, dirty) };
  out.commitAtDirty = Math.min(out.commitAtDirty, out.maxDirtySlots);
  return out;
}

/** Defaults plus `o` (undefined values are "not set"), validated. Throws BAD_REQUEST naming the first bad setting. */
export function resolveConfig(o: NodeOverrides = {}): NodeConfig {
  const d = defaultConfig();
  const c: NodeConfig = {
    ...d,
    ...withoutUndefined(o),
    replication: { ...d.replication, ...withoutUndefined(o.replication) },
    membership: { ...d.membership, ...withoutUndefined(o.membership) },
  };
  // Seeds are the node's setting; membership reads them from here.
  c.membership.seeds = c.seeds;
  return validateConfig(c);
}

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
  if (c.clusterSecret !== undefined && c.clusterSecret.length < MIN_CLUSTER_SECRET_LENGTH) {
    bad(`the cluster secret must be at least ${MIN_CLUSTER_SECRET_LENGTH} characters (e.g. openssl rand -hex 16)`);
  }
  if (c.clusterSecret === undefined && (c.clientToken !== undefined || c.clientTokenFile !== undefined)) {
    bad('client tokens need a cluster secret too (--cluster-secret, or TALLY_CLUSTER_SECRET, on every node): without one, anyone who can reach the port could say hello as a peer and write without a token');
  }
  if (c.clusterSecret === undefined && !c.insecure && !LOOPBACK.test(c.host)) {
    bad(`host ${c.host} is reachable beyond this machine, and without a cluster secret anyone who can reach it could join the cluster and change any counter; ` +
      'set --cluster-secret (or TALLY_CLUSTER_SECRET) on every node, or say --insecure');
  }
  for (const k of ['maxConnections', 'maxConnectionsPerAddress', 'maxInFlightPerConnection', 'maxSocketBufferedBytes', 'handshakeTimeoutMs', 'helloTimeoutMs', 'frameTimeoutMs', 'maxPartialBytes'] as const) {
    const v = c[k];
    if (!Number.isInteger(v) || v <= 0) bad(`${k} must be a positive integer, got ${String(v)}`);
  }
  if (!Number.isInteger(c.idleTimeoutMs) || c.idleTimeoutMs < 0) bad(`idleTimeoutMs must be an integer >= 0 (0: never), got ${String(c.idleTimeoutMs)}`);
  if (c.maxPartialBytes < MAX_WIRE_FRAME_BYTES) bad(`the bound on partly received frames must hold one frame of ${MAX_WIRE_FRAME_BYTES} bytes, got ${c.maxPartialBytes}`);
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) bad('TLS needs both --tls-cert and --tls-key');
  if (c.tlsCa !== undefined && c.tlsCert === undefined) bad('--tls-ca names the CA for peers\' certificates; it needs --tls-cert and --tls-key too');
  if (!Number.isInteger(c.clockOffsetMs) || Math.abs(c.clockOffsetMs) > MAX_CLOCK_OFFSET_MS) {
    bad(`clock offset must be an integer of at most ${MAX_CLOCK_OFFSET_MS} ms either way, got ${c.clockOffsetMs}`);
  }
  validateReplicationConfig(c.replication);
  validateMembershipConfig(c.membership);
  return c;
}

/** File descriptors kept for everything but client and peer sockets: logs, the commit mark, LevelDB's log and lock, outgoing peer links. */
const RESERVED_FILES = 128;
/** Fewest sockets a node serves: below it, the file limit is too low to run on. */
const MIN_CONNECTIONS = 16;

/**
 * The process's limit on open files (the soft limit, which Node raises to the hard one at start),
 * from /proc/self/limits; undefined where that cannot be read.
 */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const n = Number(line?.split(/\s+/)[3]);
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Sockets and LevelDB table files, fitted under the file limit so the store is never starved of
 * descriptors: LevelDB keeps up to a quarter of the limit open (at most its default of 1,000, at
 * least 64), 128 are kept for everything else, and sockets may have the rest. Throws BAD_REQUEST
 * when that leaves fewer than 16 sockets.
 */
export function fitConnectionsToFiles(maxConnections: number, fileLimit: number | undefined): { maxConnections: number; storeOpenFiles: number } {
  if (fileLimit === undefined) return { maxConnections, storeOpenFiles: 1_000 };
  const storeOpenFiles = Math.max(64, Math.min(1_000, Math.floor(fileLimit / 4)));
  const sockets = fileLimit - storeOpenFiles - RESERVED_FILES;
  if (sockets < MIN_CONNECTIONS) {
    throw new TallyError(
      ErrorCode.BAD_REQUEST,
      `this process may open ${fileLimit} files, too few to serve: the store keeps ${storeOpenFiles} and ${RESERVED_FILES} are reserved; raise the limit (ulimit -n 4096)`,
    );
  }
  return { maxConnections: Math.min(maxConnections, sockets), storeOpenFiles };
}
