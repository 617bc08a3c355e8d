// BoundedFrequencyRunner on a hand-driven clock: coalescing, min interval, periodic resync,
// retry after failure, no concurrent runs, stop.
import { describe, expect, it } from 'vitest';
import { BoundedFrequencyRunner, type RunnerClock } from '../../src/util/bounded-frequency-runner.ts';

class FakeClock implements RunnerClock {
  t = 0;
  private nextId = 1;
  private timers = new Map<number, { due: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { due: this.t + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  /** Moves time forward to `to`, firing due timers in order and letting promises settle. */
  async advanceTo(to: number): Promise<void> {
    for (;;) {
      await flush();
      const next = [...this.timers.entries()].sort((a, b) => a[1].due - b[1].due)[0];
      if (!next || next[1].due > to) break;
      this.timers.delete(next[0]);
      this.t = next[1].due;
      next[1].fn();
    }
    this.t = to;
    await flush();
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

function setup(fn: () => Promise<void> = async () => {}) {
  const clock = new FakeClock();
  const runs: number[] = [];
  const errors: unknown[] = [];
  const runner = new BoundedFrequencyRunner(
    async () => {
      runs.push(clock.t);
      await fn();
    },
    { minIntervalMs: 100, maxIntervalMs: 1_000, retryIntervalMs: 300, clock, onError: (e) => errors.push(e) },
  );
  return { clock, runs, errors, runner };
}

describe('BoundedFrequencyRunner', () => {
  it('runs at start, then coalesces a burst into one run after the min interval', async () => {
    const { clock, runs, runner } = setup();
    runner.start();
    await clock.advanceTo(0);
    expect(runs).toEqual([0]);
    await clock.advanceTo(10);
    for (let i = 0; i < 50; i++) runner.run();
    await clock.advanceTo(99);
    expect(runs).toEqual([0]);
    await clock.advanceTo(150);
    expect(runs).toEqual([0, 100]);
    // A request long after the last run is served immediately.
    await clock.advanceTo(500);
    runner.run();
    await clock.advanceTo(500);
    expect(runs).toEqual([0, 100, 500]);
  });

  it('resyncs periodically when nobody asks', async () => {
    const { clock, runs, runner } = setup();
    runner.start();
    await clock.advanceTo(2_500);
    expect(runs).toEqual([0, 1_000, 2_000]);
  });

  it('retries after a failure and reports the error', async () => {
    let fail = true;
    const { clock, runs, errors, runner } = setup(async () => {
      if (fail) throw new Error('boom');
    });
    runner.start();
    await clock.advanceTo(0);
    expect(errors).toHaveLength(1);
    fail = false;
    await clock.advanceTo(299);
    expect(runs).toEqual([0]);
    await clock.advanceTo(300);
    expect(runs).toEqual([0, 300]);
  });

  it('never runs concurrently: a request during a run queues exactly one more', async () => {
    let release: () => void = () => {};
    let active = 0;
    let maxActive = 0;
    const { clock, runs, runner } = setup(async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise<void>((r) => {
        release = r;
      });
      active--;
    });
    runner.start();
    await clock.advanceTo(0);
    expect(runner.isRunning()).toBe(true);
    runner.run();
    runner.run();
    await clock.advanceTo(400);
    expect(runs).toEqual([0]);
    release();
    await clock.advanceTo(400);
    expect(runs).toEqual([0, 400]);
    release();
    await clock.advanceTo(450);
    expect(maxActive).toBe(1);
    expect(runs).toEqual([0, 400]);
  });

  it('stops: no runs after stop(), which waits for the run in progress', async () => {
    const { clock, runs, runner } = setup();
    runner.start();
    await clock.advanceTo(0);
    await runner.stop();
    runner.run();
    await clock.advanceTo(5_000);
    expect(runs).toEqual([0]);
  });
});

describe('TokenBucket (kubeAPIConfig.qps / burst)', () => {
  it('lets a burst through, then paces requests at qps, in arrival order', async () => {
    const { TokenBucket } = await import('../../src/controller/sources/token-bucket.ts');
    let t = 0;
    const slept: number[] = [];
    const clock = {
      now: () => t,
      sleep: async (ms: number) => {
        slept.push(Math.round(ms));
        t += ms;
      },
    };
    const bucket = new TokenBucket(10, 3, clock);
    const order: number[] = [];
    await Promise.all([0, 1, 2, 3, 4].map((i) => bucket.take().then(() => order.push(i))));
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(slept).toEqual([100, 100]); // 3 at once, then one per 100 ms at 10 qps
    expect(Math.round(t)).toBe(200);
    const off = new TokenBucket(0, 0, clock);
    await Promise.all(Array.from({ length: 100 }, () => off.take()));
    expect(slept).toHaveLength(2);
  });
});
