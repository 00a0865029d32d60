/** The node's log settings, apart from the logger (node/logger.ts), so the CLI can offer them without loading pino. */
export const LogFormat = { JSON: 'json', PRETTY: 'pretty' } as const;
export type LogFormat = (typeof LogFormat)[keyof typeof LogFormat];
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LogOptions {
  /** Least level written; default info. */
  level?: LogLevel;
  /** Default: pretty on a terminal, JSON otherwise. */
  format?: LogFormat;
}
