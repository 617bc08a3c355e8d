// Accumulates samples into BenchRecords: one record per (suite, case, contender, metric), each
// round appending to the same series, so interleaved rounds end up side by side.
import type { BenchRecord } from './record.ts';

/** Collects samples and turns them into records. */
export class Collector {
  private readonly records = new Map<string, BenchRecord>();

  /** Appends samples to the series (created on first use). */
  add(
    series: Omit<BenchRecord, 'samples' | 'extra'>,
    samples: number | number[],
    extra?: Record<string, string | number>,
  ): void {
    const key = `${series.suite}\u0000${series.case}\u0000${series.contender}\u0000${series.metric}`;
    let rec = this.records.get(key);
    if (!rec) {
      rec = { ...series, samples: [] };
      this.records.set(key, rec);
    }
    for (const s of Array.isArray(samples) ? samples : [samples]) if (Number.isFinite(s)) rec.samples.push(s);
    if (extra) rec.extra = { ...rec.extra, ...extra };
  }

  /** Every non-empty series, in insertion order. */
  result(): BenchRecord[] {
    return [...this.records.values()].filter((r) => r.samples.length > 0);
  }
}
