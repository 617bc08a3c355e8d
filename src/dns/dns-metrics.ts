// DNS metrics. The per-query counters are plain numbers bumped on the hot path and copied into
// prom-client only when Prometheus scrapes (a labelled inc() per query costs more than answering).
import { Counter, Histogram, type Registry } from 'prom-client';

const TYPE_NAMES: Record<number, string> = {
  1: 'A',
  2: 'NS',
  5: 'CNAME',
  6: 'SOA',
  12: 'PTR',
  15: 'MX',
  16: 'TXT',
  28: 'AAAA',
  33: 'SRV',
  65: 'HTTPS',
  255: 'ANY',
};
const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'other'];
const SOURCES = ['cluster', 'cache', 'stale', 'upstream', 'local'] as const;

/** How a query was answered (the `source` label). */
export type AnswerSource = (typeof SOURCES)[number];

const SOURCE_INDEX: Record<AnswerSource, number> = { cluster: 0, cache: 1, stale: 2, upstream: 3, local: 4 };
/** Label values by type slot; slot 0 is 'other'. */
const TYPE_LABELS = ['other', ...Object.values(TYPE_NAMES)];
/** qtype (0..255) → type slot. */
const TYPE_SLOT = new Uint8Array(256);
Object.keys(TYPE_NAMES).forEach((qtype, i) => {
  TYPE_SLOT[Number(qtype)] = i + 1;
});
const CELLS = TYPE_LABELS.length * RCODE_NAMES.length * SOURCES.length;

/** The DNS server's metrics, registered on the registry passed in. */
export class DnsMetrics {
  /** Query counts by (type slot, rcode, source) cell; plain numbers, bumped per query. */
  private readonly counts = new Float64Array(CELLS);
  private readonly pushed = new Float64Array(CELLS);
  private readonly dropCounts = new Map<string, number>();
  private readonly droppedPushed = new Map<string, number>();
  private readonly cacheCounts = { hit: 0, stale: 0, miss: 0 };
  private readonly cachePushed = { hit: 0, stale: 0, miss: 0 };
  readonly upstreamSeconds: Histogram<'transport' | 'outcome'>;
  /** Reads the native responder's answered-by-(qtype, NOERROR|NXDOMAIN) cells (256 × 2). */
  private nativeAnswered: (() => Float64Array | undefined) | undefined;
  private readonly nativeSeen = new Float64Array(512);
  /** Reads the native count of queries dropped because the JS hand-over queue was full. */
  private nativeDropped: (() => number) | undefined;
  private nativeDroppedSeen = 0;

