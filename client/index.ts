/** The Tally client library: `TallyClient`, its types, and the error type and codes. */
export {
  TallyClient,
  VIEW,
  type ClientOptions,
  type EventInput,
  type EventStats,
  type TimeInput,
  type WriteOptions,
} from './tally-client.js';
export { TallyError, ErrorCode, Consistency } from '../protocol/index.js';
export type { ErrorCode as ErrorCodeType, Consistency as ConsistencyLevel } from '../protocol/index.js';
