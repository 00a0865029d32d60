import { describe, expect, test } from 'vitest';
import { defaultConfig, validateConfig, type MembershipConfig } from '../../cluster/membership-config.js';
import { TallyError } from '../../protocol/errors.js';

function rejects(change: Partial<MembershipConfig>, pattern: RegExp): void {
  let caught: unknown;
  try {
    validateConfig({ ...defaultConfig(), ...change });
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(TallyError);
  expect((caught as TallyError).code).toBe('BAD_REQUEST');
  expect((caught as TallyError).message).toMatch(pattern);
}

describe('membership config', () => {
  test('the defaults are valid', () => {
    expect(validateConfig(defaultConfig())).toEqual(defaultConfig());
  });

  test('values and relationships are checked', () => {
    rejects({ gossipIntervalMs: 0 }, /gossipIntervalMs must be a positive number/);
    rejects({ phiThreshold: Number.NaN }, /phiThreshold must be a positive number/);
    rejects({ phiThreshold: 0.5 }, /would convict on ordinary jitter/);
    rejects({ maxGossipPeersPerRound: 4 }, /maxGossipPeersPerRound must be an integer in 1\.\.3/);
    rejects({ livePeersPerRound: 3, maxGossipPeersPerRound: 2 }, /livePeersPerRound \(3\) exceeds/);
    rejects({ tickIntervalMs: 2000 }, /must not exceed gossipIntervalMs/);
    rejects({ minArrivalIntervalMs: -1 }, /minArrivalIntervalMs must be a finite number >= 0/);
    rejects({ minArrivalIntervalMs: 1000 }, /minArrivalIntervalMs \(1000\) must be below gossipIntervalMs \(1000\)/);
    rejects({ localPauseThresholdMs: 250 }, /must exceed tickIntervalMs/);
    rejects({ acceptableHeartbeatPauseMs: 500 }, /one missed round is not a death/);
    rejects({ arrivalWindowSize: 1 }, /arrivalWindowSize must be an integer/);
    rejects({ vnodes: 0 }, /vnodes must be an integer in 1\.\.1024/);
    rejects({ seeds: [''] }, /membership config: seed must not be empty/);
    rejects({ seeds: ['localhost'] }, /membership config: seed must be host:port/);
  });
});
