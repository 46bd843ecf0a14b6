import { afterAll, beforeAll, describe } from 'vitest';
import { SKIP_KAFKA_REASON, startMockCluster, type MockCluster } from './mock-cluster.js';

/** The cluster a suite shares: started before its tests, stopped after them (by the suite, not by a test). */
export type SharedMockCluster = Omit<MockCluster, 'stop'>;

/**
 * describe() over one mock cluster of three brokers, started before the suite's tests and stopped after
 * them; skipped, with the reason in its title, when SKIP_KAFKA_REASON is set. `body` gets a handle that
 * forwards to the running cluster, so it is usable in hooks and tests (not while `body` runs).
 */
export function describeOnMockCluster(title: string, body: (cluster: SharedMockCluster) => void): void {
  describe.skipIf(SKIP_KAFKA_REASON !== null)(`${title}${SKIP_KAFKA_REASON ? ` (${SKIP_KAFKA_REASON})` : ''}`, () => {
    let started: MockCluster | undefined;
    const running = (): MockCluster => {
      if (started === undefined) throw new Error('the mock cluster is used before the suite started it');
      return started;
    };
    beforeAll(async () => {
      started = await startMockCluster(3);
    });
    afterAll(async () => {
      await started?.stop();
    });
    body({
      get brokers() {
        return running().brokers;
      },
      createTopic: (topic, partitions) => running().createTopic(topic, partitions),
      setTopicError: (topic, code) => running().setTopicError(topic, code),
      pushRequestErrors: (apiKey, count, code) => running().pushRequestErrors(apiKey, count, code),
    });
  });
}

/** Short group timeouts: the mock's coordinator waits session timeout - 1 s for members to rejoin during a rebalance. */
export const FAST_GROUP = { sessionTimeout: 3000, heartbeatInterval: 100 } as const;
