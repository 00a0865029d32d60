/**
 * The Tally client library, the entry of the `tally` package: `TallyClient`, its types, and the
 * error type and codes. It loads the client and the protocol modules it uses, nothing of the node
 * (LevelDB) or the CLI (yargs); its types need no Node.js typings. The local cluster and the load
 * generator in this folder belong to the CLI and are not exported here.
 */
export {
  TallyClient,
  VIEW,
  type ClientOptions,
  type EventInput,
  type EventStats,
  type ReadOptions,
  type TimeInput,
  type WriteOptions,
} from './tally-client.js';
export type { ClientTls } from './connection.js';
export { TallyError, ErrorCode } from '../protocol/errors.js';
export { Consistency, type RepairSummary } from '../protocol/messages.js';
export type { ErrorCode as ErrorCodeType } from '../protocol/errors.js';
export type { Consistency as ConsistencyLevel } from '../protocol/messages.js';
