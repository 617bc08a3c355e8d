// Builds the agent's effective config: defaults, then the config file, then command-line flags.
import path from 'node:path';
import { enumFlag, intFlag, type ParsedFlags } from '../cli/args.ts';
import { UsageError } from '../errors.ts';
import { parseHostPort } from '../util/net.ts';
import { defaultConfig } from './defaults.ts';
import { loadConfigFile } from './load.ts';
import { dataplaneModes, interceptModes, logLevels } from './schema.ts';
import type { EdgemeshConfig } from './types.ts';

/** Applies the shared source/agent flags over the config file (or the defaults). Throws Usage/ConfigError. */
export function resolveConfig(flags: ParsedFlags): EdgemeshConfig {
  const config = typeof flags.config === 'string' ? loadConfigFile(flags.config) : defaultConfig();
  if (Array.isArray(flags.manifests)) config.manifests = flags.manifests.map((d) => path.resolve(d));
  else config.manifests = config.manifests.map((d) => path.resolve(d));
  if (typeof flags.kubeconfig === 'string') config.kubeAPIConfig.kubeConfig = flags.kubeconfig;
  if (typeof flags['kube-api'] === 'string') {
    try {
      const u = new URL(flags['kube-api']);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    } catch {
      throw new UsageError(`--kube-api: expected an http:// or https:// URL, got '${flags['kube-api']}'`);
    }
    config.kubeAPIConfig.master = flags['kube-api'];
  }
  if (typeof flags['node-name'] === 'string') config.nodeName = flags['node-name'];
  config.intercept = enumFlag(flags, 'intercept', interceptModes) ?? config.intercept;
  config.dataplane = enumFlag(flags, 'dataplane', dataplaneModes) ?? config.dataplane;
  config.logLevel = enumFlag(flags, 'log-level', logLevels) ?? config.logLevel;
  config.modules.edgeProxy.listenPort =
    intFlag(flags, 'proxy-port', 1, 65535) ?? config.modules.edgeProxy.listenPort;
  config.modules.edgeProxy.workers = intFlag(flags, 'workers', 0, 256) ?? config.modules.edgeProxy.workers;
  for (const name of ['dns-listen', 'metrics-listen'] as const) {
    const v = flags[name];
    if (v !== undefined && (typeof v !== 'string' || !parseHostPort(v))) {
      throw new UsageError(`--${name}: expected IP:PORT like 127.0.0.1:53, got '${String(v)}'`);
    }
  }
  if (typeof flags['dns-listen'] === 'string') config.modules.edgeDNS.listen = flags['dns-listen'];
  if (flags['no-dns'] === true) config.modules.edgeDNS.enable = false;
  if (typeof flags['metrics-listen'] === 'string') config.metricsListen = flags['metrics-listen'];
  if (typeof flags['state-dir'] === 'string') config.stateDir = path.resolve(flags['state-dir']);
  return config;
}

/** The DNS listen address in effect: modules.edgeDNS.listen, else bridgeDeviceIP:listenPort. */
export function dnsListenAddress(config: EdgemeshConfig): string {
  return (
    config.modules.edgeDNS.listen ||
    `${config.commonConfig.bridgeDeviceIP}:${config.modules.edgeDNS.listenPort}`
  );
}
