/** The node process: start a node in-process, or from the CLI's settings. */
export { TallyNode } from './tally-node.js';
export { startNodeProcess } from './main.js';
export { defaultConfig, resolveConfig, validateConfig, type NodeConfig, type NodeOverrides } from './config.js';
export { Store } from './store.js';
export { LevelKv, MemoryKv, type Kv } from './kv.js';
