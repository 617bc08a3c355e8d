// The native plane for L4 ports and the TS plane for the ports that need L7 (header/cookie/query
// hashing, protocol handlers): one Dataplane to the proxier. The TS plane starts only when the
// first such port appears, so a cluster without L7 policies runs native only.
import type {
  ServiceEntry,
  ServicePortEntry,
  ServiceTable,
  ServiceTableDiff,
} from '../../controller/types.ts';
import type { InterceptTarget } from '../../proxier/interceptor.ts';
import type { Dataplane } from '../dataplane.ts';
import { nativePolicy } from './route-encoder.ts';

/** Whether a service port must go through the TS plane. */
export type NeedsL7 = (service: ServiceEntry, port: ServicePortEntry) => boolean;

/** Default split: ports whose consistentHash reads the request (header, cookie, query) or is not the default ring. */
export const needsL7Policy: NeedsL7 = (_svc, port) => nativePolicy(port).needsL7;

/** Native L4 + TS L7 behind one Dataplane (mode 'native'). */
export class SplitDataplane implements Dataplane {
  readonly name = 'dataplane';
  readonly mode = 'native' as const;
  private l7Started = false;

  constructor(
    private readonly l4: Dataplane,
    private readonly l7: Dataplane,
    private readonly needsL7: NeedsL7 = needsL7Policy,
  ) {}

  async start(): Promise<void> {
    await this.l4.start();
  }

  async apply(table: ServiceTable, diff: ServiceTableDiff): Promise<readonly InterceptTarget[]> {
    const l4 = new Map<string, ServiceEntry>();
    const l7 = new Map<string, ServiceEntry>();
    for (const [key, svc] of table.services) {
      const l7Ports = svc.ports.filter((p) => this.needsL7(svc, p));
      const l4Ports = svc.ports.filter((p) => !l7Ports.includes(p));
      if (l4Ports.length > 0)
        l4.set(key, l4Ports.length === svc.ports.length ? svc : { ...svc, ports: l4Ports });
      if (l7Ports.length > 0) l7.set(key, { ...svc, ports: l7Ports });
    }
    if (l7.size > 0 && !this.l7Started) {
      await this.l7.start();
      this.l7Started = true;
    }
    const targets = [...(await this.l4.apply({ ...table, services: l4 }, diff))];
    if (this.l7Started) targets.push(...(await this.l7.apply({ ...table, services: l7 }, diff)));
    return targets;
  }

  counters(): Record<string, number> {
    const out: Record<string, number> = { ...this.l4.counters() };
    if (this.l7Started) {
      for (const [k, v] of Object.entries(this.l7.counters())) out[k] = (out[k] ?? 0) + v;
    }
    return out;
  }

  async stop(): Promise<void> {
    try {
      await this.l4.stop();
    } finally {
      if (this.l7Started) await this.l7.stop();
      this.l7Started = false;
    }
  }
}
