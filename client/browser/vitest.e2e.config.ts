import { defineConfig } from "vitest/config";

// The browser tests: one file at a time, against real processes, so generous timeouts.
export default defineConfig({
  test: {
    include: ["e2e/**/*.e2e.test.ts"],
    environment: "node",
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
  },
});
