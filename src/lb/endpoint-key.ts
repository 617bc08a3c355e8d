// How an endpoint is named everywhere in load balancing: `ip:port` (no brackets, also for IPv6).
// Exclude sets, ring points and affinity tables all use this name, and the native twin does too.
import type { Endpoint } from '../controller/types.ts';

/** The stable name of an endpoint: `${ip}:${port}`. */
export function endpointKey(ep: Pick<Endpoint, 'ip' | 'port'>): string {
  return `${ep.ip}:${ep.port}`;
}

/**
 * The members of a hash table (ring or Maglev): endpoints de-duplicated by key (first one kept),
 * sorted by key in plain string order; `keys[i]` names `members[i]`.
 */
export function sortedMembers(endpoints: readonly Endpoint[]): { keys: string[]; members: Endpoint[] } {
  const byKey = new Map<string, Endpoint>();
  for (const ep of endpoints) {
    const key = endpointKey(ep);
    if (!byKey.has(key)) byKey.set(key, ep);
  }
  const keys = [...byKey.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { keys, members: keys.map((k) => byKey.get(k)!) };
}
