// Istio/protobuf duration strings ("10s", "1.5s", "100ms", "1h", "2m30s") as seconds.

const UNIT_SECONDS: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 1e-3, us: 1e-6, ns: 1e-9 };

/** Seconds in an Istio duration string or number of seconds; undefined when malformed. */
export function parseDurationSeconds(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  const text = value.trim();
  if (!/^(\d+(\.\d+)?(h|ms|m|s|us|ns))+$/.test(text)) return undefined;
  let total = 0;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)/g)) {
    total += Number(m[1]) * UNIT_SECONDS[m[2]!]!;
  }
  return total;
}
