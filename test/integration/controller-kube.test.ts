// The Kubernetes source end to end: the real @kubernetes/client-node against the apiserver
// fixture over HTTP (lists, chunked watches, timeouts, 410 relists, bookmarks, absent CRDs), plus
// the persisted snapshot when the API is down.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config/defaults.ts';
import type { EdgemeshConfig } from '../../src/config/types.ts';
import { Controller } from '../../src/controller/controller.ts';
import type { KubeSourceOptions } from '../../src/controller/sources/kube-source.ts';
import type { ServiceTable, ServiceTableDiff } from '../../src/controller/types.ts';
import { type ApiObject, FakeApiServer } from '../helpers/apiserver.ts';
import { freePort } from '../helpers/ports.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function svc(name: string, ip: string, extra: Record<string, unknown> = {}): ApiObject {
  return {
    metadata: { name, namespace: 'ns1' },
    spec: { clusterIP: ip, ports: [{ name: 'http-web', port: 80, targetPort: 'web' }], ...extra },
  };
}

function slice(svcName: string, ips: string[], port = 8080, ready = true): ApiObject {
  return {
    metadata: { name: `${svcName}-abc`, namespace: 'ns1', labels: { 'kubernetes.io/service-name': svcName } },
    addressType: 'IPv4',
    ports: [{ name: 'http-web', port, protocol: 'TCP' }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready }, nodeName: 'edge-1' })),
  };
}

/** A controller on the fixture, recording every snapshot it delivers, with its log lines. */
function makeController(
  server: { url: string },
  stateDir: string,
  over: Partial<EdgemeshConfig> = {},
  kube: KubeSourceOptions = {},
) {
  const config = { ...defaultConfig(), stateDir, nodeName: 'edge-1', ...over };
  config.kubeAPIConfig.master = server.url;
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => lines.push(s) });
  const registry = new Registry();
  const controller = new Controller({
    config,
    log,
    registry,
    minSyncIntervalMs: 10,
    offlineGraceMs: 300,
    stateWriteIntervalMs: 0,
    kube: { backoffBaseMs: 50, backoffMaxMs: 200, ...kube },
  });
  const seen: { table: ServiceTable; diff: ServiceTableDiff }[] = [];
  let waiters: (() => void)[] = [];
  controller.subscribe({
    name: 'recorder',
    apply: async (table, diff) => {
      seen.push({ table, diff });
      for (const w of waiters) w();
      waiters = [];
    },
  });
  /** Resolves with the first delivered table satisfying `pred` (bounded wait). */
  const until = async (pred: (t: ServiceTable) => boolean, what: string, ms = 8_000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const t = controller.current();
      if (t.generation > 0 && pred(t)) return t;
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  };
  cleanups.push(() => controller.stop());
  return { controller, seen, until, lines, registry };
}

function tmpDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'em-ctl-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function fixture(options: ConstructorParameters<typeof FakeApiServer>[0] = {}): Promise<FakeApiServer> {
  const server = new FakeApiServer(options);
  await server.start();
  cleanups.push(() => server.stop());
  return server;
}

async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}) {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values as { value: number; labels: Record<string, string> }[] | undefined)?.find((x) =>
    Object.entries(labels).every(([k, val]) => x.labels[k] === val),
  );
  return v?.value;
}

