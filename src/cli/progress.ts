/**
 * Progress on stderr for long work. On a terminal: a redrawn bar with the elapsed time, redrawn at
 * least every second (`heartbeatMs`) even while a phase reports nothing (a LevelDB restore, the
 * first key group of a large convert), so a long command never looks hung. Elsewhere (logs,
 * pipes): nothing, unless asked for (`plain`, the CLI's --progress): then a plain line when a
 * phase starts and at every quarter. Nothing is shown for work that finishes within `delayMs`
 * (default 1 s), nothing at all when disabled (--quiet). Never writes to stdout.
 */
export interface ProgressSink {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
}

export interface ProgressOptions {
  /** false: never writes (--quiet). Default true. */
  readonly enabled?: boolean;
  /** Plain lines when stderr is not a terminal (--progress). Default false: nothing there. */
  readonly plain?: boolean;
  /** Terminal redraw interval while nothing is reported. Default 1000 ms. */
  readonly heartbeatMs?: number;
}

const BAR_WIDTH = 28;
const REDRAW_MS = 100;

export class Progress {
  private phase = '';
  private fraction = 0;
  private lastQuarter = -1;
  private lastDraw = 0;
  private drawn = false;
  private readonly started: number;
  private heartbeat: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly sink: ProgressSink,
    private readonly delayMs = 1000,
    private readonly tty: boolean = sink.isTTY === true,
    private readonly now: () => number = Date.now,
    private readonly opts: ProgressOptions = {},
  ) {
    this.started = now();
    if (this.tty && opts.enabled !== false) {
      this.heartbeat = setInterval(() => this.draw(), opts.heartbeatMs ?? 1000);
      this.heartbeat.unref?.();
    }
  }

  update(phase: string, done: number, total: number): void {
    if (this.opts.enabled === false || this.now() - this.started < this.delayMs) return;
    const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
    if (this.tty) {
      const t = this.now();
      const same = phase === this.phase;
      this.phase = phase;
      this.fraction = fraction;
      if (same && fraction < 1 && t - this.lastDraw < REDRAW_MS) return;
      this.draw();
      return;
    }
    if (this.opts.plain !== true) return;
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

  /** Draws the bar (terminal): the current phase and fraction, or "working" between phases, with the elapsed time. */
  private draw(): void {
    const t = this.now();
    if (t - this.started < this.delayMs) return;
    this.lastDraw = t;
    const elapsed = `(${Math.floor((t - this.started) / 1000)} s)`;
    if (this.phase === '') {
      this.sink.write(`\r\x1b[2Kworking ${elapsed}`);
    } else {
      const filled = Math.round(this.fraction * BAR_WIDTH);
      this.sink.write(
        `\r\x1b[2K[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${(this.fraction * 100).toFixed(0).padStart(3)}% ${this.phase} ${elapsed}`,
      );
    }
    this.drawn = true;
  }

  /** Clears the bar (terminal) so the next output starts on a clean line; the next phase may follow. */
  done(): void {
    if (this.tty && this.drawn) this.sink.write('\r\x1b[2K');
    this.drawn = false;
    this.phase = '';
    this.fraction = 0;
  }

  /** Stops the terminal redraws and clears the bar: the command is over. */
  dispose(): void {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    this.done();
  }
}
