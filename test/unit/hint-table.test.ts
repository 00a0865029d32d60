/** The hint table: one hint per (node, bucket), bounds that count what they refuse, replays that only clear what they shipped. */
import { describe, expect, it } from 'vitest';
import { HintTable } from '../../cluster/hint-table.js';
import { bucketId, type BucketRef } from '../../cluster/slot-table.js';

const ref = (videoId: string, start = 0): BucketRef => ({ videoId, eventType: 'view', res: 'm', start });

describe('HintTable', () => {
  it('coalesces per bucket, bounds per node and counts what it drops', () => {
    const t = new HintTable(2, 1_000);
    expect(t.add('n2', ref('a'), 0)).toBe('added');
    expect(t.add('n2', ref('a'), 5)).toBe('renewed');
    expect(t.add('n2', ref('b'), 6)).toBe('added');
    expect(t.add('n2', ref('c'), 7)).toBe('dropped');
    expect(t.add('n3', ref('c'), 7)).toBe('added');
    expect(t.stats()).toEqual({ n2: { pending: 2, dropped: 1, expired: 0 }, n3: { pending: 1, dropped: 0, expired: 0 } });
  });

  it('reports a member whatever its id, `__proto__` and `constructor` too', () => {
    const t = new HintTable(10, 1_000);
    t.add('__proto__', ref('a'), 0);
    t.add('constructor', ref('a'), 0);
    expect(JSON.parse(JSON.stringify(t.stats()))).toEqual(
      JSON.parse('{"__proto__":{"pending":1,"dropped":0,"expired":0},"constructor":{"pending":1,"dropped":0,"expired":0}}'),
    );
    expect(Object.keys(t.stats()).sort()).toEqual(['__proto__', 'constructor']);
  });

  it('keeps age order: a renewed hint goes to the back, expiry stops at the first young one', () => {
    const t = new HintTable(10, 1_000);
    t.add('n2', ref('a'), 0);
    t.add('n2', ref('b'), 100);
    t.add('n2', ref('a'), 900); // renewed: now the youngest
    expect(t.oldest('n2', 5).map((h) => h.ref.videoId)).toEqual(['b', 'a']);
    expect(t.expire(1_150)).toEqual([{ node: 'n2', ref: ref('b') }]);
    expect(t.stats()['n2']).toEqual({ pending: 1, dropped: 0, expired: 1 });
  });

  it('a replay clears only hints not renewed since it took them', () => {
    const t = new HintTable(10, 1_000);
    t.add('n2', ref('a'), 0);
    t.add('n2', ref('b'), 0);
    const round = t.oldest('n2', 5);
    t.add('n2', ref('b'), 1); // written again while the replay was in flight
    const cleared = round.map((h) => t.clear('n2', h.key, h.seq)).filter((r) => r !== undefined);
    expect(cleared).toEqual([ref('a')]);
    expect(t.oldest('n2', 5).map((h) => h.key)).toEqual([bucketId(ref('b'))]);
    expect(t.forget('n2')).toEqual([ref('b')]);
    expect(t.size).toBe(0);
  });
});
