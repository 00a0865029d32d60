/** The wire protocol: messages, codec, validation, error codes and limits. */
export * from './errors.js';
export * from './limits.js';
export * from './messages.js';
export * from './codec.js';
export * from './validate.js';
export * from './hash-ring.js';
export * from './gossip.js';
export * from './peer.js';
export * from './peer-auth.js';
