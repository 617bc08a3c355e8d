// Gateway routing without sockets: host patterns, VirtualService binding, http[] match order and
// fields, rewrite, weights, the per-port plan (selector, protocols, conflicts) and address choice.
import { describe, expect, it } from 'vitest';
import type { KubeObject, ServiceTable } from '../../src/controller/types.ts';
import { EMPTY_TABLE } from '../../src/controller/types.ts';
import { type PlanIssue, planGateways } from '../../src/gateway/gateway-plan.ts';
import {
  boundTo,
  chooseRoute,
  compileHttpRoutes,
  hostMatches,
  hostSpecificity,
  parseDestinations,
  pickWeighted,
} from '../../src/gateway/http-routes.ts';
import { selectListenAddresses } from '../../src/gateway/listen-addresses.ts';

const obj = (kind: string, ns: string, name: string, spec: Record<string, unknown>): KubeObject => ({
  apiVersion: 'networking.istio.io/v1alpha3',
  kind,
  metadata: { name, namespace: ns },
  spec,
});

const req = (url: string, extra: Partial<{ method: string; headers: Record<string, string> }> = {}) => ({
  host: 'h',
  url,
  method: extra.method ?? 'GET',
  headers: extra.headers ?? {},
});

describe('gateway routing', () => {
  it('matches exact and wildcard hosts, with optional namespace/ prefix', () => {
    expect(hostMatches('*', 'a.b')).toBe(true);
    expect(hostMatches('hostname.org', 'hostname.org')).toBe(true);
    expect(hostMatches('hostname.org', 'x.hostname.org')).toBe(false);
    expect(hostMatches('*.example.com', 'a.example.com')).toBe(true);
    expect(hostMatches('*.example.com', 'example.com')).toBe(false);
    expect(hostMatches('ns/*.Example.com', 'a.example.com')).toBe(true);
  });

  it('ranks host matches: exact above longer wildcards above shorter ones above *', () => {
    const host = 'api.shop.example.com';
    const ranked = ['*', '*.com', '*.example.com', '*.shop.example.com', 'api.shop.example.com'].map((p) =>
      hostSpecificity(p, host),
    );
    expect([...ranked].sort((a, b) => a - b)).toEqual(ranked);
    expect(new Set(ranked).size).toBe(ranked.length);
    expect(hostSpecificity('other.example.com', host)).toBe(-1);
    expect(hostSpecificity('ns/api.shop.example.com', host)).toBe(
      hostSpecificity('api.shop.example.com', host),
    );
  });

  it('binds VirtualServices to Gateways by short name (same namespace) or ns/name', () => {
    const vs = obj('VirtualService', 'a', 'v', { gateways: ['gw', 'b/other'] });
    expect(boundTo(vs, 'a/gw')).toBe(true);
    expect(boundTo(vs, 'b/gw')).toBe(false);
    expect(boundTo(vs, 'b/other')).toBe(true);
    expect(boundTo(obj('VirtualService', 'a', 'v', {}), 'a/gw')).toBe(false);
  });

  it('takes the first matching route in order; all conditions of a match, any match of a route', () => {
    const routes = compileHttpRoutes(
      obj('VirtualService', 'ns', 'v', {
        http: [
          {
            match: [{ uri: { exact: '/x' }, method: { exact: 'POST' } }],
            route: [{ destination: { host: 'post' } }],
          },
          {
            match: [{ headers: { 'X-Pick': { prefix: 'tw' } } }, { queryParams: { q: { regex: '[0-9]+' } } }],
            route: [{ destination: { host: 'hdr' } }],
          },
          { match: [{ uri: { regex: '/re/[a-z]+' } }], route: [{ destination: { host: 're' } }] },
          { match: [{ uri: { regex: '(' } }], route: [{ destination: { host: 'bad' } }] },
          { route: [{ destination: { host: 'fallback' } }] },
        ],
      }),
    );
    expect(routes.map((r) => r.destinations[0]!.host)).toEqual(['post', 'hdr', 're', 'fallback']);
    const host = (r: ReturnType<typeof req>) => chooseRoute(routes, r)?.route.destinations[0]?.host;
    expect(host(req('/x', { method: 'POST' }))).toBe('post');
    expect(host(req('/x'))).toBe('fallback');
    expect(host(req('/', { headers: { 'x-pick': 'two' } }))).toBe('hdr');
    expect(host(req('/?q=12'))).toBe('hdr');
    expect(host(req('/?q=1a'))).toBe('fallback');
    expect(host(req('/re/abc'))).toBe('re');
    expect(host(req('/re/abc/d'))).toBe('fallback');
  });

  it('rewrites the matched prefix (or the whole path) and keeps the query', () => {
    const routes = compileHttpRoutes(
      obj('VirtualService', 'ns', 'v', {
        http: [
          {
            match: [{ uri: { prefix: '/who' } }],
            rewrite: { uri: '/' },
            route: [{ destination: { host: 'a' } }],
          },
          {
            match: [{ uri: { exact: '/e' } }],
            rewrite: { uri: '/new' },
            route: [{ destination: { host: 'b' } }],
          },
        ],
      }),
    );
    expect(chooseRoute(routes, req('/who/x?y=1'))?.path).toBe('//x?y=1');
    expect(chooseRoute(routes, req('/who'))?.path).toBe('/');
    expect(chooseRoute(routes, req('/e?z'))?.path).toBe('/new?z');
    expect(chooseRoute(routes, req('/other'))).toBeUndefined();
  });

  it('parses timeout and retries; drops routes without destinations', () => {
    const [r] = compileHttpRoutes(
      obj('VirtualService', 'ns', 'v', {
        http: [
          {
            route: [{ destination: { host: 'a' } }],
            timeout: '1.5s',
            retries: { attempts: 3, perTryTimeout: '500ms' },
          },
          { route: [] },
        ],
      }),
    );
    expect(r).toMatchObject({ timeoutSeconds: 1.5, retries: { attempts: 3, perTryTimeoutSeconds: 0.5 } });
  });

  it('splits by weight; unset weights share what is left of 100', () => {
    const d = parseDestinations([
      { destination: { host: 'a', port: { number: 80 } }, weight: 80 },
      { destination: { host: 'b' } },
    ]);
    expect(d).toEqual([
      { host: 'a', port: 80, weight: 80 },
      { host: 'b', weight: 20 },
    ]);
    let i = 0;
    const seq = () => (i++ % 100) / 100;
    const counts = { a: 0, b: 0 };
    for (let n = 0; n < 1000; n++) counts[pickWeighted(d, seq)!.host as 'a' | 'b']++;
    expect(counts).toEqual({ a: 800, b: 200 });
  });
});

