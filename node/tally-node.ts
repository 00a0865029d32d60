/**
 * One Tally node: builds and connects its parts (identity, store, core, driver, transport, server)
 * and stops them in order. The one place that wires the process together; no part keeps a
 * reference back to it.
 */
import { randomBytes } from 'node:crypto';
import { createServer as createNetServer } from 'node:net';
import { readdir, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { getHeapStatistics } from 'node:v8';
import xxhash from 'xxhash-wasm';
import { NodeCore } from '../cluster/node-core.js';
import { Prng } from '../cluster/prng.js';
import { ErrorCode, formatAddress, TallyError, validateEndpointState, type ClientRequest, type Reply } from '../protocol/index.js';
import type { NodeStatus } from '../protocol/status.js';
import { fitConnectionsToFiles, fitToHeap, openFileLimit, resolveConfig, type NodeConfig, type NodeOverrides } from './config.js';
import { Driver, KNOWN_PEERS_KEY, REBUILDING_KEY, REMOVED_KEY } from './driver.js';
import { monotonicNowMs, setClockOffsetMs, wallNowMs } from './clock.js';
import type { KnownPeer } from '../cluster/membership.js';
import { checkOwner, checkRetention, openActor, openNodeId, recordDatabase, settleNewDatabase, type Identity } from './identity.js';
import { CommitMark, COMMIT_MARK_FILE } from './commit-mark.js';
import { LevelKv } from './kv.js';
import { logLine } from './logger.js';
import { PeerTransport, defaultPeerTransportOptions } from './peer-transport.js';
import { TallyServer, type TlsSettings } from './server.js';
import { ClientTokens } from './tokens.js';
import { httpApi } from './http-api.js';
import { NodeMetrics, summarize } from './metrics.js';
import { statusPage } from './status-page.js';
import { Store } from './store.js';
import { memberStatuses, healthLine, processStatus } from './status.js';

const REBUILD_HINT =
  'if the data is gone for good, start with --rebuild: the database is moved aside and the node comes back as a new actor that its replicas refill';

/** Whether `dbPath` holds LevelDB files with data in them: a table, or a log with records. */
async function holdsData(dbPath: string): Promise<boolean> {
  const files = await readdir(dbPath).catch(() => [] as string[]);
  for (const f of files) {
    if (f.endsWith('.ldb') || f.endsWith('.sst')) return true;
    if (f.endsWith('.log') && (await stat(join(dbPath, f)).then((s) => s.size > 0, () => false))) return true;
  }
  return false;
}

/**
 * A node whose directory held a database must find it whole: a missing database, or one without
 * its CURRENT file, would open as a new empty one (LevelDB then deletes the old tables), losing
 * everything without a word. `recorded`: the identity file says the directory held one; without
 * that record (the file lost), a database that lost its CURRENT file is known by its files.
 */
async function checkDatabasePresent(dbPath: string, recorded: boolean): Promise<void> {
  const present = await stat(join(dbPath, 'CURRENT')).then(() => true, () => false);
  if (present) return;
  if (!recorded && !(await holdsData(dbPath))) return;
  const what = await stat(dbPath).then(() => `${dbPath} has lost its CURRENT file`, () => `${dbPath} is missing`);
  throw new TallyError(ErrorCode.STORAGE_DAMAGED, `this data directory held a database, but ${what}; refusing to start it as an empty store; ${REBUILD_HINT}`);
}

/**
 * A database behind its commit mark, or with a gap among its recent commits, lost acknowledged
 * commits from its log (node/commit-mark.ts): refused. A new database starts the mark afresh.
 */
async function checkCommits(store: Store, mark: CommitMark, seq: number, fresh: boolean, dbPath: string): Promise<void> {
  if (fresh) return mark.write(seq);
  if (mark.marked !== undefined && mark.marked > seq) {
    throw new TallyError(
      ErrorCode.STORAGE_DAMAGED,
      `${dbPath} holds commits up to ${seq}, but ${mark.marked} were written: LevelDB dropped ${mark.marked - seq} commits from a damaged or cut log; refusing to start without them; ${REBUILD_HINT}`,
    );
  }
  const gaps = await store.missingCommits();
  if (gaps.length > 0) {
    throw new TallyError(
      ErrorCode.STORAGE_DAMAGED,
      `${dbPath} lacks ${gaps.length >= 100 ? '100 or more' : gaps.length} of its recent commits (first ${gaps[0]}): LevelDB dropped them from a damaged log; refusing to start without them; ${REBUILD_HINT}`,
    );
  }
}

/** `--rebuild`: the database, if any, goes to `db.damaged-<time>` beside it (kept, for forensics). */
async function moveAside(dbPath: string): Promise<void> {
  const exists = await stat(dbPath).then(() => true, () => false);
  if (!exists) return;
  const to = `${dbPath}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  await rename(dbPath, to);
  log(`--rebuild: moved the database aside to ${to}; this node starts as a new actor and is refilled by its replicas`);
}

/** The port, in the user's words, when it cannot be listened on; other errors as they are. */
function listenError(err: unknown, host: string, port: number): Error {
  const address = formatAddress(host, port);
  switch ((err as NodeJS.ErrnoException).code) {
    case 'EADDRINUSE':
      return new TallyError(ErrorCode.IN_USE, `port ${address} is in use by another process (another node?); choose another --port, or stop what holds it`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new TallyError(ErrorCode.BAD_REQUEST, `not allowed to listen on ${address}: ports below 1024 need privileges; choose another --port`, { cause: err });
    case 'EADDRNOTAVAIL':
      return new TallyError(ErrorCode.BAD_REQUEST, `cannot listen on ${address}: ${host} is not an address of this machine; check --host`, { cause: err });
    default:
      return err as Error;
  }
}

/**
 * Fails at once, before the data directory is touched, if the port cannot be listened on. The
 * server's own listen later still reports a port taken in between.
 */
async function checkPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createNetServer();
    probe.once('error', (err) => reject(listenError(err, host, port)));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/** How long a stopping node waits for its `left` announcement to reach the kernel. */
const LEAVE_DRAIN_MS = 500;
/** How long a stopping node waits for the writes and reads under way to finish. */
const STOP_DRAIN_MS = 5_000;
/** Hints kept at start, at most (the newest): five members' worth at the default bound per member. */
const MAX_HINTS_LOADED = 1_000_000;
/** Journal records read back at start, at most: there is one per commit not yet replicated everywhere. */
const MAX_JOURNAL_LOADED = 100_000;
/** Meta key of the last generation this data directory started with. */
const GENERATION_KEY = 'generation';

/**
 * This start's generation: the clock, but always above the last one this directory used, so a
 * restarted node is newer than its old self even if the clock stepped back.
 */
async function nextGeneration(store: Store, nowMs: number): Promise<{ generation: number; bootstrapped: boolean }> {
  const last = await store.getMeta(GENERATION_KEY);
  const lastGeneration = last === undefined ? 0 : Number(Buffer.from(last).toString('utf8'));
  const generation = Math.max(nowMs, (Number.isSafeInteger(lastGeneration) ? lastGeneration : 0) + 1);
  await store.putMeta(GENERATION_KEY, Buffer.from(String(generation)), { sync: true });
  return { generation, bootstrapped: last !== undefined };
}

/** The members this node knew when it last ran; an unreadable record counts as none (gossip relearns them). */
async function loadKnownPeers(store: Store): Promise<KnownPeer[]> {
  const bytes = await store.getMeta(KNOWN_PEERS_KEY);
  return bytes === undefined ? [] : parseKnownPeers(bytes);
}

/** The record of known members as the driver keeps it (JSON); an entry that does not validate is left out. */
export function parseKnownPeers(bytes: Uint8Array): KnownPeer[] {
  try {
    const raw: unknown = JSON.parse(Buffer.from(bytes).toString('utf8'));
    if (!Array.isArray(raw)) return [];
    return raw.flatMap((p: unknown): KnownPeer[] => {
      try {
        // A tombstone (`removed`) keeps its actor and generation, checked as gossip's are.
        const removed: unknown = (p as { removed?: unknown }).removed;
        const tomb = typeof removed === 'object' && removed !== null ? (removed as { actor?: unknown; generation?: unknown }) : undefined;
        const s = validateEndpointState(
          { ...(p as object), generation: tomb?.generation ?? 0, version: 0, lifecycle: 'normal', ringChecksum: '0', actor: tomb?.actor },
          'known peer',
        );
        const peer: KnownPeer = { id: s.id, address: s.address, zone: s.zone, vnodes: s.vnodes };
        if (tomb !== undefined) peer.removed = { generation: s.generation, ...(s.actor === undefined ? {} : { actor: s.actor }) };
        return [peer];
      } catch {
        return [];
      }
    });
  } catch {
    return [];
  }
}

/** The PEM files of --tls-cert, --tls-key and --tls-ca, read; undefined without TLS. */
async function readTls(config: NodeConfig): Promise<TlsSettings | undefined> {
  if (config.tlsCert === undefined || config.tlsKey === undefined) return undefined;
  const read = (file: string, what: string): Promise<Buffer> =>
    readFile(file).catch((err: NodeJS.ErrnoException) => {
      throw new TallyError(ErrorCode.BAD_REQUEST, `cannot read the TLS ${what} ${file}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
    });
  const [cert, key, ca] = await Promise.all([read(config.tlsCert, 'certificate'), read(config.tlsKey, 'key'), config.tlsCa === undefined ? undefined : read(config.tlsCa, 'CA')]);
  return { cert, key, ...(ca === undefined ? {} : { ca }) };
}

