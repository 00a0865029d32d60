/**
 * The shape of a node's status report (`tally status`): who the node is, and every member as
 * this node sees it. Produced by the node, printed by the CLI; validated loosely by the client,
 * since a newer node may add fields.
 */
import type { RepairSummary } from './messages.js';

export interface MemberStatus {
  id: string;
  address: string;
  zone: string;
  /** This node's verdict: `up` or `down`. */
  status: 'up' | 'down';
  /** Why: the detector's verdict, or the member's own announcement that it left. */
  reason: string;
  /** What the member announces of itself: joining, normal, leaving, left; `+rebuilding` while it is sent its ranges. */
  lifecycle: string;
  generation: number;
  heartbeat: number;
  phi: number;
  /** Since the member's last newer heartbeat arrived; 0 for the node itself, -1 if none has since it started. */
  lastHeartbeatAgeMs: number;
  /** Fraction of the ring (0..1) whose primary replica this member is. */
  ownership: number;
  ringChecksum: string;
  self: boolean;
  /** Buckets this node holds hints for, to replay to the member when it is up. */
  hintsPending: number;
  /** Hints for the member this node dropped (over the bound) or let expire: repair must heal those. */
  hintsDropped: number;
}

export interface NodeStatus {
  nodeId: string;
  cluster: string;
  zone: string;
  address: string;
  actor: string;
  generation: number;
  /** Replication factor. */
  rf: number;
  /** Days minute and hour buckets are kept after their day ends (0: for ever); absent from older nodes. */
  retention?: { minuteDays: number; hourDays: number };
  ringChecksum: string;
  members: MemberStatus[];
  /** One line: the cluster's health as this node sees it. */
  health: string;
  /** Counters of the data path (writes, reads, replication, commits, hints, dedupe). */
  core: unknown;
  /** Anti-entropy since the node started: comparisons it started, and what every comparison it took part in sent. */
  /** Stored slots found damaged (checksum mismatch) since the node started; never served, repaired from replicas. */
  damagedSlots?: number;
  repair?: Omit<RepairSummary, 'peers'> & {
    /** Comparisons under way now, started here or by a peer. */
    running: number;
  };
  /**
   * A ring change under way (members leaving for good), as this node takes part in it: what it has
   * streamed to each new replica, and (on the node driving it) which members have sent everything.
   */
  ringChange?: { leaving: string[]; streams: Record<string, { slots: number; bytes: number; done: boolean }>; doneFrom: string[] };
  peers: Record<string, number>;
  /** The node's process: memory now and at its peak, CPU used since it started; absent from older nodes. */
  process?: ProcessStatus;
  /** The node's edge: open sockets by stage against the cap, and bytes of frames received in part against theirs. */
  edge?: EdgeStatus;
  /** Writes and reads this node coordinated: totals since it started, latency of the last seconds; absent from older nodes. */
  load?: LoadStatus;
}

/**
 * The requests one node coordinated (over WebSocket and HTTP). Totals count since the node
 * started, so a rate is the difference of two reports over the time between them.
 */
export interface LoadStatus {
  /** Seconds the quantiles cover (the current second included, so a little less). */
  windowS: number;
  /** Write requests; `units` are the events in them. */
  writes: LoadFigures;
  /** Read requests; `units` are the queries in them. */
  reads: LoadFigures;
}

export interface LoadFigures {
  /** Requests answered since start, errors included. */
  requests: number;
  /** Of them, answered with an error. */
  errors: number;
  /** Events stored (writes) or queries answered (reads), in requests answered without error. */
  units: number;
  /** Requests answered without error in the window: what p50Ms and p99Ms are drawn from. */
  recentOk: number;
  /**
   * Latency of those requests, from reaching the node to its answer, in ms: the upper bound of
   * the log-scale bucket (a third wide) the quantile falls in; null when there were none.
   */
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface ProcessStatus {
  rssBytes: number;
  /**
   * Of rssBytes, the process's own memory (anonymous pages: heap, buffers, LevelDB's write buffers
   * and caches), and pages of files it maps: LevelDB maps its table files to read them, so their
   * pages read recently count as resident, page cache the kernel takes back when it needs it
   * (and the node binary's own code). Linux only.
   */
  rssAnonBytes?: number;
  rssFileBytes?: number;
  /** The most resident memory the process has had since it started. */
  peakRssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  /** The heap's limit (`--max-old-space-size`, which `tally start` sets from the memory budget: node/memory.ts). */
  heapLimitBytes?: number;
  /** Memory outside the JavaScript heap held by buffers (frames, LevelDB values). */
  externalBytes: number;
  cpuUserMs: number;
  cpuSystemMs: number;
  uptimeS: number;
}

export interface EdgeStatus {
  connections: number;
  maxConnections: number;
  /** Open sockets by stage: new (nothing sent yet), http, hello (awaiting it), client, peer. */
  byStage: Record<string, number>;
  partialBytes: number;
  maxPartialBytes: number;
}
