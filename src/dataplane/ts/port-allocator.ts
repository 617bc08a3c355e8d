// Hands out local listener ports for the pure-TS data plane from a configured range.
import { EdgemeshError, ErrorCode } from '../../errors.ts';

/** Parses `FIRST-LAST`; throws EDGEMESH_ERR_CONFIG when malformed. */
export function parsePortRange(text: string): { first: number; last: number } {
  const m = /^(\d+)-(\d+)$/.exec(text);
  const first = Number(m?.[1]);
  const last = Number(m?.[2]);
  if (!m || first < 1 || last > 65535 || first > last) {
    throw new EdgemeshError(
      ErrorCode.CONFIG,
      `tsPortRange: expected a port range like 21000-29999, got '${text}'`,
    );
  }
  return { first, last };
}

/** Next-fit allocation over [first, last]; released ports are reused last (fewer stale-conntrack surprises). */
export class PortAllocator {
  private readonly used = new Set<number>();
  private next: number;

  constructor(
    private readonly first: number,
    private readonly last: number,
  ) {
    this.next = first;
  }

  /** A free port, or undefined when the range is exhausted. `avoid` ports are skipped (e.g. failed binds). */
  allocate(avoid?: ReadonlySet<number>): number | undefined {
    const size = this.last - this.first + 1;
    for (let i = 0; i < size; i++) {
      const port = this.next;
      this.next = port === this.last ? this.first : port + 1;
      if (!this.used.has(port) && !avoid?.has(port)) {
        this.used.add(port);
        return port;
      }
    }
    return undefined;
  }

  /** Returns a port to the pool. */
  release(port: number): void {
    this.used.delete(port);
  }

  /** Ports in use. */
  get size(): number {
    return this.used.size;
  }
}
