/**
 * Times for tests that write at explicit timestamps: relative to today, so what they write stays
 * inside retention (minutes are kept 14 days by default) on whatever day the suite runs.
 */
import { DAY_MS, HOUR_MS } from '../../cluster/time-buckets.js';

/** UTC midnight `days` days before today, plus `hours`. */
export function daysAgo(days: number, hours = 0): number {
  return Math.floor(Date.now() / DAY_MS) * DAY_MS - days * DAY_MS + hours * HOUR_MS;
}
