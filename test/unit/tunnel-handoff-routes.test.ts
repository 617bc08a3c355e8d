// Which native routes hand the client fd to the tunnel (issue 12): a port whose routable endpoints
// are tunnel ports this process serves gets ROUTE_FLAG_TUNNEL (bit 2 of the flags byte); a port
// with this node's own endpoints, or a tunnel port nobody here takes (hand-off off, port closed),
// keeps the plane's own connect.
import { describe, expect, it } from 'vitest';
import { EMPTY_TABLE, type Endpoint, type ServiceEntry } from '../../src/controller/types.ts';
import {
  encodeRoutes,
  ROUTE_FLAG_TUNNEL,
  ROUTE_FLAGS_OFFSET,
  ROUTE_HEADER_SIZE,
  ServiceSlots,
  tableRoutes,
} from '../../src/dataplane/native/route-encoder.ts';
import { hasLoopbackTaker, registerLoopbackTaker, takeLoopbackFd } from '../../src/util/loopback-takers.ts';

const ep = (ip: string, port: number, tunnelPath?: 'direct' | 'relay'): Endpoint => ({
  ip,
  port,
  ready: true,
  serving: true,
  terminating: false,
  nodeName: 'n',
  ...(tunnelPath ? { tunnelPath } : {}),
});

function tableOf(endpoints: Endpoint[]) {
  const svc: ServiceEntry = {
    namespace: 'ns',
    name: 's',
    key: 'ns/s',
    clusterIPs: ['10.96.0.9'],
    headless: false,
    type: 'ClusterIP',
    ports: [{ name: 'tcp', port: 80, protocol: 'TCP', appProtocol: 'tcp', targetPort: 80, endpoints }],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
  return { ...EMPTY_TABLE, services: new Map([[svc.key, svc]]) };
}

const routeOf = (endpoints: Endpoint[]) => tableRoutes(tableOf(endpoints), new ServiceSlots(4))[0]!;

describe('tunnel hand-off routes', () => {
  it('flags a port whose endpoints are tunnel ports with a taker, and only then', () => {
    const unregister = [registerLoopbackTaker(41001, () => {}), registerLoopbackTaker(41002, () => {})];
    try {
      const tunnelled = routeOf([ep('127.0.0.1', 41001, 'relay'), ep('127.0.0.1', 41002, 'relay')]);
      expect(tunnelled.tunnel).toBe(true);
      const buf = encodeRoutes(1, [tunnelled]);
      expect(buf.readUInt8(ROUTE_HEADER_SIZE + ROUTE_FLAGS_OFFSET) & ROUTE_FLAG_TUNNEL).toBe(
        ROUTE_FLAG_TUNNEL,
      );
      // A port with one endpoint nobody here takes: the plane connects as before.
      expect(routeOf([ep('127.0.0.1', 41001, 'relay'), ep('127.0.0.1', 41003, 'relay')]).tunnel).toBe(false);
      // This node's own endpoint wins the tier: not a tunnel route.
      expect(routeOf([ep('10.1.0.2', 80), ep('127.0.0.1', 41001, 'direct')]).tunnel).toBe(false);
      expect(
        encodeRoutes(1, [routeOf([ep('10.1.0.2', 80)])]).readUInt8(ROUTE_HEADER_SIZE + ROUTE_FLAGS_OFFSET),
      ).toBe(0);
    } finally {
      for (const u of unregister) u();
    }
    expect(hasLoopbackTaker(41001)).toBe(false);
    expect(routeOf([ep('127.0.0.1', 41001, 'relay')]).tunnel).toBe(false);
  });

  it('takeLoopbackFd leaves the fd alone when nobody owns the port', () => {
    // (The real hand-off of a native fd is test/integration/tunnel-handoff.test.ts.)
    expect(takeLoopbackFd(45999, 1_000_000)).toBe(false);
  });
});
