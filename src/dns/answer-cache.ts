// The cache of forwarded answers: positive answers for their smallest TTL, negative answers
// (NXDOMAIN / NODATA) for the SOA-derived TTL of RFC 2308, and expired answers kept a while
// longer so they can be served stale (RFC 8767) while every upstream is unreachable.
import { Rcode, walkMessage } from './wire.ts';

/** Limits of the cache. */
export interface AnswerCacheOptions {
  /** Most entries kept; the least recently stored go first. 0 disables caching. */
  maxEntries: number;
  /** Upper bound of any cached TTL, seconds. */
  maxTtl: number;
  /** Upper bound of a negative-cache TTL, seconds (RFC 2308 §5 suggests 1–3 hours). */
  maxNegativeTtl: number;
  /** How long after expiry an answer may still be served stale, seconds (0 = never). */
  staleWindow: number;
  /** Milliseconds clock (injectable for tests). */
  now?: () => number;
}

/** One cached answer as the upstream sent it, with where its TTLs live. */
export interface CachedAnswer {
  message: Buffer;
  ttlOffsets: number[];
  ttls: number[];
  storedAt: number;
  expiresAt: number;
  staleUntil: number;
  negative: boolean;
}

/** What `get` found: a fresh entry, a stale one (only usable when upstreams fail), or nothing. */
export type CacheLookup = { state: 'fresh' | 'stale'; entry: CachedAnswer } | undefined;

/** RFC 8767 §4: stale answers carry a TTL of 30 seconds. */
export const STALE_TTL = 30;

/** A bounded map from query key to the last answer, aware of TTLs and staleness. */
export class AnswerCache {
  private readonly entries = new Map<string, CachedAnswer>();
  private readonly now: () => number;

  constructor(private readonly options: AnswerCacheOptions) {
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Looks up `key`; drops entries past their stale window. */
  get(key: string): CacheLookup {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    const now = this.now();
    if (now < entry.expiresAt) return { state: 'fresh', entry };
    if (now < entry.staleUntil) return { state: 'stale', entry };
    this.entries.delete(key);
    return undefined;
  }

  /**
   * Stores an upstream answer if it is cacheable: NOERROR with answers (min TTL), or NXDOMAIN /
   * NODATA with an SOA (min of SOA TTL and MINIMUM). SERVFAIL, truncated and malformed answers
   * are not stored. Returns whether it was stored.
   */
  put(key: string, message: Buffer): boolean {
    if (this.options.maxEntries <= 0) return false;
    const layout = walkMessage(message);
    if (!layout || layout.truncated) return false;
    let ttl: number;
    let negative = false;
    if (layout.rcode === Rcode.NOERROR && layout.ancount > 0) {
      ttl = Math.min(...layout.ttls.slice(0, layout.ancount));
    } else if (layout.rcode === Rcode.NXDOMAIN || (layout.rcode === Rcode.NOERROR && layout.ancount === 0)) {
      if (layout.soaMinimum === undefined || layout.soaTtl === undefined) return false;
      ttl = Math.min(layout.soaTtl, layout.soaMinimum, this.options.maxNegativeTtl);
      negative = true;
    } else {
      return false;
    }
    ttl = Math.min(ttl, this.options.maxTtl);
    if (ttl <= 0) return false;
    const now = this.now();
    const expiresAt = now + ttl * 1000;
    this.entries.delete(key);
    this.entries.set(key, {
      message: Buffer.from(message),
      ttlOffsets: layout.ttlOffsets,
      ttls: layout.ttls,
      storedAt: now,
      expiresAt,
      staleUntil: expiresAt + this.options.staleWindow * 1000,
      negative,
    });
    while (this.entries.size > this.options.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    return true;
  }

  /** Removes everything (upstreams changed). */
  clear(): void {
    this.entries.clear();
  }

  /**
   * A copy of a cached answer ready to send: the client's id and question bytes (the client's
   * letter case), TTLs reduced by the time spent in the cache, or set to STALE_TTL when stale.
   */
  render(entry: CachedAnswer, query: Buffer, questionEnd: number, stale: boolean): Buffer {
    const out = Buffer.from(entry.message);
    query.copy(out, 0, 0, 2);
    // Same name modulo case, so the same length: the client sees its own spelling back (0x20 bit).
    query.copy(out, 12, 12, questionEnd);
    const elapsed = Math.floor((this.now() - entry.storedAt) / 1000);
    for (let i = 0; i < entry.ttlOffsets.length; i++) {
      const ttl = stale ? STALE_TTL : Math.max(0, entry.ttls[i]! - elapsed);
      out.writeUInt32BE(ttl, entry.ttlOffsets[i]!);
    }
    return out;
  }
}
