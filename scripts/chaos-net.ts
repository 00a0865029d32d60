/**
 * The chaos runner's network: each node in its own network namespace, its veth joined to one
 * bridge, so links between nodes can be cut one way or both while the runner (in the root
 * namespace, on the bridge) still reaches every node, as clients in another segment would.
 *
 * Cuts are blackhole routes (iproute2 only; no firewall needed): a route `blackhole B` in A's
 * namespace drops what A sends to B, which for TCP cuts the link both ways in effect but shows A's
 * sends failing first, and for a two-way cut both namespaces get one. `heal` flushes them.
 * Needs root and `ip netns`; `create` returns undefined (and why) where namespaces cannot be made.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Default address block of a chaos bridge (a /24); node i is .{i+1}, the runner .254. */
const SUBNET = '10.77.0';

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}

export class ChaosNet {
  private readonly cuts = new Set<string>();

  private constructor(
    readonly prefix: string,
    readonly size: number,
    readonly subnet: string,
  ) {}

  /**
   * Namespaces `${prefix}-n1…`, a bridge `${prefix}br` on `${subnet}.0/24`, or why they could not be
   * made. Two networks at once need different prefixes and subnets.
   */
  static async create(size: number, prefix = 'tchaos', subnet = SUBNET): Promise<ChaosNet | { error: string }> {
    const net = new ChaosNet(prefix, size, subnet);
    try {
      await net.teardown();
      await ip('link', 'add', net.bridge, 'type', 'bridge');
      await ip('addr', 'add', `${subnet}.254/24`, 'dev', net.bridge);
      await ip('link', 'set', net.bridge, 'up');
      for (let i = 0; i < size; i++) {
        const ns = net.ns(i);
        const host = `${prefix}v${i}`;
        await ip('netns', 'add', ns);
        await ip('link', 'add', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
        await ip('link', 'set', host, 'master', net.bridge);
        await ip('link', 'set', host, 'up');
        await ip('-n', ns, 'addr', 'add', `${net.address(i)}/24`, 'dev', 'eth0');
        await ip('-n', ns, 'link', 'set', 'eth0', 'up');
        await ip('-n', ns, 'link', 'set', 'lo', 'up');
      }
      return net;
    } catch (err) {
      await net.teardown().catch(() => {});
      const e = err as { stderr?: string; message: string };
      return { error: (e.stderr ?? e.message).trim().split('\n')[0] ?? 'unknown' };
    }
  }

  get bridge(): string {
    return `${this.prefix}br`;
  }

  ns(i: number): string {
    return `${this.prefix}-n${i + 1}`;
  }

  address(i: number): string {
    return `${this.subnet}.${i + 1}`;
  }

  /** The command prefix that runs a program inside node i's namespace. */
  exec(i: number): string[] {
    return ['ip', 'netns', 'exec', this.ns(i)];
  }

  /** Nothing from `from` reaches `to`. */
  async cut(from: number, to: number): Promise<void> {
    const key = `${from}>${to}`;
    if (this.cuts.has(key)) return;
    this.cuts.add(key);
    await ip('-n', this.ns(from), 'route', 'add', 'blackhole', `${this.address(to)}/32`);
  }

  /** Node i reaches no other node and none reaches it. */
  async isolate(i: number): Promise<void> {
    for (let j = 0; j < this.size; j++) {
      if (j === i) continue;
      await this.cut(i, j);
      await this.cut(j, i);
    }
  }

  /** Nothing crosses between the two groups. */
  async split(a: readonly number[], b: readonly number[]): Promise<void> {
    for (const x of a) {
      for (const y of b) {
        await this.cut(x, y);
        await this.cut(y, x);
      }
    }
  }

  async heal(): Promise<void> {
    for (const key of this.cuts) {
      const [from, to] = key.split('>').map(Number) as [number, number];
      await ip('-n', this.ns(from), 'route', 'del', 'blackhole', `${this.address(to)}/32`).catch(() => {});
    }
    this.cuts.clear();
  }

  async teardown(): Promise<void> {
    // The host end of each veth first: deleting it takes its peer along at once, while a deleted
    // namespace frees its devices in the background (a new run right after would find them).
    for (let i = 0; i < this.size; i++) await ip('link', 'del', `${this.prefix}v${i}`).catch(() => {});
    for (let i = 0; i < this.size; i++) await ip('netns', 'del', this.ns(i)).catch(() => {});
    await ip('link', 'del', this.bridge).catch(() => {});
  }
}
