// Relays and agent tunnels on loopback for the tunnel integration tests: real TLS sessions, real
// RelayServer and EdgeTunnel objects in this process, each with its own registry and a logger
// whose lines the test can read; everything started is stopped by stopAll().
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { Registry } from 'prom-client';
import { expect } from 'vitest';
import { defaultConfig } from '../../src/config/defaults.ts';
import type { EdgemeshConfig } from '../../src/config/types.ts';
import type { Endpoint, ServiceEntry, ServiceTable } from '../../src/controller/types.ts';
import { EMPTY_TABLE } from '../../src/controller/types.ts';
import { loadCredentials } from '../../src/tunnel/credentials.ts';
import { EdgeTunnel, type EdgeTunnelOptions } from '../../src/tunnel/edge-tunnel.ts';
import { RelayServer } from '../../src/tunnel/relay-server.ts';
import { eventually } from './eventually.ts';
import { freePort } from './ports.ts';

/** A logger whose lines tests can read. */
export function memLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
  return { log, lines };
}

/** A snapshot with one service `default/echo` (port 7, TCP unless told) whose endpoints are `endpoints`. */
export function table(endpoints: Endpoint[], generation = 1, protocol: 'TCP' | 'UDP' = 'TCP'): ServiceTable {
  const svc: ServiceEntry = {
    namespace: 'default',
    name: 'echo',
    key: 'default/echo',
    clusterIPs: ['10.96.0.10'],
    headless: false,
    type: 'ClusterIP',
    ports: [
      {
        name: protocol.toLowerCase(),
        port: 7,
        protocol,
        appProtocol: protocol === 'UDP' ? 'udp' : 'tcp',
        targetPort: 7,
        endpoints,
      },
    ],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
  return { ...EMPTY_TABLE, generation, services: new Map([[svc.key, svc]]) };
}

/** A ready endpoint 127.0.0.1:port on node `nodeName`. */
export const ep = (port: number, nodeName: string): Endpoint => ({
  ip: '127.0.0.1',
  port,
  ready: true,
  serving: true,
  terminating: false,
  nodeName,
});

/** Sends `data` to host:port, half-closes, resolves with everything read back (rejects on a reset). */
export function exchange(port: number, data: Buffer | string, host = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => {
      s.end();
      resolve(Buffer.concat(chunks));
    });
    s.on('error', reject);
    s.end(data);
  });
}

/** Resolves when `s` closes, with how long it stayed open from `t0` (ms). */
export function closedAfter(s: net.Socket, t0: number): Promise<number> {
  return new Promise((resolve) => {
    s.on('error', () => {});
    if (s.destroyed) resolve(performance.now() - t0);
    else s.once('close', () => resolve(performance.now() - t0));
  });
}

/** A client of a tunnel's local port; collects what comes back and whether it ended cleanly. */
export async function tunnelClient(
  port: number,
): Promise<{ s: net.Socket; got: () => string; ended: Promise<boolean> }> {
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('error', () => {});
  let got = '';
  s.on('data', (d: Buffer) => {
    got += d.toString();
  });
  const ended = new Promise<boolean>((resolve) => {
    s.once('end', () => resolve(true));
    s.once('close', () => resolve(false));
  });
  await new Promise<void>((r) => s.once('connect', () => r()));
  return { s, got: () => got, ended };
}

/**
 * The idle-timeout scenario on `port` (an echo pod behind it): an idle stream closes on the client no
 * earlier than `idleMs` after its last byte, with its reply, and its pod connection goes too, while a
 * busy one outlives twice that; `whileBusy` runs its checks before the busy stream is closed.
 */
export async function expectIdleClosedBusyLives(
  port: number,
  pod: { conns: Set<net.Socket> },
  idleMs: number,
  whileBusy: () => void | Promise<void>,
): Promise<void> {
  const podsBefore = pod.conns.size;
  const idle = await tunnelClient(port);
  const busy = await tunnelClient(port);
  const ticker = setInterval(() => busy.s.write('tick'), 100);
  try {
    idle.s.write('hi');
    await eventually(async () => pod.conns.size === podsBefore + 2);
    const t0 = performance.now();
    const openFor = await closedAfter(idle.s, t0);
    expect(openFor).toBeGreaterThanOrEqual(idleMs - 150); // counted from 'hi', before t0
    expect(idle.got()).toBe('hi');
    // The pod's end went too: only the busy stream's pod connection is left.
    await eventually(async () => pod.conns.size === podsBefore + 1, 5000);
    await new Promise((r) => setTimeout(r, Math.max(0, 2 * idleMs - openFor)));
    expect(busy.s.destroyed).toBe(false);
    await whileBusy();
  } finally {
    clearInterval(ticker);
    busy.s.destroy();
  }
}

/** The sum of a metric's values (all label sets), or of those whose labels include `labels`. */
export async function metric(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? [])
    .filter((v) =>
      Object.entries(labels).every(([k, want]) => (v.labels as Record<string, unknown>)[k] === want),
    )
    .reduce((a, v) => a + Number(v.value), 0);
}

