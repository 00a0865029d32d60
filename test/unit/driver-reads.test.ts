/**
 * The driver hands the store at most MAX_READS_IN_FLIGHT of the core's scans at once; the rest wait
 * as the core's own spans. Each scan under way in the store holds its key ranges, promises and
 * the read thread's place in line: ~6 KB, so the 21,000 scans of one request of 1,000 counts since
 * 1970 took 120 MB of the heap at once, and three such requests from one client ended a node with
 * the default budget for want of memory.
 */
import { expect, test } from 'vitest';
import xxhash from 'xxhash-wasm';
import { coreOfOne } from '../helpers/core.js';
import { Driver } from '../../node/driver.js';
import { MemoryKv } from '../../node/kv.js';
import { defaultPeerTransportOptions, PeerTransport } from '../../node/peer-transport.js';
import { MAX_READS_IN_FLIGHT } from '../../node/range-reader.js';
import { Store } from '../../node/store.js';
import { Consistency, MAX_QUERIES_PER_GET, type QueryTuple } from '../../protocol/index.js';

test('scans go to the store a bounded number at a time, and every read is answered', async () => {
  const { h64 } = await xxhash();
  const t0 = Date.now();
  const core = coreOfOne(h64, t0, { readTimeoutMs: 60_000 });
  const store = new Store(new MemoryKv(), h64);
  await store.open();
  let running = 0;
  let most = 0;
  const scan = store.scan.bind(store);
  store.scan = async (spans) => {
    running += 1;
    most = Math.max(most, running);
    try {
      await new Promise((r) => setImmediate(r));
      return await scan(spans);
    } finally {
      running -= 1;
    }
  };
  const transport = new PeerTransport(defaultPeerTransportOptions('n1', 'tally'));
  const driver = new Driver(core, store, transport, () => {}, () => ({}));
  const queries: QueryTuple[] = Array.from({ length: MAX_QUERIES_PER_GET }, (_, i) => [`v${i}`, 'view', 0, t0]);
  const replies = await Promise.all([1, 2].map((id) => driver.handle({ t: 'get', id, queries, cl: Consistency.ONE })));
  expect(replies.map((r) => r.t)).toEqual(['result', 'result']);
  expect(most).toBeLessThanOrEqual(MAX_READS_IN_FLIGHT);
  transport.close();
}, 60_000);
