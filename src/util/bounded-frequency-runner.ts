// A rate-limited runner in the style of kube-proxy's BoundedFrequencyRunner: event handlers call
// run() as often as they like; the function runs at most once per minInterval, never concurrently,
// at least once per maxInterval (periodic resync), and again after retryInterval when it fails.

/** Timer functions the runner uses; injectable so tests drive time by hand. */
export interface RunnerClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The real clock (timers unref'd so a pending resync never keeps the process alive). */
export const systemClock: RunnerClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface BoundedFrequencyRunnerOptions {
  /** Minimum time between the starts of two runs (the batching window). */
  minIntervalMs: number;
  /** Run at least this often even when nobody asked (0 = never). */
  maxIntervalMs: number;
  /** After a failed run, run again this soon (bounded below by minIntervalMs). */
  retryIntervalMs: number;
  clock?: RunnerClock;
  /** Called with the error of a failed run (the runner itself never throws). */
  onError?: (err: unknown) => void;
}

/** Coalescing, rate-limited, serial runner of one async function. */
export class BoundedFrequencyRunner {
  private readonly clock: RunnerClock;
  private timer: unknown;
  private timerDue = Number.POSITIVE_INFINITY;
  private lastStart = Number.NEGATIVE_INFINITY;
  private running: Promise<void> | undefined;
  private pending = false;
  private started = false;
  private retryDue = false;

  constructor(
    private readonly fn: () => Promise<void>,
    private readonly options: BoundedFrequencyRunnerOptions,
  ) {
    this.clock = options.clock ?? systemClock;
  }

  /** Starts the periodic schedule and runs once as soon as allowed. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.run();
  }

  /** Asks for a run: coalesced with other requests, delayed until minInterval has passed. */
  run(): void {
    if (!this.started) return;
    if (this.running) {
      // Whatever changed during this run is folded in by one more run right after it.
      this.pending = true;
      return;
    }
    this.schedule(Math.max(this.clock.now(), this.lastStart + this.options.minIntervalMs));
  }

  /** Stops scheduling and waits for a run in progress to finish. */
  async stop(): Promise<void> {
    this.started = false;
    this.cancelTimer();
    await this.running;
  }

  /** True while a run is in progress. */
  isRunning(): boolean {
    return this.running !== undefined;
  }

  private schedule(due: number): void {
    if (!this.started) return;
    // Keep an earlier timer: it will run and cover this request too.
    if (this.timer !== undefined && this.timerDue <= due) return;
    this.cancelTimer();
    this.timerDue = due;
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = undefined;
        this.timerDue = Number.POSITIVE_INFINITY;
        this.execute();
      },
      Math.max(0, due - this.clock.now()),
    );
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
  }

  private execute(): void {
    if (!this.started || this.running) return;
    this.lastStart = this.clock.now();
    this.pending = false;
    this.retryDue = false;
    this.running = (async () => {
      try {
        await this.fn();
      } catch (err) {
        this.retryDue = true;
        this.options.onError?.(err);
      }
    })().finally(() => {
      this.running = undefined;
      this.afterRun();
    });
  }

  private afterRun(): void {
    if (!this.started) return;
    const { minIntervalMs, maxIntervalMs, retryIntervalMs } = this.options;
    const earliest = this.lastStart + minIntervalMs;
    if (this.pending) {
      this.pending = false;
      this.schedule(Math.max(this.clock.now(), earliest));
    } else if (this.retryDue) {
      this.schedule(Math.max(earliest, this.clock.now() + retryIntervalMs));
    } else if (maxIntervalMs > 0) {
      this.schedule(this.lastStart + maxIntervalMs);
    }
  }
}
