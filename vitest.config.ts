import { defineConfig } from 'vitest/config';

// Two tiers: fast units beside the code, and integration tests that spawn the CLI
// or real peers. `npm test` runs both; CI runs the same command.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['engine/**/*.test.ts', 'src/**/*.test.ts', 'adapters/**/*.test.ts', 'test/unit/**/*.test.ts'],
          exclude: ['**/*.integ.test.ts', 'node_modules/**', 'dist/**'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'integ',
          include: ['**/*.integ.test.ts'],
          exclude: ['node_modules/**', 'dist/**'],
          testTimeout: 300_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
