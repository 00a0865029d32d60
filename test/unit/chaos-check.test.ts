/**
 * The chaos run's checks after healing (scripts/chaos-check.ts), against a cluster made of maps: a
 * read at `all` joins the replicas and repairs the ones behind, as Tally's read repair does, so a
 * check that read at `all` before comparing the replicas would find them level whatever they held.
 */
import { describe, expect, it } from 'vitest';
import { awaitLevel, nodeFault, vacuous, type ReplicaReads } from '../../scripts/chaos-check.js';

const opts = { rf: 3, timeoutMs: 60, finalReadMs: 60, pauseMs: 5 };

/** Series → replica address → count. `catchUp` is what hints and anti-entropy do between comparisons. */
function cluster(copies: Record<string, Record<string, number>>, catchUp = (): void => {}): ReplicaReads & { allReads: number } {
  const c = {
    allReads: 0,
    replicasOf: (id: string) => Object.keys(copies[id] ?? {}),
    ready: async () => true,
    readOne: async (address: string, id: string) => {
      catchUp();
      return copies[id]?.[address] ?? 0;
    },
    readAll: async (id: string) => {
      c.allReads++;
      const replicas = copies[id] as Record<string, number>;
      const joined = Math.max(...Object.values(replicas));
      for (const r of Object.keys(replicas)) replicas[r] = joined;
      return joined;
    },
  };
  return c;
}

describe('awaitLevel', () => {
  it('finds replicas level and reads each series at all', async () => {
    const got = await awaitLevel(['a', 'b'], cluster({ a: { n1: 5, n2: 5, n3: 5 }, b: { n1: 0, n2: 0, n3: 0 } }), opts);
    expect(got.differing).toBe(0);
    expect(got.levelMs).not.toBeNull();
    expect(got.finals).toEqual(new Map([['a', 5], ['b', 0]]));
  });

  it('says a replica that never catches up by itself is not level, though a read at all would repair it', async () => {
    const c = cluster({ a: { n1: 7, n2: 7, n3: 2 }, b: { n1: 1, n2: 1, n3: 1 } });
    const got = await awaitLevel(['a', 'b'], c, opts);
    expect(got.differing).toBe(1);
    expect(got.levelMs).toBeNull();
    // The count of record is still read, once the time is up: nothing acknowledged is missing from it.
    expect(got.finals.get('a')).toBe(7);
  });

  it('waits for replicas that catch up by themselves, and reads at all only once they have', async () => {
    const copies = { a: { n1: 4, n2: 3, n3: 1 } };
    let reads = 0;
    const c = cluster(copies, () => {
      // Anti-entropy brings one replica up every few reads.
      if (++reads % 4 === 0) {
        if (copies.a.n2 < 4) copies.a.n2 = 4;
        else copies.a.n3 = 4;
      }
    });
    const readAll = c.readAll;
    let allBeforeLevel = false;
    c.readAll = async (id) => {
      if (new Set(Object.values(copies.a)).size !== 1) allBeforeLevel = true;
      return readAll(id);
    };
    const got = await awaitLevel(['a'], c, { ...opts, timeoutMs: 1_000 });
    expect(got.differing).toBe(0);
    expect(allBeforeLevel).toBe(false);
    expect(got.finals.get('a')).toBe(4);
  });

  it('does not call a series level when it was compared on fewer replicas than the cluster keeps', async () => {
    const got = await awaitLevel(['a'], cluster({ a: { n1: 3 } }), opts);
    expect(got.differing).toBe(1);
    expect(got.levelMs).toBeNull();
  });

  it('does not call the replicas level while a node is down or being rebuilt', async () => {
    const c = cluster({ a: { n1: 3, n2: 3, n3: 3 } });
    c.ready = async () => false;
    const got = await awaitLevel(['a'], c, opts);
    expect(got.levelMs).toBeNull();
  });

  it('counts a series whose replica cannot be read as not level, and leaves out one that cannot be read at all', async () => {
    const c = cluster({ a: { n1: 3, n2: 3, n3: 3 } });
    c.readOne = async () => {
      throw new Error('down');
    };
    c.readAll = async () => {
      throw new Error('down');
    };
    const got = await awaitLevel(['a'], c, opts);
    expect(got.differing).toBe(1);
    expect(got.finals.has('a')).toBe(false);
  });
});

describe('vacuous', () => {
  it('fails a run that acknowledged nothing or checked no read', () => {
    expect(vacuous(0, 10)).toHaveLength(1);
    expect(vacuous(10, 0)).toHaveLength(1);
    expect(vacuous(0, 0)).toHaveLength(2);
    expect(vacuous(1, 1)).toEqual([]);
  });
});

describe('nodeFault', () => {
  it('finds the faults a node logs and goes on from, in its JSON log lines, and nothing in others', () => {
    const lower = JSON.stringify({ level: 50, time: 1, msg: 'error INTERNAL: group commit failed: commit would lower the slot of n1#ab in {"v":"x"}: stored {"count":3}, writing {"count":2}' });
    expect(nodeFault(lower)).toBe('commit would lower the slot of n1#ab in {"v":"x"}: stored {"count":3}, writing {"count":2}');
    const core = JSON.stringify({ level: 50, time: 1, msg: 'error INTERNAL: the core failed on persisted: Error: commit 2 was reported out of order\n    at NodeCore.step (x.js:1:1)' });
    expect(nodeFault(core)).toBe('the core failed on persisted: Error: commit 2 was reported out of order');
    expect(nodeFault('error INTERNAL: the core failed on peer: boom')).toBe('the core failed on peer: boom');
    expect(nodeFault(JSON.stringify({ level: 50, msg: 'error INTERNAL: group commit failed: store write failed: ENOENT' }))).toBeUndefined();
    expect(nodeFault(JSON.stringify({ level: 30, msg: 'n1 ready on 10.0.0.1:7401' }))).toBeUndefined();
  });
});
