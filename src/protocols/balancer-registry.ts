// Per-thread balancers for protocol handlers that are handed only (service, port): one Balancer per
// service port, kept across snapshots (update() on a new port object) so ejections and rotation
// survive endpoint changes.
import type { ServiceEntry, ServicePortEntry } from '../controller/types.ts';
import { type BalancerOptions, createBalancer, type ServiceBalancer } from '../lb/index.ts';

interface Slot {
  balancer: ServiceBalancer;
  port: ServicePortEntry;
}

/** Balancers by `namespace/name:port/protocol`. */
export class BalancerRegistry {
  private readonly slots = new Map<string, Slot>();

  constructor(private readonly opts: BalancerOptions = {}) {}

  /** The balancer of `service`/`port`, updated if `port` is a newer snapshot object. */
  get(service: ServiceEntry, port: ServicePortEntry): ServiceBalancer {
    const key = `${service.key}:${port.port}/${port.protocol}`;
    const slot = this.slots.get(key);
    if (!slot) {
      const balancer = createBalancer(service, port, this.opts);
      this.slots.set(key, { balancer, port });
      return balancer;
    }
    if (slot.port !== port) {
      slot.balancer.update(service, port);
      slot.port = port;
    }
    return slot.balancer;
  }

  /** Number of service ports with a balancer. */
  get size(): number {
    return this.slots.size;
  }
}
