// The one result format every benchmark writes: every sample, not just a median, so the report
// (and anyone re-reading the JSON) can compute medians, percentiles and ratios.

/** One measured series: a workload, run by one contender, measured in one unit. */
export interface BenchRecord {
  /** Suite name, e.g. 'tcp-bulk', 'dns-qps', 'controller', 'rule-sync'. */
  suite: string;
  /** Case within the suite, e.g. 'same-node', 'veth', '10k-services'. */
  case: string;
  /** Who was measured, e.g. 'direct', 'haproxy', 'socat', 'edgemesh-native', 'edgemesh-ts'. */
  contender: string;
  /** What was measured, e.g. 'throughput', 'latency-p99', 'qps', 'sync-time'. */
  metric: string;
  /** Unit of the samples, e.g. 'Gbit/s', 'us', 'ms', 'qps', 'conn/s'. */
  unit: string;
  /** True when a larger sample is better (throughput), false when smaller is (latency). */
  higherIsBetter: boolean;
  /** Every sample, in the order taken. */
  samples: number[];
  /** Path used (e.g. 'splice', 'read/write', 'ebpf-sockmap'), proxy CPU %, RSS MiB, notes. */
  extra?: Record<string, string | number>;
}

/** Options every benchmark module's run() accepts. */
export interface BenchOptions {
  /** CI smoke mode: few, short samples; the whole suite under 2 minutes. */
  quick: boolean;
  /** Progress output (one line per step). */
  progress: (line: string) => void;
  /** Something skipped or failed that the report must mention (a missing peer, a failed run). */
  note?: (text: string) => void;
  /** Rounds per contender (interleaved A B A B ...); the suite's own default when absent. */
  rounds?: number;
  /** Only these cases (e.g. topologies 'loopback', 'veth', 'veth-netem'); all defaults when absent. */
  cases?: string[];
  /** Only these contenders (e.g. 'direct', 'haproxy', 'edgemesh-native'); all when absent. */
  contenders?: string[];
  /** tc netem spec for the 'veth-netem' case, e.g. 'delay 1ms loss 0.1%'. */
  netem?: string;
}

/** A benchmark module: `bench/<area>.ts` exports `run` with this signature. */
export type BenchModule = (options: BenchOptions) => Promise<BenchRecord[]>;
