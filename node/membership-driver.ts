/**
 * Drives the pure membership core with real time and real sockets: a timer calls `tick`, peer
 * frames are validated and passed to `receive`, dropped connections to `connectionLost`, and the
 * effects that come out are carried out (frames sent, status changes logged). It owns no logic of
 * its own about who is up; that is all in cluster/membership.ts.
 */
import { randomBytes } from 'node:crypto';
import { Membership, type MembershipEffect } from '../cluster/membership.js';
import { defaultConfig as defaultMembershipConfig, validateConfig } from '../cluster/membership-config.js';
import { Prng } from '../cluster/prng.js';
import type { Hash64 } from '../cluster/hash-ring.js';
import { validateGossipMessage } from '../protocol/gossip.js';
import type { MemberStatus } from '../protocol/status.js';
import type { PeerTransport } from './peer-transport.js';

export interface MembershipDriverOptions {
  id: string;
  address: string;
  zone: string;
  seeds: string[];
  generation: number;
  bootstrapped: boolean;
  hash64: Hash64;
  /** Where status changes are reported (the node's log). */
  log: (line: string) => void;
}

/**
 * Milliseconds on a clock that never steps back (the wall clock at process start, then
 * `performance.now()`), so an NTP step cannot make the failure detector see a silence or a burst.
 * The generation, which must order restarts, still comes from the wall clock.
 */
export function monotonicNowMs(): number {
  return Math.floor(performance.timeOrigin + performance.now());
}

export class MembershipDriver {
  readonly membership: Membership;
  private timer: NodeJS.Timeout | undefined;
  readonly stats = { invalidGossip: 0, coreErrors: 0, identityConflicts: 0 };

  constructor(
    private readonly transport: PeerTransport,
    private readonly opts: MembershipDriverOptions,
  ) {
    const config = validateConfig({ ...defaultMembershipConfig(), seeds: opts.seeds });
    this.membership = new Membership({
      self: { id: opts.id, address: opts.address, zone: opts.zone },
      config,
      rng: new Prng(randomBytes(4).readUInt32LE(0)),
      hash64: opts.hash64,
      nowMs: monotonicNowMs(),
      generation: opts.generation,
      bootstrapped: opts.bootstrapped,
    });
    transport.onMessage = (from, message) =>
      this.guard(`gossip from ${from}`, () => {
        let msg;
        try {
          msg = validateGossipMessage(message);
        } catch {
          this.stats.invalidGossip += 1;
          return [];
        }
        return this.membership.receive(from, msg, monotonicNowMs());
      });
    transport.onConnectionLost = (peerId) =>
      this.guard(`lost connection to ${peerId}`, () => this.membership.connectionLost(peerId, monotonicNowMs()));
    this.timer = setInterval(() => this.guard('tick', () => this.membership.tick(monotonicNowMs())), config.tickIntervalMs);
    this.guard('tick', () => this.membership.tick(monotonicNowMs()));
  }

  /**
   * Runs one input of the core and carries out its effects. A failed assertion inside the core is
   * a bug; on input from the network it is logged and counted rather than allowed to take the
   * whole node down (one bad peer must not stop every node it gossips with).
   */
  private guard(what: string, input: () => MembershipEffect[]): void {
    let effects: MembershipEffect[];
    try {
      effects = input();
    } catch (err) {
      this.stats.coreErrors += 1;
      this.opts.log(`error INTERNAL: membership failed on ${what}: ${(err as Error).stack ?? String(err)}`);
      return;
    }
    this.apply(effects);
  }

  /** Every member as this node sees it, with its share of the ring. */
  members(): MemberStatus[] {
    const now = monotonicNowMs();
    const ownership = this.membership.ring().ownership();
    return this.membership.view(now).map((m) => ({
      id: m.id,
      address: m.address,
      zone: m.zone,
      status: m.status,
      reason: m.reason,
      lifecycle: m.lifecycle,
      generation: m.generation,
      heartbeat: m.heartbeat,
      phi: Number.isFinite(m.phi) ? Math.round(m.phi * 100) / 100 : 1e9,
      lastHeartbeatAgeMs: Math.round(m.lastHeartbeatAgeMs),
      ownership: ownership.get(m.id) ?? 0,
      ringChecksum: m.ringChecksum,
      self: m.self,
    }));
  }

  /** Announces `leaving`: peers keep us up while we drain. */
  startLeaving(): void {
    this.apply(this.membership.startLeaving(monotonicNowMs()));
  }

  /** Announces `left` and stops gossiping. */
  leave(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.apply(this.membership.leave(monotonicNowMs()));
  }

  private apply(effects: MembershipEffect[]): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'send':
          this.transport.send(e.to.address, e.msg);
          break;
        case 'statusChanged': {
          this.opts.log(`peer ${e.id} is ${e.up ? 'up' : 'down'} (${e.reason})`);
          const address = this.membership.stateOf(e.id)?.address;
          if (e.up && address !== undefined) this.transport.open(address);
          break;
        }
        case 'ringChanged':
          this.opts.log(`ring changed: checksum ${e.checksum}`);
          break;
        case 'identityConflict':
          this.stats.identityConflicts += 1;
          this.opts.log(
            `error: a newer state of this node's own id "${e.claimed.id}" came in (address ${e.claimed.address}, ` +
              `generation ${e.claimed.generation}, version ${e.claimed.version}): is another process running with --id ${e.claimed.id}? ` +
              (e.refuted
                ? 'Refuted with a higher version.'
                : 'It has a newer generation, so peers follow it: stop the duplicate, then restart this node.'),
          );
          break;
      }
    }
  }
}
