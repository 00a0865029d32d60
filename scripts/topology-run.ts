/**
 * The ring-change run at full size (issue acceptance): three nodes loaded with 1,000,000 events
 * over 100,000 series, then two joins, a decommission and a removenode under load, every read
 * checked; prints the figures, exits non-zero on any violation.
 *   npm run measure:topology [-- --events 1000000 --videos 100000 --rate 2000]
 */
import { parseArgs } from 'node:util';
import { runTopology } from './topology.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '1000000' },
    videos: { type: 'string', default: '100000' },
    rate: { type: 'string', default: '2000' },
    'base-port': { type: 'string', default: '7871' },
  },
});
const t0 = Date.now();
const s = await runTopology({
  events: Number(values.events),
  videos: Number(values.videos),
  rate: Number(values.rate),
  basePort: Number(values['base-port']),
  log: (line) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${line}\n`),
});
process.stdout.write(`${JSON.stringify({ ...s, violations: s.violations.length }, null, 1)}\n`);
for (const v of s.violations) process.stdout.write(`violation: ${v}\n`);
process.stdout.write(s.violations.length === 0 ? 'OK\n' : 'FAILED\n');
process.exitCode = s.violations.length === 0 ? 0 : 1;
