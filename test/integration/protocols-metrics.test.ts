// Protocol metrics scraped from a real /metrics endpoint while the TS data plane's worker threads
// serve traffic: HTTP requests by code, upstream latency, the proxy's own 400/503 replies, outlier
// ejection of a dead endpoint, and UDP flows (created, active, bytes, expired). Proves the main
// thread's registry sums what every worker counted.
import dgram from 'node:dgram';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Endpoint, ServiceEntry, ServicePortEntry, ServiceTable } from '../../src/controller/types.ts';
import { TsDataplane } from '../../src/dataplane/ts/ts-dataplane.ts';
import { createRegistry, MetricsServer } from '../../src/metrics/server.ts';
import type { InterceptTarget } from '../../src/proxier/interceptor.ts';
import { silentLogger } from '../../src/util/log.ts';
import { eventually } from '../helpers/eventually.ts';
import { type HttpBackend, startHttpBackend } from '../helpers/http-backends.ts';
import { freePort } from '../helpers/ports.ts';

const ep = (ip: string, port: number): Endpoint => ({
  ip,
  port,
  ready: true,
  serving: true,
  terminating: false,
});

function service(
  name: string,
  clusterIP: string,
  appProtocol: ServicePortEntry['appProtocol'],
  endpoints: Endpoint[],
): ServiceEntry {
  const port: ServicePortEntry = {
    name: appProtocol,
    port: 80,
    protocol: appProtocol === 'udp' ? 'UDP' : 'TCP',
    appProtocol,
    targetPort: 80,
    endpoints,
  };
  return {
    namespace: 'm',
    name,
    key: `m/${name}`,
    clusterIPs: [clusterIP],
    headless: false,
    type: 'ClusterIP',
    ports: [port],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
}

/** Value of one sample line (`name{labels} value`) in Prometheus text; 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;
    if (!Object.entries(labels).every(([k, v]) => rest.includes(`${k}="${v}"`))) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

describe('protocol metrics through the TS data plane workers', () => {
  let dp: TsDataplane;
  let metrics: MetricsServer;
  let backend: HttpBackend;
  let echo: dgram.Socket;
  let targets: readonly InterceptTarget[];
  const scrape = async () => (await fetch(`http://127.0.0.1:${metrics.address()!.port}/metrics`)).text();
  const to = (ip: string) => targets.find((t) => t.clusterIP === ip)!.toPort;

  beforeAll(async () => {
    backend = await startHttpBackend('m-backend', '127.0.0.41');
    echo = dgram.createSocket('udp4');
    echo.on('message', (m, r) => echo.send(m, r.port, r.address));
    await new Promise<void>((resolve) => echo.bind(0, '127.0.0.42', () => resolve()));
    const dead = await freePort('127.0.0.43');
    const registry = createRegistry();
    dp = new TsDataplane({
      log: silentLogger,
      registry,
      workers: 2,
      portRange: '46300-46399',
      connectTimeoutMs: 1000,
      // Also the UDP flows' idle timeout (see listener-worker).
      idleTimeoutMs: 400,
      nodeName: 'node-a',
      listenHost: '127.0.0.1',
    });
    await dp.start();
    metrics = new MetricsServer({
      listen: `127.0.0.1:${await freePort()}`,
      registry,
      ready: () => true,
      status: () => ({}),
    });
    await metrics.start();
    const services = [
      service('web', '10.96.1.1', 'http', [ep(backend.ip, backend.port), ep('127.0.0.43', dead)]),
      service('empty', '10.96.1.2', 'http', []),
      service('dns', '10.96.1.3', 'udp', [ep('127.0.0.42', echo.address().port)]),
    ];
    const table: ServiceTable = {
      generation: 1,
      services: new Map(services.map((s) => [s.key, s])),
      gateways: new Map(),
      virtualServices: new Map(),
      destinationRules: new Map(),
      secrets: new Map(),
    };
    targets = await dp.apply(table, {
      added: services.map((s) => s.key),
      updated: [],
      removed: [],
      istioChanged: false,
    });
  }, 30_000);

  afterAll(async () => {
    await dp?.stop();
    await metrics?.stop();
    await backend?.kill();
    echo?.close();
  });

  it('counts HTTP requests, upstream latency, proxy-made replies and ejections', async () => {
    // The dead endpoint is tried (connect refused → retried on the live one, ejected) once.
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`http://127.0.0.1:${to('10.96.1.1')}/`);
      expect(res.status).toBe(200);
      await res.text();
    }
    const none = await fetch(`http://127.0.0.1:${to('10.96.1.2')}/`);
    expect(none.status).toBe(503);
    await none.text();
    const bad = await new Promise<string>((resolve) => {
      const s = net.connect(to('10.96.1.1'), '127.0.0.1');
      let got = '';
      s.setEncoding('latin1');
      s.on('data', (d) => {
        got += d;
      });
      s.on('close', () => resolve(got));
      s.end('GARBAGE\x01 / HTTP/1.1\r\n\r\n');
    });
    expect(bad).toMatch(/^HTTP\/1.1 400/);

    const text = await scrape();
    const web = { service: 'm/web:80' };
    expect(sample(text, 'edgemesh_http_requests_total', { ...web, code: '200' })).toBe(6);
    expect(sample(text, 'edgemesh_http_upstream_latency_seconds_count', web)).toBe(6);
    expect(sample(text, 'edgemesh_http_upstream_latency_seconds_sum', web)).toBeGreaterThan(0);
    expect(sample(text, 'edgemesh_http_upstream_latency_seconds_bucket', { ...web, le: '+Inf' })).toBe(6);
    expect(text).toMatch(/^# TYPE edgemesh_http_upstream_latency_seconds histogram$/m);
    expect(
      sample(text, 'edgemesh_http_proxy_replies_total', { ...web, code: '400', reason: 'bad_request' }),
    ).toBe(1);
    expect(
      sample(text, 'edgemesh_http_proxy_replies_total', {
        service: 'm/empty:80',
        code: '503',
        reason: 'no_endpoint',
      }),
    ).toBe(1);
    expect(sample(text, 'edgemesh_http_requests_total', { service: 'm/empty:80', code: '503' })).toBe(1);
    expect(sample(text, 'edgemesh_http_upstream_connections')).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'edgemesh_outlier_ejections_total', web)).toBe(1);
    expect(sample(text, 'edgemesh_outlier_ejected_endpoints', web)).toBe(1);
    // Every metric appears once although two workers each have their own registry.
    expect(text.match(/^# TYPE edgemesh_http_requests_total counter$/gm)).toHaveLength(1);
  });

  it('counts UDP flows and bytes, and their idle expiry', async () => {
    const c = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => c.bind(0, '127.0.0.1', () => resolve()));
    try {
      const replies: Buffer[] = [];
      const got = new Promise<void>((resolve) =>
        c.on('message', (m) => {
          replies.push(m);
          if (replies.length === 3) resolve();
        }),
      );
      for (const m of ['a', 'bb', 'ccc']) c.send(m, to('10.96.1.3'), '127.0.0.1');
      await got;
      const svc = { service: 'm/dns:80' };
      const text = await scrape();
      expect(sample(text, 'edgemesh_udp_flows_created_total', svc)).toBe(1);
      expect(sample(text, 'edgemesh_udp_flows_active', svc)).toBe(1);
      expect(sample(text, 'edgemesh_udp_bytes_total', { ...svc, direction: 'from_client' })).toBe(6);
      expect(sample(text, 'edgemesh_udp_bytes_total', { ...svc, direction: 'to_client' })).toBe(6);
      await eventually(async () => {
        const t = await scrape();
        return (
          sample(t, 'edgemesh_udp_flows_expired_total', svc) === 1 &&
          sample(t, 'edgemesh_udp_flows_active', svc) === 0
        );
      }, 5000);
    } finally {
      c.close();
    }
  });
});
