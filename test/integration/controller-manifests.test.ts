// The manifests source with real files: initial scan, live edits/new files/deletions, a broken
// file reported by path and line with its last good content kept, and the real agent process
// serving a folder (what the proxier/data-plane e2e tests rely on).
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config/defaults.ts';
import { Controller } from '../../src/controller/controller.ts';
import type { ServiceTable } from '../../src/controller/types.ts';
import { startCli } from '../helpers/cli.ts';
import { freePort } from '../helpers/ports.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function tmpDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'em-man-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const webYaml = (podIP: string) => `# the web service and its pods
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  clusterIP: 10.96.10.1
  selector: { app: web }
  ports:
    - name: http-main
      port: 80
      targetPort: web
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: demo
  labels: { app: web }
spec:
  nodeName: edge-1
  containers:
    - name: web
      ports: [{ name: web, containerPort: 8080 }]
status:
  podIP: ${podIP}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec: {}
`;

const echoYaml = `apiVersion: v1
kind: Service
metadata: { name: echo, namespace: demo }
spec:
  clusterIP: 10.96.10.2
  ports: [{ name: tcp, port: 2701 }]
---
apiVersion: v1
kind: Endpoints
metadata: { name: echo, namespace: demo }
subsets:
  - addresses: [{ ip: 10.0.0.9 }]
    ports: [{ name: tcp, port: 2701 }]
`;

function makeController(dir: string) {
  const config = { ...defaultConfig(), manifests: [dir] };
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => lines.push(s) });
  const registry = new Registry();
  const controller = new Controller({
    config,
    log,
    registry,
    minSyncIntervalMs: 10,
    manifests: { debounceMs: 20, pollMs: 300 },
  });
  cleanups.push(() => controller.stop());
  const until = async (pred: (t: ServiceTable) => boolean, what: string) => {
    const deadline = Date.now() + 8_000;
    while (!(controller.current().generation > 0 && pred(controller.current()))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}\n${lines.join('')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return controller.current();
  };
  return { controller, until, lines, registry };
}

