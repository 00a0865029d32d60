/**
 * Prometheus metrics at /metrics, with prom-client: requests and events by outcome, latency
 * histograms of writes and reads, group commits, replication, hints, repair, members by status,
 * ring ownership, connections at the edge, and the process (event-loop lag, heap, RSS, CPU, open
 * files, from prom-client's default collectors).
 *
 * Latencies and request outcomes are observed as requests finish (`observe`); everything else is
 * read from the node's own counters when Prometheus scrapes, so nothing is counted twice.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { eventsIn, type ClientRequest, type ErrorCode, type Reply } from '../protocol/index.js';
import type { LoadStatus, NodeStatus } from '../protocol/status.js';
import type { CoreStats } from '../cluster/node-core.js';
import { LoadKind, RecentLoad } from './recent-load.js';

/** Seconds: from half a millisecond (a read from cache) to the client's 10 s deadline. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What the node reads its figures from at scrape time. */
export interface MetricsSource {
  status(): NodeStatus;
  /** Connections now, by stage, and the edge's counters (node/server.ts). */
  edge(): { byStage: Record<string, number>; partialBytes: number; stats: Record<string, number>; errors: Record<string, number> };
}

/**
 * A counter (the node's own cumulative figure) or gauge whose values are read at scrape time.
 */
function readAtScrape(registry: Registry, kind: 'counter' | 'gauge', name: string, help: string, labelNames: string[], read: () => [Record<string, string>, number][]): void {
  const options = { name, help, labelNames, registers: [registry] };
  if (kind === 'counter') {
    new Counter({
      ...options,
      collect() {
        this.reset();
        for (const [labels, v] of read()) if (v > 0) this.inc(labels, v);
      },
    });
  } else {
    new Gauge({
      ...options,
      collect() {
        this.reset();
        for (const [labels, v] of read()) this.set(labels, v);
      },
    });
  }
}
const countedFrom = (r: Registry, name: string, help: string, labels: string[], read: () => [Record<string, string>, number][]): void => readAtScrape(r, 'counter', name, help, labels, read);
const gaugeFrom = (r: Registry, name: string, help: string, labels: string[], read: () => [Record<string, string>, number][]): void => readAtScrape(r, 'gauge', name, help, labels, read);

/**
 * What the metrics need of a request: its type, and the events a write counts or the queries a
 * read asks. Kept in place of the request while it is under way, so a write's events are not held
 * until its reply (half a second under load, long enough for the collector to copy them twice).
 */
export interface RequestSummary {
  t: ClientRequest['t'];
  n: number;
}

export function summarize(req: ClientRequest): RequestSummary {
  return { t: req.t, n: req.t === 'count' ? eventsIn(req.events) : req.t === 'get' ? req.queries.length : 0 };
}

export class NodeMetrics {
  readonly registry = new Registry();
  private readonly latency: Histogram<'type' | 'outcome'>;
  private readonly requests: Counter<'type' | 'code'>;
  private readonly events: Counter<'outcome'>;
  /** The same requests for the status report: totals and the last seconds' latency. */
  private readonly recent = new RecentLoad();
  /** One status per scrape: the collectors below share it. */
  private scrape: { status: NodeStatus; core: CoreStats | undefined } | undefined;

