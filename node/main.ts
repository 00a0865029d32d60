/**
 * The node process: start a TallyNode from CLI settings, print one line when it is ready, and
 * stop cleanly (flushing every accepted event) on SIGINT or SIGTERM.
 */
import type { NodeOverrides } from './config.js';
import { TallyNode } from './tally-node.js';
import { formatAddress } from '../protocol/index.js';
import { createLogger, setLogger, type LogOptions } from './logger.js';

/** A signal repeated within this long is taken as sent once. */
const SAME_SIGNAL_MS = 1_000;

export interface ProcessOptions extends LogOptions {
  /**
   * Stop cleanly when standard input closes. `tally cluster` gives each node a pipe as its
   * stdin: if the cluster process dies in any way (even SIGKILL), the pipe closes and the nodes
   * stop instead of running on as orphans.
   */
  stopOnStdinClose?: boolean;
}

export async function startNodeProcess(overrides: NodeOverrides, processOptions: ProcessOptions = {}): Promise<TallyNode> {
  // A node's output may go to a pipe whose reader is gone (a closed terminal, a dead parent):
  // that must not crash the node.
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});
  const log = createLogger(processOptions);
  setLogger(log);
  const node = await TallyNode.start(overrides);
  const config = node.config;
  const { host, port } = node.address;
  const id = node.identity.id;
  // Scripts and tests wait for " ready on host:port" in this message, whatever the log format.
  log.info(
    { event: 'ready', node: id, address: formatAddress(host, port), zone: config.zone, rf: config.replication.rf, dataDir: config.dataDir },
    `tally node ${id} ready on ${formatAddress(host, port)} (zone ${config.zone}, rf ${config.replication.rf}, data ${config.dataDir}, actor ${node.identity.actor}${config.replication.fsync ? ', fsync' : ''}${config.clusterSecret === undefined ? '' : ', cluster secret'})`,
  );
  let stopping = false;
  let first: { signal: string; atMs: number } | undefined;
  const stop = (signal: string): void => {
    // The same signal again within a second is the same request sent twice, not an operator out of
    // patience: a process manager signals every process of the node's group, and the process
    // `tally start` runs the node from (node/memory.ts) passes the signal on too.
    if (first !== undefined && first.signal === signal && performance.now() - first.atMs < SAME_SIGNAL_MS) return;
    first ??= { signal, atMs: performance.now() };
    if (stopping) {
      // A second signal: the operator will not wait. Every acknowledged event is already durable.
      log.warn({ event: 'exit', node: id, signal }, `tally node ${id} exiting at once (second ${signal})`);
      process.exit(1);
    }
    stopping = true;
    log.info({ event: 'stopping', node: id, signal }, `tally node ${id} stopping (${signal})`);
    node.stop().then(
      () => {
        log.info({ event: 'stopped', node: id }, `tally node ${id} stopped`);
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ code: 'INTERNAL', node: id }, `error INTERNAL: clean stop failed: ${(err as Error).message}`);
        process.exit(1);
      },
    );
  };
  node.onRemoved = (reason) => {
    log.info({ event: 'removed', node: id }, `tally node ${id} left the ring for good: ${reason}`);
    if (!stopping) stop('left the ring');
  };
  node.onFatal = (err) => {
    log.error({ code: err.code, node: id }, `error ${err.code}: ${err.message}`);
    process.stderr.write(`error ${err.code}: ${err.message}\n`);
    if (!stopping) {
      stopping = true;
      node.stop().finally(() => process.exit(1));
    }
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => stop('SIGHUP'));
  if (processOptions.stopOnStdinClose === true) {
    process.stdin.on('data', () => {});
    // Only a first reason to stop: a pipe closing while a stop is under way is not a second signal.
    const onClosed = (): void => {
      if (!stopping) stop('stdin closed');
    };
    process.stdin.on('end', onClosed);
    process.stdin.on('error', onClosed);
  }
  return node;
}
