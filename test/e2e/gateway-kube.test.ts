// The real `edgemesh gateway` process fed by `--kube-api` (the apiserver fixture speaking the real
// list/watch protocol): a Gateway + VirtualService + Service + EndpointSlice present at start are
// served, and a VirtualService, an HTTPS Gateway and its Secret added at run time are served
// without restart (the gateway command watches Secrets).
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiObject, FakeApiServer } from '../helpers/apiserver.ts';
import { makeCerts } from '../helpers/certs.ts';
import { type RunningCli, startCli } from '../helpers/cli.ts';
import { eventually } from '../helpers/eventually.ts';
import { type HttpBackend, startHttpBackend } from '../helpers/http-backends.ts';
import { freePort } from '../helpers/ports.ts';

const NS = 'em-kube';

const service = (name: string): ApiObject => ({
  metadata: { name, namespace: NS },
  spec: { clusterIP: 'None', ports: [{ name: 'http-0', port: 12345, targetPort: 9376, protocol: 'TCP' }] },
});

const slice = (svc: string, b: HttpBackend): ApiObject => ({
  metadata: { name: `${svc}-1`, namespace: NS, labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'http-0', port: b.port, protocol: 'TCP' }],
  endpoints: [{ addresses: [b.ip], conditions: { ready: true } }],
});

const gatewayObj = (name: string, server: Record<string, unknown>): ApiObject => ({
  apiVersion: 'networking.istio.io/v1alpha3',
  kind: 'Gateway',
  metadata: { name, namespace: NS },
  spec: { selector: { kubeedge: 'edgemesh-gateway' }, servers: [server] },
});

const virtualService = (name: string, hosts: string[], gateways: string[], svc: string): ApiObject => ({
  apiVersion: 'networking.istio.io/v1alpha3',
  kind: 'VirtualService',
  metadata: { name, namespace: NS },
  spec: { hosts, gateways, http: [{ route: [{ destination: { host: svc, port: { number: 12345 } } }] }] },
});

/** One GET (http or https to 127.0.0.1); resolves status, body and the server certificate CN. */
function get(
  port: number,
  host: string,
  secure = false,
): Promise<{ status: number; body: string; cn: string }> {
  return new Promise((resolve, reject) => {
    const opts = { host: '127.0.0.1', port, path: '/', headers: { host }, agent: false };
    const onRes = (res: http.IncomingMessage) => {
      const cn = secure ? String((res.socket as TLSSocket).getPeerCertificate().subject?.CN ?? '') : '';
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim(), cn }));
    };
    const req = secure
      ? https.get({ ...opts, servername: host, rejectUnauthorized: false }, onRes)
      : http.get(opts, onRes);
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

describe('edgemesh gateway --kube-api (apiserver fixture)', () => {
  const api = new FakeApiServer();
  let dir = '';
  let gw: RunningCli | undefined;
  let b1: HttpBackend;
  let b2: HttpBackend;
  let httpPort = 0;
  let httpsPort = 0;

  beforeAll(async () => {
    b1 = await startHttpBackend('kube-hostname-1', '127.0.0.21');
    b2 = await startHttpBackend('kube-hostname-2', '127.0.0.22');
    httpPort = await freePort();
    httpsPort = await freePort();
    await api.start();
    api.seed('services', [service('hostname-svc'), service('second-svc')]);
    api.seed('endpointslices', [slice('hostname-svc', b1), slice('second-svc', b2)]);
    api.seed('gateways', [
      gatewayObj('edgemesh-gateway', {
        port: { number: httpPort, name: 'http-0', protocol: 'HTTP' },
        hosts: ['*'],
      }),
    ]);
    api.seed('virtualservices', [
      virtualService('hostname-vs', ['first.test'], ['edgemesh-gateway'], 'hostname-svc'),
    ]);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-gwkube-'));
    fs.mkdirSync(path.join(dir, 'certs'));
    makeCerts(path.join(dir, 'certs'), 'kube');
    const metricsPort = await freePort();
    fs.writeFileSync(
      path.join(dir, 'gw.yaml'),
      `metricsListen: 127.0.0.1:${metricsPort}\nmodules:\n  edgeGateway:\n    includeIP: 127.0.0.1\n`,
    );
    gw = startCli([
      'gateway',
      '--config',
      path.join(dir, 'gw.yaml'),
      '--kube-api',
      api.url,
      '--state-dir',
      path.join(dir, 'state'),
      '--node-name',
      'gw-node',
    ]);
    await gw.waitFor(new RegExp(`127\\.0\\.0\\.1:${httpPort}".*gateway listening`), 20_000);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await api.stop();
    await b1?.kill();
    await b2?.kill();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves the Gateway and VirtualService listed from the API server', async () => {
    expect(await get(httpPort, 'first.test')).toMatchObject({ status: 200, body: 'kube-hostname-1' });
    expect((await get(httpPort, 'second.test')).status).toBe(404);
    // The gateway watches Secrets (it is the edge gateway even without edgeGateway.enable in its config).
    expect(api.openWatches('secrets')).toBeGreaterThan(0);
  });

  it('follows a VirtualService, a Gateway and a Secret added through the API at run time', async () => {
    // A second VirtualService on the running Gateway: a new host, to the second service.
    api.upsert(
      'virtualservices',
      virtualService('second-vs', ['second.test'], ['edgemesh-gateway'], 'second-svc'),
    );
    await eventually(async () => (await get(httpPort, 'second.test')).body === 'kube-hostname-2');
    expect((await get(httpPort, 'first.test')).body).toBe('kube-hostname-1');
    // A catch-all VirtualService whose name sorts first: it serves unknown hosts, but the more
    // specific VirtualServices keep their hosts (the most specific host wins, as in Istio).
    api.upsert('virtualservices', virtualService('aaa-catch-all', ['*'], ['edgemesh-gateway'], 'second-svc'));
    await eventually(async () => (await get(httpPort, 'other.test')).body === 'kube-hostname-2');
    expect((await get(httpPort, 'first.test')).body).toBe('kube-hostname-1');
    expect((await get(httpPort, 'second.test')).body).toBe('kube-hostname-2');
    // An HTTPS Gateway whose certificate comes from a Secret that arrives through the watch.
    const b64 = (f: string) => fs.readFileSync(path.join(dir, 'certs', f)).toString('base64');
    api.upsert('secrets', {
      metadata: { name: 'kube-cert', namespace: NS },
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': b64('server.crt'), 'tls.key': b64('server.key') },
    });
    api.upsert(
      'gateways',
      gatewayObj('tls-gateway', {
        port: { number: httpsPort, name: 'https-0', protocol: 'HTTPS' },
        hosts: ['*'],
        tls: { mode: 'SIMPLE', credentialName: 'kube-cert' },
      }),
    );
    api.upsert('virtualservices', virtualService('tls-vs', ['*'], ['tls-gateway'], 'second-svc'));
    await gw!.waitFor(new RegExp(`127\\.0\\.0\\.1:${httpsPort}".*gateway listening`));
    expect(await get(httpsPort, 'secure.test', true)).toEqual({
      status: 200,
      body: 'kube-hostname-2',
      cn: 'kube-server',
    });
  });
});
