/** The wire protocol: messages, codec, validation, error codes and limits. */
export * from './errors.js';
export * from './limits.js';
export * from './messages.js';
export * from './codec.js';
export * from './validate.js';
