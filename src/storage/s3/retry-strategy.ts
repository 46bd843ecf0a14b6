/**
 * Bounded exponential backoff with full jitter, plugged into the SDK's retry middleware (its
 * RetryStrategyV2 interface, typed structurally here so we need no @smithy/types import).
 *
 * Why not the SDK's StandardRetryStrategy: its retry quota is shared per client and drains under a
 * burst of 503s, after which nothing is retried at all; and its base delay is not configurable,
 * which makes fault tests slow. This one is simpler: every request gets `maxAttempts` tries, the
 * delay before retry n is uniform in [0, min(maxDelay, base * 2^n)], a Retry-After hint is
 * honoured up to maxDelay, and only transient failures and throttling are retried (never 4xx or 501).
 */
export interface RetryPolicy {
  /** Total tries per request, first one included. */
  readonly maxAttempts: number;
  /** Base of the exponential backoff, ms. */
  readonly baseDelayMs: number;
  /** Cap of a single backoff, ms. */
  readonly maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxAttempts: 5, baseDelayMs: 100, maxDelayMs: 5_000 };

/** What the SDK's retry middleware classifies a failure as. */
type RetryErrorType = 'TRANSIENT' | 'THROTTLING' | 'SERVER_ERROR' | 'CLIENT_ERROR';

interface RetryErrorInfoLike {
  readonly errorType: RetryErrorType;
  readonly retryAfterHint?: Date;
}

class AttemptToken {
  constructor(
    private readonly retryCount: number,
    private readonly delayMs: number,
  ) {}
  getRetryCount(): number {
    return this.retryCount;
  }
  getRetryDelay(): number {
    return this.delayMs;
  }
}

/** Delay before retry number `retry` (1-based): full jitter over an exponentially growing window. */
export function backoffDelay(policy: RetryPolicy, retry: number, random: () => number = Math.random): number {
  const window = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
  return Math.floor(random() * window);
}

export class JitterRetryStrategy {
  /** Read by the SDK for its `amz-sdk-request` header. */
  readonly mode = 'standard';

  constructor(private readonly policy: RetryPolicy) {}

  async acquireInitialRetryToken(_scope: string): Promise<AttemptToken> {
    return new AttemptToken(0, 0);
  }

  async refreshRetryTokenForRetry(token: AttemptToken, info: RetryErrorInfoLike): Promise<AttemptToken> {
    const retry = token.getRetryCount() + 1;
    // As the SDK: TRANSIENT covers 500/502/503/504, timeouts and resets; other 5xx (501) and 4xx are final.
    if ((info.errorType !== 'TRANSIENT' && info.errorType !== 'THROTTLING') || retry >= this.policy.maxAttempts) {
      // The middleware rethrows the request's own error when this rejects.
      throw new Error('no more retries');
    }
    let delay = backoffDelay(this.policy, retry);
    if (info.retryAfterHint instanceof Date) {
      const hinted = info.retryAfterHint.getTime() - Date.now();
      delay = Math.max(delay, Math.min(hinted, this.policy.maxDelayMs));
    }
    return new AttemptToken(retry, delay);
  }

  recordSuccess(_token: AttemptToken): void {}
}
