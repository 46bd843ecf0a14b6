#!/usr/bin/env node
import { run } from './run.js';

// The AWS SDK (loaded only for s3:// paths) warns on stderr under Node 20 that its releases after
// January 2027 need Node 22. streamstate pins an SDK range that supports its Node floor
// (package.json), so the notice is not for CLI users; a user's own setting wins.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// The whole program is run(); this file only connects it to the process.
// ownsProcess: SIGINT/SIGTERM remove temporary output (exit 130/143), EPIPE on stdout exits 0.
run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, ownsProcess: true }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(
      `streamstate: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  },
);
