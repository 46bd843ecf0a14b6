import { KafkaError, StreamStateError } from '../errors.js';

/** What KafkaJS errors carry that tells them apart (KafkaJS exports classes, but matching by name keeps kafkajs an optional import). */
interface KafkaJSLikeError {
  readonly name?: unknown;
  readonly type?: unknown;
  readonly message?: unknown;
  readonly cause?: unknown;
  readonly originalError?: unknown;
}

function chain(err: unknown): KafkaJSLikeError[] {
  const out: KafkaJSLikeError[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== null && typeof e === 'object' && depth < 8; depth++) {
    const k = e as KafkaJSLikeError;
    out.push(k);
    e = k.originalError ?? k.cause;
  }
  return out;
}

/**
 * Turns whatever KafkaJS threw into a KafkaError (a StreamStateError passes through): no broker
 * answered -> KAFKA_UNREACHABLE; an unknown topic -> KAFKA_TOPIC_MISSING; an offset out of range ->
 * KAFKA_OFFSET_OUT_OF_RANGE; anything else -> KAFKA_CLIENT_FAILED. `doing` says what was attempted.
 */
export function toKafkaError(err: unknown, doing: string, brokers: readonly string[]): StreamStateError {
  if (err instanceof StreamStateError) return err;
  const errors = chain(err);
  const names = errors.map((e) => String(e.name ?? ''));
  const types = errors.map((e) => String(e.type ?? ''));
  const message = errors.length > 0 ? String(errors[0].message ?? err) : String(err);
  if (
    names.some(
      (n) =>
        n === 'KafkaJSConnectionError' ||
        n === 'KafkaJSBrokerNotFound' ||
        (n === 'KafkaJSNonRetriableError' && /ECONNREFUSED|Connection/i.test(message)),
    )
  ) {
    return new KafkaError(
      'KAFKA_UNREACHABLE',
      `could not reach Kafka at ${brokers.join(',')} while ${doing} (${message}); check the broker list and that the brokers are up.`,
      { cause: err },
    );
  }
  if (types.includes('UNKNOWN_TOPIC_OR_PARTITION')) {
    return new KafkaError(
      'KAFKA_TOPIC_MISSING',
      `Kafka does not know the topic while ${doing} (${message}); create the topic first.`,
      { cause: err },
    );
  }
  if (types.includes('OFFSET_OUT_OF_RANGE')) {
    return new KafkaError('KAFKA_OFFSET_OUT_OF_RANGE', `an offset was out of range while ${doing} (${message}).`, {
      cause: err,
    });
  }
  return new KafkaError('KAFKA_CLIENT_FAILED', `the Kafka client failed while ${doing}: ${message}`, { cause: err });
}

/** Runs a KafkaJS call; any failure comes out as toKafkaError's KafkaError. */
export async function kafkaCall<T>(doing: string, brokers: readonly string[], call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw toKafkaError(err, doing, brokers);
  }
}
