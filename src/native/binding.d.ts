// The flat native boundary: every function the C++ addon exports (native/src/addon.cc).
// Native failures throw an Error with `syscall` and `errno`; src/native/index.ts maps them to
// EdgemeshError codes.

export interface OriginalDestination {
  /** Dotted quad, or IPv6 in RFC 5952 text. */
  address: string;
  port: number;
}

/** One accepted connection the plane hands to TS (planeTakeHandoffs); the taker owns `fd`. */
export interface PlaneHandoff {
  fd: number;
  /** Original destination (tunnel routes: the chosen tunnel endpoint), dotted quad or RFC 5952 IPv6. */
  address: string;
  port: number;
}

export interface NativeBinding {
  /** Version string of the addon build. */
  version(): string;
  /** Moves up to maxBytes from inFd to outFd with splice(2) through a pipe of pipeSize bytes; blocking. */
  spliceCopy(inFd: number, outFd: number, maxBytes: number, pipeSize: number): number;
  /** getsockopt(SO_ORIGINAL_DST) of an accepted IPv4 socket, IP6T_SO_ORIGINAL_DST of an IPv6 one. */
  originalDst(fd: number): OriginalDestination;
  /** MurmurHash3 x86_32 of `data` (parity with src/lb/murmur3.ts). */
  murmur3(data: Buffer, seed: number): number;
  /**
   * The endpoint (`ip:port`) a new connection from clientIp to vip:port gets under routing table
   * `table` (encoded by src/dataplane/native/route-encoder.ts); null without route or endpoints.
   */
  routePick(table: Buffer, vip: string, port: number, clientIp: string): string | null;
  /** errno of setsockopt(SO_MARK, mark) on a fresh socket: 0 when marking is permitted. */
  probeMark(mark: number): number;
  /**
   * Creates a native proxy plane in the process-wide registry and returns its id. useSplice false
   * forwards with read/write through bufferSize buffers (needed for eBPF sk_msg sockets).
   */
  planeCreate(
    mark: number,
    connectTimeoutMs: number,
    idleTimeoutMs: number,
    useSplice: boolean,
    pipeSize: number,
    bufferSize: number,
    maxAttempts: number,
    serviceSlots: number,
    /** After a busy epoll batch, poll without blocking this many µs before sleeping (0 = never; ≤ 1,000,000). */
    spinUs?: number,
    /**
     * Pin worker i to the i-th allowed CPU and steer each SYN to the listener of its CPU (CBPF). A worker
     * starved on its CPU is let loose for a cool-down (counters affinity_released/_restored; env
     * EDGEMESH_AFFINITY_ESCAPE=off: pinned for the whole run).
     */
    cpuAffinity?: boolean,
  ): number;
  /**
   * Binds `count` SO_REUSEPORT listeners (one per worker) on address:port; returns the bound port.
   * Once per family: an IPv6 address (IPV6_V6ONLY) adds each worker's IPv6 listener, same count;
   * port 0 then means the port the first family got.
   */
  planeListen(id: number, address: string, port: number, count: number): number;
  /** Decodes and atomically publishes a routing table; returns its generation. */
  planeSetRoutes(id: number, table: Buffer): number;
  /** Runs worker `index` on the calling thread until planeStop's drain ends. Blocks that thread. */
  planeRun(id: number, index: number): void;
  /** Stops accepting; open connections get drainMs to finish, then are reset. Returns at once. */
  planeStop(id: number, drainMs: number): void;
  /** Plane counters in PLANE_COUNTER_NAMES order (src/native/plane-counters.ts). */
  planeCounters(id: number): Float64Array;
  /** slots × SERVICE_COUNTER_NAMES.length per-service counters, slot-major. */
  planeServiceCounters(id: number, slots: number): Float64Array;
  /** Drops the plane from the registry (running workers keep it until they return). */
  planeDestroy(id: number): boolean;
  /**
   * Accepted connections on hand-off (L7) routes are queued for this thread: `callback()` runs once
   * per batch and takes them with planeTakeHandoffs. null: no consumer (those routes run as L4).
   */
  planeSetHandoff(id: number, callback: (() => void) | null): void;
  /** Queued hand-offs (either family); the caller owns the fds. */
  planeTakeHandoffs(id: number): PlaneHandoff[];
  /**
   * Gives an established client/upstream pair to the plane's workers (from any thread): dup()s both
   * fds (the caller then closes its own without a FIN), sends toUpstream/toClient (bytes already
   * read) first, then forwards natively. false: plane stopping or no worker; nothing was kept.
   */
  planeSplicePair(
    id: number,
    clientFd: number,
    upstreamFd: number,
    toUpstream?: Buffer,
    toClient?: Buffer,
  ): boolean;
  /** '' when the addon was built with libbpf; otherwise why eBPF is unavailable. */
  bpfSupport(): string;
  /**
   * Loads the BPF objects, pins their maps under pinDir (reusing pinned ones) and attaches every
   * program to the cgroup v2 at cgroupPath (sk_lookup: to the netns at netnsPath, default the
   * caller's) through pinned links; returns a handle.
   */
  bpfOpen(objectPaths: string[], pinDir: string, cgroupPath: string, netnsPath?: string): number;
  /** Closes a handle; unpin=true also detaches the programs and removes every pin. */
  bpfClose(handle: number, unpin: boolean): void;
  /** `program@attach-type` of every attached program. */
  bpfPrograms(handle: number): string[];
  /** Writes fixed-size keys/values (records back to back); returns the count written. */
  bpfMapUpdate(handle: number, map: string, keys: Buffer, values: Buffer): number;
  /** Deletes keys (records back to back); missing keys are skipped; returns the count deleted. */
  bpfMapDelete(handle: number, map: string, keys: Buffer): number;
  /** One value (per-CPU maps: one 8-byte-aligned value per possible CPU), or null when absent. */
  bpfMapLookup(handle: number, map: string, key: Buffer): Buffer | null;
  /** Every key of a map, back to back. */
  bpfMapKeys(handle: number, map: string): Buffer;
  /** Re-attaches detached links and re-pins unpinned ones; returns what it repaired. */
  bpfRepair(handle: number): string[];
  /** Puts socket `fd` of process `pid` into a sockmap/sockhash under `key` (pidfd_getfd). */
  bpfSockmapAdd(handle: number, map: string, key: Buffer, pid: number, fd: number): void;
  /** SO_NETNS_COOKIE of the namespace sk_lookup is attached to (0n if unknown). */
  bpfNetnsCookie(handle: number): bigint;
  /**
   * Binds a UDP socket on address:port and starts the native DNS responder thread on it. Packets
   * the answer table does not cover reach `onMisses` in batches of records (src/dns/native-responder.ts).
   */
  dnsListen(
    address: string,
    port: number,
    rcvbuf: number,
    batch: number,
    onMisses: (batch: Buffer, count: number) => void,
  ): number;
  /** The UDP port the responder bound (resolves port 0). */
  dnsBoundPort(handle: number): number;
  /** Decodes and atomically publishes an EMD1 answer table (src/dns/answer-table.ts); returns its generation. */
  dnsSetTable(handle: number, table: Buffer): number;
  /** Sends `reply` to the client of a miss record's 19-byte address part. */
  dnsSend(handle: number, addr: Buffer, reply: Buffer): void;
  /** Responder counters (DNS_COUNTER_NAMES order), then 256 × 2 answered-by-(qtype, NOERROR|NXDOMAIN). */
  dnsCounters(handle: number): Float64Array;
  /** Stops the responder thread and closes its socket; false when the handle was unknown. */
  dnsClose(handle: number): boolean;
  /**
   * Starts `threads` native pump threads for this JS thread (once) and installs the callback that
   * receives finished pumps in batches (src/tunnel/sealed-pump.ts).
   */
  pumpSetDone(onDone: (done: NativePumpDone[]) => void, threads: number): void;
  /**
   * Pumps plain <-> sealed records natively (spec-sealed). dup()s both fds (the caller then
   * destroys its sockets without a FIN); keys = txKey(32) txIv(12) rxKey(32) rxIv(12). Returns the id.
   */
  sealedPumpStart(
    plainFd: number,
    sealedFd: number,
    keys: Buffer,
    plainHead?: Buffer,
    sealedHead?: Buffer,
    idleMs?: number,
  ): number;
  /**
   * Splices two sockets both ways natively (the relay); same fd rules. Returns the id. idleMs > 0
   * (here and above): both directions idle that long -> both sockets reset, done.cause 'idle'.
   */
  splicePumpStart(aFd: number, bFd: number, aHead?: Buffer, bHead?: Buffer, idleMs?: number): number;
  /** Pump engine counters in PUMP_COUNTER_NAMES order (src/tunnel/sealed-pump.ts). */
  pumpCounters(): Float64Array;
  /** Resets pump `id` on its thread (done.cause 'aborted'); a no-op once it ended. */
  pumpAbort(id: number): void;
  /** Aborts every pump of this thread's engine started before the call. */
  pumpAbortAll(): void;
  /** Bytes pump `id` moved so far [aToB, bToA] (published once per turn; final once ended); undefined once its done was delivered. */
  pumpProgress(id: number): Float64Array | undefined;
}

/** One finished native pump. Sealed: aToB = plaintext plain -> sealed, bToA = sealed -> plain. */
export interface NativePumpDone {
  id: number;
  aToB: number;
  bToA: number;
  /** Why it failed (both sockets were reset); absent when both directions ended cleanly. */
  error?: string;
  /** Closed by us rather than by its sockets: its idle timeout, or pumpAbort/pumpAbortAll. */
  cause?: 'idle' | 'aborted';
}
