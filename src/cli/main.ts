#!/usr/bin/env node
import { run } from './run.js';

// The whole program is run(); this file only connects it to the process.
// ownsProcess: SIGINT/SIGTERM remove temporary output (exit 130/143), EPIPE on stdout exits 0.
run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, ownsProcess: true }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`streamstate: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
