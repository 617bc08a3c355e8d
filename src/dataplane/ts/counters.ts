// Data-plane counters shared between listener workers and the main thread without messages: each
// worker owns one row of a SharedArrayBuffer (single writer), the main thread sums the rows.

/** Counter names in slot order. */
export const COUNTER_NAMES = [
  'connections_total',
  'connections_active',
  'bytes_from_clients',
  'bytes_to_clients',
  'connect_errors',
  'connect_retries',
  'connect_timeouts',
  'idle_timeouts',
  'no_endpoint',
  'handler_errors',
  /** Tunnels given back to the native plane (splice-back.ts). */
  'handed_back',
  /** Tunnels that stayed in JS although a native plane was there. */
  'hand_back_fallbacks',
] as const;

export type CounterName = (typeof COUNTER_NAMES)[number];

const SLOT = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as Record<CounterName, number>;

/** One worker's row of counters. */
export class CounterRow {
  private readonly cells: Float64Array;

  constructor(buffer: SharedArrayBuffer, row: number) {
    this.cells = new Float64Array(buffer, row * COUNTER_NAMES.length * 8, COUNTER_NAMES.length);
  }

  /** Adds `n` (default 1) to a counter. */
  add(name: CounterName, n = 1): void {
    this.cells[SLOT[name]]! += n;
  }
}

/** Allocates the shared buffer for `rows` workers. */
export function counterBuffer(rows: number): SharedArrayBuffer {
  return new SharedArrayBuffer(Math.max(1, rows) * COUNTER_NAMES.length * 8);
}

/** Sums every row: the data plane's totals. */
export function sumCounters(buffer: SharedArrayBuffer): Record<CounterName, number> {
  const all = new Float64Array(buffer);
  const out = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Record<CounterName, number>;
  for (let i = 0; i < all.length; i++) out[COUNTER_NAMES[i % COUNTER_NAMES.length]!] += all[i]!;
  return out;
}