/** The local (127.0.0.1) port the tunnel gave the first endpoint of `default/echo` in `rewritten`. */
export function localPort(rewritten: ServiceTable): number {
  return rewritten.services.get('default/echo')!.ports[0]!.endpoints[0]!.port;
}

export interface AgentOptions {
  advertise?: string[];
  psk?: string;
  files?: Partial<EdgemeshConfig['modules']['edgeTunnel']>;
  stateDir?: string;
  port?: number;
  /** modules.edgeProxy.idleTimeoutMs (sealed stream idle timeout) and the tunnel's stop drain (ms). */
  idleTimeoutMs?: number;
  drainTimeoutMs?: number;
  /** EdgeTunnel test knobs (datagram idle time, flows per port, keepalive interval). */
  knobs?: Pick<EdgeTunnelOptions, 'datagramIdleMs' | 'datagramMaxFlows' | 'pingMs'>;
}

/** Makes relays and agents under one temp dir (PSK files `psk` and `bad-psk` in it). */
export class TunnelFixture {
  readonly dir: string;
  private readonly stops: Array<() => Promise<void>> = [];

  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-tunnel-'));
    fs.writeFileSync(path.join(this.dir, 'psk'), 'correct horse battery staple\n');
    fs.writeFileSync(path.join(this.dir, 'bad-psk'), 'wrong horse battery staple!!\n');
  }

  /** Runs `stop` in stopAll() (in reverse order of registration). */
  onStop(stop: () => Promise<void>): void {
    this.stops.push(stop);
  }

  /** Stops everything started, then removes the temp dir. */
  async stopAll(): Promise<void> {
    for (const stop of this.stops.reverse()) await stop().catch(() => {});
    this.stops.length = 0;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** A loopback TCP server running `handler` per connection (allowHalfOpen); closed by stopAll(). */
  async server(handler: (s: net.Socket) => void): Promise<{ port: number; conns: Set<net.Socket> }> {
    const conns = new Set<net.Socket>();
    const srv = net.createServer({ allowHalfOpen: true }, (s) => {
      conns.add(s);
      s.on('error', () => {});
      s.once('close', () => conns.delete(s));
      handler(s);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    this.onStop(async () => {
      for (const c of conns) c.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    });
    return { port: (srv.address() as net.AddressInfo).port, conns };
  }

  /** PSK-mode credentials from `psk` (a file name in the temp dir). */
  creds(psk = 'psk') {
    return loadCredentials({ pskFile: path.join(this.dir, psk), caFile: '', certFile: '', keyFile: '' });
  }

  /** A started relay on 127.0.0.1:0. */
  async relay(
    name: string,
    opts: {
      psk?: string;
      sealedData?: boolean;
      dataTimeoutMs?: number;
      idleTimeoutMs?: number;
      drainTimeoutMs?: number;
    } = {},
  ) {
    const registry = new Registry();
    const mem = memLogger();
    const r = new RelayServer({
      nodeName: name,
      host: '127.0.0.1',
      port: 0,
      creds: await this.creds(opts.psk),
      log: mem.log,
      registry,
      pingMs: 500,
      ...(opts.sealedData !== undefined ? { sealedData: opts.sealedData } : {}),
      ...(opts.dataTimeoutMs !== undefined ? { dataTimeoutMs: opts.dataTimeoutMs } : {}),
      ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
      ...(opts.drainTimeoutMs !== undefined ? { drainTimeoutMs: opts.drainTimeoutMs } : {}),
    });
    await r.start();
    this.onStop(() => r.stop());
    return { r, registry, lines: mem.lines, addr: `127.0.0.1:${r.address!.port}` };
  }

  /** A started agent tunnel for `node` that dials `relays`. */
  async agent(node: string, relays: Array<{ name: string; addr: string }>, opts: AgentOptions = {}) {
    const config = defaultConfig();
    config.nodeName = node;
    config.stateDir = opts.stateDir ?? path.join(this.dir, `state-${node}`);
    const port = opts.port ?? (await freePort());
    Object.assign(config.modules.edgeTunnel, {
      enable: true,
      listenPort: port,
      relayNodes: relays.map((r) => ({ nodeName: r.name, advertiseAddress: [r.addr] })),
      advertiseAddress: opts.advertise ?? [`127.0.0.1:${port}`],
      pskFile: path.join(this.dir, opts.psk ?? 'psk'),
      ...opts.files,
    });
    if (opts.idleTimeoutMs !== undefined) config.modules.edgeProxy.idleTimeoutMs = opts.idleTimeoutMs;
    const registry = new Registry();
    const mem = memLogger();
    const t = new EdgeTunnel({
      config,
      log: mem.log,
      registry,
      pingMs: 500,
      reprobeMs: 300,
      probeTimeoutMs: 500,
      ...(opts.drainTimeoutMs !== undefined ? { drainTimeoutMs: opts.drainTimeoutMs } : {}),
      ...opts.knobs,
    });
    await t.start();
    this.onStop(() => t.stop());
    return { t, registry, lines: mem.lines, port, stateDir: config.stateDir };
  }
}
