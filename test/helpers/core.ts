/** A node core for unit tests: n1 of a three-zone ring with n2 and n3, as a restart would make it. */
import { defaultConfig, validateConfig } from '../../cluster/membership-config.js';
import { NodeCore, type NodeCoreInit } from '../../cluster/node-core.js';
import { Prng } from '../../cluster/prng.js';
import { defaultReplicationConfig, validateReplicationConfig, type ReplicationConfig } from '../../cluster/replication-config.js';

export function coreOfThree(hash64: NodeCoreInit['hash64'], nowMs: number, restored: Pick<NodeCoreInit, 'hints' | 'journal'>): NodeCore {
  return new NodeCore({
    self: { id: 'n1', address: '127.0.0.1:7401', zone: 'z1' },
    actor: 'n1#00000001',
    membership: validateConfig({ ...defaultConfig(), seeds: ['127.0.0.1:7401'] }),
    replication: defaultReplicationConfig(),
    rng: new Prng(1),
    hash64,
    nowMs,
    generation: nowMs,
    bootstrapped: true,
    knownPeers: [
      { id: 'n2', address: '127.0.0.1:7402', zone: 'z2', vnodes: 256 },
      { id: 'n3', address: '127.0.0.1:7403', zone: 'z3', vnodes: 256 },
    ],
    ...restored,
  });
}

/** A node core alone on its ring (RF 1), as a first start makes it, with `replication` over the defaults. */
export function coreOfOne(hash64: NodeCoreInit['hash64'], nowMs: number, replication: Partial<ReplicationConfig> = {}): NodeCore {
  return new NodeCore({
    self: { id: 'n1', address: '127.0.0.1:7401', zone: 'z1' },
    actor: 'n1#00000001',
    membership: validateConfig({ ...defaultConfig(), seeds: ['127.0.0.1:7401'] }),
    replication: validateReplicationConfig({ ...defaultReplicationConfig(), rf: 1, ...replication }),
    rng: new Prng(1),
    hash64,
    nowMs,
    generation: nowMs,
    bootstrapped: true,
  });
}
