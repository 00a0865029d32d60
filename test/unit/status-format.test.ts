/** The line `tally decommission` and `tally removenode` print while a ring change goes on. */
import { describe, expect, it } from 'vitest';
import { formatStatus, ringChangeLine } from '../../client/status-format.js';
import type { MemberStatus, NodeStatus } from '../../protocol/status.js';

const member = (id: string, status: 'up' | 'down', lifecycle = 'normal'): MemberStatus => ({ id, status, lifecycle }) as MemberStatus;
const status = (members: MemberStatus[], ringChange?: NodeStatus['ringChange']): NodeStatus =>
  ({ nodeId: 'n1', health: 'degraded: 3/5 up', members, ringChange }) as NodeStatus;

describe('ringChangeLine', () => {
  it('shows the streams and the members done, and names a member the change waits for that is down', () => {
    const change = { leaving: ['n4'], streams: { n2: { slots: 3, bytes: 120, done: true }, n5: { slots: 0, bytes: 0, done: false } }, doneFrom: ['n1', 'n2'] };
    const members = [member('n1', 'up'), member('n2', 'up'), member('n3', 'up'), member('n4', 'down'), member('n5', 'down'), member('n6', 'down', 'removed')];
    expect(ringChangeLine(status(members, change))).toBe(
      'n1: n4 leaving; streams from here 1/2 done, 120 bytes; members done: n1, n2; waiting for n5 (down): the change ends once it is back ' +
        '(a node whose disk is gone: start it again under its id, at its address, on an empty data directory)',
    );
    // The leaver being down is what a removal is for; a member already done is not waited for.
    expect(ringChangeLine(status([member('n1', 'up'), member('n4', 'down')], { ...change, streams: {}, doneFrom: [] }))).toBe('n1: n4 leaving; streams from here 0/0 done, 0 bytes; members done: none yet');
    expect(ringChangeLine(status(members, { ...change, doneFrom: ['n1', 'n2', 'n5'] }))).not.toMatch(/waiting for/);
  });

  it('is the health line when no change is under way', () => {
    expect(ringChangeLine(status([member('n1', 'up')]))).toBe('n1: degraded: 3/5 up');
  });
});

describe('formatStatus', () => {
  it('says never for a member heard from not once since the node started, not 0 ms ago', () => {
    const row = (m: Partial<MemberStatus>): MemberStatus =>
      ({ id: 'n2', address: '127.0.0.1:7402', zone: 'z1', status: 'down', lifecycle: 'removed', generation: 0, phi: 0, lastHeartbeatAgeMs: -1, ownership: 0, ...m }) as MemberStatus;
    const text = (m: MemberStatus): string => formatStatus({ ...status([m]), cluster: 'tally', rf: 3, address: '127.0.0.1:7401' } as NodeStatus);
    expect(text(row({}))).toMatch(/^n2 +127\.0\.0\.1:7402 +z1 +down +removed +\S+ +0\.0 +never +0\.0%/m);
    expect(text(row({ status: 'up', lifecycle: 'normal', lastHeartbeatAgeMs: 1500 }))).toMatch(/ 1\.5 ?s ago /);
  });
});
