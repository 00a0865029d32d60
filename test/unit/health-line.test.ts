/**
 * The health line of the status report (node/status.ts), which `tally status` turns into its exit
 * status: healthy only while every member on the ring is up, none is being sent its ranges, and
 * the ring is agreed.
 */
import { describe, expect, it } from 'vitest';
import { healthLine } from '../../node/status.js';
import type { MemberStatus } from '../../protocol/status.js';

const member = (id: string, status: 'up' | 'down', lifecycle = 'normal'): MemberStatus =>
  ({ id, status, lifecycle, ringChecksum: 'c1' }) as MemberStatus;

describe('healthLine', () => {
  it('is healthy with every member up, and with a member removed for good', () => {
    expect(healthLine([member('n1', 'up'), member('n2', 'up'), member('n3', 'up')])).toBe('healthy: 3/3 up; ring agreed');
    expect(healthLine([member('n1', 'up'), member('n2', 'up'), member('n3', 'up'), member('n4', 'down', 'removed')])).toBe(
      'healthy: 3/3 up; removed for good: n4; ring agreed',
    );
  });

  it('is degraded with a member down, however it went down: crashed, or stopped cleanly (still on the ring)', () => {
    expect(healthLine([member('n1', 'up'), member('n2', 'up'), member('n3', 'down')])).toBe('degraded: 2/3 up; down: n3; ring agreed');
    // SIGTERM or Ctrl-C: the member announces `left` and stops, but keeps its ranges; its keys have
    // one replica fewer until it is back, as with a crash.
    expect(healthLine([member('n1', 'up'), member('n2', 'up'), member('n3', 'down', 'left')])).toBe('degraded: 2/3 up; down: n3 (stopped); ring agreed');
    expect(healthLine([member('n1', 'up'), member('n2', 'down'), member('n3', 'down', 'left')])).toBe('degraded: 1/3 up; down: n2, n3 (stopped); ring agreed');
  });

  it('is degraded while a member is sent its ranges, or the ring is not agreed', () => {
    expect(healthLine([member('n1', 'up'), member('n2', 'up', 'normal+rebuilding')])).toBe('degraded: 2/2 up; being sent their ranges: n2; ring agreed');
    expect(healthLine([member('n1', 'up'), { ...member('n2', 'up'), ringChecksum: 'c2' }])).toBe('degraded: 2/2 up; ring checksums differ (2 versions)');
  });

  it('is degraded while a node with seeds knows no other member: not joined (its seeds down, or refusing it)', () => {
    expect(healthLine([member('n1', 'up')], ['10.0.0.2:7401', '10.0.0.3:7401'])).toBe(
      'degraded: 1/1 up; ring agreed; not joined: none of its seeds (10.0.0.2:7401, 10.0.0.3:7401) has let it in; its log says why',
    );
    // A cluster of one (no seeds but itself), and a node that has joined, are not.
    expect(healthLine([member('n1', 'up')], [])).toBe('healthy: 1/1 up; ring agreed');
    expect(healthLine([member('n1', 'up'), member('n2', 'up')], ['10.0.0.2:7401'])).toBe('healthy: 2/2 up; ring agreed');
  });
});
