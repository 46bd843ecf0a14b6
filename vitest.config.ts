import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const source = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  // Tests that import the package by name (as a third party would) run against the sources (tsconfig.json "paths" does the same for types).
  resolve: {
    alias: [
      { find: /^streamstate$/, replacement: source('./src/index.ts') },
      { find: /^streamstate\/conformance$/, replacement: source('./src/conformance/index.ts') },
      { find: /^streamstate\/memory$/, replacement: source('./backends/memory/index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // s3rver pages ListObjectsV2 with a DES-based token that OpenSSL 3 refuses without the legacy provider.
    execArgv: ['--openssl-legacy-provider'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The SDK is pinned to a release that supports Node 20; its notice about later releases is noise in test logs.
    env: { AWS_EC2_METADATA_DISABLED: 'true', NO_COLOR: '1', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
