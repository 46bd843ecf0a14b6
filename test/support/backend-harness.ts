// The backend conformance suite's own copy is the one home (it ships in streamstate/conformance).
export * from '../../src/conformance/backend/harness.js';
