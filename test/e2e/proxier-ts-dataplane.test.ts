// Runs the shared data-plane suite against the pure-TS data plane (listeners in piscina workers).
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { TsDataplane } from '../../src/dataplane/ts/ts-dataplane.ts';
import { silentLogger } from '../../src/util/log.ts';
import { dataplaneSuite, TableBuilder, testService } from './dataplane-suite.ts';

dataplaneSuite('ts', {
  make: (o) =>
    new TsDataplane({
      log: silentLogger,
      workers: 2,
      portRange: '39100-39199',
      listenHost: '127.0.0.1',
      nodeName: 'suite-node',
      ...o,
    }),
  // IPv6 routes listen on ::1 when the plane's listenHost is 127.0.0.1.
  connect: (t) =>
    net.connect({
      host: t.clusterIP.includes(':') ? '::1' : '127.0.0.1',
      port: t.toPort,
      allowHalfOpen: true,
    }),
  sendUdp: (t, socket, data) => socket.send(data, t.toPort, t.clusterIP.includes(':') ? '::1' : '127.0.0.1'),
});

/** Listens on 127.0.0.1:`port` (0: the kernel picks); rejects on error (EADDRINUSE) instead of hanging. */
function listen(server: net.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/**
 * A squatter holding port P (picked by the kernel) where P+1 was free a moment ago. Fixed ports
 * lie in the ephemeral range: any listen(0) of a parallel test file can hold them.
 */
async function squatWithFreeNext(): Promise<{ squatter: net.Server; port: number }> {
  for (let i = 0; i < 20; i++) {
    const squatter = net.createServer();
    const port = await listen(squatter, 0);
    const probe = net.createServer();
    const free =
      port < 65535 &&
      (await listen(probe, port + 1).then(
        () => true,
        () => false,
      ));
    if (free) {
      await new Promise((r) => probe.close(r));
      return { squatter, port };
    }
    squatter.close();
  }
  throw new Error('no two adjacent free ports on 127.0.0.1');
}

describe('ts data plane: listener ports', () => {
  it('skips a port someone else holds and leaves a service unproxied when the range is exhausted', async () => {
    // The backend first: its port is then not the free one the squatter's neighbour probe finds.
    const backend = net.createServer((s) => s.end('ok\n'));
    const port = await listen(backend, 0);
    const { squatter, port: squatted } = await squatWithFreeNext();
    const dp = new TsDataplane({
      log: silentLogger,
      workers: 1,
      portRange: `${squatted}-${squatted + 1}`,
      listenHost: '127.0.0.1',
      nodeName: 'n',
      // Not what is tested: generous, so a worker starved under load still reaches the backend.
      connectTimeoutMs: 5_000,
      idleTimeoutMs: 0,
    });
    const tables = new TableBuilder();
    try {
      await dp.start();
      let targets = await dp.apply(
        ...tables.next([testService('one', '10.96.2.1', 80, [{ ip: '127.0.0.1', port }])]),
      );
      expect(targets.map((t) => t.toPort)).toEqual([squatted + 1]);
      const got = await new Promise<string>((resolve, reject) => {
        const s = net.connect(squatted + 1, '127.0.0.1');
        let out = '';
        s.on('data', (d) => {
          out += d;
        });
        s.on('error', reject);
        s.on('close', () => resolve(out));
      });
      expect(got).toBe('ok\n');
      targets = await dp.apply(
        ...tables.next([
          testService('one', '10.96.2.1', 80, [{ ip: '127.0.0.1', port }]),
          testService('two', '10.96.2.2', 80, [{ ip: '127.0.0.1', port }]),
        ]),
      );
      expect(targets.map((t) => t.clusterIP)).toEqual(['10.96.2.1']);
    } finally {
      await dp.stop();
      squatter.close();
      backend.close();
    }
  });
});
