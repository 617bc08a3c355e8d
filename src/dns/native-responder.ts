// The TS side of the native DNS responder (native/src/dns): owns its handle, pushes answer
// tables, turns miss batches into (query, client) pairs for the JS server and sends its replies.
import type { NativeBinding } from '../native/index.ts';

/** Responder counters in native order (native/src/dns/dns_responder.h DnsCounter). */
export const DNS_COUNTER_NAMES = [
  'received',
  'answered',
  'nxdomain',
  'punted',
  'puntDropped',
  'sent',
  'sendErrors',
  'recvErrors',
  'batches',
] as const;

/** One of DNS_COUNTER_NAMES. */
export type DnsCounterName = (typeof DNS_COUNTER_NAMES)[number];

/** Bytes of a miss record's client address part (family, port, 16 address bytes). */
const ADDR_SIZE = 19;
/** Packets per recvmmsg. */
const BATCH = 64;
/** Receive buffer asked for (capped by net.core.rmem_max). */
const RCVBUF = 4 << 20;

/** Called for each query the native side did not answer; `client` goes back to send(). */
export type MissHandler = (msg: Buffer, client: Buffer) => void;

/** A running native responder on one UDP address. */
export class NativeResponder {
  private handle: number | undefined;
  /** The counters at close(), so totals survive the handle. */
  private final: Float64Array | undefined;
  /** The UDP port bound. */
  readonly port: number;

  /** Binds host:port and starts the native thread; throws EdgemeshError (NATIVE_*) on failure. */
  constructor(
    private readonly binding: NativeBinding,
    host: string,
    port: number,
    onMiss: MissHandler,
    onError?: (err: unknown) => void,
  ) {
    const handle = binding.dnsListen(host, port, RCVBUF, BATCH, (batch, count) => {
      // Records: addr[19], len u16 BE, packet. Subarrays share the batch (no copies).
      let pos = 0;
      for (let i = 0; i < count && pos + ADDR_SIZE + 2 <= batch.length; i++) {
        const client = batch.subarray(pos, pos + ADDR_SIZE);
        const len = batch.readUInt16BE(pos + ADDR_SIZE);
        const start = pos + ADDR_SIZE + 2;
        pos = start + len;
        if (pos > batch.length) break;
        try {
          onMiss(batch.subarray(start, pos), client);
        } catch (err) {
          // One bad query must not lose the rest of the batch.
          onError?.(err);
        }
      }
    });
    this.handle = handle;
    this.port = binding.dnsBoundPort(handle);
  }

  /** True until close(). */
  get open(): boolean {
    return this.handle !== undefined;
  }

  /** Publishes an answer table (answer-table.ts); returns its generation. */
  setTable(table: Buffer): number {
    if (this.handle === undefined) return 0;
    return this.binding.dnsSetTable(this.handle, table);
  }

  /** Replies to a client of a miss; a no-op once closed (forwarded answers may arrive late). */
  send(client: Buffer, reply: Buffer): void {
    if (this.handle === undefined) return;
    this.binding.dnsSend(this.handle, client, reply);
  }

  /** Counters by name. */
  counters(): Record<DnsCounterName, number> {
    const raw = this.raw();
    return Object.fromEntries(DNS_COUNTER_NAMES.map((n, i) => [n, raw?.[i] ?? 0])) as Record<
      DnsCounterName,
      number
    >;
  }

  /** Natively answered queries: 256 × 2 cells (qtype, NOERROR|NXDOMAIN). */
  answeredByType(): Float64Array | undefined {
    return this.raw()?.subarray(DNS_COUNTER_NAMES.length);
  }

  private raw(): Float64Array | undefined {
    return this.handle === undefined ? this.final : this.binding.dnsCounters(this.handle);
  }

  /** Stops the thread and closes the socket. */
  close(): void {
    if (this.handle === undefined) return;
    const handle = this.handle;
    this.final = this.binding.dnsCounters(handle);
    this.handle = undefined;
    this.binding.dnsClose(handle);
  }
}
