// How an endpoint is named everywhere in load balancing: `ip:port` (no brackets, also for IPv6).
// Exclude sets, ring points and affinity tables all use this name, and the native twin does too.
import type { Endpoint } from '../controller/types.ts';

/** The stable name of an endpoint: `${ip}:${port}`. */
export function endpointKey(ep: Pick<Endpoint, 'ip' | 'port'>): string {
  return `${ep.ip}:${ep.port}`;
}
