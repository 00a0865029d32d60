import { defineConfig } from 'vitest/config';

/** Measurements that print numbers (`npm run measure:detector`); not part of `npm test`. */
export default defineConfig({
  test: {
    include: ['test/**/*.measure.ts'],
    testTimeout: 600_000,
    pool: 'forks',
  },
});