describe('manifests source', () => {
  it('serves a folder and applies edits, new files, broken files and deletions live', async () => {
    const dir = tmpDir();
    mkdirSync(path.join(dir, 'sub'));
    writeFileSync(path.join(dir, 'web.yaml'), webYaml('10.0.0.1'));
    const { controller, until, lines, registry } = makeController(dir);
    await controller.start();
    await controller.whenSynced();
    let t = controller.current();
    const web = t.services.get('demo/web')!;
    expect(web.clusterIPs).toEqual(['10.96.10.1']);
    expect(web.ports[0]).toMatchObject({ appProtocol: 'http', targetPort: 'web' });
    expect(web.ports[0].endpoints.map((e) => `${e.ip}:${e.port}@${e.nodeName}`)).toEqual([
      '10.0.0.1:8080@edge-1',
    ]);
    expect(t.services.size).toBe(1); // the Deployment is ignored

    writeFileSync(path.join(dir, 'web.yaml'), webYaml('10.0.0.2'));
    await until((x) => x.services.get('demo/web')?.ports[0].endpoints[0]?.ip === '10.0.0.2', 'edit');

    const echoFile = path.join(dir, 'sub', 'echo.yml');
    writeFileSync(echoFile, echoYaml);
    t = await until((x) => x.services.has('demo/echo'), 'new file in a subfolder');
    expect(t.services.get('demo/echo')!.ports[0].endpoints.map((e) => e.ip)).toEqual(['10.0.0.9']);

    // Broken YAML: reported with path and line; the last good objects stay.
    writeFileSync(echoFile, `${echoYaml}---\nkind: Service\nmetadata: [unclosed\n`);
    const deadline = Date.now() + 5_000;
    while (!lines.some((l) => l.includes('EDGEMESH_ERR_MANIFEST'))) {
      if (Date.now() > deadline) throw new Error('broken file not reported');
      await new Promise((r) => setTimeout(r, 20));
    }
    const report = JSON.parse(lines.find((l) => l.includes('EDGEMESH_ERR_MANIFEST'))!);
    expect(report.msg).toMatch(new RegExp(`^${echoFile.replace(/[.]/g, '\\.')}:1[4-7]:\\d+: `));
    expect(controller.current().services.has('demo/echo')).toBe(true);
    const errors = (await registry.getSingleMetric('edgemesh_manifest_errors_total')?.get())?.values[0]
      ?.value;
    expect(errors).toBe(1);

    // An invalid object names the file, the line of its document and the bad key.
    writeFileSync(echoFile, echoYaml.replace('port: 2701 }]', 'port: abc }]'));
    await until(() => lines.some((l) => l.includes('spec.ports[0].port')), 'invalid port reported');
    const bad = JSON.parse(lines.filter((l) => l.includes('spec.ports[0].port')).at(-1)!);
    expect(bad.msg).toContain(`${echoFile}:1:1: Service demo/echo: spec.ports[0].port: expected 1-65535`);

    writeFileSync(echoFile, echoYaml.replace('10.0.0.9', '10.0.0.10'));
    await until((x) => x.services.get('demo/echo')?.ports[0].endpoints[0]?.ip === '10.0.0.10', 'fixed file');

    unlinkSync(echoFile);
    t = await until((x) => !x.services.has('demo/echo'), 'deleted file');
    expect([...t.services.keys()]).toEqual(['demo/web']);
  });

  it('retries a consumer that failed; ready only once every consumer applied the snapshot', async () => {
    const dir = tmpDir();
    writeFileSync(path.join(dir, 'web.yaml'), webYaml('10.0.0.1'));
    const config = { ...defaultConfig(), manifests: [dir] };
    const registry = new Registry();
    const controller = new Controller({
      config,
      log: pino({ level: 'silent' }),
      registry,
      minSyncIntervalMs: 10,
      retryIntervalMs: 50,
    });
    cleanups.push(() => controller.stop());
    const order: string[] = [];
    let failures = 1;
    controller.subscribe({
      name: 'flaky',
      apply: async (table, diff) => {
        order.push(`flaky:${table.generation}:${diff.added.join(',')}`);
        if (failures-- > 0) throw new Error('not yet');
      },
    });
    controller.subscribe({
      name: 'second',
      apply: async (table) => {
        order.push(`second:${table.generation}`);
      },
    });
    await controller.start();
    await controller.whenSynced();
    expect(controller.ready()).toBe(true);
    // The failed consumer gets the same table again with the full diff; the other one got it once.
    expect(order).toEqual(['flaky:1:demo/web', 'second:1', 'flaky:1:demo/web']);
    const errors = (await registry.getSingleMetric('edgemesh_consumer_apply_errors_total')?.get())?.values[0];
    expect(errors).toMatchObject({ value: 1, labels: { consumer: 'flaky' } });
  });

  it('runs in the real agent process: /status lists the services, /readyz after the first snapshot', async () => {
    const dir = tmpDir();
    writeFileSync(path.join(dir, 'web.yaml'), webYaml('10.0.0.1'));
    const metrics = `127.0.0.1:${await freePort()}`;
    const agent = startCli([
      'agent',
      '--manifests',
      dir,
      '--intercept',
      'none',
      '--dataplane',
      'ts',
      '--no-dns',
      '--proxy-port',
      String(await freePort()),
      '--metrics-listen',
      metrics,
      '--state-dir',
      path.join(dir, '.state'),
    ]);
    cleanups.push(async () => {
      await agent.stop();
    });
    await agent.waitFor(/agent started/);
    const status = async () =>
      (await (await fetch(`http://${metrics}/status`)).json()) as {
        services: { key: string; ports: { endpoints: string[] }[] }[];
      };
    const deadline = Date.now() + 10_000;
    let s = await status();
    while (!s.services.some((x) => x.key === 'demo/web')) {
      if (Date.now() > deadline) throw new Error(`no service in /status: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 50));
      s = await status();
    }
    expect((await fetch(`http://${metrics}/readyz`)).status).toBe(200);
    expect(s.services.find((x) => x.key === 'demo/web')!.ports[0].endpoints).toEqual(['10.0.0.1:8080']);
    writeFileSync(path.join(dir, 'web.yaml'), webYaml('10.0.0.3'));
    while (!(await status()).services.some((x) => x.ports[0]?.endpoints[0] === '10.0.0.3:8080')) {
      if (Date.now() > deadline) throw new Error('edit not served by the agent');
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await agent.stop()).toBe(0);
  });
});
