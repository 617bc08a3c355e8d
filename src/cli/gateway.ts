// `edgemesh gateway`: the ingress gateway (Istio Gateway + VirtualService). Same sources as the
// agent (manifests, kube-api, kubeconfig), its own metrics port so it can run beside an agent.
import { defaultConfig } from '../config/defaults.ts';
import { resolveConfig } from '../config/resolve.ts';
import type { EdgemeshConfig } from '../config/types.ts';
import { Controller } from '../controller/controller.ts';
import { IngressGateway } from '../gateway/ingress-gateway.ts';
import { invalidAddressItems } from '../gateway/listen-addresses.ts';
import { createRegistry, MetricsServer } from '../metrics/server.ts';
import { Lifecycle } from '../util/lifecycle.ts';
import { createLogger, type Logger } from '../util/log.ts';
import { runUntilSignal } from './agent.ts';
import { type FlagSpecs, helpText, parseFlags } from './args.ts';
import { sourceFlags } from './flags.ts';

/** The gateway's metrics listener unless --metrics-listen says otherwise (the agent has 10551). */
export const GATEWAY_METRICS_LISTEN = '127.0.0.1:10552';

const gatewayFlags: FlagSpecs = {
  ...sourceFlags,
  'metrics-listen': {
    type: 'string',
    value: 'IP:PORT',
    help: `metrics/health/status HTTP listener (default ${GATEWAY_METRICS_LISTEN})`,
  },
};

export const gatewayHelp = helpText(
  'edgemesh gateway [options]',
  'Runs the ingress gateway: serves Istio Gateways whose selector matches modules.edgeGateway.selector\n' +
    'on the addresses chosen by modules.edgeGateway.nic/includeIP/excludeIP, routing by VirtualService\n' +
    'to cluster services.',
  gatewayFlags,
);

/** A running gateway process: metrics server, controller and the ingress gateway. */
export class GatewayProcess {
  readonly lifecycle: Lifecycle;
  readonly registry = createRegistry();
  gateway: IngressGateway | undefined;
  private ready = false;

  constructor(
    readonly config: EdgemeshConfig,
    readonly log: Logger,
  ) {
    // This process is the edge gateway: the kube source watches Secrets (TLS credentials) only
    // when modules.edgeGateway.enable is set, whatever the config file says for the agent.
    config.modules.edgeGateway.enable = true;
    this.lifecycle = new Lifecycle(log);
  }

  async start(): Promise<void> {
    const bad = invalidAddressItems(this.config.modules.edgeGateway);
    if (bad.length > 0)
      this.log.warn({ items: bad }, 'gateway: includeIP/excludeIP entries ignored (not IP or CIDR)');
    await this.lifecycle.start(
      new MetricsServer({
        listen: this.config.metricsListen,
        registry: this.registry,
        ready: () => this.ready,
        status: () => ({ nodeName: this.config.nodeName, listeners: this.gateway?.listening() ?? [] }),
      }),
    );
    const controller = new Controller({ config: this.config, log: this.log, registry: this.registry });
    const gateway = new IngressGateway({ config: this.config, log: this.log, registry: this.registry });
    this.gateway = gateway;
    controller.subscribe(gateway);
    await this.lifecycle.start(gateway);
    await this.lifecycle.start(controller);
    void controller.whenSynced().then(() => {
      this.ready = true;
    });
    this.log.info(
      {
        node: this.config.nodeName,
        metrics: this.config.metricsListen,
        selector: this.config.modules.edgeGateway.selector,
      },
      'gateway started',
    );
  }

  async stop(): Promise<void> {
    this.ready = false;
    await this.lifecycle.stop();
    this.log.info('gateway stopped');
  }
}

export async function gatewayCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const flags = parseFlags('gateway', argv, gatewayFlags);
  if (flags.help) {
    out(gatewayHelp);
    return 0;
  }
  const config = resolveConfig(flags);
  // The agent's default port would collide with an agent on the same node; a config file or flag
  // that names another address wins.
  if (typeof flags['metrics-listen'] !== 'string' && config.metricsListen === defaultConfig().metricsListen)
    config.metricsListen = GATEWAY_METRICS_LISTEN;
  const log = createLogger(config.logLevel);
  const proc = new GatewayProcess(config, log);
  return runUntilSignal(
    () => proc.start(),
    () => proc.stop(),
    log,
  );
}
