import type { Kafka, Message } from 'kafkajs';

/** One request the sink made, in order (what the transactional path sends, for shape assertions). */
export type RecordedCall =
  | { readonly op: 'producer'; readonly config: Readonly<Record<string, unknown>> }
  | { readonly op: 'connect'; readonly transactionalId: string | null }
  | { readonly op: 'send'; readonly transactionalId: string | null; readonly topic: string; readonly count: number }
  | {
      readonly op: 'sendOffsets';
      readonly transactionalId: string;
      readonly consumerGroupId: string;
      readonly topics: readonly { topic: string; partitions: { partition: number; offset: string }[] }[];
    }
  | { readonly op: 'commit' | 'abort'; readonly transactionalId: string }
  | { readonly op: 'fetchOffsets'; readonly groupId: string };

/**
 * A stand-in for a Kafka cluster with transactions, for unit tests of the sink's logic only (the
 * mock cluster cannot run KafkaJS transactions: docs/KAFKA.md). A transaction's records and its
 * sendOffsets become visible together at commit, as on a broker with read_committed consumers.
 * `afterCommit` runs once a commit has been applied: a test can throw there to play a process that
 * dies right after Kafka committed.
 */
export class RecordingKafka {
  readonly calls: RecordedCall[] = [];
  /** Visible (committed) messages per topic, in order. */
  readonly topics = new Map<string, Message[]>();
  /** Committed offsets per group (partition 0 of any topic: the sink's marker). */
  readonly markers = new Map<string, number>();
  afterCommit: ((transactionalId: string | null) => void) | null = null;
  /** When set, the next transactional send fails with this error (once). */
  failNextSend: Error | null = null;

  constructor(topics: Record<string, number>) {
    for (const t of Object.keys(topics)) this.topics.set(t, []);
    this.partitions = topics;
  }

  private readonly partitions: Record<string, number>;

  get client(): Kafka {
    return this as unknown as Kafka;
  }

  producer(config: Record<string, unknown> = {}) {
    this.calls.push({ op: 'producer', config });
    const txId = typeof config.transactionalId === 'string' ? config.transactionalId : null;
    const visible = (topic: string): Message[] => {
      const list = this.topics.get(topic);
      if (!list) throw Object.assign(new Error('unknown topic'), { type: 'UNKNOWN_TOPIC_OR_PARTITION' });
      return list;
    };
    return {
      connect: async () => {
        this.calls.push({ op: 'connect', transactionalId: txId });
      },
      disconnect: async () => undefined,
      send: async (req: { topic: string; messages: Message[] }) => {
        this.calls.push({ op: 'send', transactionalId: null, topic: req.topic, count: req.messages.length });
        visible(req.topic).push(...req.messages);
        this.afterCommit?.(null);
        return [];
      },
      transaction: async () => {
        if (txId === null) throw new Error('transaction() on a producer without transactionalId');
        const staged: { topic: string; messages: Message[] }[] = [];
        const offsets: { group: string; offset: number }[] = [];
        return {
          send: async (req: { topic: string; messages: Message[] }) => {
            this.calls.push({ op: 'send', transactionalId: txId, topic: req.topic, count: req.messages.length });
            if (this.failNextSend) {
              const err = this.failNextSend;
              this.failNextSend = null;
              throw err;
            }
            staged.push(req);
            return [];
          },
          sendOffsets: async (req: {
            consumerGroupId: string;
            topics: { topic: string; partitions: { partition: number; offset: string }[] }[];
          }) => {
            this.calls.push({ op: 'sendOffsets', transactionalId: txId, ...req });
            for (const t of req.topics)
              for (const p of t.partitions)
                if (p.partition === 0) offsets.push({ group: req.consumerGroupId, offset: Number(p.offset) });
          },
          commit: async () => {
            this.calls.push({ op: 'commit', transactionalId: txId });
            for (const s of staged) visible(s.topic).push(...s.messages);
            for (const o of offsets) this.markers.set(o.group, o.offset);
            this.afterCommit?.(txId);
          },
          abort: async () => {
            this.calls.push({ op: 'abort', transactionalId: txId });
          },
        };
      },
    };
  }

  admin() {
    return {
      connect: async () => undefined,
      disconnect: async () => undefined,
      fetchTopicMetadata: async ({ topics }: { topics: string[] }) => ({
        topics: topics.map((name) => ({
          name,
          partitions: Array.from({ length: this.partitions[name] ?? 0 }, (_, partitionId) => ({ partitionId })),
        })),
      }),
      fetchTopicOffsets: async (topic: string) =>
        Array.from({ length: this.partitions[topic] ?? 0 }, (_, partition) => ({
          partition,
          offset: '0',
          low: '0',
          high: '0',
        })),
      fetchOffsets: async ({ groupId, topics }: { groupId: string; topics: string[] }) => {
        this.calls.push({ op: 'fetchOffsets', groupId });
        return topics.map((topic) => ({
          topic,
          partitions: [{ partition: 0, offset: String(this.markers.get(groupId) ?? -1), metadata: null }],
        }));
      },
    };
  }
}
