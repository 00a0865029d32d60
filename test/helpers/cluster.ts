/** A cluster of real node processes for integration tests. */
import { statusOf } from '../../client/local-cluster.js';
import { startNode, stopNode, waitFor, type NodeProcess } from './node-process.js';

/** A cluster of real processes with fixed ports after the first start, so a node restarts where it was. */
export class Cluster {
  readonly nodes: (NodeProcess | undefined)[] = [];
  private readonly ports: number[] = [];
  constructor(
    readonly dir: string,
    readonly size: number,
    readonly extra: string[] = [],
  ) {}

  args(i: number): string[] {
    const seed = this.ports[0] === undefined || i === 0 ? [] : ['--seeds', `127.0.0.1:${this.ports[0]}`];
    return ['--port', String(this.ports[i] ?? 0), '--data', `${this.dir}/n${i + 1}`, '--id', `n${i + 1}`, '--zone', `z${(i % 3) + 1}`, ...seed, ...this.extra];
  }

  async start(i: number): Promise<void> {
    const n = await startNode(this.args(i));
    this.nodes[i] = n;
    this.ports[i] = n.port;
  }

  async startAll(): Promise<void> {
    for (let i = 0; i < this.size; i++) await this.start(i);
    await this.waitAllUp();
    await this.waitRebuilt();
  }

  /** No running node sees any member still being sent its ranges (reads count every replica). */
  async waitRebuilt(timeoutMs = 30_000): Promise<void> {
    await waitFor('every member rebuilt', timeoutMs, async () => {
      const live = this.nodes.map((n, i) => (n === undefined ? undefined : i)).filter((i): i is number => i !== undefined);
      const all = await Promise.all(live.map((i) => statusOf(this.address(i))));
      return all.every((s) => s.members.every((m) => !m.lifecycle.endsWith('+rebuilding'))) ? true : undefined;
    });
  }

  address(i: number): string {
    return `127.0.0.1:${this.ports[i]}`;
  }

  get addresses(): string[] {
    return this.ports.map((p) => `127.0.0.1:${p}`);
  }

  async kill(i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const n = this.nodes[i];
    if (n !== undefined) await stopNode(n, signal);
    this.nodes[i] = undefined;
  }

  /** Every running node sees every running node up, and the down ones down. */
  async waitAllUp(timeoutMs = 15_000): Promise<void> {
    await waitFor('membership agreed', timeoutMs, async () => {
      const live = this.nodes.map((n, i) => (n === undefined ? undefined : i)).filter((i): i is number => i !== undefined);
      const all = await Promise.all(live.map((i) => statusOf(this.address(i))));
      const ok = all.every((s) => live.every((j) => s.members.find((m) => m.id === `n${j + 1}`)?.status === 'up'));
      return ok ? true : undefined;
    });
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => (n === undefined ? undefined : stopNode(n, 'SIGKILL'))));
  }
}
