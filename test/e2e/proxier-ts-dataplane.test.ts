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
  connect: (t) => net.connect({ host: '127.0.0.1', port: t.toPort, allowHalfOpen: true }),
});

describe('ts data plane: listener ports', () => {
  it('skips a port someone else holds and leaves a service unproxied when the range is exhausted', async () => {
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(39200, '127.0.0.1', () => r()));
    const backend = net.createServer((s) => s.end('ok\n'));
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()));
    const port = (backend.address() as net.AddressInfo).port;
    const dp = new TsDataplane({
      log: silentLogger,
      workers: 1,
      portRange: '39200-39201',
      listenHost: '127.0.0.1',
      nodeName: 'n',
      connectTimeoutMs: 500,
      idleTimeoutMs: 0,
    });
    const tables = new TableBuilder();
    try {
      await dp.start();
      let targets = await dp.apply(
        ...tables.next([testService('one', '10.96.2.1', 80, [{ ip: '127.0.0.1', port }])]),
      );
      expect(targets.map((t) => t.toPort)).toEqual([39201]);
      const got = await new Promise<string>((resolve, reject) => {
        const s = net.connect(39201, '127.0.0.1');
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
