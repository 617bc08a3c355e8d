// `edgemesh relay`: the relay agents in different LANs dial out to (usually in the cloud). It
// forwards tunnel streams only between agents registered with it, never to other addresses.
import { defaultConfig } from '../config/defaults.ts';
import { loadConfigFile } from '../config/load.ts';
import { logLevels } from '../config/schema.ts';
import { UsageError } from '../errors.ts';
import { createRegistry, MetricsServer } from '../metrics/server.ts';
import { loadCredentials } from '../tunnel/credentials.ts';
import { RelayServer } from '../tunnel/relay-server.ts';
import { Lifecycle } from '../util/lifecycle.ts';
import { createLogger } from '../util/log.ts';
import { parseHostPort } from '../util/net.ts';
import { runUntilSignal } from './agent.ts';
import { enumFlag, type FlagSpecs, helpText, parseFlags } from './args.ts';

/** The relay's metrics listener unless --metrics-listen says otherwise (agent 10551, gateway 10552). */
export const RELAY_METRICS_LISTEN = '127.0.0.1:10553';

const relayFlags: FlagSpecs = {
  config: { type: 'string', value: 'FILE', help: 'YAML config file (nodeName, modules.edgeTunnel)' },
  'node-name': {
    type: 'string',
    value: 'NAME',
    help: "the relay's name, as agents list it in relayNodes (default: $NODE_NAME or the hostname)",
  },
  listen: {
    type: 'string',
    value: 'IP:PORT',
    help: 'where agents connect (default 0.0.0.0:<modules.edgeTunnel.listenPort>, 20006)',
  },
  'psk-file': { type: 'string', value: 'FILE', help: 'pre-shared key file (modules.edgeTunnel.pskFile)' },
  'ca-file': { type: 'string', value: 'FILE', help: 'CA that signed the node certificates (caFile)' },
  'cert-file': {
    type: 'string',
    value: 'FILE',
    help: "the relay's certificate, naming --node-name (certFile)",
  },
  'key-file': { type: 'string', value: 'FILE', help: "the relay's private key (keyFile)" },
  'metrics-listen': {
    type: 'string',
    value: 'IP:PORT',
    help: `metrics/health/status HTTP listener (default ${RELAY_METRICS_LISTEN})`,
  },
  'log-level': {
    type: 'string',
    value: 'LEVEL',
    help: 'trace|debug|info|warn|error|fatal|silent (default info)',
  },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

export const relayHelp = helpText(
  'edgemesh relay [options]',
  'Runs a relay that agents in different LANs connect to, so their endpoints can reach each other.\n' +
    'Agents authenticate with the same PSK or CA as the relay; streams go only between registered agents.',
  relayFlags,
);

export async function relayCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const flags = parseFlags('relay', argv, relayFlags);
  if (flags.help) {
    out(relayHelp);
    return 0;
  }
  const config = typeof flags.config === 'string' ? loadConfigFile(flags.config) : defaultConfig();
  const tunnel = config.modules.edgeTunnel;
  if (typeof flags['node-name'] === 'string') config.nodeName = flags['node-name'];
  config.logLevel = enumFlag(flags, 'log-level', logLevels) ?? config.logLevel;
  for (const [flag, key] of [
    ['psk-file', 'pskFile'],
    ['ca-file', 'caFile'],
    ['cert-file', 'certFile'],
    ['key-file', 'keyFile'],
  ] as const) {
    const v = flags[flag];
    if (typeof v === 'string') tunnel[key] = v;
  }
  let listen = { host: '0.0.0.0', port: tunnel.listenPort };
  if (typeof flags.listen === 'string') {
    const hp = parseHostPort(flags.listen);
    if (!hp) throw new UsageError(`--listen: expected IP:PORT like 0.0.0.0:20006, got '${flags.listen}'`);
    listen = hp;
  }
  const metricsListen =
    typeof flags['metrics-listen'] === 'string' ? flags['metrics-listen'] : RELAY_METRICS_LISTEN;
  if (!parseHostPort(metricsListen))
    throw new UsageError(`--metrics-listen: expected IP:PORT like 127.0.0.1:10553, got '${metricsListen}'`);
  const creds = await loadCredentials(tunnel);
  const log = createLogger(config.logLevel);
  const registry = createRegistry();
  const lifecycle = new Lifecycle(log);
  const relay = new RelayServer({
    nodeName: config.nodeName,
    host: listen.host,
    port: listen.port,
    creds,
    log,
    registry,
    sealedData: tunnel.sealedData,
    // The agents' stream idle timeout, from the relay's own config file (0 = never).
    idleTimeoutMs: config.modules.edgeProxy.idleTimeoutMs,
  });
  return runUntilSignal(
    async () => {
      await lifecycle.start(
        new MetricsServer({
          listen: metricsListen,
          registry,
          ready: () => true,
          status: () => relay.status(),
        }),
      );
      await lifecycle.start(relay);
    },
    () => lifecycle.stop(),
    log,
  );
}