  constructor(registry?: Registry) {
    const self = this;
    const queries = new Counter({
      name: 'edgemesh_dns_queries_total',
      help: 'DNS queries answered, by query type, response code and where the answer came from',
      labelNames: ['type', 'rcode', 'source'] as const,
      registers: registry ? [registry] : [],
      collect() {
        self.pullNative();
        for (let cell = 0; cell < CELLS; cell++) {
          const delta = self.counts[cell]! - self.pushed[cell]!;
          if (delta <= 0) continue;
          this.inc(cellLabels(cell), delta);
          self.pushed[cell] = self.counts[cell]!;
        }
      },
    });
    const dropped = new Counter({
      name: 'edgemesh_dns_dropped_total',
      help: 'DNS packets dropped without a reply (too short to answer, responses, oversized TCP frames)',
      labelNames: ['reason'] as const,
      registers: registry ? [registry] : [],
      collect() {
        self.pullNative();
        for (const [reason, value] of self.dropCounts) {
          const delta = value - (self.droppedPushed.get(reason) ?? 0);
          if (delta > 0) this.inc({ reason }, delta);
          self.droppedPushed.set(reason, value);
        }
      },
    });
    const cache = new Counter({
      name: 'edgemesh_dns_cache_lookups_total',
      help: 'Lookups of forwarded names in the answer cache: hit, stale (served while upstreams failed), miss',
      labelNames: ['result'] as const,
      registers: registry ? [registry] : [],
      collect() {
        for (const result of ['hit', 'stale', 'miss'] as const) {
          const delta = self.cacheCounts[result] - self.cachePushed[result];
          if (delta > 0) this.inc({ result }, delta);
          self.cachePushed[result] = self.cacheCounts[result];
        }
      },
    });
    void queries;
    void dropped;
    void cache;
    this.upstreamSeconds = new Histogram({
      name: 'edgemesh_dns_upstream_duration_seconds',
      help: 'Time of each upstream attempt, by transport and outcome (ok, timeout, refused, servfail, ...)',
      labelNames: ['transport', 'outcome'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: registry ? [registry] : [],
    });
  }

  /** Counts one answered query. */
  query(qtype: number, rcode: number, source: AnswerSource): void {
    const type = qtype < 256 ? TYPE_SLOT[qtype]! : 0;
    const rc = Math.min(rcode, 6);
    this.counts[(type * RCODE_NAMES.length + rc) * SOURCES.length + SOURCE_INDEX[source]]!++;
  }

  /**
   * Counts the native responder's answers too (source 'cluster'): its counters are read when
   * Prometheus scrapes or a snapshot is taken, never per packet.
   */
  attachNative(read: () => Float64Array | undefined, dropped?: () => number): void {
    this.pullNative();
    this.nativeAnswered = read;
    this.nativeSeen.fill(0);
    this.nativeDropped = dropped;
    this.nativeDroppedSeen = 0;
  }

  private pullNative(): void {
    const dropped = this.nativeDropped?.() ?? 0;
    if (dropped > this.nativeDroppedSeen) {
      const reason = 'native-queue-full';
      this.dropCounts.set(reason, (this.dropCounts.get(reason) ?? 0) + dropped - this.nativeDroppedSeen);
      this.nativeDroppedSeen = dropped;
    }
    const cells = this.nativeAnswered?.();
    if (!cells) return;
    for (let i = 0; i < 512 && i < cells.length; i++) {
      const delta = cells[i]! - this.nativeSeen[i]!;
      if (delta <= 0) continue;
      this.nativeSeen[i] = cells[i]!;
      const qtype = i >> 1;
      const rcode = i & 1 ? 3 : 0;
      const type = TYPE_SLOT[qtype]!;
      this.counts[(type * RCODE_NAMES.length + rcode) * SOURCES.length + SOURCE_INDEX.cluster]! += delta;
    }
  }

  /** Counts one packet dropped without a reply. */
  drop(reason: string): void {
    this.dropCounts.set(reason, (this.dropCounts.get(reason) ?? 0) + 1);
  }

  /** Counts one cache lookup. */
  cache(result: 'hit' | 'stale' | 'miss'): void {
    this.cacheCounts[result]++;
  }

  /** Totals for tests and /status: answered queries by `type|rcode|source`, drops by reason. */
  snapshot(): {
    queries: Record<string, number>;
    dropped: Record<string, number>;
    cache: Record<string, number>;
  } {
    this.pullNative();
    return {
      queries: Object.fromEntries(
        [...this.counts.keys()]
          .filter((c) => this.counts[c]! > 0)
          .map((c) => {
            const l = cellLabels(c);
            return [`${l.type}|${l.rcode}|${l.source}`, this.counts[c]!];
          }),
      ),
      dropped: Object.fromEntries(this.dropCounts),
      cache: { ...this.cacheCounts },
    };
  }
}

/** The label values of a counts cell. */
function cellLabels(cell: number): { type: string; rcode: string; source: string } {
  const source = cell % SOURCES.length;
  const rest = (cell - source) / SOURCES.length;
  const rcode = rest % RCODE_NAMES.length;
  const type = (rest - rcode) / RCODE_NAMES.length;
  return { type: TYPE_LABELS[type]!, rcode: RCODE_NAMES[rcode]!, source: SOURCES[source]! };
}
