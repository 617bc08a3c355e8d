// The real `edgemesh agent` in a throwaway network namespace (root): it creates bridge edgemesh0
// with 169.254.96.16, answers cluster names from --manifests there, forwards other names to the
// namespace's resolv.conf nameserver (dnsmasq started here), follows resolv.conf edits, and
// removes the bridge on exit.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('dns agent e2e (network namespaces, bridge device)');

const MANIFESTS = `
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  clusterIP: 10.96.7.7
  selector: { app: web }
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: TCP }
---
apiVersion: v1
kind: Pod
metadata: { name: web-0, namespace: default, labels: { app: web } }
spec:
  containers: [{ name: web, image: x, ports: [{ containerPort: 8080 }] }]
status:
  podIP: 10.244.0.20
  phase: Running
  conditions: [{ type: Ready, status: "True" }]
`;

describe.skipIf(skip)('edgemesh agent DNS in a network namespace', () => {
  let ns: Netns;
  let dir: string;

  beforeAll(async () => {
    ns = await createNetns('dns');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-dns-e2e-'));
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(path.join(dir, 'manifests', 'web.yaml'), MANIFESTS);
    // A real upstream inside the namespace, and resolv.conf pointing first at nothing.
    await ns.run('ip', 'addr', 'add', '127.0.0.53/8', 'dev', 'lo');
    const dnsmasq = ns.spawn('dnsmasq', [
      '--keep-in-foreground',
      '--no-resolv',
      '--no-hosts',
      '--listen-address=127.0.0.53',
      '--bind-interfaces',
      '--address=/example.test/192.0.2.9',
      '--log-facility=-',
      '--pid-file=',
      '--user=root',
    ]);
    await dnsmasq.waitFor(/started/, 10_000);
    ns.writeResolvConf('127.0.0.99');
  });

  afterAll(async () => {
    await ns?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves cluster names on 169.254.96.16 (bridge edgemesh0), forwards the rest, cleans up', async () => {
    const agent = ns.agent([
      '--manifests',
      path.join(dir, 'manifests'),
      '--state-dir',
      path.join(dir, 'state'),
      '--intercept',
      'none',
      '--log-level',
      'debug',
    ]);
    try {
      await agent.waitFor(/dns: serving/, 20_000);
      const addr = await ns.run('ip', '-o', 'addr', 'show', 'dev', 'edgemesh0');
      expect(addr).toContain('169.254.96.16/32');

      // Cluster names appear once the first snapshot is applied.
      let answer = '';
      for (let i = 0; i < 50 && answer !== '10.96.7.7'; i++) {
        answer = (
          await ns.run('dig', '@169.254.96.16', '+short', '+time=1', 'web.default.svc.cluster.local')
        ).trim();
        if (answer !== '10.96.7.7') await new Promise((r) => setTimeout(r, 100));
      }
      expect(answer).toBe('10.96.7.7');
      // That first answer may have come from JS: a query read natively before the first snapshot
      // is punted, and the snapshot (which publishes JS index and native table together) can be
      // applied before JS handles the punt. Once any cluster answer came back the native table is
      // published, so count from here: every further UDP cluster name is answered natively.
      const nativeAnswered = async (): Promise<number> =>
        (
          JSON.parse((await ns.curl('http://127.0.0.1:10551/status')).stdout) as {
            dns?: { counters: Record<string, number> };
          }
        ).dns?.counters['native.answered'] ?? Number.NaN;
      const answeredBefore = await nativeAnswered();
      expect((await ns.run('dig', '@169.254.96.16', '+short', 'web.default')).trim()).toBe('10.96.7.7');
      expect((await ns.run('dig', '@169.254.96.16', '+short', 'web.default.svc.cluster.local')).trim()).toBe(
        '10.96.7.7',
      );
      expect((await ns.run('dig', '@169.254.96.16', '+tcp', '+short', '-x', '10.96.7.7')).trim()).toBe(
        'web.default.svc.cluster.local.',
      );

      // /status shows the DNS path: the native responder answered those UDP cluster names.
      const status = JSON.parse((await ns.curl('http://127.0.0.1:10551/status')).stdout) as {
        dns?: { listen: string; mode: string; counters: Record<string, number> };
      };
      expect(status.dns?.listen).toBe('169.254.96.16:53');
      expect(status.dns?.mode).toBe('native');
      expect(status.dns?.counters['native.answered']).toBeGreaterThanOrEqual(answeredBefore + 2);
      const metrics = (await ns.curl('http://127.0.0.1:10551/metrics')).stdout;
      expect(metrics).toMatch(
        /edgemesh_dns_queries_total\{type="A",rcode="NOERROR",source="cluster"\} [1-9]/,
      );

      // The upstream in resolv.conf is dead: SERVFAIL, quickly.
      const dead = await ns.run('dig', '@169.254.96.16', '+tries=1', '+time=4', 'host.example.test');
      expect(dead).toContain('status: SERVFAIL');
      // resolv.conf now names dnsmasq: the agent notices (polling) and forwards there.
      ns.writeResolvConf('127.0.0.53');
      let forwarded = '';
      for (let i = 0; i < 40 && forwarded !== '192.0.2.9'; i++) {
        forwarded = (await ns.run('dig', '@169.254.96.16', '+short', '+time=1', 'host.example.test')).trim();
        if (forwarded !== '192.0.2.9') await new Promise((r) => setTimeout(r, 200));
      }
      expect(forwarded).toBe('192.0.2.9');
    } finally {
      expect(await agent.stop('SIGTERM')).toBe(0);
    }
    const link = await ns.exec('ip', ['link', 'show', 'dev', 'edgemesh0']);
    expect(link.code).not.toBe(0);
  });
});
