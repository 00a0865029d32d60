/**
 * Answers client requests on this node: counts go through the group commit, reads go to the
 * store. This is the single-replica coordinator; replication puts quorum bookkeeping between
 * these calls and the store without changing the wire.
 */
import type { Stats } from '../cluster/bucket-state.js';
import {
  ErrorCode,
  TallyError,
  type ClientRequest,
  type CountRequest,
  type GetRequest,
  type Reply,
  type StatsTuple,
} from '../protocol/index.js';
import type { GroupCommit } from './group-commit.js';
import type { Store } from './store.js';

export interface RequestHandlerOptions {
  maxInFlightQueries: number;
  /** Cluster status for `tally status`; absent on a node without membership. */
  status?: () => unknown;
}

export function statsTuple(s: Stats): StatsTuple {
  return [s.count, s.sum, s.min, s.max];
}

export class NodeRequestHandler {
  stopping = false;
  private inFlightQueries = 0;

  constructor(
    private readonly store: Store,
    private readonly commits: GroupCommit,
    private readonly opts: RequestHandlerOptions,
  ) {}

  async handle(req: ClientRequest): Promise<Reply> {
    if (this.stopping) throw new TallyError(ErrorCode.NOT_READY, 'node is stopping');
    switch (req.t) {
      case 'count':
        return this.count(req);
      case 'get':
        return this.get(req);
      case 'ping':
        return { t: 'pong', id: req.id, nowMs: Date.now() };
      case 'status':
        return { t: 'status', id: req.id, status: this.opts.status?.() ?? null };
    }
  }

  private async count(req: CountRequest): Promise<Reply> {
    let n = 0;
    for (const e of req.events) n += e[4];
    await this.commits.add(req.events);
    return { t: 'ack', id: req.id, n };
  }

  private async get(req: GetRequest): Promise<Reply> {
    const n = req.queries.length;
    if (this.inFlightQueries + n > this.opts.maxInFlightQueries) {
      throw new TallyError(
        ErrorCode.OVERLOADED,
        `${this.inFlightQueries} queries are being answered, the limit is ${this.opts.maxInFlightQueries}; retry with backoff`,
      );
    }
    this.inFlightQueries += n;
    try {
      const stats = await Promise.all(
        req.queries.map(async ([videoId, eventType, start, end]) => statsTuple(await this.store.readRange(videoId, eventType, start, end))),
      );
      return { t: 'result', id: req.id, stats };
    } finally {
      this.inFlightQueries -= n;
    }
  }
}
