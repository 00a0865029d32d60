/**
 * The driver stops the node (onFatal) when the core breaks an invariant on a store operation's
 * result: that operation would stay under way for good, and every commit after it behind it, while
 * the node looked ready and healthy. On a peer's input it logs and goes on: one bad peer must not
 * stop every node it talks to.
 */
import { expect, test } from 'vitest';
import xxhash from 'xxhash-wasm';
import { coreOfOne } from '../helpers/core.js';
import type { CoreInput } from '../../cluster/node-core.js';
import { Driver } from '../../node/driver.js';
import { MemoryKv } from '../../node/kv.js';
import { defaultPeerTransportOptions, PeerTransport } from '../../node/peer-transport.js';
import { Store } from '../../node/store.js';
import { TallyError } from '../../protocol/errors.js';
import { Consistency } from '../../protocol/messages.js';

async function driverWithCore(breakOn: CoreInput['kind']): Promise<{ driver: Driver; fatal: TallyError[]; logged: string[]; transport: PeerTransport }> {
  const { h64 } = await xxhash();
  const t0 = Date.now();
  const core = coreOfOne(h64, t0);
  const step = core.step.bind(core);
  let broken = false;
  core.step = (input, now) => {
    if (input.kind === breakOn && !broken) {
      broken = true;
      throw new Error(`a broken invariant on ${input.kind}`);
    }
    return step(input, now);
  };
  const store = new Store(new MemoryKv(), h64);
  await store.open();
  const transport = new PeerTransport(defaultPeerTransportOptions('n1', 'tally'));
  const logged: string[] = [];
  const driver = new Driver(core, store, transport, (line) => logged.push(line), () => ({}));
  const fatal: TallyError[] = [];
  driver.onFatal = (err) => fatal.push(err);
  return { driver, fatal, logged, transport };
}

test('a broken invariant on a commit\'s result stops the node, once', async () => {
  const { driver, fatal, logged, transport } = await driverWithCore('persisted');
  const write = driver.handle({ t: 'count', id: 1, events: [['v1', 'view', Date.now(), 1, 1]], cl: Consistency.ONE, batch: 'c:1' });
  write.catch(() => {});
  for (let i = 0; i < 50 && fatal.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(logged.some((l) => /the core failed on persisted: Error: a broken invariant on persisted/.test(l))).toBe(true);
  expect(fatal.map((e) => [e.code, e.message])).toEqual([['INTERNAL', "the core failed on a store operation's result (persisted): a broken invariant on persisted"]]);
  transport.close();
});

test('a broken invariant on a peer\'s message is logged, and the node goes on', async () => {
  const { driver, fatal, logged, transport } = await driverWithCore('peer');
  // As the transport hands it a validated message (the core here fails on any).
  (driver as unknown as { input(i: CoreInput): void }).input({ kind: 'peer', from: 'n2', msg: { t: 'ping' } as never });
  const reply = await driver.handle({ t: 'count', id: 1, events: [['v1', 'view', Date.now(), 1, 1]], cl: Consistency.ONE, batch: 'c:1' });
  expect(reply).toMatchObject({ t: 'ack', n: 1 });
  expect(logged.some((l) => /the core failed on peer/.test(l))).toBe(true);
  expect(fatal).toEqual([]);
  transport.close();
});
