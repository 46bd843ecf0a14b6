/**
 * Exporting streamstate's checkpoint statistics to Prometheus with prom-client (a devDependency
 * of this repository; the core does not depend on it). Flink's checkpoint gauges, by the same names
 * where they exist: numberOf{InProgress,Completed,Failed}Checkpoints, lastCheckpointDuration,
 * lastCheckpointSize, lastCheckpointFullSize, lastCompletedCheckpointId, and a failure counter per
 * reason. The values come from the coordinator's typed listener (the same events are on the
 * node:diagnostics_channel channels in CHECKPOINT_CHANNELS, if you prefer not to hold the coordinator).
 *
 *   const registry = new Registry();
 *   exportCheckpointMetrics(coordinator, registry);
 *   http.createServer(async (_, res) => res.end(await registry.metrics())).listen(9249);
 *
 * Run as a script (`node dist/examples/prometheus.js`) it takes three checkpoints of a small job
 * in memory and prints the exposition text.
 */
import { pathToFileURL } from 'node:url';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { memoryCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import type { CheckpointEvent } from '../src/checkpoint/checkpoint-stats.js';
import { CheckpointCoordinator } from '../src/checkpoint/coordinator.js';

/** Registers the checkpoint metrics of `coordinator` in `registry`; returns a function that stops updating them. */
export function exportCheckpointMetrics(coordinator: CheckpointCoordinator, registry: Registry): () => void {
  const labelNames = ['job'] as const;
  const job = coordinator.statistics.jobId;
  const counts = (): ReturnType<CheckpointCoordinator['statistics']['snapshot']> => coordinator.statistics.snapshot();
  // Gauges read the tracker when scraped: nothing to keep in sync.
  const gauge = (name: string, help: string, read: () => number | undefined): void => {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        const v = read();
        if (v !== undefined) this.set({ job }, v);
      },
    });
  };
  gauge('streamstate_checkpoints_in_progress', 'numberOfInProgressCheckpoints', () => counts().counts.inProgress);
  gauge('streamstate_checkpoints_completed_total', 'numberOfCompletedCheckpoints', () => counts().counts.completed);
  gauge('streamstate_checkpoints_failed_total', 'numberOfFailedCheckpoints', () => counts().counts.failed);
  gauge(
    'streamstate_checkpoints_restored_total',
    'checkpoints and savepoints restored',
    () => counts().counts.restored,
  );
  gauge(
    'streamstate_last_completed_checkpoint_id',
    'lastCompletedCheckpointId',
    () => counts().latestCompleted?.checkpointId,
  );
  gauge(
    'streamstate_last_checkpoint_duration_ms',
    'lastCheckpointDuration: trigger to last acknowledgement',
    () => counts().latestCompleted?.durationMs,
  );
  gauge(
    'streamstate_last_checkpoint_size_bytes',
    'lastCheckpointSize: bytes the checkpoint wrote',
    () => counts().latestCompleted?.bytesWritten,
  );
  gauge(
    'streamstate_last_checkpoint_full_size_bytes',
    'lastCheckpointFullSize: all state it references',
    () => counts().latestCompleted?.fullSize,
  );
  gauge(
    'streamstate_last_checkpoint_restore_timestamp_ms',
    'lastCheckpointRestoreTimestamp',
    () => counts().latestRestored?.restoreTimestamp,
  );
  // Counters and histograms need every event, so they listen.
  const failures = new Counter({
    name: 'streamstate_checkpoint_failures_total',
    help: 'failed checkpoints by reason',
    labelNames: ['job', 'reason'],
    registers: [registry],
  });
  const durations = new Histogram({
    name: 'streamstate_checkpoint_duration_ms',
    help: 'end-to-end duration of completed checkpoints',
    labelNames,
    buckets: [10, 50, 100, 500, 1000, 5000, 30_000, 120_000],
    registers: [registry],
  });
  const syncDurations = new Histogram({
    name: 'streamstate_subtask_sync_duration_ms',
    help: 'synchronous part per subtask',
    labelNames: ['job', 'operator'],
    buckets: [1, 5, 10, 50, 100, 500],
    registers: [registry],
  });
  return coordinator.addCheckpointListener((e: CheckpointEvent) => {
    if (e.type === 'failed') failures.inc({ job, reason: e.checkpoint.failureReason ?? 'ABORTED' });
    if (e.type === 'completed' && e.checkpoint.durationMs !== undefined)
      durations.observe({ job }, e.checkpoint.durationMs);
    if (e.type === 'acknowledged' && e.subtask.syncDurationMs !== undefined)
      syncDurations.observe({ job, operator: e.subtask.operatorId }, e.subtask.syncDurationMs);
  });
}

async function main(): Promise<void> {
  const coordinator = new CheckpointCoordinator({
    jobId: 'prometheus-demo',
    storage: memoryCheckpointStorage(),
    backendName: 'memory',
    operators: [{ operatorId: 'count', parallelism: 1, maxParallelism: 128 }],
  });
  const registry = new Registry();
  exportCheckpointMetrics(coordinator, registry);
  await coordinator.restore();
  for (let i = 0; i < 3; i++) {
    const pending = coordinator.triggerCheckpoint();
    await coordinator.acknowledge(pending.checkpointId, 'count', 0, {
      keyed: [],
      operator: [],
      metrics: { syncDurationMs: 1, asyncDurationMs: 2, alignmentDurationMs: 0 },
    });
  }
  const failing = coordinator.triggerCheckpoint();
  await coordinator.abort(failing.checkpointId, 'a task failed', 'DECLINED');
  process.stdout.write(await registry.metrics());
  await coordinator.shutdown('finish');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