  constructor(private readonly source: MetricsSource) {
    const r = this.registry;
    collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 10 });
    // Gauges named like counters, which Prometheus's lint refuses; the unsuffixed ones by type remain.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) r.removeSingleMetric(name);
    this.latency = new Histogram({
      name: 'tally_request_duration_seconds',
      help: 'Time from a request reaching the node to its answer, by request type and outcome (ok or error)',
      labelNames: ['type', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
    this.requests = new Counter({
      name: 'tally_requests_total',
      help: 'Requests the node handled (over WebSocket or HTTP), by type and code (OK, or the error code); refusals at the edge are in tally_errors_total only',
      labelNames: ['type', 'code'],
      registers: [r],
    });
    this.events = new Counter({
      name: 'tally_events_total',
      help: 'Events in write requests, by outcome: stored, or the error code of the request',
      labelNames: ['outcome'],
      registers: [r],
    });
    const core = (): CoreStats | undefined => this.current().core;
    const status = (): NodeStatus => this.current().status;
    countedFrom(r, 'tally_errors_total', 'Error replies sent, by code, validation failures included', ['code'], () =>
      Object.entries(this.source.edge().errors).map(([code, n]) => [{ code }, n]),
    );
    countedFrom(r, 'tally_writes_total', 'Writes this node coordinated, by outcome', ['outcome'], () => {
      const w = core()?.writes;
      return w === undefined ? [] : [[{ outcome: 'acked' }, w.acked], [{ outcome: 'failed' }, w.failed], [{ outcome: 'timeout' }, w.timedOut]];
    });
    countedFrom(r, 'tally_reads_total', 'Reads this node coordinated: served, speculative retries, read repairs, timeouts', ['kind'], () => {
      const x = core()?.reads;
      return x === undefined ? [] : [[{ kind: 'served' }, x.served], [{ kind: 'speculative' }, x.speculative], [{ kind: 'read_repair' }, x.repairs], [{ kind: 'timeout' }, x.timedOut]];
    });
    countedFrom(r, 'tally_group_commits_total', 'Group commits to the store, by outcome', ['outcome'], () => {
      const c = core()?.commits;
      return c === undefined ? [] : [[{ outcome: 'ok' }, c.commits], [{ outcome: 'failed' }, c.failed]];
    });
    countedFrom(r, 'tally_slots_written_total', 'Bucket slots written by group commits', [], () => [[{}, core()?.commits.slotsWritten ?? 0]]);
    countedFrom(r, 'tally_replication_messages_total', 'Replication traffic: slots sent to replicas, acknowledged by them, hinted, received', ['kind'], () => {
      const x = core()?.replication;
      return x === undefined ? [] : [[{ kind: 'sent' }, x.sent], [{ kind: 'acked' }, x.acked], [{ kind: 'hinted' }, x.hinted], [{ kind: 'received' }, x.received]];
    });
    gaugeFrom(r, 'tally_hints_pending', 'Buckets held as hints for a member, to replay when it is up', ['member'], () =>
      status().members.filter((m) => !m.self).map((m) => [{ member: m.id }, m.hintsPending]),
    );
    countedFrom(r, 'tally_hints_dropped_total', 'Hints for a member dropped (over the bound) or expired; repair heals those', ['member'], () =>
      status().members.filter((m) => !m.self).map((m) => [{ member: m.id }, m.hintsDropped]),
    );
    countedFrom(r, 'tally_repair_sessions_total', 'Anti-entropy comparisons, by outcome', ['outcome'], () => {
      const x = core()?.repair;
      return x === undefined ? [] : [[{ outcome: 'in_sync' }, x.inSync], [{ outcome: 'differed' }, Math.max(0, x.sessions - x.inSync - x.failed)], [{ outcome: 'failed' }, x.failed]];
    });
    countedFrom(r, 'tally_repair_slots_sent_total', 'Slots anti-entropy sent to peers', [], () => [[{}, core()?.repair.slotsSent ?? 0]]);
    countedFrom(r, 'tally_repair_bytes_sent_total', 'Bytes anti-entropy sent to peers', [], () => [[{}, core()?.repair.bytesSent ?? 0]]);
    gaugeFrom(r, 'tally_repair_running', 'Anti-entropy comparisons under way', [], () => [[{}, core()?.repair.running ?? 0]]);
    gaugeFrom(r, 'tally_members', 'Members as this node sees them, by status (up, down) and lifecycle', ['status', 'lifecycle'], () => {
      const counts = new Map<string, number>();
      for (const m of status().members) {
        const k = `${m.status}\u0000${m.lifecycle}`;
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      return [...counts].map(([k, n]) => {
        const [s, lifecycle] = k.split('\u0000') as [string, string];
        return [{ status: s, lifecycle }, n];
      });
    });
    gaugeFrom(r, 'tally_member_up', 'Whether this node sees the member up (1) or down (0)', ['member', 'zone'], () =>
      status().members.map((m) => [{ member: m.id, zone: m.zone }, m.status === 'up' ? 1 : 0]),
    );
    gaugeFrom(r, 'tally_member_phi', 'Suspicion of each member by the failure detector (phi)', ['member'], () =>
      status().members.filter((m) => !m.self).map((m) => [{ member: m.id }, m.phi]),
    );
    gaugeFrom(r, 'tally_ring_ownership_ratio', 'Share of the ring (0..1) whose first replica each member is', ['member'], () =>
      status().members.map((m) => [{ member: m.id }, m.ownership]),
    );
    gaugeFrom(r, 'tally_slots_cached', 'Bucket slots held in memory', [], () => [[{}, core()?.slots.cached ?? 0]]);
    gaugeFrom(r, 'tally_slots_dirty', 'Bucket slots awaiting a group commit', [], () => [[{}, core()?.slots.dirty ?? 0]]);
    gaugeFrom(r, 'tally_in_flight', 'Writes and read queries this node coordinates now', ['kind'], () => {
      const c = core();
      return c === undefined ? [] : [[{ kind: 'writes' }, c.writes.inFlight], [{ kind: 'reads' }, c.reads.inFlight]];
    });
    gaugeFrom(r, 'tally_damaged_slots', 'Stored slots found damaged since start (never served; repaired from replicas)', [], () => [[{}, status().damagedSlots ?? 0]]);
    gaugeFrom(r, 'tally_connections', 'Open sockets by stage: new (no request yet), http, hello, client, peer', ['stage'], () =>
      Object.entries(this.source.edge().byStage).map(([stage, n]) => [{ stage }, n]),
    );
    gaugeFrom(r, 'tally_memory_bytes', "The node's memory: own (resident, not file-backed: what --memory-mb bounds), mapped_files (resident pages of mapped files: the node binary, LevelDB's tables), heap_limit (the JavaScript heap's)", ['kind'], () => {
      const p = status().process;
      if (p === undefined) return [];
      const out: [Record<string, string>, number][] = [[{ kind: 'heap_limit' }, p.heapLimitBytes ?? 0]];
      if (p.rssAnonBytes !== undefined) out.push([{ kind: 'own' }, p.rssAnonBytes], [{ kind: 'mapped_files' }, p.rssFileBytes ?? 0]);
      return out;
    });
    countedFrom(r, 'tally_heap_refusals_total', 'Writes refused OVERLOADED because the JavaScript heap was near its limit', [], () => [[{}, status().peers['heapRefusals'] ?? 0]]);
    gaugeFrom(r, 'tally_partial_bytes', 'Bytes of frames and request bodies received in part, all connections', [], () => [[{}, this.source.edge().partialBytes]]);
    countedFrom(r, 'tally_connections_closed_total', 'Sockets the node refused or closed at its edge, by reason', ['reason'], () => {
      const s = this.source.edge().stats;
      const reasons: [string, string][] = [
        ['refused', 'connectionsRefused'],
        ['evicted_in_handshake', 'connectionsEvicted'],
        ['handshake_timeout', 'handshakeTimeouts'],
        ['hello_timeout', 'helloTimeouts'],
        ['frame_timeout', 'frameTimeouts'],
        ['idle', 'idleClosed'],
        ['reply_timeout', 'replyTimeouts'],
      ];
      return reasons.map(([reason, k]) => [{ reason }, s[k] ?? 0]);
    });
    countedFrom(r, 'tally_partial_pauses_total', 'Times a connection was read no further because frames received in part filled their bound', [], () => [[{}, this.source.edge().stats.partialPaused ?? 0]]);
    countedFrom(r, 'tally_connections_accepted_total', 'Sockets accepted', [], () => [[{}, this.source.edge().stats.connections ?? 0]]);
    countedFrom(r, 'tally_unauthorized_total', 'Clients and requests refused for want of a (read-write) token, and peers refused', ['who'], () => {
      const s = this.source.edge().stats;
      return [[{ who: 'client' }, s.unauthorized ?? 0], [{ who: 'peer' }, s.peersRefused ?? 0]];
    });
  }

  private current(): { status: NodeStatus; core: CoreStats | undefined } {
    if (this.scrape === undefined) {
      const status = this.source.status();
      this.scrape = { status, core: status.core as CoreStats | undefined };
    }
    return this.scrape;
  }

  /** One request answered: its latency, and its outcome. */
  observe(req: RequestSummary, startedNs: bigint, reply: Reply | undefined, err: { code: ErrorCode } | undefined): void {
    const nowNs = process.hrtime.bigint();
    const seconds = Number(nowNs - startedNs) / 1e9;
    const code = err?.code ?? (reply?.t === 'error' ? reply.code : 'OK');
    this.latency.observe({ type: req.t, outcome: code === 'OK' ? 'ok' : 'error' }, seconds);
    this.requests.inc({ type: req.t, code });
    const nowMs = Number(nowNs / 1_000_000n);
    if (req.t === 'count') {
      this.events.inc({ outcome: code === 'OK' ? 'stored' : code }, req.n);
      this.recent.record(LoadKind.WRITE, seconds * 1000, req.n, code === 'OK', nowMs);
    } else if (req.t === 'get') {
      this.recent.record(LoadKind.READ, seconds * 1000, req.n, code === 'OK', nowMs);
    }
  }

  /** Writes and reads answered: totals since start, and the latency of the last seconds. */
  load(): LoadStatus {
    return this.recent.status(Number(process.hrtime.bigint() / 1_000_000n));
  }

  async render(): Promise<{ contentType: string; body: string }> {
    this.scrape = undefined;
    try {
      return { contentType: this.registry.contentType, body: await this.registry.metrics() };
    } finally {
      this.scrape = undefined;
    }
  }
}
