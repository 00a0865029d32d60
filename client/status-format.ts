/** Renders a node's status report as the `tally status` table. */
import type { NodeStatus } from '../protocol/status.js';

function age(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.round(ms / 60_000)}m`;
}

/** A generation is a start time in ms; show it as a date when it is one. */
/** A retention in days, 0 meaning for ever. */
function days(n: number): string {
  return n === 0 ? 'for ever' : `${n} days`;
}

function generationText(g: number): string {
  const d = new Date(g);
  return Number.isNaN(d.getTime()) ? String(g) : d.toISOString().replace('.000Z', 'Z');
}

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MB`;
}

function processLine(s: NodeStatus): string {
  const p = s.process as NonNullable<NodeStatus['process']>;
  const slots = (s.core as { slots?: { cached: number; dirty: number } } | undefined)?.slots;
  return (
    `process of ${s.nodeId}: memory ${mb(p.rssBytes)} resident (peak ${mb(p.peakRssBytes)}${p.rssAnonBytes === undefined ? '' : `; its own ${mb(p.rssAnonBytes)}, mapped files ${mb(p.rssFileBytes ?? 0)}`}), heap ${mb(p.heapUsedBytes)} of ${mb(p.heapTotalBytes)}${p.heapLimitBytes === undefined ? '' : ` (limit ${mb(p.heapLimitBytes)})`}, buffers ${mb(p.externalBytes)}; ` +
    `cpu ${((p.cpuUserMs + p.cpuSystemMs) / 1000).toFixed(1)} s in ${p.uptimeS} s` +
    (slots === undefined ? '' : `; ${slots.cached} slots in memory, ${slots.dirty} awaiting commit`)
  );
}

export function formatStatus(s: NodeStatus): string {
  const header = ['ID', 'ADDRESS', 'ZONE', 'STATUS', 'LIFECYCLE', 'GENERATION', 'PHI', 'HEARTBEAT', 'OWNS', 'HINTS', 'DROPPED'];
  const rows = s.members.map((m) => [
    `${m.id}${m.self ? '*' : ''}`,
    m.address,
    m.zone,
    m.status,
    m.lifecycle,
    generationText(m.generation),
    m.self ? '-' : m.phi >= 100 ? '>100' : m.phi.toFixed(1),
    m.self ? '-' : m.lastHeartbeatAgeMs < 0 ? 'never' : `${age(m.lastHeartbeatAgeMs)} ago`,
    `${(m.ownership * 100).toFixed(1)}%`,
    String(m.hintsPending ?? 0),
    String(m.hintsDropped ?? 0),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd();
  return [
    `cluster ${s.cluster} (rf ${s.rf}${s.retention === undefined ? '' : `; minutes kept ${days(s.retention.minuteDays)}, hours ${days(s.retention.hourDays)}, days for ever`}), seen from ${s.nodeId} (${s.address}); * marks that node; HINTS: buckets it holds for that member`,
    line(header),
    ...rows.map(line),
    s.health,
    ...(s.process === undefined ? [] : [processLine(s)]),
    ...(s.repair === undefined
      ? []
      : [
          `repair: ${s.repair.sessions} comparisons started here (${s.repair.inSync} in sync, ${s.repair.failed} failed, ${s.repair.running} running); ` +
            `${s.repair.leavesDiffered} leaves found different; ${s.repair.slotsSent} slots (${s.repair.bytesSent} bytes) sent to repair peers` +
            ((s.damagedSlots ?? 0) > 0 ? `; ${s.damagedSlots} damaged slots found on disk` : ''),
        ]),
    ...(s.ringChange === undefined
      ? []
      : [
          `ring change: ${s.ringChange.leaving.join(', ')} leaving; streamed from here: ` +
            (Object.entries(s.ringChange.streams)
              .map(([peer, st]) => `${peer} ${st.slots} slots (${st.bytes} bytes)${st.done ? ' done' : ''}`)
              .join(', ') || 'not started (waiting for every node to agree on the ring)') +
            (s.ringChange.doneFrom.length > 0 ? `; members done: ${s.ringChange.doneFrom.join(', ')}` : ''),
        ]),
  ].join('\n');
}

/**
 * One line of a ring change as the node `s` sees it, for `tally decommission` and `tally removenode`
 * to print while they wait: its streams, the members done, and any member the change waits for
 * that is down (it ends only once they are back: one whose disk is gone is started again under
 * its id on an empty directory, and rebuilt).
 */
export function ringChangeLine(s: NodeStatus): string {
  const change = s.ringChange;
  if (change === undefined) return `${s.nodeId}: ${s.health}`;
  const streams = Object.entries(change.streams);
  const bytes = streams.reduce((a, [, st]) => a + st.bytes, 0);
  const done = streams.filter(([, st]) => st.done).length;
  const line = `${s.nodeId}: ${change.leaving.join(', ')} leaving; streams from here ${done}/${streams.length} done, ${bytes} bytes; members done: ${change.doneFrom.join(', ') || 'none yet'}`;
  // Down, on the ring, and not one of the leavers (given up for lost): the change waits for them.
  const down = s.members.filter((m) => m.status === 'down' && m.lifecycle !== 'removed' && !change.leaving.includes(m.id) && !change.doneFrom.includes(m.id)).map((m) => m.id);
  if (down.length === 0) return line;
  const them = down.length === 1 ? 'it is' : 'they are';
  return `${line}; waiting for ${down.join(', ')} (down): the change ends once ${them} back (a node whose disk is gone: start it again under its id, at its address, on an empty data directory)`;
}
