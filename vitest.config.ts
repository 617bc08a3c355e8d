import { defineConfig } from 'vitest/config';

// Tests run in forked processes: e2e tests create network namespaces and spawn agents, and the
// native addon must not be shared across test files through a worker_threads pool.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    maxWorkers: 2,
    reporters: ['default'],
  },
});