describe('Kubernetes source against the apiserver fixture', () => {
  it('lists and watches every kind: add, update and delete reach the snapshot', async () => {
    const api = await fixture({ bookmarkIntervalMs: 100 });
    api.upsert('services', svc('web', '10.96.0.10'));
    api.upsert('endpointslices', slice('web', ['10.0.0.1', '10.0.0.2']));
    api.upsert('destinationrules', {
      metadata: { name: 'web-dr', namespace: 'ns1' },
      spec: { host: 'web.ns1.svc.cluster.local', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } },
    });
    const { controller, seen, until } = makeController(api, tmpDir(), {
      modules: {
        ...defaultConfig().modules,
        edgeGateway: { ...defaultConfig().modules.edgeGateway, enable: true },
      },
    });
    await controller.start();
    await controller.whenSynced();
    let t = controller.current();
    const web = t.services.get('ns1/web')!;
    expect(web.clusterIPs).toEqual(['10.96.0.10']);
    expect(web.ports[0].appProtocol).toBe('http');
    expect(web.ports[0].endpoints.map((e) => `${e.ip}:${e.port}@${e.nodeName}`)).toEqual([
      '10.0.0.1:8080@edge-1',
      '10.0.0.2:8080@edge-1',
    ]);
    expect(web.destinationRule).toBe('ns1/web-dr');
    expect(web.ports[0].trafficPolicy).toEqual({ loadBalancer: { simple: 'RANDOM' } });
    expect(seen[0].diff.added).toEqual(['ns1/web']);

    // Service update, a Pod-less selector service, slice update, DR delete.
    api.upsert('services', svc('web', '10.96.0.10', { sessionAffinity: 'ClientIP' }));
    api.upsert('endpointslices', slice('web', ['10.0.0.3']));
    api.remove('destinationrules', 'ns1', 'web-dr');
    t = await until(
      (x) =>
        x.services.get('ns1/web')?.sessionAffinity.type === 'ClientIP' &&
        x.services.get('ns1/web')?.ports[0].endpoints.length === 1 &&
        x.services.get('ns1/web')?.destinationRule === undefined,
      'service, slice and DR changes',
    );
    expect(t.services.get('ns1/web')!.ports[0].trafficPolicy).toBeUndefined();
    expect(seen.at(-1)!.diff.updated).toContain('ns1/web');

    // Pods: a service without slices gets endpoints from its selector, named port resolved per Pod.
    api.upsert('services', svc('api', '10.96.0.11', { selector: { app: 'api' } }));
    api.upsert('pods', {
      metadata: { name: 'api-1', namespace: 'ns1', labels: { app: 'api' } },
      spec: {
        nodeName: 'edge-2',
        containers: [{ name: 'c', ports: [{ name: 'web', containerPort: 9090 }] }],
      },
      status: { phase: 'Running', podIP: '10.0.1.5', conditions: [{ type: 'Ready', status: 'True' }] },
    });
    t = await until((x) => x.services.get('ns1/api')?.ports[0].endpoints.length === 1, 'pod endpoints');
    expect(t.services.get('ns1/api')!.ports[0].endpoints[0]).toMatchObject({ ip: '10.0.1.5', port: 9090 });
    api.upsert('pods', {
      metadata: { name: 'api-1', namespace: 'ns1', labels: { app: 'api' } },
      spec: {
        nodeName: 'edge-2',
        containers: [{ name: 'c', ports: [{ name: 'web', containerPort: 9091 }] }],
      },
      status: { phase: 'Running', podIP: '10.0.1.6', conditions: [{ type: 'Ready', status: 'True' }] },
    });
    await until((x) => x.services.get('ns1/api')?.ports[0].endpoints[0]?.port === 9091, 'pod update');
    api.remove('pods', 'ns1', 'api-1');
    await until((x) => x.services.get('ns1/api')?.ports[0].endpoints.length === 0, 'pod deleted');

    // Istio objects and Secrets (gateway enabled).
    api.upsert('gateways', { metadata: { name: 'gw', namespace: 'ns1' }, spec: { servers: [] } });
    api.upsert('virtualservices', { metadata: { name: 'vs', namespace: 'ns1' }, spec: { hosts: ['*'] } });
    api.upsert('secrets', { metadata: { name: 'tls', namespace: 'ns1' }, data: { 'tls.crt': 'eA==' } });
    t = await until(
      (x) => x.gateways.size === 1 && x.virtualServices.size === 1 && x.secrets.size === 1,
      'istio',
    );
    expect(seen.at(-1)!.diff.istioChanged).toBe(true);
    expect(t.gateways.get('ns1/gw')!.kind).toBe('Gateway');
    api.upsert('virtualservices', {
      metadata: { name: 'vs', namespace: 'ns1' },
      spec: { hosts: ['a.example'] },
    });
    await until(
      (x) =>
        (x.virtualServices.get('ns1/vs')?.spec as { hosts: string[] } | undefined)?.hosts[0] === 'a.example',
      'vs update',
    );
    api.remove('gateways', 'ns1', 'gw');
    api.remove('virtualservices', 'ns1', 'vs');
    api.remove('secrets', 'ns1', 'tls');
    await until((x) => x.gateways.size + x.virtualServices.size + x.secrets.size === 0, 'istio deletes');

    // Delete the slice, then the service.
    api.remove('endpointslices', 'ns1', 'web-abc');
    await until((x) => x.services.get('ns1/web')?.ports[0].endpoints.length === 0, 'slice delete');
    api.remove('services', 'ns1', 'web');
    await until((x) => !x.services.has('ns1/web'), 'service delete');
    expect(seen.at(-1)!.diff.removed).toContain('ns1/web');

    // The watches asked for bookmarks and a server-side timeout; lists were paged.
    const watches = api.requests.filter((r) => r.query.get('watch') === 'true');
    expect(watches.every((r) => r.query.get('allowWatchBookmarks') === 'true')).toBe(true);
    expect(watches.every((r) => Number(r.query.get('timeoutSeconds')) > 0)).toBe(true);
    expect(
      api.requests.filter((r) => r.query.get('watch') !== 'true').every((r) => r.query.has('limit')),
    ).toBe(true);
  });

  it('uses a kubeconfig file: its server and bearer token reach lists and watches', async () => {
    const api = await fixture();
    api.upsert('services', svc('a', '10.96.0.1'));
    const dir = tmpDir();
    const kubeconfig = path.join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: { server: "${api.url}", insecure-skip-tls-verify: true }
users:
- name: u
  user: { token: secret-token }
contexts:
- name: ctx
  context: { cluster: c, user: u }
current-context: ctx
`,
    );
    const { controller } = makeController({ url: '' }, dir, {
      kubeAPIConfig: { ...defaultConfig().kubeAPIConfig, kubeConfig: kubeconfig },
    });
    await controller.start();
    await controller.whenSynced();
    expect(controller.current().services.has('ns1/a')).toBe(true);
    const svcRequests = api.requests.filter((r) => r.path === '/api/v1/services');
    expect(svcRequests.some((r) => r.query.get('watch') === 'true')).toBe(true);
    expect(svcRequests.every((r) => r.headers.authorization === 'Bearer secret-token')).toBe(true);
  });

  it('relists after an expired continue token (410 mid-list) without declaring an outage', async () => {
    const api = await fixture();
    for (let i = 0; i < 5; i++) api.upsert('services', svc(`s${i}`, `10.96.0.${i + 1}`));
    api.expireNextContinue = true;
    const { controller, lines } = makeController(api, tmpDir(), {}, { pageSize: 2 });
    await controller.start();
    await controller.whenSynced();
    expect(controller.current().services.size).toBe(5);
    const pages = api.requests.filter((r) => r.path === '/api/v1/services' && r.query.has('continue'));
    expect(pages.length).toBeGreaterThanOrEqual(3); // one expired, then two good pages
    expect(lines.some((l) => l.includes('Kubernetes API unreachable'))).toBe(false);
  });

  it('treats absent Istio CRDs and Pods as empty and falls back to Endpoints without EndpointSlices', async () => {
    const api = await fixture({ absentGroups: ['networking.istio.io', 'discovery.k8s.io', '/pods'] });
    api.upsert('services', svc('web', '10.96.0.10'));
    api.upsert('endpoints', {
      metadata: { name: 'web', namespace: 'ns1' },
      subsets: [
        {
          addresses: [{ ip: '10.0.0.7', nodeName: 'edge-3' }],
          notReadyAddresses: [{ ip: '10.0.0.8' }],
          ports: [{ name: 'http-web', port: 8080 }],
        },
      ],
    });
    const { controller, registry } = makeController(api, tmpDir());
    await controller.start();
    await controller.whenSynced();
    const eps = controller.current().services.get('ns1/web')!.ports[0].endpoints;
    expect(eps.map((e) => [e.ip, e.ready, e.nodeName])).toEqual([
      ['10.0.0.7', true, 'edge-3'],
      ['10.0.0.8', false, undefined],
    ]);
    expect(api.requests.some((r) => r.path === '/apis/networking.istio.io/v1alpha3/destinationrules')).toBe(
      true,
    );
    expect(await metricValue(registry, 'edgemesh_source_up', { source: 'kube' })).toBe(1);
  });

  it('survives an apiserver restart mid-watch, relists after 410 and drops stale objects', async () => {
    const api = await fixture();
    api.upsert('services', svc('a', '10.96.0.1'));
    api.upsert('services', svc('b', '10.96.0.2'));
    const { controller, until, registry, lines } = makeController(api, tmpDir());
    await controller.start();
    await controller.whenSynced();
    expect(controller.current().services.size).toBe(2);

    await api.stop();
    api.remove('services', 'ns1', 'a');
    api.upsert('services', svc('c', '10.96.0.3'));
    api.compact(); // the client's resourceVersion is now too old: watch → 410 → relist
    await new Promise((r) => setTimeout(r, 300));
    await api.start();
    const t = await until((x) => x.services.has('ns1/c') && !x.services.has('ns1/a'), 'resync after restart');
    expect([...t.services.keys()].sort()).toEqual(['ns1/b', 'ns1/c']);
    expect(await metricValue(registry, 'edgemesh_source_reconnects_total')).toBeGreaterThan(0);
    expect(await metricValue(registry, 'edgemesh_source_up', { source: 'kube' })).toBe(1);
    // The outage is logged once, however many retries it took.
    expect(lines.filter((l) => l.includes('Kubernetes API unreachable')).length).toBe(1);
  });

  it('resumes watches after server-side timeouts without relisting', async () => {
    const api = await fixture({ maxWatchMs: 150, bookmarkIntervalMs: 50 });
    api.upsert('services', svc('a', '10.96.0.1'));
    const { controller, until } = makeController(api, tmpDir());
    await controller.start();
    await controller.whenSynced();
    const lists = () =>
      api.requests.filter((r) => r.path === '/api/v1/services' && r.query.get('watch') !== 'true');
    const listsBefore = lists().length;
    const resumed = () =>
      api.requests.filter(
        (r) =>
          r.path === '/api/v1/services' && r.query.get('watch') === 'true' && r.query.get('resourceVersion'),
      ).length;
    // Several server-side timeouts happen (150 ms cap); each is resumed from the last resourceVersion.
    const deadline = Date.now() + 8_000;
    while (resumed() < 3) {
      if (Date.now() > deadline) throw new Error(`only ${resumed()} resumed watches`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // A write to another resource moves the global resourceVersion; the services watch learns it
    // only from a bookmark, and resumes from there.
    const bumped = api.upsert('pods', { metadata: { name: 'p', namespace: 'ns1' } }).metadata.resourceVersion;
    while (
      !api.requests.some(
        (r) =>
          r.path === '/api/v1/services' && r.query.get('watch') && r.query.get('resourceVersion') === bumped,
      )
    ) {
      if (Date.now() > deadline) throw new Error('no watch resumed from a bookmark resourceVersion');
      await new Promise((r) => setTimeout(r, 50));
    }
    api.upsert('services', svc('b', '10.96.0.2'));
    await until((x) => x.services.has('ns1/b'), 'event after watch timeouts');
    expect(lists().length).toBe(listsBefore);
  });

  it('restarts a watch that went silent (half-open connection) and catches up', async () => {
    const api = await fixture();
    api.upsert('services', svc('a', '10.96.0.1'));
    const { controller, until } = makeController(
      api,
      tmpDir(),
      {},
      { watchTimeoutSeconds: 1, watchIdleGraceMs: 200 },
    );
    await controller.start();
    await controller.whenSynced();
    const watchesBefore = api.requests.filter(
      (r) => r.path === '/api/v1/services' && r.query.get('watch'),
    ).length;
    api.freezeWatches();
    api.upsert('services', svc('b', '10.96.0.2'));
    await until((x) => x.services.has('ns1/b'), 'event missed by the frozen watch');
    const watchesAfter = api.requests.filter(
      (r) => r.path === '/api/v1/services' && r.query.get('watch'),
    ).length;
    expect(watchesAfter).toBeGreaterThan(watchesBefore);
  });

  it('serves the persisted snapshot when the API is down at start, then resyncs and drops stale', async () => {
    const stateDir = tmpDir();
    const api = await fixture();
    api.upsert('services', svc('old', '10.96.0.1'));
    api.upsert('services', svc('kept', '10.96.0.2'));
    const first = makeController(api, stateDir);
    await first.controller.start();
    await first.controller.whenSynced();
    await first.controller.stop();

    await api.stop();
    api.remove('services', 'ns1', 'old');
    api.upsert('services', svc('new', '10.96.0.3'));
    const second = makeController(api, stateDir);
    await second.controller.start();
    await second.controller.whenSynced();
    expect([...second.controller.current().services.keys()].sort()).toEqual(['ns1/kept', 'ns1/old']);

    await api.start();
    const t = await second.until((x) => x.services.has('ns1/new'), 'resync after API is back');
    expect([...t.services.keys()].sort()).toEqual(['ns1/kept', 'ns1/new']);
  });

  it('fails to start with EDGEMESH_ERR_KUBE_API naming an unreadable kubeconfig', async () => {
    const dir = tmpDir();
    const { controller } = makeController({ url: '' }, dir, {
      kubeAPIConfig: { ...defaultConfig().kubeAPIConfig, kubeConfig: path.join(dir, 'missing') },
    });
    const err = await controller.start().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EDGEMESH_ERR_KUBE_API' });
    expect((err as Error).message).toContain(path.join(dir, 'missing'));
  });

  it('starts empty with a clear error when the state file is corrupted', async () => {
    const stateDir = tmpDir();
    writeFileSync(
      path.join(stateDir, 'snapshot.json'),
      '{"format":"edgemesh-state","version":1,"services":[{',
    );
    const dead = { url: `http://127.0.0.1:${await freePort()}` };
    const { controller, lines } = makeController(dead, stateDir);
    await controller.start();
    await new Promise((r) => setTimeout(r, 400));
    expect(controller.current().generation).toBe(0);
    const err = lines
      .map((l) => JSON.parse(l))
      .find((l) => l.msg === 'persisted snapshot unusable; starting empty');
    expect(err).toMatchObject({ code: 'EDGEMESH_ERR_STATE' });
    expect(err.err).toContain('snapshot.json');
  });

  it('lists 5,000 services x 3 endpoints into one snapshot', async () => {
    const api = await fixture();
    const services: ApiObject[] = [];
    const slices: ApiObject[] = [];
    for (let i = 0; i < 5000; i++) {
      const name = `s${i}`;
      services.push(svc(name, `10.96.${i >> 8}.${i & 255}`));
      slices.push(
        slice(name, [`10.1.${i >> 8}.${i & 255}`, `10.2.${i >> 8}.${i & 255}`, `10.3.${i >> 8}.${i & 255}`]),
      );
    }
    api.seed('services', services);
    api.seed('endpointslices', slices);
    const { controller, seen } = makeController(api, tmpDir());
    const t0 = performance.now();
    await controller.start();
    await controller.whenSynced();
    const ms = performance.now() - t0;
    const t = controller.current();
    expect(t.services.size).toBe(5000);
    expect([...t.services.values()].every((s) => s.ports[0].endpoints.length === 3)).toBe(true);
    // One snapshot for the whole initial list (batched), not one per object.
    expect(seen.length).toBe(1);
    console.log(`5000 services x 3 endpoints: first snapshot after ${ms.toFixed(0)} ms`);
  });
});
