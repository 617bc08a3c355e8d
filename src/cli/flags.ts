// Flag sets shared by the commands (the CLI contract of DESIGN.md §3).
import type { FlagSpecs } from './args.ts';

/** Where Kubernetes objects come from; shared by `agent` and `gateway`. */
export const sourceFlags: FlagSpecs = {
  config: { type: 'string', value: 'FILE', help: 'YAML config file (EdgeMesh keys plus ours; see README)' },
  manifests: {
    type: 'string',
    multiple: true,
    value: 'DIR',
    help: 'serve the Kubernetes objects in this folder of YAML files (repeatable; watched live)',
  },
  kubeconfig: { type: 'string', value: 'FILE', help: 'list-watch the API server named in this kubeconfig' },
  'kube-api': {
    type: 'string',
    value: 'URL',
    help: 'list-watch this API server, e.g. KubeEdge metaServer http://127.0.0.1:10550',
  },
  'node-name': {
    type: 'string',
    value: 'NAME',
    help: "this node's name (default: $NODE_NAME or the hostname)",
  },
  'state-dir': {
    type: 'string',
    value: 'DIR',
    help: 'where the last-known state is kept (default /var/lib/edgemesh)',
  },
  'metrics-listen': {
    type: 'string',
    value: 'IP:PORT',
    help: 'metrics/health/status HTTP listener (default 127.0.0.1:10551)',
  },
  'log-level': {
    type: 'string',
    value: 'LEVEL',
    help: 'trace|debug|info|warn|error|fatal|silent (default info)',
  },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

/** The agent's own flags. */
export const agentFlags: FlagSpecs = {
  ...sourceFlags,
  intercept: {
    type: 'string',
    value: 'MODE',
    help: 'auto|iptables|nftables|ebpf|none: how ClusterIP traffic is caught (default auto)',
  },
  dataplane: { type: 'string', value: 'MODE', help: 'auto|native|ts: who forwards the bytes (default auto)' },
  'proxy-port': { type: 'string', value: 'PORT', help: 'port REDIRECTed traffic is sent to (default 40001)' },
  workers: { type: 'string', value: 'N', help: 'data plane worker threads, 0 = one per core (default 0)' },
  'dns-listen': {
    type: 'string',
    value: 'IP:PORT',
    help: 'DNS server address (default 169.254.96.16:53 on edgemesh0)',
  },
  'no-dns': { type: 'boolean', help: 'do not run the DNS server' },
};
