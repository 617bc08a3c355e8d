import { defineConfig } from 'vitest/config';

// Tests run in forked processes: e2e tests create network namespaces and spawn agents, and the
// native addon must not be shared across test files through a worker_threads pool.
// `*.alone.test.ts` files need the machine to themselves (they assert how the scheduler treats a
// thread, which only holds when other CPUs have room): they run after the rest, one at a time.
export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'suite',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.alone.test.ts'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'alone',
          include: ['test/**/*.alone.test.ts'],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
