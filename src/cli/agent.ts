// `edgemesh agent`: wires config → controller → consumers (DNS, proxier, data plane) → metrics,
// starts them in order and stops them in reverse on SIGINT/SIGTERM.

import { resolveConfig } from '../config/resolve.ts';
import type { EdgemeshConfig } from '../config/types.ts';
import { Controller } from '../controller/controller.ts';
import { EMPTY_TABLE, type ServiceTable } from '../controller/types.ts';
import { createDnsServer, type DnsServer } from '../dns/index.ts';
import { createRegistry, MetricsServer } from '../metrics/server.ts';
import { loadNative } from '../native/index.ts';
import { createProxier } from '../proxier/create-proxier.ts';
import type { Proxier } from '../proxier/proxier.ts';
import type { EdgeTunnel } from '../tunnel/index.ts';
import { awaitTermination, Lifecycle } from '../util/lifecycle.ts';
import { createLogger, type Logger } from '../util/log.ts';
import { helpText, parseFlags } from './args.ts';
import { agentFlags } from './flags.ts';
import type { AgentStatus } from './status.ts';

export const agentHelp = helpText(
  'edgemesh agent [options]',
  'Runs the node agent: service discovery (DNS), ClusterIP interception and the proxy data plane.\n' +
    'Flags override the config file; the config file overrides the defaults.',
  agentFlags,
);

/** A running agent: its modules in start order and what /status reports. */
export class Agent {
  readonly lifecycle: Lifecycle;
  readonly registry = createRegistry();
  /** The controller (set in start()); consumers subscribe to it before it starts. */
  controller: Controller | undefined;
  private table: ServiceTable = EMPTY_TABLE;
  private proxier: Proxier | undefined;
  private tunnel: EdgeTunnel | undefined;
  private dns: DnsServer | undefined;
  private readyFlag = false;
  private readonly statusInfo: Pick<AgentStatus, 'intercept' | 'dataplane'> = {
    intercept: { mode: 'none' },
    dataplane: { mode: 'none' },
  };

  constructor(
    readonly config: EdgemeshConfig,
    readonly log: Logger,
  ) {
    this.lifecycle = new Lifecycle(log);
  }

  async start(): Promise<void> {
    const native = loadNative();
    if (native.binding) this.log.info({ path: native.path }, 'native addon loaded');
    else
      this.log.warn(
        { reason: native.reason },
        'native addon not available; running on the pure-TypeScript paths',
      );

    await this.lifecycle.start(
      new MetricsServer({
        listen: this.config.metricsListen,
        registry: this.registry,
        ready: () => this.readyFlag,
        status: () => this.status(),
      }),
    );

    const controller = new Controller({ config: this.config, log: this.log, registry: this.registry });
    this.controller = controller;
    // Consumers (DNS, proxier, data plane, gateway, tunnel) subscribe here, before the controller
    // starts: controller.subscribe(consumer). They are applied serially in this order.
    if (this.config.modules.edgeDNS.enable) {
      // Listening before the controller starts: cluster names get SERVFAIL (not NXDOMAIN) until
      // the first snapshot, names outside the cluster are forwarded from the first moment.
      const dns = createDnsServer(this.config, this.log, this.registry);
      controller.subscribe(dns);
      this.dns = dns;
      await this.lifecycle.start(dns);
    }

    if (this.config.modules.edgeTunnel.enable) {
      // Loaded only when enabled; it rewrites endpoints on other nodes to its own loopback ports
      // in the copy of the snapshot the proxier gets (DNS and the rest see the original).
      const { EdgeTunnel } = await import('../tunnel/index.ts');
      this.tunnel = new EdgeTunnel({ config: this.config, log: this.log, registry: this.registry });
      await this.lifecycle.start(this.tunnel);
      if (!this.config.modules.edgeProxy.enable) controller.subscribe(this.tunnel.consumer());
    }

    if (this.config.modules.edgeProxy.enable) {
      // Interceptor + data plane; started (leftover rules cleaned) before the first snapshot.
      const assembly = await createProxier({ config: this.config, log: this.log, registry: this.registry });
      Object.assign(this.statusInfo, { intercept: assembly.intercept, dataplane: assembly.dataplane });
      this.proxier = assembly.proxier;
      controller.subscribe(this.tunnel ? this.tunnel.consumer(assembly.proxier) : assembly.proxier);
      await this.lifecycle.start(assembly.proxier);
    }

    // Last: /status shows a snapshot only once every consumer above serves it (rules installed,
    // DNS answering), so whoever waits for a service in /status can use it at once.
    controller.subscribe({
      name: 'status',
      apply: async (table) => {
        this.table = table;
      },
    });
    await this.lifecycle.start(controller);
    // Ready once the first snapshot has been applied by every consumer (not before: an agent
    // with no services known yet must not take traffic).
    void controller.whenSynced().then(() => {
      this.readyFlag = true;
      // The moment /readyz turns 200: every consumer serves the first snapshot (rules installed,
      // data planes routing, DNS answering). "agent started" only means the modules are up.
      this.log.info({ generation: this.table.generation }, 'agent ready');
    });
    this.log.info({ node: this.config.nodeName, metrics: this.config.metricsListen }, 'agent started');
  }

  async stop(): Promise<void> {
    this.readyFlag = false;
    await this.lifecycle.stop();
    this.log.info('agent stopped');
  }

  /** The /status document. */
  status(): AgentStatus {
    return {
      nodeName: this.config.nodeName,
      generation: this.table.generation,
      ...this.statusInfo,
      counters: this.proxier?.counters(),
      ...(this.tunnel ? { tunnel: this.tunnel.status() } : {}),
      dns: this.dns?.status(),
      services: [...this.table.services.values()].map((s) => ({
        key: s.key,
        clusterIPs: [...s.clusterIPs],
        ports: s.ports.map((p) => ({
          port: p.port,
          protocol: `${p.protocol}/${p.appProtocol}`,
          endpoints: p.endpoints.filter((e) => e.ready).map((e) => `${e.ip}:${e.port}`),
        })),
      })),
    };
  }
}

/** Runs an agent until SIGINT/SIGTERM; resolves with the exit code. */
export async function runUntilSignal(
  start: () => Promise<void>,
  stop: () => Promise<void>,
  log: Logger,
): Promise<number> {
  const termination = awaitTermination();
  try {
    await start();
    const sig = await termination.signal;
    log.info({ signal: sig }, 'shutting down');
    return 0;
  } catch (err) {
    log.error({ err }, 'agent failed');
    return 1;
  } finally {
    await stop();
    termination.dispose();
  }
}

export async function agentCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const flags = parseFlags('agent', argv, agentFlags);
  if (flags.help) {
    out(agentHelp);
    return 0;
  }
  const config = resolveConfig(flags);
  // Missing or unreadable tunnel credentials are a config error (exit 2), found before anything starts.
  if (config.modules.edgeTunnel.enable)
    await (await import('../tunnel/credentials.ts')).loadCredentials(config.modules.edgeTunnel);
  const log = createLogger(config.logLevel);
  const agent = new Agent(config, log);
  return runUntilSignal(
    () => agent.start(),
    () => agent.stop(),
    log,
  );
}
