/**
 * The node process: start a TallyNode from CLI settings, print one line when it is ready, and
 * stop cleanly (flushing every accepted event) on SIGINT or SIGTERM.
 */
import type { NodeOverrides } from './config.js';
import { TallyNode } from './tally-node.js';
import { formatAddress } from '../protocol/index.js';

export interface ProcessOptions {
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
  const node = await TallyNode.start(overrides);
  const config = node.config;
  const { host, port } = node.address;
  process.stdout.write(
    `tally node ${node.identity.id} ready on ${formatAddress(host, port)} (zone ${config.zone}, rf ${config.replication.rf}, data ${config.dataDir}, actor ${node.identity.actor}${config.replication.fsync ? ', fsync' : ''}${config.clusterSecret === undefined ? '' : ', cluster secret'})\n`,
  );
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      // A second signal: the operator will not wait. Every acknowledged event is already durable.
      process.stdout.write(`tally node ${node.identity.id} exiting at once (second ${signal})\n`);
      process.exit(1);
    }
    stopping = true;
    process.stdout.write(`tally node ${node.identity.id} stopping (${signal})\n`);
    node.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`error INTERNAL: clean stop failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  node.onRemoved = (reason) => {
    process.stdout.write(`tally node ${node.identity.id} left the ring for good: ${reason}\n`);
    if (!stopping) stop('left the ring');
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
