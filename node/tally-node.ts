/**
 * One Tally node: builds and connects its parts (identity, store, group commit, request handler,
 * server) and stops them in order. The one place that wires the process together; no part keeps
 * a reference back to it.
 */
import { join } from 'node:path';
import { openIdentity, type Identity } from './identity.js';
import { validateConfig, type NodeConfig } from './config.js';
import { LevelStore } from './level-store.js';
import { GroupCommit } from './group-commit.js';
import { NodeRequestHandler } from './request-handler.js';
import { TallyServer } from './server.js';

export class TallyNode {
  private constructor(
    readonly config: NodeConfig,
    readonly identity: Identity,
    readonly address: { host: string; port: number },
    private readonly store: LevelStore,
    private readonly commits: GroupCommit,
    private readonly handler: NodeRequestHandler,
    private readonly server: TallyServer,
  ) {}

  static async start(config: NodeConfig): Promise<TallyNode> {
    validateConfig(config);
    const identity = await openIdentity(config.dataDir, config.id, Date.now());
    const store = new LevelStore(join(config.dataDir, 'db'));
    await store.open();
    const commits = new GroupCommit(store, {
      actor: identity.actor,
      fsync: config.fsync,
      delayMs: config.groupCommitDelayMs,
      maxDirty: config.groupCommitMaxDirty,
      cacheEntries: config.bucketCacheEntries,
    });
    const handler = new NodeRequestHandler(store, commits, {
      maxInFlightEvents: config.maxInFlightEvents,
      status: () => ({
        nodeId: identity.id,
        zone: config.zone,
        inFlightEvents: commits.inFlightEvents,
        commits: { ...commits.stats },
      }),
    });
    const server = new TallyServer(
      {
        host: config.host,
        port: config.port,
        nodeId: identity.id,
        zone: config.zone,
        cluster: config.cluster,
        maxInFlightPerConnection: config.maxInFlightPerConnection,
        maxSocketBufferedBytes: config.maxSocketBufferedBytes,
      },
      handler,
    );
    let address: { host: string; port: number };
    try {
      address = await server.listen();
    } catch (err) {
      await store.close();
      throw err;
    }
    return new TallyNode(config, identity, address, store, commits, handler, server);
  }

  /** Clean stop: refuse new requests, flush every accepted event, close the port and the store. */
  async stop(): Promise<void> {
    this.handler.stopping = true;
    await this.commits.close();
    await this.server.close();
    await this.store.close();
  }
}
