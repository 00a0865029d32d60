/**
 * The status report's member rows and health line, from the core's view of the membership.
 */
import { readFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import type { NodeCore } from '../cluster/node-core.js';
import type { MemberStatus, ProcessStatus } from '../protocol/status.js';

/** Every member as this node sees it, with its share of the ring and the hints kept for it. */
export function memberStatuses(core: NodeCore, nowMs: number): MemberStatus[] {
  const ownership = core.membership.ring().ownership();
  const hints = core.stats().hints;
  return core.view(nowMs).map((m) => ({
    id: m.id,
    address: m.address,
    zone: m.zone,
    status: m.status,
    reason: m.reason,
    lifecycle: m.rebuilding ? `${m.lifecycle}+rebuilding` : m.lifecycle,
    generation: m.generation,
    heartbeat: m.heartbeat,
    phi: Number.isFinite(m.phi) ? Math.round(m.phi * 100) / 100 : 1e9,
    lastHeartbeatAgeMs: Math.round(m.lastHeartbeatAgeMs),
    ownership: ownership.get(m.id) ?? 0,
    ringChecksum: m.ringChecksum,
    self: m.self,
    hintsPending: hints[m.id]?.pending ?? 0,
    hintsDropped: (hints[m.id]?.dropped ?? 0) + (hints[m.id]?.expired ?? 0),
  }));
}

/** One line: how healthy the cluster looks from this node. */
export function healthLine(members: readonly MemberStatus[], seeds: readonly string[] = []): string {
  const removed = members.filter((m) => m.lifecycle === 'removed');
  const current = members.filter((m) => m.lifecycle !== 'removed');
  // A member stopped cleanly (`left`) keeps its ranges: its keys have a replica fewer until it is
  // back, as with a crash, so it is down like any other; only removal takes a member off the ring.
  const down = current.filter((m) => m.status === 'down');
  const rebuilding = current.filter((m) => m.lifecycle.endsWith('+rebuilding'));
  const leaving = current.filter((m) => m.lifecycle === 'decommissioning');
  const up = current.filter((m) => m.status === 'up');
  const checksums = new Set(up.map((m) => m.ringChecksum));
  const parts = [`${up.length}/${current.length} up`];
  if (down.length > 0) parts.push(`down: ${down.map((m) => (m.lifecycle === 'left' ? `${m.id} (stopped)` : m.id)).join(', ')}`);
  if (rebuilding.length > 0) parts.push(`being sent their ranges: ${rebuilding.map((m) => m.id).join(', ')}`);
  if (leaving.length > 0) parts.push(`decommissioning: ${leaving.map((m) => m.id).join(', ')}`);
  if (removed.length > 0) parts.push(`removed for good: ${removed.map((m) => m.id).join(', ')}`);
  parts.push(checksums.size <= 1 ? 'ring agreed' : `ring checksums differ (${checksums.size} versions)`);
  // Seeds to join through and no other member known: not a cluster of one but a node that has not
  // joined (its seeds not up yet, or refusing it: another secret, cluster, rf or retention; its log
  // says which). It serves alone meanwhile, which is not what it was started for.
  const alone = seeds.length > 0 && members.length <= 1;
  if (alone) parts.push(`not joined: none of its seeds (${seeds.join(', ')}) has let it in; its log says why`);
  const healthy = down.length === 0 && rebuilding.length === 0 && checksums.size <= 1 && !alone;
  return `${healthy ? 'healthy' : 'degraded'}: ${parts.join('; ')}`;
}

/** Resident kB by kind (RssAnon, RssFile, RssShmem) from /proc/self/status; empty where there is none. */
function residentByKind(): Record<string, number> {
  let text: string;
  try {
    text = readFileSync('/proc/self/status', 'latin1');
  } catch {
    return {};
  }
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(Rss\w+):\s+(\d+) kB$/gm)) out[m[1] as string] = Number(m[2]);
  return out;
}

/** This process's ProcessStatus. */
export function processStatus(): ProcessStatus {
  const m = process.memoryUsage();
  const r = process.resourceUsage();
  const kinds = residentByKind();
  return {
    rssBytes: m.rss,
    ...(kinds['RssAnon'] === undefined ? {} : { rssAnonBytes: kinds['RssAnon'] * 1024, rssFileBytes: ((kinds['RssFile'] ?? 0) + (kinds['RssShmem'] ?? 0)) * 1024 }),
    peakRssBytes: Math.max(m.rss, r.maxRSS * 1024),
    heapUsedBytes: m.heapUsed,
    heapTotalBytes: m.heapTotal,
    heapLimitBytes: getHeapStatistics().heap_size_limit,
    externalBytes: m.external,
    cpuUserMs: Math.round(r.userCPUTime / 1000),
    cpuSystemMs: Math.round(r.systemCPUTime / 1000),
    uptimeS: Math.round(process.uptime()),
  };
}
