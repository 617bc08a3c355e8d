// The pure parts of the controller: port names → protocols, DestinationRule matching and
// conversion, endpoint sources and conditions, filtering, snapshot identity and diffs.
import { describe, expect, it } from 'vitest';
import { BucketMap } from '../../src/controller/bucket-map.ts';
import { parseDurationSeconds, trafficPolicyFor } from '../../src/controller/destination-rule.ts';
import { ObjectStore } from '../../src/controller/object-store.ts';
import { appProtocolOf, buildService } from '../../src/controller/service-builder.ts';
import { buildTable, diffTables } from '../../src/controller/snapshot-builder.ts';
import { EMPTY_TABLE, type KubeObject, usableEndpoints } from '../../src/controller/types.ts';

const opts = { noProxyLabel: 'noproxy' };

function svc(name: string, spec: Record<string, unknown>, meta: Record<string, unknown> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'ns1', ...meta }, spec };
}

function slice(svcName: string, name: string, endpoints: unknown[], port = 8080): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'ns1', labels: { 'kubernetes.io/service-name': svcName } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port }],
    endpoints,
  };
}

function dr(name: string, spec: Record<string, unknown>, namespace = 'ns1'): KubeObject {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'DestinationRule',
    metadata: { name, namespace },
    spec,
  };
}

const httpPort = { name: 'http', port: 80, targetPort: 8080 };

describe('port names', () => {
  it('maps <protocol>[-suffix] and the appProtocol field; unknown or missing → tcp', () => {
    expect(appProtocolOf('http', undefined, 'TCP')).toBe('http');
    expect(appProtocolOf('http-web', undefined, 'TCP')).toBe('http');
    expect(appProtocolOf('https-admin', undefined, 'TCP')).toBe('https');
    expect(appProtocolOf('ws', undefined, 'TCP')).toBe('websocket');
    expect(appProtocolOf('websocket-chat', undefined, 'TCP')).toBe('websocket');
    expect(appProtocolOf('grpc', undefined, 'TCP')).toBe('tcp');
    expect(appProtocolOf('', undefined, 'TCP')).toBe('tcp');
    expect(appProtocolOf('metrics', 'http', 'TCP')).toBe('http');
    expect(appProtocolOf('dns', undefined, 'UDP')).toBe('udp');
  });
});

describe('DestinationRule', () => {
  it('parses durations', () => {
    expect(parseDurationSeconds('10s')).toBe(10);
    expect(parseDurationSeconds('1.5s')).toBe(1.5);
    expect(parseDurationSeconds('1m30s')).toBe(90);
    expect(parseDurationSeconds('500ms')).toBe(0.5);
    expect(parseDurationSeconds('ten')).toBeUndefined();
  });

  it('merges portLevelSettings over destination-level settings per port', () => {
    const spec = {
      trafficPolicy: {
        loadBalancer: { simple: 'RANDOM' },
        outlierDetection: { consecutive5xxErrors: 3, interval: '10s', baseEjectionTime: '1m' },
        connectionPool: { tcp: { connectTimeout: '2s' } },
        portLevelSettings: [
          { port: { number: 8080 }, loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } } },
        ],
      },
    };
    expect(trafficPolicyFor(spec, 80)).toEqual({
      loadBalancer: { simple: 'RANDOM' },
      outlierDetection: { consecutive5xxErrors: 3, intervalSeconds: 10, baseEjectionTimeSeconds: 60 },
      connectTimeoutMs: 2000,
    });
    expect(trafficPolicyFor(spec, 8080)?.loadBalancer).toEqual({
      consistentHash: { httpHeaderName: 'x-user' },
    });
  });

  it('matches by spec.host (short, name.ns, FQDN), falling back to the same name', () => {
    for (const host of ['web', 'web.ns1', 'web.ns1.svc', 'web.ns1.svc.cluster.local']) {
      const store = new ObjectStore();
      store.upsert(svc('web', { clusterIP: '10.96.0.1', ports: [httpPort] }));
      store.upsert(dr('rule', { host, trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } }));
      const entry = buildService(store.services.get('ns1/web')!, store, opts);
      expect(entry.destinationRule, host).toBe('ns1/rule');
      expect(entry.ports[0].trafficPolicy?.loadBalancer?.simple).toBe('ROUND_ROBIN');
    }
    // Host in another namespace's short form does not match; the same-name rule does.
    const store = new ObjectStore();
    store.upsert(svc('web', { clusterIP: '10.96.0.1', ports: [httpPort] }));
    store.upsert(dr('other', { host: 'web' }, 'ns2'));
    expect(buildService(store.services.get('ns1/web')!, store, opts).destinationRule).toBeUndefined();
    store.upsert(dr('web', { host: 'unrelated.example.com' }));
    expect(buildService(store.services.get('ns1/web')!, store, opts).destinationRule).toBe('ns1/web');
  });
});