describe('gateway plan', () => {
  const table = (objects: KubeObject[]): ServiceTable => ({
    ...EMPTY_TABLE,
    generation: 1,
    gateways: new Map(
      objects
        .filter((o) => o.kind === 'Gateway')
        .map((o) => [`${o.metadata.namespace}/${o.metadata.name}`, o]),
    ),
    virtualServices: new Map(
      objects
        .filter((o) => o.kind === 'VirtualService')
        .map((o) => [`${o.metadata.namespace}/${o.metadata.name}`, o]),
    ),
  });
  const labels = { kubeedge: 'edgemesh-gateway' };

  it('serves only Gateways whose selector matches, every servers[] entry, and reports conflicts', () => {
    const issues: PlanIssue[] = [];
    const plans = planGateways(
      table([
        obj('Gateway', 'ns', 'a', {
          selector: labels,
          servers: [
            { port: { number: 80, protocol: 'HTTP' }, hosts: ['*'] },
            {
              port: { number: 443, protocol: 'HTTPS' },
              tls: { mode: 'MUTUAL', credentialName: 's' },
              hosts: ['x.io'],
            },
            { port: { number: 9000, protocol: 'TLS' }, tls: { mode: 'PASSTHROUGH' } },
            { port: { number: 8443, protocol: 'HTTPS' } },
            { port: { number: 9001, protocol: 'TLS' } },
            { port: { number: 9002, protocol: 'TLS' }, tls: { mode: 'SIMPLE', credentialName: 's' } },
            { port: { number: 9003, protocol: 'TLS' }, tls: { mode: 'MUTUAL' } },
          ],
        }),
        obj('Gateway', 'ns', 'b', { selector: labels, servers: [{ port: { number: 80, protocol: 'TCP' } }] }),
        obj('Gateway', 'ns', 'c', {
          selector: { app: 'x' },
          servers: [{ port: { number: 81, protocol: 'HTTP' } }],
        }),
        obj('VirtualService', 'ns', 'v', {
          hosts: ['*'],
          gateways: ['a'],
          http: [{ route: [{ destination: { host: 's' } }] }],
        }),
      ]),
      labels,
      issues,
    );
    expect([...plans.keys()].sort()).toEqual([443, 80, 9000, 9001, 9002]);
    // protocol TLS: passthrough without tls or with PASSTHROUGH; SIMPLE/MUTUAL terminate.
    expect(plans.get(9000)!.protocol).toBe('TLS');
    expect(plans.get(9001)!.protocol).toBe('TLS');
    expect(plans.get(9002)!.protocol).toBe('TLS_TERMINATED');
    expect(plans.get(80)).toMatchObject({ protocol: 'HTTP', gateways: ['ns/a'] });
    expect(plans.get(80)!.servers[0]!.virtualServices.map((v) => v.key)).toEqual(['ns/v']);
    expect(plans.get(443)!.servers[0]!.tls).toMatchObject({ mode: 'MUTUAL', credentialName: 's' });
    expect(issues.map((i) => `${i.gateway}:${i.port}`).sort()).toEqual(['ns/a:8443', 'ns/a:9003', 'ns/b:80']);
  });
});

describe('gateway listen addresses', () => {
  const a = (address: string, family: 'IPv4' | 'IPv6' = 'IPv4') => ({ address, family });
  const ifaces = {
    lo: [a('127.0.0.1'), a('::1', 'IPv6')],
    eth0: [a('192.168.1.10'), a('192.168.1.11')],
    eth1: [a('10.0.0.5')],
  };
  it('chooses by nic, then includeIP, minus excludeIP', () => {
    expect(selectListenAddresses({ nic: '*', includeIP: '*', excludeIP: '' }, ifaces)).toEqual([
      '10.0.0.5',
      '127.0.0.1',
      '192.168.1.10',
      '192.168.1.11',
    ]);
    expect(selectListenAddresses({ nic: 'eth0', includeIP: '*', excludeIP: '192.168.1.11' }, ifaces)).toEqual(
      ['192.168.1.10'],
    );
    expect(
      selectListenAddresses({ nic: '*', includeIP: '10.0.0.0/8,127.0.0.1', excludeIP: '' }, ifaces),
    ).toEqual(['10.0.0.5', '127.0.0.1']);
    expect(
      selectListenAddresses({ nic: 'eth0,eth1', includeIP: '*', excludeIP: '192.168.0.0/16' }, ifaces),
    ).toEqual(['10.0.0.5']);
  });
});
