// How ClusterIP traffic is caught: one interface, several implementations (iptables, nftables,
// ebpf, none), one shared test suite run against each.
import type { ServiceTable } from '../controller/types.ts';
import type { Service } from '../util/lifecycle.ts';

/**
 * SO_MARK the native data plane sets on its upstream sockets (besides the bypass gid): interceptors
 * may RETURN packets carrying it (`-m mark --mark 0x4567 -j RETURN`, `meta mark 0x4567 return`, eBPF bypassMark).
 */
export const PROXY_MARK = 0x4567;

/** One ClusterIP:port to catch and the local port on this node its connections must reach. */
export interface InterceptTarget {
  /** `namespace/name:portName` (for rule comments and logs). */
  id: string;
  clusterIP: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  /** Local port the connection is redirected to (40001 for the native data plane). */
  toPort: number;
}

export type InterceptorMode = 'iptables' | 'nftables' | 'ebpf' | 'none';

/** Whether IPv6 ClusterIPs are caught, and how or why not (for logs and /status). */
export interface Ipv6Interception {
  intercepted: boolean;
  /** How (e.g. `ip6tables-nft nat table`, `nftables table ip6 edgemesh`), or why IPv6 targets are skipped. */
  detail: string;
}

/** Installs and removes interception rules; sync() renders the complete desired state at once. */
export interface Interceptor extends Service {
  readonly mode: InterceptorMode;
  /** Makes the installed rules exactly `targets`, in one transaction. */
  sync(targets: readonly InterceptTarget[]): Promise<void>;
  /** Drift check: re-installs the last synced state if someone changed it; true when it repaired. */
  repair?(): Promise<boolean>;
  /** IPv6 interception state, known after start() (absent: the interceptor catches no IPv6). */
  readonly ipv6?: Ipv6Interception;
  /** Interceptors that route by endpoints (ebpf socket-LB) record each snapshot here, before sync(). */
  observe?(table: ServiceTable): void;
}