describe('service entries', () => {
  it('uses EndpointSlice conditions; terminating endpoints only when none is ready', () => {
    const store = new ObjectStore();
    store.upsert(svc('web', { clusterIP: '10.96.0.1', ports: [httpPort] }));
    store.upsert(
      slice('web', 'web-1', [
        {
          addresses: ['10.0.0.2'],
          conditions: { ready: false, serving: true, terminating: true },
          nodeName: 'n2',
        },
        { addresses: ['10.0.0.1'], conditions: { ready: true }, nodeName: 'n1', zone: 'z1' },
      ]),
    );
    let port = buildService(store.services.get('ns1/web')!, store, opts).ports[0];
    expect(port.endpoints.map((e) => [e.ip, e.ready, e.serving, e.terminating, e.nodeName])).toEqual([
      ['10.0.0.1', true, true, false, 'n1'],
      ['10.0.0.2', false, true, true, 'n2'],
    ]);
    expect(usableEndpoints(port).map((e) => e.ip)).toEqual(['10.0.0.1']);
    store.upsert(
      slice('web', 'web-1', [
        { addresses: ['10.0.0.2'], conditions: { ready: false, serving: true, terminating: true } },
      ]),
    );
    port = buildService(store.services.get('ns1/web')!, store, opts).ports[0];
    expect(usableEndpoints(port).map((e) => e.ip)).toEqual(['10.0.0.2']);
  });

  it('derives endpoints from Pods by selector, resolving named targetPorts per Pod', () => {
    const store = new ObjectStore();
    store.upsert(
      svc('web', {
        clusterIP: '10.96.0.1',
        selector: { app: 'web' },
        ports: [{ name: 'http', port: 80, targetPort: 'web' }],
      }),
    );
    const pod = (name: string, podPort: number, status: Record<string, unknown>, labels = { app: 'web' }) =>
      ({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace: 'ns1', labels },
        spec: {
          nodeName: 'edge-1',
          containers: [{ ports: [{ name: 'web', containerPort: podPort, hostPort: 30080 }] }],
        },
        status,
      }) as KubeObject;
    store.upsert(pod('a', 8080, { phase: 'Running', podIP: '10.0.0.1' }));
    store.upsert(
      pod('b', 9090, {
        phase: 'Running',
        podIP: '10.0.0.2',
        conditions: [{ type: 'Ready', status: 'False' }],
      }),
    );
    store.upsert(pod('c', 8080, { phase: 'Running', hostIP: '192.168.1.5' }));
    store.upsert(pod('d', 8080, { phase: 'Pending', podIP: '10.0.0.4' }));
    store.upsert(pod('e', 8080, { phase: 'Running', podIP: '10.0.0.5' }, { app: 'other' }));
    const eps = buildService(store.services.get('ns1/web')!, store, opts).ports[0].endpoints;
    expect(eps.map((e) => `${e.ip}:${e.port}:${e.ready}:${e.targetRef}`)).toEqual([
      '10.0.0.1:8080:true:ns1/a',
      '10.0.0.2:9090:false:ns1/b',
      '192.168.1.5:30080:true:ns1/c',
    ]);
  });

  it('handles headless, ClientIP affinity, the opt-out label and default/kubernetes', () => {
    const store = new ObjectStore();
    store.upsert(svc('headless', { clusterIP: 'None', ports: [httpPort] }));
    store.upsert(
      svc('sticky', {
        clusterIP: '10.96.0.2',
        ports: [httpPort],
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
      }),
    );
    store.upsert(
      svc('optout', { clusterIP: '10.96.0.3', ports: [httpPort] }, { labels: { noproxy: 'edgemesh' } }),
    );
    store.upsert(
      svc(
        'kubernetes',
        { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443 }] },
        { namespace: 'default' },
      ),
    );
    const t = buildTable(EMPTY_TABLE, store, store.takeChanges(), true, opts)!;
    expect(t.services.get('ns1/headless')).toMatchObject({ headless: true, clusterIPs: [], proxied: true });
    expect(t.services.get('ns1/sticky')!.sessionAffinity).toEqual({ type: 'ClientIP', timeoutSeconds: 60 });
    expect(t.services.get('ns1/optout')!.proxied).toBe(false);
    expect(t.services.get('default/kubernetes')!.proxied).toBe(false);
    expect(t.services.get('default/kubernetes')!.ports[0].targetPort).toBe(443);
  });

  it('skips malformed ports and addresses instead of throwing', () => {
    const store = new ObjectStore();
    store.upsert(
      svc('bad', { clusterIP: 'nope', ports: [{ port: 'x' }, { port: 70000 }, 'junk', httpPort] }),
    );
    store.upsert(slice('bad', 'bad-1', [{ addresses: ['not-an-ip'] }, { addresses: [] }, null]));
    const entry = buildService(store.services.get('ns1/bad')!, store, opts);
    expect(entry.clusterIPs).toEqual([]);
    expect(entry.ports.map((p) => p.port)).toEqual([80]);
    expect(entry.ports[0].endpoints).toEqual([]);
  });
});

