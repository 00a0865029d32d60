/** The node process: start a node in-process, or from the CLI's settings. */
export { TallyNode } from './tally-node.js';
export { startNodeProcess } from './main.js';
export { defaultConfig, validateConfig, type NodeConfig } from './config.js';
export type { Store } from './store.js';
export { LevelStore } from './level-store.js';
export { MemoryStore } from './memory-store.js';
