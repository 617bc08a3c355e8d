// Endpoint preference with the tunnel: same node, then nodes reached directly, then nodes behind a
// relay; a lower tier is used only when every endpoint of the higher ones is gone.
import { describe, expect, it } from 'vitest';
import type { Endpoint, ServiceEntry, ServicePortEntry } from '../../src/controller/types.ts';
import { routableEndpoints } from '../../src/dataplane/native/route-encoder.ts';
import { ServiceBalancer } from '../../src/lb/balancer.ts';

const ep = (ip: string, nodeName: string, tunnelPath?: 'direct' | 'relay'): Endpoint => ({
  ip,
  port: 80,
  ready: true,
  serving: true,
  terminating: false,
  nodeName,
  ...(tunnelPath ? { tunnelPath } : {}),
});

const portOf = (endpoints: Endpoint[]): ServicePortEntry => ({
  name: 'tcp',
  port: 80,
  protocol: 'TCP',
  appProtocol: 'tcp',
  targetPort: 80,
  endpoints,
});

function balancer(endpoints: Endpoint[]): ServiceBalancer {
  const port: ServicePortEntry = {
    name: 'tcp',
    port: 80,
    protocol: 'TCP',
    appProtocol: 'tcp',
    targetPort: 80,
    endpoints,
  };
  const svc: ServiceEntry = {
    namespace: 'ns',
    name: 's',
    key: 'ns/s',
    clusterIPs: ['10.96.0.1'],
    headless: false,
    type: 'ClusterIP',
    ports: [port],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
  return new ServiceBalancer(svc, port, { nodeName: 'me' });
}

const picks = (b: ServiceBalancer, n = 12) =>
  new Set(Array.from({ length: n }, () => b.pick({ clientIp: '1.1.1.1' })?.ip));

describe('tunnel tiers in the balancer', () => {
  it('prefers this node, then direct peers, then relayed peers', () => {
    const local = ep('127.0.0.1', 'me');
    const direct = ep('127.0.0.2', 'lan-peer', 'direct');
    const relayed = ep('127.0.0.3', 'far-peer', 'relay');
    expect(picks(balancer([relayed, direct, local]))).toEqual(new Set(['127.0.0.1']));
    expect(picks(balancer([relayed, direct]))).toEqual(new Set(['127.0.0.2']));
    expect(picks(balancer([relayed, ep('127.0.0.4', 'far-2', 'relay')]))).toEqual(
      new Set(['127.0.0.3', '127.0.0.4']),
    );
  });

  it('endpoints without a tunnel path rank with the direct ones (no tunnel: nothing changes)', () => {
    expect(picks(balancer([ep('10.0.0.1', 'other'), ep('10.0.0.2', 'peer', 'direct')]))).toEqual(
      new Set(['10.0.0.1', '10.0.0.2']),
    );
  });
});

describe('tunnel tiers in the native route', () => {
  const ips = (eps: Endpoint[]) => routableEndpoints(portOf(eps)).map((e) => e.ip);

  it('carries only the best non-empty tier: untunneled (this node), then direct, then relayed', () => {
    const local = ep('127.0.0.1', 'me');
    const direct = ep('127.0.0.2', 'lan-peer', 'direct');
    const relayed = ep('127.0.0.3', 'far-peer', 'relay');
    const relayed2 = ep('127.0.0.4', 'far-2', 'relay');
    expect(ips([relayed, direct, local])).toEqual(['127.0.0.1']);
    expect(ips([relayed, direct, ep('127.0.0.5', 'lan-2', 'direct')])).toEqual(['127.0.0.2', '127.0.0.5']);
    expect(ips([relayed, relayed2])).toEqual(['127.0.0.3', '127.0.0.4']);
  });

  it('ready before terminating: a ready relayed endpoint beats a terminating local one', () => {
    const terminatingLocal: Endpoint = { ...ep('127.0.0.1', 'me'), ready: false, terminating: true };
    const relayed = ep('127.0.0.3', 'far-peer', 'relay');
    expect(ips([terminatingLocal, relayed])).toEqual(['127.0.0.3']);
    // With nothing ready, the serving-terminating ones are tiered the same way.
    const terminatingDirect: Endpoint = {
      ...ep('127.0.0.2', 'p', 'direct'),
      ready: false,
      terminating: true,
    };
    const terminatingRelay: Endpoint = { ...relayed, ready: false, terminating: true };
    expect(ips([terminatingRelay, terminatingDirect])).toEqual(['127.0.0.2']);
  });

  it('with no tunnel tags every ready endpoint is routed (no tunnel: nothing changes)', () => {
    expect(ips([ep('10.0.0.1', 'a'), ep('10.0.0.2', 'b')])).toEqual(['10.0.0.1', '10.0.0.2']);
  });
});