/** A line for the node's log (node/logger.ts). */
export function log(line: string): void {
  logLine(line);
}

export class TallyNode {
  /** The node's actor was taken off the ring for good (decommissioned or removed): the process should stop. */
  onRemoved: (reason: string) => void = () => {};
  /** The node must not go on (another live node already uses its id): the process should stop and fail. */
  onFatal: (err: TallyError) => void = () => {};

  private constructor(
    readonly config: NodeConfig,
    readonly identity: Identity,
    readonly address: { host: string; port: number },
    private readonly store: Store,
    private readonly driver: Driver,
    private readonly server: TallyServer,
    private readonly transport: PeerTransport,
  ) {}

  static async start(overrides: NodeOverrides): Promise<TallyNode> {
    const config = resolveConfig(overrides);
    setClockOffsetMs(config.clockOffsetMs);
    const heapLimit = getHeapStatistics().heap_size_limit;
    const fitted = fitToHeap(config.replication, heapLimit);
    if (fitted.maxCachedSlots < config.replication.maxCachedSlots || fitted.maxDirtySlots < config.replication.maxDirtySlots) {
      log(`heap limit ${Math.round(heapLimit / 1048576)} MiB (the old generation's, as --max-old-space-size gives it, and the young generation's): up to ${fitted.maxCachedSlots} slots cached and ${fitted.maxDirtySlots} awaiting a commit (set for ${config.replication.maxCachedSlots} and ${config.replication.maxDirtySlots})`);
    }
    config.replication = fitted;
    await checkPortFree(config.host, config.port);
    const fileLimit = openFileLimit();
    const files = fitConnectionsToFiles(config.maxConnections, fileLimit);
    if (files.maxConnections < config.maxConnections) {
      log(`open file limit ${fileLimit}: up to ${files.maxConnections} connections (set for ${config.maxConnections}), ${files.storeOpenFiles} table files kept open`);
      config.maxConnections = files.maxConnections;
    }
    const tokens = ClientTokens.from(config.clientToken, config.clientTokenFile);
    const tls = await readTls(config);
    const { id, database } = await openNodeId(config.dataDir, config.id);
    const dbPath = join(config.dataDir, 'db');
    if (config.rebuild) await moveAside(dbPath);
    else await checkDatabasePresent(dbPath, database !== undefined);
    const { h64 } = await xxhash();
    const store = new Store(new LevelKv(dbPath, files.storeOpenFiles), h64);
    try {
      await store.open();
    } catch (err) {
      if (err instanceof TallyError && err.code === ErrorCode.STORAGE_DAMAGED) throw new TallyError(err.code, `${err.message}; ${REBUILD_HINT}`, { cause: err });
      throw err;
    }
    let identity: Identity;
    try {
      const removed = await store.getMeta(REMOVED_KEY);
      if (removed !== undefined) {
        const [actor, ...why] = Buffer.from(removed).toString('utf8').split(' ');
        throw new TallyError(
          ErrorCode.BAD_REQUEST,
          `this data directory's actor ${actor} left the ring for good (${why.join(' ')}); it cannot come back: to join the cluster again, start with an empty data directory (a new actor, sent its ranges by the others)`,
        );
      }
      identity = await openActor(store, id, config.rebuild ? undefined : database);
      await checkOwner(store, id, config.cluster);
      const shortened = await checkRetention(store, config.replication.retention, config.shortenRetention);
      if (shortened.length > 0) log(`--shorten-retention: retention shortened (${shortened.join(', ')}); the days past it are deleted`);
      // A new database (made by a --rebuild killed before it recorded it) is not another one.
      if (!config.rebuild && !identity.fresh && database !== undefined && identity.epoch !== database) {
        throw new TallyError(
          ErrorCode.STORAGE_DAMAGED,
          `${dbPath} holds another database (actor epoch ${identity.epoch}) than the one this node last ran on (${database}); refusing to start on it; ${REBUILD_HINT}`,
        );
      }
      if (database !== identity.epoch) await recordDatabase(config.dataDir, id, identity.epoch, Date.now());
      // A database behind its commit mark lost acknowledged commits from its log (node/commit-mark.ts).
      const seq = await store.loadCommitSeq();
      const mark = await CommitMark.open(join(config.dataDir, COMMIT_MARK_FILE));
      try {
        await checkCommits(store, mark, seq, identity.fresh, dbPath);
      } catch (err) {
        await mark.close().catch(() => {});
        throw err;
      }
      store.attachMark(mark);
    } catch (err) {
      await store.close();
      throw err;
    }
    const rf = config.replication.rf;
    const retention: [number, number] = [config.replication.retention.minuteDays, config.replication.retention.hourDays];
    const transport = new PeerTransport({
      ...defaultPeerTransportOptions(identity.id, config.cluster, config.clusterSecret, rf, retention),
      ...(tls === undefined ? {} : { tls: tls.ca === undefined ? {} : { ca: tls.ca } }),
    });
    let driver: Driver | undefined;
    let address = `${config.host}:${config.port}`;
    let generation = 0;
    const status = (): NodeStatus => {
      const core = driver?.core;
      const members = core === undefined ? [] : memberStatuses(core, monotonicNowMs());
      const stats = core?.stats();
      return {
        nodeId: identity.id,
        cluster: config.cluster,
        zone: config.zone,
        address,
        actor: identity.actor,
        generation,
        rf,
        retention: config.replication.retention,
        ringChecksum: members.find((m) => m.self)?.ringChecksum ?? '',
        members,
        health: healthLine(members, core?.membership.otherSeeds ?? []),
        core: stats,
        repair: stats?.repair,
        ...(stats?.ringChange === undefined ? {} : { ringChange: stats.ringChange }),
        damagedSlots: store.damagedSlots,
        peers: { ...transport.stats, ...server.stats, ...driver?.stats },
        process: processStatus(),
        edge: { ...server.load, maxConnections: config.maxConnections, maxPartialBytes: config.maxPartialBytes },
        load: metrics.load(),
      };
    };
    const handle = (req: ClientRequest, frame?: Uint8Array): Promise<Reply> => {
      if (driver === undefined) return Promise.reject(new TallyError(ErrorCode.NOT_READY, 'the node is starting'));
      const started = process.hrtime.bigint();
      const summary = summarize(req);
      const p = driver.handle(req, frame);
      const observe = (reply: Reply | undefined, err: { code: ErrorCode } | undefined): void => {
        try {
          metrics.observe(summary, started, reply, err);
        } catch (e) {
          log(`error INTERNAL: a request's metrics could not be recorded: ${(e as Error).message}`);
        }
      };
      p.then(
        (reply) => observe(reply, undefined),
        (err: unknown) => observe(undefined, err instanceof TallyError ? err : { code: ErrorCode.INTERNAL }),
      );
      return p;
    };
    const refuseEarly = (m: unknown): TallyError | undefined => driver?.refuseEarly(m);
    const server = new TallyServer(
      {
        host: config.host,
        port: config.port,
        nodeId: identity.id,
        zone: config.zone,
        cluster: config.cluster,
        actor: identity.actor,
        clusterSecret: config.clusterSecret,
        rf,
        retention,
        maxInFlightPerConnection: config.maxInFlightPerConnection,
        maxSocketBufferedBytes: config.maxSocketBufferedBytes,
        maxConnections: config.maxConnections,
        maxConnectionsPerAddress: config.maxConnectionsPerAddress,
        handshakeTimeoutMs: config.handshakeTimeoutMs,
        helloTimeoutMs: config.helloTimeoutMs,
        frameTimeoutMs: config.frameTimeoutMs,
        idleTimeoutMs: config.idleTimeoutMs,
        maxPartialBytes: config.maxPartialBytes,
        ...(tokens === undefined ? {} : { tokens }),
        ...(tls === undefined ? {} : { tls }),
      },
      { handle, refuseEarly },
    );
    const metrics = new NodeMetrics({
      status,
      edge: () => {
        const load = server.load;
        return { byStage: load.byStage, partialBytes: load.partialBytes, stats: server.stats, errors: server.errorCodes };
      },
    });
    server.setHttpHandler(
      httpApi({
        handle,
        refuseEarly,
        status,
        ready: () => {
          if (driver === undefined) return { ready: false, reason: 'the node is starting' };
          if (driver.stopping) return { ready: false, reason: 'the node is stopping' };
          const self = status().members.find((m) => m.self);
          if (self?.lifecycle.endsWith('+rebuilding') === true) return { ready: false, reason: 'the node is being sent its ranges by its peers; reads do not count it yet' };
          if (self !== undefined && self.lifecycle !== 'normal') return { ready: false, reason: `the node is ${self.lifecycle}` };
          return { ready: true, reason: 'serving' };
        },
        metrics: () => metrics.render(),
        page: statusPage,
        onError: (code) => server.countError(code),
      }),
    );
    try {
      const listening = await server.listen().catch((err: unknown) => {
        throw listenError(err, config.host, config.port);
      });
      address = config.advertise ?? formatAddress(listening.host, listening.port);
      transport.self = { actor: identity.actor, address };
      const g = await nextGeneration(store, wallNowMs());
      generation = g.generation;
      const { hints, dropped: hintsDropped } = await store.loadHints(config.replication.maxHintsPerNode, MAX_HINTS_LOADED);
      if (hintsDropped > 0) log(`dropped ${hintsDropped} stored hints over the bounds (${config.replication.maxHintsPerNode} per member, ${MAX_HINTS_LOADED} in all), the oldest first: anti-entropy repairs what they were for`);
      const batches = await store.loadBatches(config.replication.maxDedupeEntries);
      const knownPeers = await loadKnownPeers(store);
      // A new database joining through seeds may be a node whose data was wiped, or a new node
      // taking ranges that hold data: it is sent its ranges before reads count it, across restarts.
      if (identity.fresh && config.seeds.some((s) => s !== address)) await store.putMeta(REBUILDING_KEY, Buffer.from('needed'), { sync: true });
      // Only now is the database the node's own: a start killed before here takes it as new again.
      if (identity.fresh) await settleNewDatabase(store);
      const rebuilding = Buffer.from((await store.getMeta(REBUILDING_KEY)) ?? []).toString('utf8') === 'needed';
      if (rebuilding) log('this node starts on an empty store: its peers send it its ranges before reads count it');
      const journal = await store.loadJournal(MAX_JOURNAL_LOADED);
      const writtenBefore = await store.loadWrittenStarts(wallNowMs());
      const core = new NodeCore({
        self: { id: identity.id, address, zone: config.zone },
        actor: identity.actor,
        membership: config.membership,
        replication: config.replication,
        rng: new Prng(randomBytes(4).readUInt32LE(0)),
        hash64: h64,
        nowMs: monotonicNowMs(),
        generation,
        bootstrapped: g.bootstrapped,
        knownPeers,
        rebuilding,
        hints,
        batches,
        journal,
        writtenBefore,
      });
      if (hints.length > 0) log(`recovered ${hints.length} hints`);
      if (journal.length > 0) log(`${journal.length} commits were not seen replicated before the last stop: their buckets are hinted to every other replica`);
      driver = new Driver(core, store, transport, log, status);
      transport.idHeld = (claim) => core.membership.idHeldAgainst(claim);
      transport.onDuplicateRefused = (message) => log(`error IN_USE: refused a peer: ${message}`);
      server.setPeerHandler(transport);
    } catch (err) {
      transport.close();
      await server.close();
      await store.close();
      throw err;
    }
    const node = new TallyNode(config, identity, { host: config.host, port: server.port }, store, driver, server, transport);
    driver.onRemoved = (reason) => node.onRemoved(reason);
    driver.onFatal = (err) => node.onFatal(err);
    let refused = false;
    transport.onOwnIdInUse = (from, message) => {
      if (refused) return;
      refused = true;
      node.onFatal(new TallyError(ErrorCode.IN_USE, `${from} refused this node: ${message}`));
    };
    return node;
  }

  /**
   * Clean stop: announce `leaving`, refuse new requests, finish what is under way (every accepted
   * event durable), announce `left` (so peers mark this node down at once instead of waiting for
   * the detector), then close the links, the port and the store.
   */
  async stop(): Promise<void> {
    await this.driver.drain(STOP_DRAIN_MS);
    this.driver.leave();
    await this.transport.drain(LEAVE_DRAIN_MS);
    this.transport.close();
    await this.server.close();
    await this.store.close();
  }
}
