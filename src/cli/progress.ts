/**
 * Progress on stderr for long work: a redrawn bar when stderr is a terminal, otherwise a plain
 * line when a phase starts and at every quarter (so logs stay short). Nothing is shown for work
 * that finishes within `delayMs` (default 1 s). Never writes to stdout.
 */
export interface ProgressSink {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
}

const BAR_WIDTH = 28;
const REDRAW_MS = 100;

export class Progress {
  private phase = '';
  private lastQuarter = -1;
  private lastDraw = 0;
  private drawn = false;
  private readonly started: number;

  constructor(
    private readonly sink: ProgressSink,
    private readonly delayMs = 1000,
    private readonly tty: boolean = sink.isTTY === true,
    private readonly now: () => number = Date.now,
  ) {
    this.started = now();
  }

  update(phase: string, done: number, total: number): void {
    if (this.now() - this.started < this.delayMs) return;
    const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
    if (this.tty) {
      const t = this.now();
      if (phase === this.phase && fraction < 1 && t - this.lastDraw < REDRAW_MS) return;
      this.phase = phase;
      this.lastDraw = t;
      const filled = Math.round(fraction * BAR_WIDTH);
      this.sink.write(`\r\x1b[2K[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${phase}`);
      this.drawn = true;
      return;
    }
    const quarter = Math.floor(fraction * 4);
    if (phase !== this.phase) {
      this.phase = phase;
      this.lastQuarter = -1;
    }
    if (quarter > this.lastQuarter) {
      this.lastQuarter = quarter;
      this.sink.write(`${phase}: ${(fraction * 100).toFixed(0)}%\n`);
    }
  }

  /** Clears the bar (terminal) so the next output starts on a clean line. */
  done(): void {
    if (this.tty && this.drawn) this.sink.write('\r\x1b[2K');
    this.drawn = false;
    this.phase = '';
  }
}
