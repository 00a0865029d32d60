/** The pure core: time buckets, the bucket CRDT, membership, failure detection and the ring. */
export * from './time-buckets.js';
export * from './bucket-state.js';
export * from './phi-detector.js';
export * from './membership.js';
export { defaultConfig as defaultMembershipConfig, validateConfig as validateMembershipConfig, type MembershipConfig } from './membership-config.js';
export * from './prng.js';
