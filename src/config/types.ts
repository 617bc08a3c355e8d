// The resolved configuration every module reads: the file merged over defaults, flags over both.
import type { dataplaneModes, interceptModes, logLevels } from './schema.ts';

export type InterceptMode = (typeof interceptModes)[number];
export type DataplaneMode = (typeof dataplaneModes)[number];
export type ConfigLogLevel = (typeof logLevels)[number];

export interface RelayNodeConfig {
  nodeName: string;
  advertiseAddress: string[];
}

export interface EdgemeshConfig {
  apiVersion?: string;
  kind?: string;
  /** This node's name; endpoints on it are "local". Defaults to the hostname. */
  nodeName: string;
  logLevel: ConfigLogLevel;
  /** Where the last good snapshot is persisted. */
  stateDir: string;
  /** Manifest folders (the files source); when empty and no API is configured, nothing is served. */
  manifests: string[];
  intercept: InterceptMode;
  dataplane: DataplaneMode;
  /** Prometheus /metrics, /healthz, /readyz, /status. */
  metricsListen: string;
  clusterDomain: string;
  kubeAPIConfig: {
    /** API URL, e.g. KubeEdge's metaServer http://127.0.0.1:10550; '' = not configured. */
    master: string;
    /** kubeconfig path; '' = not configured. */
    kubeConfig: string;
    qps: number;
    burst: number;
    contentType: string;
  };
  commonConfig: {
    bridgeDeviceName: string;
    bridgeDeviceIP: string;
  };
  modules: {
    edgeDNS: {
      enable: boolean;
      listenPort: number;
      /** IP:PORT override of bridgeDeviceIP:listenPort ('' = derive). */
      listen: string;
      /** Upstream servers; empty = those of /etc/resolv.conf. */
      upstreams: string[];
      /** TTL of cluster-name answers, seconds. */
      ttl: number;
      cacheSize: number;
      serveStale: boolean;
      /** Answer UDP cluster-name queries in the native addon (false: every query in JS). */
      nativeFastPath: boolean;
    };
    edgeProxy: {
      enable: boolean;
      listenPort: number;
      /** Service CIDR to intercept as a whole ('' = per-ClusterIP rules only). */
      subNet: string;
      /** Data plane worker threads; 0 = number of cores. */
      workers: number;
      connectTimeoutMs: number;
      /** Close a proxied connection idle this long; 0 = never. */
      idleTimeoutMs: number;
      /** Services with this label set to "edgemesh" are not proxied (EdgeMesh's noproxy=edgemesh). */
      noProxyLabel: string;
      /** Drift check of the interception rules (repair when someone changed them), ms. */
      resyncPeriodMs: number;
      /** Group the agent's own upstream sockets run as; rules RETURN for it (no self-interception). */
      bypassGid: number;
      /** `FIRST-LAST` local ports the pure-TS data plane allocates its per-service listeners from. */
      tsPortRange: string;
      /** `--dataplane native`: byte tunnels go back to the native splice after the TS handler's L7 decision. */
      spliceBack: boolean;
      /** `--dataplane native`: after a busy batch workers poll this many µs before sleeping (0 = off; costs CPU). */
      nativeSpinUs: number;
      /** `--dataplane native`: pin worker i to the i-th CPU and steer each new connection to its CPU's worker. */
      nativeCpuAffinity: boolean;
      /** Which iptables binaries `--intercept iptables` uses; auto = the one already holding rules. */
      iptablesBackend: 'auto' | 'legacy' | 'nft';
      /** `--intercept ebpf`: cgroup v2 the programs attach to ('' = the unified root; relative = below it). */
      ebpfCgroup: string;
      /** `--intercept ebpf`: bpffs folder of the pinned maps and links (removed on a clean stop). */
      ebpfPinDir: string;
      /**
       * `--intercept ebpf`: sk_msg socket-to-socket forwarding between local sockets in the cgroup, for
       * socket-LB connections and both legs of proxied ones (the native plane then forwards read/write). Opt-in.
       */
      ebpfSockmap: boolean;
      /** `--intercept ebpf`: L4 services get socket-LB (connect() straight to an endpoint); false = every TCP service through the proxy, still without NAT. */
      ebpfSocketLb: boolean;
      /** iptables/nftables: a local /32 route (proto 228) per intercepted ClusterIP, so node-local clients reach the proxy over lo's MTU. */
      localVipRoutes: boolean;
    };
    edgeGateway: {
      enable: boolean;
      nic: string;
      includeIP: string;
      excludeIP: string;
      selector: Record<string, string>;
    };
    edgeTunnel: {
      enable: boolean;
      listenPort: number;
      relayNodes: RelayNodeConfig[];
      /** `ip` or `ip:port` where peers may reach this agent's tunnel directly; [] = this host's IPv4 addresses. */
      advertiseAddress: string[];
      pskFile: string;
      caFile: string;
      certFile: string;
      keyFile: string;
      /** Streams between two `sealed-v1` ends use their own data connection with sealed records (else framed over TLS). */
      sealedData: boolean;
    };
  };
}
