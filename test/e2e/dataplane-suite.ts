// The one data-plane test suite, run against every implementation (TS now; the native plane adds
// its own run). Backends are real servers on 127.0.0.1; `connect` says how a client reaches a
// target (TS: straight to the listener port; native: through its interception).
import dgram from 'node:dgram';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Endpoint, ServiceEntry, ServiceTable, ServiceTableDiff } from '../../src/controller/types.ts';
import type { Dataplane } from '../../src/dataplane/dataplane.ts';
import type { InterceptTarget } from '../../src/proxier/interceptor.ts';
import { stalledListener } from '../helpers/stalled-listener.ts';

/** How one implementation plugs into the suite. */
export interface DataplaneSuiteImpl {
  /** A fresh, not yet started data plane with these timeouts. */
  make(options: { connectTimeoutMs: number; idleTimeoutMs: number; handlerModules: string[] }): Dataplane;
  /** Opens a client connection to `target` as an intercepted client would. */
  connect(target: InterceptTarget): net.Socket;
  /** Handler ports reach the handler by fd hand-off (the `handed_off` counter must move). */
  handoff?: boolean;
  /** Sends one datagram to `target` as an intercepted client would (planes that serve UDP). */
  sendUdp?(target: InterceptTarget, socket: dgram.Socket, data: string): void;
}

/** A ServiceEntry for tests (one TCP port). */
export function testService(
  name: string,
  clusterIP: string,
  port: number,
  endpoints: Array<{ ip: string; port: number }>,
  appProtocol: ServiceEntry['ports'][number]['appProtocol'] = 'tcp',
): ServiceEntry {
  const eps: Endpoint[] = endpoints.map((e) => ({ ...e, ready: true, serving: true, terminating: false }));
  return {
    namespace: 'suite',
    name,
    key: `suite/${name}`,
    clusterIPs: [clusterIP],
    headless: false,
    type: 'ClusterIP',
    ports: [{ name: appProtocol, port, protocol: 'TCP', appProtocol, targetPort: port, endpoints: eps }],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
}

/** Builds snapshot tables with increasing generations and the diff to the previous one. */
export class TableBuilder {
  private generation = 0;
  private previous = new Map<string, ServiceEntry>();

  next(services: ServiceEntry[]): [ServiceTable, ServiceTableDiff] {
    const map = new Map(services.map((s) => [s.key, s]));
    const diff: ServiceTableDiff = {
      added: [...map.keys()].filter((k) => !this.previous.has(k)),
      updated: [...map.keys()].filter((k) => this.previous.has(k) && this.previous.get(k) !== map.get(k)),
      removed: [...this.previous.keys()].filter((k) => !map.has(k)),
      istioChanged: false,
    };
    this.previous = map;
    const table: ServiceTable = {
      generation: ++this.generation,
      services: map,
      gateways: new Map(),
      virtualServices: new Map(),
      destinationRules: new Map(),
      secrets: new Map(),
    };
    return [table, diff];
  }
}

/** A started backend server on 127.0.0.1 (or `host`, e.g. ::1) and its port. */
async function server(
  onConn: (s: net.Socket) => void,
  host = '127.0.0.1',
): Promise<{ srv: net.Server; port: number }> {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    onConn(s);
  });
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  return { srv, port: (srv.address() as net.AddressInfo).port };
}

/** Sends `data`, half-closes, and collects everything until the peer closes. */
function roundTrip(socket: net.Socket, data: Buffer | string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    socket.on('connect', () => socket.end(data));
  });
}

