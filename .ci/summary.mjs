// Prints "N passed, M failed" from vitest JSON reports (summed when given several, one per Node
// line); failed suites (files that did not load) and a missing report count as failures.
import { readFileSync } from 'node:fs';

let passed = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  let report;
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    failed += 1;
    console.error(`no vitest report at ${file}: ${err.message}`);
    continue;
  }
  const failedTests = report.numFailedTests ?? 0;
  const failedSuites = (report.testResults ?? []).filter(
    (s) => s.status === 'failed' && (s.assertionResults ?? []).every((a) => a.status !== 'failed'),
  ).length;
  passed += report.numPassedTests ?? 0;
  failed += failedTests + failedSuites;
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
