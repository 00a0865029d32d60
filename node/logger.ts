/**
 * The node's log: pino, one JSON object a line (`level`, `time`, `msg`, and fields such as `code`)
 * when its output is not a terminal, so log shippers read it as it is; on a terminal the same
 * records in a readable line: `12:00:01.234 INFO  tally node n1 ready on 127.0.0.1:7401 …`.
 *
 * Lines the core and the driver produce are plain sentences; one that starts `error CODE:` is
 * logged at level error with that code as a field, so errors can be found without parsing text.
 * Not here: the CLI's own results and `error CODE: message` lines on stderr, which are for people
 * and scripts, not logs.
 */
import pino, { type Logger } from 'pino';
import { isErrorCode } from '../protocol/index.js';

import { LogFormat, type LogOptions } from './log-options.js';

export * from './log-options.js';

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every record has, which the readable form shows in its own way (or not at all). */
const OWN_FIELDS = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/** One pino JSON record as a readable line; a line that is not a record is passed through. */
export function prettyLine(json: string): string {
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const time = typeof r.time === 'number' ? new Date(r.time).toISOString().slice(11, 23) : '';
  const level = (LEVEL_NAMES[r.level as number] ?? String(r.level)).padEnd(5);
  const msg = String(r.msg ?? '');
  // Fields the sentence already says are not repeated after it.
  const extra = Object.entries(r)
    .filter(([k, v]) => !OWN_FIELDS.has(k) && !msg.includes(String(v)))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return `${time} ${level} ${msg}${extra.length > 0 ? ` (${extra.join(' ')})` : ''}\n`;
}

/**
 * Writes synchronously to stdout: a node may exit right after its last line (a failed start, a
 * second signal), and that line must not be lost. A closed stdout (a gone terminal or parent)
 * must not crash the node: write errors are ignored.
 */
function destination(format: LogFormat): pino.DestinationStream {
  const out = pino.destination({ dest: 1, sync: true });
  out.on('error', () => {});
  if (format === LogFormat.JSON) return out;
  return { write: (line: string) => out.write(prettyLine(line)) };
}

export function createLogger(o: LogOptions = {}): Logger {
  const format = o.format ?? (process.stdout.isTTY === true ? LogFormat.PRETTY : LogFormat.JSON);
  return pino({ level: o.level ?? 'info', base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.epochTime }, destination(format));
}

let current: Logger | undefined;

/** The process's logger; made with the defaults on first use unless `setLogger` came first. */
export function logger(): Logger {
  current ??= createLogger();
  return current;
}

export function setLogger(l: Logger): void {
  current = l;
}

/** Logs a line of the core or driver: `error CODE: …` at level error with its code, else info. */
export function logLine(line: string): void {
  const m = /^error(?: ([A-Z_]+))?: /.exec(line);
  if (m === null) return logger().info(line);
  const code = m[1];
  if (code !== undefined && isErrorCode(code)) logger().error({ code }, line);
  else logger().error(line);
}
