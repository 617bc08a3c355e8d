// The config file's schema: what keys exist, their types and defaults. The loader (load.ts)
// walks the YAML document against this tree so every error carries file, line and key path.
import net from 'node:net';
import { parseCidr, parseHostPort } from '../util/net.ts';

/** A node of the schema tree. `check` returns what was expected when a value is invalid. */
export type Schema =
  | { kind: 'object'; fields: Record<string, Schema> }
  | { kind: 'map'; values: Schema }
  | { kind: 'array'; items: Schema }
  | { kind: 'string'; check?: (v: string) => string | undefined }
  | { kind: 'int'; min: number; max: number }
  | { kind: 'bool' }
  | { kind: 'enum'; values: readonly string[] };

const obj = (fields: Record<string, Schema>): Schema => ({ kind: 'object', fields });
const str = (check?: (v: string) => string | undefined): Schema => ({ kind: 'string', check });
const int = (min: number, max: number): Schema => ({ kind: 'int', min, max });
const bool: Schema = { kind: 'bool' };
const arr = (items: Schema): Schema => ({ kind: 'array', items });
const oneOf = (...values: string[]): Schema => ({ kind: 'enum', values });

const port = int(1, 65535);
const cidr = str((v) => (parseCidr(v) ? undefined : 'a CIDR like 10.96.0.0/12'));
const ip = str((v) => (net.isIP(v) ? undefined : 'an IP address'));
const hostPort = str((v) => (parseHostPort(v) ? undefined : 'IP:PORT like 127.0.0.1:10551'));
const upstream = str((v) =>
  net.isIP(v) || parseHostPort(v) ? undefined : 'an upstream DNS server IP or IP:PORT like 8.8.8.8:53',
);
const url = str((v) => {
  try {
    const u = new URL(v);
    return u.protocol === 'http:' || u.protocol === 'https:' ? undefined : 'an http:// or https:// URL';
  } catch {
    return 'an http:// or https:// URL';
  }
});
const ipList = str((v) =>
  v === '' || v === '*' || v.split(',').every((p) => net.isIP(p.trim()) || parseCidr(p.trim()))
    ? undefined
    : '"*", or a comma-separated list of IPs and CIDRs',
);

export const interceptModes = ['auto', 'iptables', 'nftables', 'ebpf', 'none'] as const;
export const dataplaneModes = ['auto', 'native', 'ts'] as const;
export const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** The whole config file. EdgeMesh's keys keep EdgeMesh's names; ours sit beside them. */
export const configSchema: Schema = obj({
  apiVersion: str(),
  kind: str(),
  nodeName: str(),
  logLevel: oneOf(...logLevels),
  stateDir: str(),
  manifests: arr(str()),
  intercept: oneOf(...interceptModes),
  dataplane: oneOf(...dataplaneModes),
  metricsListen: hostPort,
  clusterDomain: str((v) =>
    /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(v) ? undefined : 'a DNS domain like cluster.local',
  ),
  kubeAPIConfig: obj({
    master: url,
    kubeConfig: str(),
    qps: int(1, 100000),
    burst: int(1, 100000),
    contentType: str(),
  }),
  commonConfig: obj({
    bridgeDeviceName: str((v) =>
      /^[a-zA-Z0-9_.-]{1,15}$/.test(v) ? undefined : 'a network device name (1-15 chars)',
    ),
    bridgeDeviceIP: ip,
  }),
  modules: obj({
    edgeDNS: obj({
      enable: bool,
      listenPort: port,
      listen: hostPort,
      upstreams: arr(upstream),
      ttl: int(0, 86400),
      cacheSize: int(0, 10_000_000),
      serveStale: bool,
      nativeFastPath: bool,
    }),
    edgeProxy: obj({
      enable: bool,
      listenPort: port,
      subNet: cidr,
      workers: int(0, 256),
      connectTimeoutMs: int(1, 600_000),
      idleTimeoutMs: int(0, 86_400_000),
      noProxyLabel: str(),
      resyncPeriodMs: int(100, 86_400_000),
      bypassGid: int(1, 4_294_967_294),
      tsPortRange: str((v) => {
        const m = /^(\d+)-(\d+)$/.exec(v);
        return m && Number(m[1]) >= 1 && Number(m[1]) <= Number(m[2]) && Number(m[2]) <= 65535
          ? undefined
          : 'a port range like 21000-29999';
      }),
      iptablesBackend: oneOf('auto', 'legacy', 'nft'),
      ebpfCgroup: str(),
      ebpfSockmap: bool,
      ebpfSocketLb: bool,
      localVipRoutes: bool,
      spliceBack: bool,
      nativeSpinUs: int(0, 1_000_000),
      nativeCpuAffinity: bool,
      ebpfPinDir: str((v) =>
        v.startsWith('/') ? undefined : 'an absolute path on a bpffs, like /sys/fs/bpf/edgemesh',
      ),
    }),
    edgeGateway: obj({
      enable: bool,
      nic: str(),
      includeIP: ipList,
      excludeIP: ipList,
      selector: { kind: 'map', values: str() },
    }),
    edgeTunnel: obj({
      enable: bool,
      listenPort: port,
      relayNodes: arr(obj({ nodeName: str(), advertiseAddress: arr(str()) })),
      advertiseAddress: arr(str()),
      pskFile: str(),
      caFile: str(),
      certFile: str(),
      keyFile: str(),
      sealedData: bool,
    }),
  }),
});
