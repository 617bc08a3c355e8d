// Default configuration: what an agent does with no config file and no flags.
import os from 'node:os';
import type { EdgemeshConfig } from './types.ts';

/** Well-known defaults shared with the DESIGN.md contracts. */
export const DEFAULT_PROXY_PORT = 40001;
export const DEFAULT_DNS_IP = '169.254.96.16';
export const DEFAULT_DNS_PORT = 53;
export const DEFAULT_BRIDGE = 'edgemesh0';
export const DEFAULT_METRICS_LISTEN = '127.0.0.1:10551';
export const DEFAULT_METASERVER = 'http://127.0.0.1:10550';

/** A fresh default config (a new object each call, safe to mutate). */
export function defaultConfig(): EdgemeshConfig {
  return {
    nodeName: process.env.NODE_NAME || os.hostname(),
    logLevel: 'info',
    stateDir: '/var/lib/edgemesh',
    manifests: [],
    intercept: 'auto',
    dataplane: 'auto',
    metricsListen: DEFAULT_METRICS_LISTEN,
    clusterDomain: 'cluster.local',
    kubeAPIConfig: { master: '', kubeConfig: '', qps: 50, burst: 100, contentType: 'application/json' },
    commonConfig: { bridgeDeviceName: DEFAULT_BRIDGE, bridgeDeviceIP: DEFAULT_DNS_IP },
    modules: {
      edgeDNS: {
        enable: true,
        listenPort: DEFAULT_DNS_PORT,
        listen: '',
        upstreams: [],
        ttl: 5,
        cacheSize: 10_000,
        serveStale: true,
        nativeFastPath: true,
      },
      edgeProxy: {
        enable: true,
        listenPort: DEFAULT_PROXY_PORT,
        subNet: '',
        workers: 0,
        connectTimeoutMs: 5_000,
        idleTimeoutMs: 0,
        noProxyLabel: 'noproxy',
        resyncPeriodMs: 30_000,
        bypassGid: 40001,
        tsPortRange: '21000-29999',
        spliceBack: true,
        nativeSpinUs: 0,
        nativeCpuAffinity: false,
        iptablesBackend: 'auto',
        ebpfCgroup: '',
        ebpfPinDir: '/sys/fs/bpf/edgemesh',
        ebpfSockmap: false,
        ebpfSocketLb: true,
        localVipRoutes: true,
      },
      edgeGateway: {
        enable: false,
        nic: '*',
        includeIP: '*',
        excludeIP: '',
        selector: { kubeedge: 'edgemesh-gateway' },
      },
      edgeTunnel: {
        enable: false,
        listenPort: 20006,
        relayNodes: [],
        advertiseAddress: [],
        pskFile: '',
        caFile: '',
        certFile: '',
        keyFile: '',
        sealedData: true,
      },
    },
  };
}