describe('snapshots', () => {
  it('rebuilds only dirty services, keeps unchanged entries by identity, and diffs', () => {
    const store = new ObjectStore();
    store.upsert(svc('a', { clusterIP: '10.96.0.1', ports: [httpPort] }));
    store.upsert(svc('b', { clusterIP: '10.96.0.2', ports: [httpPort] }));
    const t1 = buildTable(EMPTY_TABLE, store, store.takeChanges(), true, opts)!;
    expect(t1.generation).toBe(1);
    // An update that changes nothing consumers see (resourceVersion only) yields no snapshot.
    store.upsert(svc('a', { clusterIP: '10.96.0.1', ports: [httpPort] }, { resourceVersion: '9' }));
    expect(buildTable(t1, store, store.takeChanges(), false, opts)).toBeUndefined();
    store.upsert(slice('a', 'a-1', [{ addresses: ['10.0.0.1'] }]));
    store.remove(svc('b', {}));
    store.upsert(svc('c', { clusterIP: '10.96.0.3', ports: [httpPort] }));
    const t2 = buildTable(t1, store, store.takeChanges(), false, opts)!;
    expect(t2.generation).toBe(2);
    expect(diffTables(t1, t2)).toEqual({
      added: ['ns1/c'],
      updated: ['ns1/a'],
      removed: ['ns1/b'],
      istioChanged: false,
    });
    expect(t1.services.has('ns1/b')).toBe(true); // the old snapshot is untouched
    store.upsert(dr('x', { host: 'nothing' }));
    const t3 = buildTable(t2, store, store.takeChanges(), false, opts)!;
    expect(t3.services.get('ns1/c')).toBe(t2.services.get('ns1/c'));
    expect(diffTables(t2, t3)).toMatchObject({ added: [], updated: [], removed: [], istioChanged: true });
  });

  it('BucketMap versions are independent and behave like a Map', () => {
    const entries = Array.from({ length: 1000 }, (_, i) => [`k${i}`, i] as [string, number]);
    const m1 = BucketMap.from(new Map(entries));
    const m2 = m1.withChanges(
      [
        ['k1', -1],
        ['new', 5],
      ],
      ['k2', 'absent'],
    );
    expect([m1.size, m2.size]).toEqual([1000, 1000]);
    expect([m1.get('k1'), m2.get('k1'), m1.has('k2'), m2.has('k2'), m2.get('new')]).toEqual([
      1,
      -1,
      true,
      false,
      5,
    ]);
    expect(new Map(m2).size).toBe(1000);
    expect([...m2.keys()].sort()).toEqual([...new Map(m2).keys()].sort());
  });
});

describe('manifest objects', () => {
  it('defaults the namespace, merges Secret stringData into data, and explains bad objects', async () => {
    const { validateObject } = await import('../../src/controller/sources/manifest-source.ts');
    const secret = validateObject({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'tls' },
      data: { a: 'eA==' },
      stringData: { b: 'hello' },
    });
    expect(secret).toMatchObject({ metadata: { namespace: 'default' }, data: { a: 'eA==', b: 'aGVsbG8=' } });
    expect(secret).not.toHaveProperty('stringData');
    expect(validateObject({ kind: 'Service', apiVersion: 'v1', metadata: {} })).toBe(
      'Service: metadata.name: expected a string',
    );
    expect(
      validateObject({
        kind: 'Service',
        apiVersion: 'v1',
        metadata: { name: 's' },
        spec: { clusterIP: 'x' },
      }),
    ).toMatch(/spec\.clusterIP: expected an IP address or None/);
    expect(validateObject('text')).toMatch(/expected a Kubernetes object/);
  });
});
