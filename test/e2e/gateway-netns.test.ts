// The real `edgemesh gateway` inside a network namespace with two NICs (veth) and three addresses:
// modules.edgeGateway nic / includeIP / excludeIP decide which addresses get listeners (the seed's
// `curl <gateway-ip>:12345` flow on the chosen one, nothing on the others), plus a TCP server
// (tcp[] route) on the same addresses.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binPath, type RunningCli } from '../helpers/cli.ts';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('gateway multi-NIC e2e (network namespaces, dummy devices)');

const manifests = `
apiVersion: v1
kind: Service
metadata: { name: hostname-lb-svc, namespace: edgemesh-test }
spec:
  clusterIP: 10.96.0.77
  ports: [{ name: http-0, port: 12345, targetPort: 9376, protocol: TCP }]
---
apiVersion: v1
kind: Endpoints
metadata: { name: hostname-lb-svc, namespace: edgemesh-test }
subsets: [{ addresses: [{ ip: 127.0.0.1 }], ports: [{ name: http-0, port: 9376 }] }]
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: { name: edgemesh-gateway, namespace: edgemesh-test }
spec:
  selector: { kubeedge: edgemesh-gateway }
  servers:
    - port: { number: 12345, name: http-0, protocol: HTTP }
      hosts: ["*"]
    - port: { number: 12346, name: tcp-0, protocol: TCP }
      hosts: ["*"]
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: { name: other-selector, namespace: edgemesh-test }
spec:
  selector: { app: someone-else }
  servers: [{ port: { number: 12347, name: http-1, protocol: HTTP }, hosts: ["*"] }]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: { name: edgemesh-gateway-svc, namespace: edgemesh-test }
spec:
  hosts: ["*"]
  gateways: [edgemesh-gateway, other-selector]
  http:
    - match: [{ uri: { prefix: / } }]
      route: [{ destination: { host: hostname-lb-svc, port: { number: 12345 } } }]
  tcp:
    - match: [{ port: 12346 }]
      route: [{ destination: { host: hostname-lb-svc, port: { number: 12345 } } }]
`;

describe.skipIf(skip)('edgemesh gateway: multi-NIC include/exclude (netns)', () => {
  let ns: Netns;
  let dir = '';
  let gw: RunningCli | undefined;

  beforeAll(async () => {
    ns = await createNetns('gwn');
    for (const [dev, addrs] of [
      ['emgw0', ['10.77.0.1/24', '10.77.0.2/24']],
      ['emgw1', ['10.78.0.1/24']],
    ] as const) {
      // veth pairs with both ends in the namespace: the kernel has no dummy driver (notes/kernel.md).
      await ns.run('ip', 'link', 'add', dev, 'type', 'veth', 'peer', 'name', `${dev}p`);
      for (const a of addrs) await ns.run('ip', 'addr', 'add', a, 'dev', dev);
      await ns.run('ip', 'link', 'set', dev, 'up');
      await ns.run('ip', 'link', 'set', `${dev}p`, 'up');
    }
    await ns.backend('hostname-0', ['--http', '9376']);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-gwn-'));
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(path.join(dir, 'manifests/all.yaml'), manifests);
    fs.writeFileSync(
      path.join(dir, 'gw.yaml'),
      'modules:\n  edgeGateway:\n    nic: emgw0,emgw1\n    includeIP: 10.77.0.0/16,10.78.0.1\n    excludeIP: 10.77.0.2\n',
    );
    gw = ns.spawn(process.execPath, [
      binPath,
      'gateway',
      '--config',
      path.join(dir, 'gw.yaml'),
      '--manifests',
      path.join(dir, 'manifests'),
      '--state-dir',
      path.join(dir, 'state'),
    ]);
    await gw.waitFor(/10\.78\.0\.1:12346".*gateway listening/, 30_000);
    await gw.waitFor(/10\.77\.0\.1:12346".*gateway listening/, 30_000);
    await gw.waitFor(/10\.77\.0\.1:12345".*gateway listening/, 30_000);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await ns?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves the chosen addresses: curl <gateway-ip>:12345 → hostname backend', async () => {
    expect((await ns.curl('http://10.77.0.1:12345/')).stdout.trim()).toBe('hostname-0');
    expect((await ns.curl('http://10.78.0.1:12345/')).stdout.trim()).toBe('hostname-0');
  });

  it('listens nowhere else: excluded IP, loopback (other NIC), unselected Gateway', async () => {
    for (const url of ['http://10.77.0.2:12345/', 'http://127.0.0.1:12345/', 'http://10.77.0.1:12347/']) {
      const r = await ns.curl(url, 2);
      expect(r.code, url).toBe(7); // curl: connection refused
    }
    expect(gw!.output()).not.toMatch(/10\.77\.0\.2:/);
  });

  it('forwards TCP servers by tcp[] route', async () => {
    const r = await ns.tcp('10.77.0.1', 12346, 'GET / HTTP/1.0\r\n\r\n');
    expect(r.stdout).toMatch(/hostname-0/);
  });
});
