/**
 * The bench's count check reads each sampled series through the members in turn; a member that
 * stops answering during the check is skipped and named, and the sample is read through the next.
 */
import { describe, expect, it } from 'vitest';
import { checkConsistency, countThrough } from '../../client/bench.js';
import { ErrorCode, TallyError } from '../../protocol/index.js';

const member = (address: string, failFrom = Infinity) => {
  const asked: number[] = [];
  return {
    address,
    asked,
    count: async (s: number): Promise<number> => {
      if (asked.length >= failFrom) throw new TallyError(ErrorCode.CONNECTION_CLOSED, `${address} closed`);
      asked.push(s);
      return s * 10;
    },
  };
};

describe('countThrough', () => {
  it('reads through each member in turn', async () => {
    const [a, b] = [member('a'), member('b')];
    const got = await countThrough([a, b], [1, 2, 3, 4]);
    expect(got).toEqual({ counts: [10, 20, 30, 40], failed: [] });
    expect(a.asked).toEqual([1, 3]);
    expect(b.asked).toEqual([2, 4]);
  });

  it('skips a member whose read fails, names it, and reads that sample through another', async () => {
    const [a, b, c] = [member('a'), member('b', 1), member('c')];
    const got = await countThrough([a, b, c], [1, 2, 3, 4, 5, 6]);
    expect(got.counts).toEqual([10, 20, 30, 40, 50, 60]);
    expect(got.failed).toEqual([{ address: 'b', reason: 'CONNECTION_CLOSED' }]);
    expect([...a.asked, ...b.asked, ...c.asked].sort()).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('fails when every member has failed', async () => {
    await expect(countThrough([member('a', 0), member('b', 0)], [1])).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
  });
});

describe('checkConsistency', () => {
  it('reads writes acknowledged at one at all, where a replica behind cannot answer for the rest', () => {
    expect(checkConsistency('one')).toBe('all');
    expect(checkConsistency('quorum')).toBe('quorum');
    expect(checkConsistency('all')).toBe('all');
  });
});