/** Registers the suite for one implementation. */
export function dataplaneSuite(label: string, impl: DataplaneSuiteImpl): void {
  describe(`data plane suite: ${label}`, () => {
    let dp: Dataplane;
    const tables = new TableBuilder();
    const servers: net.Server[] = [];
    let echo: number;
    /** The echo server on ::1. */
    let echo6: number;
    let named: (name: string) => Promise<number>;
    let closedPort: number;
    const targetOf = (targets: readonly InterceptTarget[], clusterIP: string) => {
      const t = targets.find((x) => x.clusterIP === clusterIP);
      if (!t) throw new Error(`no target for ${clusterIP} in ${JSON.stringify(targets)}`);
      return t;
    };

    beforeAll(async () => {
      const e = await server((s) => s.pipe(s));
      servers.push(e.srv);
      echo = e.port;
      const e6 = await server((s) => s.pipe(s), '::1');
      servers.push(e6.srv);
      echo6 = e6.port;
      named = async (name) => {
        const n = await server((s) => s.end(`${name}\n`));
        servers.push(n.srv);
        return n.port;
      };
      const c = await server(() => {});
      closedPort = c.port;
      await new Promise<void>((r) => c.srv.close(() => r()));
      dp = impl.make({
        connectTimeoutMs: 500,
        idleTimeoutMs: 300,
        handlerModules: [new URL('../helpers/protocol-handler-fixture.mjs', import.meta.url).href],
      });
      await dp.start();
    });
    afterAll(async () => {
      await dp?.stop();
      for (const s of servers) s.close();
    });

    it('forwards bytes both ways, byte-exact, with half-close passed on', async () => {
      const targets = await dp.apply(
        ...tables.next([testService('echo', '10.96.1.1', 2701, [{ ip: '127.0.0.1', port: echo }])]),
      );
      const t = targetOf(targets, '10.96.1.1');
      expect(t.port).toBe(2701);
      const payload = Buffer.alloc(4 << 20);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 255;
      // The echo server answers only after it read everything, so this also proves backpressure
      // and that our FIN reached it (its pipe ends its side after our end()).
      const back = await roundTrip(impl.connect(t), payload);
      expect(back.length).toBe(payload.length);
      expect(back.equals(payload)).toBe(true);
      expect(dp.counters().connections_total).toBeGreaterThanOrEqual(1);
    });

    it('retries a refused endpoint on another before the client sees an error', async () => {
      const good = await named('good');
      const targets = await dp.apply(
        ...tables.next([
          testService('retry', '10.96.1.2', 80, [
            { ip: '127.0.0.1', port: closedPort },
            { ip: '127.0.0.1', port: good },
          ]),
        ]),
      );
      const t = targetOf(targets, '10.96.1.2');
      for (let i = 0; i < 4; i++) {
        expect((await roundTrip(impl.connect(t), '')).toString()).toBe('good\n');
      }
      expect(dp.counters().connect_errors).toBeGreaterThan(0);
    });

    it('gives up on an endpoint that does not answer within connectTimeoutMs and uses another', async () => {
      const stalled = await stalledListener();
      try {
        const good = await named('after-timeout');
        const targets = await dp.apply(
          ...tables.next([
            testService('slow', '10.96.1.7', 80, [
              { ip: '127.0.0.1', port: stalled.port },
              { ip: '127.0.0.1', port: good },
            ]),
          ]),
        );
        const before = dp.counters().connect_timeouts ?? 0;
        const t = targetOf(targets, '10.96.1.7');
        for (let i = 0; i < 2; i++) {
          expect((await roundTrip(impl.connect(t), '')).toString()).toBe('after-timeout\n');
        }
        expect(dp.counters().connect_timeouts).toBeGreaterThan(before);
      } finally {
        stalled.close();
      }
    });

    it('follows endpoint changes and drops removed services', async () => {
      const a = await named('a');
      const b = await named('b');
      let targets = await dp.apply(
        ...tables.next([testService('mv', '10.96.1.3', 80, [{ ip: '127.0.0.1', port: a }])]),
      );
      const t = targetOf(targets, '10.96.1.3');
      expect((await roundTrip(impl.connect(t), '')).toString()).toBe('a\n');
      targets = await dp.apply(
        ...tables.next([testService('mv', '10.96.1.3', 80, [{ ip: '127.0.0.1', port: b }])]),
      );
      expect(targetOf(targets, '10.96.1.3').toPort).toBe(t.toPort);
      expect((await roundTrip(impl.connect(t), '')).toString()).toBe('b\n');
      targets = await dp.apply(...tables.next([]));
      expect(targets).toEqual([]);
    });

    it('closes the client at once when no endpoint exists', async () => {
      const targets = await dp.apply(...tables.next([testService('empty', '10.96.1.4', 80, [])]));
      const s = impl.connect(targetOf(targets, '10.96.1.4'));
      const got = await roundTrip(s, 'x').catch((e: NodeJS.ErrnoException) => e.code);
      expect(got === 'ECONNRESET' || (Buffer.isBuffer(got) && got.length === 0)).toBe(true);
      expect(dp.counters().no_endpoint).toBeGreaterThan(0);
    });

    it('closes connections idle longer than idleTimeoutMs', async () => {
      const targets = await dp.apply(
        ...tables.next([testService('idle', '10.96.1.5', 80, [{ ip: '127.0.0.1', port: echo }])]),
      );
      const s = impl.connect(targetOf(targets, '10.96.1.5'));
      const t0 = Date.now();
      await new Promise<void>((resolve) => {
        s.on('error', () => {});
        // The client allows half-open: the plane's close shows up as 'end' (FIN) first.
        s.on('end', () => resolve());
        s.on('close', () => resolve());
      });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
      expect(dp.counters().idle_timeouts).toBeGreaterThan(0);
    });

    it('IPv6: a dual-stack service gets a target per ClusterIP, each reaching only endpoints of its family', async () => {
      const v4 = await named('v4');
      const v6srv = await server((s) => s.end('v6\n'), '::1');
      servers.push(v6srv.srv);
      const dual: ServiceEntry = {
        ...testService('dual', '10.96.1.8', 80, [
          { ip: '127.0.0.1', port: v4 },
          { ip: '::1', port: v6srv.port },
        ]),
        clusterIPs: ['10.96.1.8', 'fd00:96::8'],
      };
      const single6 = testService('only6', 'fd00:96::9', 443, [{ ip: '::1', port: echo6 }]);
      const targets = await dp.apply(...tables.next([dual, single6]));
      const t4 = targetOf(targets, '10.96.1.8');
      const t6 = targetOf(targets, 'fd00:96::8');
      expect(t6.port).toBe(80);
      for (let i = 0; i < 4; i++) {
        expect((await roundTrip(impl.connect(t6), '')).toString()).toBe('v6\n');
        expect((await roundTrip(impl.connect(t4), '')).toString()).toBe('v4\n');
      }
      const payload = Buffer.alloc(1 << 20, 0x5a);
      const back = await roundTrip(impl.connect(targetOf(targets, 'fd00:96::9')), payload);
      expect(back.equals(payload)).toBe(true);
    });

    // Registered only for planes that serve UDP (sendUdp): the native L4 plane is TCP only.
    const sendUdp = impl.sendUdp;
    if (sendUdp)
      it('IPv6: UDP to an IPv6 ClusterIP reaches an IPv6 endpoint and the answer comes back', async () => {
        const backend = dgram.createSocket('udp6');
        backend.on('message', (m, r) => backend.send(`udp6:${m.toString()}`, r.port, r.address));
        await new Promise<void>((r) => backend.bind(0, '::1', () => r()));
        const client = dgram.createSocket('udp6');
        try {
          const svc = testService('dns6', 'fd00:96::35', 53, [{ ip: '::1', port: backend.address().port }]);
          svc.ports[0]!.protocol = 'UDP';
          const targets = await dp.apply(...tables.next([svc]));
          const t = targetOf(targets, 'fd00:96::35');
          expect(t.protocol).toBe('UDP');
          const answer = new Promise<string>((resolve) =>
            client.once('message', (m) => resolve(m.toString())),
          );
          sendUdp(t, client, 'ping');
          expect(await answer).toBe('udp6:ping');
        } finally {
          client.close();
          backend.close();
        }
      });

    it('hands ports with a registered protocol handler to that handler', async () => {
      const targets = await dp.apply(
        ...tables.next([testService('web', '10.96.1.6', 8080, [{ ip: '127.0.0.1', port: echo }], 'http')]),
      );
      const got = await roundTrip(impl.connect(targetOf(targets, '10.96.1.6')), '');
      expect(got.toString()).toBe('handled suite/web:8080\n');
      if (impl.handoff) expect(dp.counters().handed_off).toBeGreaterThan(0);
    });
  });
}
