/**
 * One Tally node: builds and connects its parts (identity, store, group commit, request handler,
 * server) and stops them in order. The one place that wires the process together; no part keeps
 * a reference back to it.
 */
import { join } from 'node:path';
import { openActor, openNodeId, type Identity } from './identity.js';
import { validateConfig, type NodeConfig } from './config.js';
import { LevelStore } from './level-store.js';
import { GroupCommit } from './group-commit.js';
import { NodeRequestHandler } from './request-handler.js';
import { TallyServer } from './server.js';
import xxhash from 'xxhash-wasm';
import { MembershipDriver } from './membership-driver.js';
import { PeerTransport, defaultPeerTransportOptions } from './peer-transport.js';
import type { NodeStatus } from '../protocol/status.js';
import { formatAddress } from '../protocol/index.js';

/** How long a stopping node waits for its `left` announcement to reach the kernel. */
const LEAVE_DRAIN_MS = 500;

/** Meta key of the last generation this data directory started with. */
const GENERATION_KEY = 'generation';

/**
 * This start's generation: the clock, but always above the last one this directory used, so a
 * restarted node is newer than its old self even if the clock stepped back.
 */
async function nextGeneration(store: LevelStore, nowMs: number): Promise<{ generation: number; bootstrapped: boolean }> {
  const last = await store.getMeta(GENERATION_KEY);
  const lastGeneration = last === undefined ? 0 : Number(Buffer.from(last).toString('utf8'));
  const generation = Math.max(nowMs, (Number.isSafeInteger(lastGeneration) ? lastGeneration : 0) + 1);
  await store.putMeta(GENERATION_KEY, Buffer.from(String(generation)), { sync: true });
  return { generation, bootstrapped: last !== undefined };
}

export function log(line: string): void {
  process.stdout.write(`${new Date().toISOString()} ${line}\n`);
}

/** One line: how healthy the cluster looks from this node. */
export function healthLine(members: NodeStatus['members']): string {
  const down = members.filter((m) => m.status === 'down' && m.lifecycle !== 'left');
  const left = members.filter((m) => m.lifecycle === 'left');
  const up = members.filter((m) => m.status === 'up');
  const checksums = new Set(up.map((m) => m.ringChecksum));
  const parts = [`${up.length}/${members.length} up`];
  if (down.length > 0) parts.push(`down: ${down.map((m) => m.id).join(', ')}`);
  if (left.length > 0) parts.push(`left: ${left.map((m) => m.id).join(', ')}`);
  parts.push(checksums.size <= 1 ? 'ring agreed' : `ring checksums differ (${checksums.size} versions)`);
  const healthy = down.length === 0 && checksums.size <= 1;
  return `${healthy ? 'healthy' : 'degraded'}: ${parts.join('; ')}`;
}

export class TallyNode {
  private constructor(
    readonly config: NodeConfig,
    readonly identity: Identity,
    readonly address: { host: string; port: number },
    private readonly store: LevelStore,
    private readonly commits: GroupCommit,
    private readonly handler: NodeRequestHandler,
    private readonly server: TallyServer,
    private readonly transport: PeerTransport,
    private readonly driver: MembershipDriver,
  ) {}

  static async start(config: NodeConfig): Promise<TallyNode> {
    validateConfig(config);
    const id = await openNodeId(config.dataDir, config.id, Date.now());
    const store = new LevelStore(join(config.dataDir, 'db'));
    await store.open();
    let identity: Identity;
    try {
      identity = await openActor(store, id);
    } catch (err) {
      await store.close();
      throw err;
    }
    const commits = new GroupCommit(store, {
      actor: identity.actor,
      fsync: config.fsync,
      delayMs: config.groupCommitDelayMs,
      commitAtDirty: config.groupCommitMaxDirty,
      maxDirtyBuckets: config.maxDirtyBuckets,
      cacheEntries: config.bucketCacheEntries,
    });
    let driver: MembershipDriver | undefined;
    let address = `${config.host}:${config.port}`;
    let generation = 0;
    const handler = new NodeRequestHandler(store, commits, {
      maxInFlightQueries: config.maxInFlightQueries,
      status: (): NodeStatus => {
        const members = driver?.members() ?? [];
        return {
          nodeId: identity.id,
          cluster: config.cluster,
          zone: config.zone,
          address,
          actor: identity.actor,
          generation,
          ringChecksum: members.find((m) => m.self)?.ringChecksum ?? '',
          members,
          health: healthLine(members),
          inFlightEvents: commits.inFlightEvents,
          commits: { ...commits.stats },
          peers: { ...transport.stats, ...driver?.stats },
        };
      },
    });
    const transport = new PeerTransport(defaultPeerTransportOptions(identity.id, config.cluster));
    const server = new TallyServer(
      {
        host: config.host,
        port: config.port,
        nodeId: identity.id,
        zone: config.zone,
        cluster: config.cluster,
        maxInFlightPerConnection: config.maxInFlightPerConnection,
        maxSocketBufferedBytes: config.maxSocketBufferedBytes,
        maxConnections: config.maxConnections,
      },
      handler,
    );
    try {
      const listening = await server.listen();
      address = config.advertise ?? formatAddress(listening.host, listening.port);
      const { h64 } = await xxhash();
      const g = await nextGeneration(store, Date.now());
      generation = g.generation;
      driver = new MembershipDriver(transport, {
        id: identity.id,
        address,
        zone: config.zone,
        seeds: config.seeds,
        generation,
        bootstrapped: g.bootstrapped,
        hash64: h64,
        log,
      });
      server.setPeerHandler(transport);
    } catch (err) {
      transport.close();
      await server.close();
      await store.close();
      throw err;
    }
    const listening = { host: config.host, port: server.port };
    return new TallyNode(config, identity, listening, store, commits, handler, server, transport, driver);
  }

  /**
   * Clean stop: announce `leaving`, refuse new requests, flush every accepted event, announce
   * `left` (so peers mark this node down at once instead of waiting for the detector), then close
   * the links, the port and the store.
   */
  async stop(): Promise<void> {
    this.driver.startLeaving();
    this.handler.stopping = true;
    await this.commits.close();
    this.driver.leave();
    await this.transport.drain(LEAVE_DRAIN_MS);
    this.transport.close();
    await this.server.close();
    await this.store.close();
  }
}
