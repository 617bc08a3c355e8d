// Runs the shared data-plane suite against the pure-TS data plane (listeners in piscina workers).
import net from 'node:net';
import { TsDataplane } from '../../src/dataplane/ts/ts-dataplane.ts';
import { silentLogger } from '../../src/util/log.ts';
import { dataplaneSuite } from './dataplane-suite.ts';

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
