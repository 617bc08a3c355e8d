// Service sessionAffinity: ClientIP — a client IP keeps its endpoint until `timeoutSeconds` pass
// without traffic (kube-proxy's semantics: each use refreshes the timer).

interface Entry {
  key: string;
  expires: number;
}

/** Client IP → endpoint key, with sliding expiry. */
export class SessionAffinityTable {
  private readonly entries = new Map<string, Entry>();
  private lastSweep = 0;

  constructor(
    private timeoutMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Changes the timeout (keeps entries). */
  setTimeout(timeoutSeconds: number): void {
    this.timeoutMs = timeoutSeconds * 1000;
  }

  /** The endpoint key remembered for `clientIp`, if still fresh. */
  get(clientIp: string): string | undefined {
    const e = this.entries.get(clientIp);
    if (!e) return undefined;
    if (e.expires <= this.now()) {
      this.entries.delete(clientIp);
      return undefined;
    }
    return e.key;
  }

  /** Remembers (or refreshes) `clientIp` → `key`. */
  set(clientIp: string, key: string): void {
    const now = this.now();
    this.entries.set(clientIp, { key, expires: now + this.timeoutMs });
    // Sweep expired entries at most once per timeout so the table stays bounded by live clients.
    if (now - this.lastSweep >= Math.min(this.timeoutMs, 60_000)) {
      this.lastSweep = now;
      for (const [ip, e] of this.entries) if (e.expires <= now) this.entries.delete(ip);
    }
  }

  /** Forgets every client bound to `key` (the endpoint went away). */
  forgetKey(key: string): void {
    for (const [ip, e] of this.entries) if (e.key === key) this.entries.delete(ip);
  }

  /** Number of remembered clients. */
  get size(): number {
    return this.entries.size;
  }
}
