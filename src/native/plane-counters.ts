// Names of the native plane's counters, in the order the addon returns them (PlaneCounter and
// ServiceCounter in native/src/core/proxy_plane.h): the two lists change only together.

/** planeCounters() order. */
export const PLANE_COUNTER_NAMES = [
  'accepted',
  'active',
  'established',
  'bytes_up',
  'bytes_down',
  'no_route',
  'no_endpoint',
  'original_dst_errors',
  'connect_refused',
  'connect_timeouts',
  'connect_other_errors',
  'upstream_failed',
  'resets',
  'accept_errors',
  'idle_closed',
  'drain_forced',
  'workers_running',
  'handed_off',
  'spliced_back',
  'affinity_released',
  'affinity_restored',
] as const;

export type PlaneCounterName = (typeof PLANE_COUNTER_NAMES)[number];

/** planeServiceCounters() order within one slot. */
export const SERVICE_COUNTER_NAMES = ['connections', 'active', 'bytes_up', 'bytes_down', 'errors'] as const;

export type ServiceCounterName = (typeof SERVICE_COUNTER_NAMES)[number];
