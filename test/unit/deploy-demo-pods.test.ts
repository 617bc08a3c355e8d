// The Pod objects `edgemesh demo` writes for the manifests source are valid v1 Pods, and every
// example Service selects demo pods that serve its targetPort (so the demo backs every example).
import fs from 'node:fs';
import path from 'node:path';
import { Pod } from 'kubernetes-models/v1/Pod';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { DEMO_NAMESPACE, demoPods, podManifests } from '../../src/cli/demo/pods.ts';
import { repoRoot } from '../helpers/cli.ts';

interface Obj {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec: {
    selector?: Record<string, string>;
    ports?: Array<{ port: number; targetPort: number; name: string }>;
    containers?: Array<{ ports: Array<{ containerPort: number; name: string }> }>;
  };
  status?: { podIP: string; phase: string };
}

const pods = demoPods((i) => `10.244.180.${10 + i}`);
const podObjects = parseAllDocuments(podManifests(pods, 'emdemo-node', '10.244.180.1')).map(
  (d) => d.toJS() as Obj,
);
const services = fs
  .readdirSync(path.join(repoRoot, 'examples'))
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => parseAllDocuments(fs.readFileSync(path.join(repoRoot, 'examples', f), 'utf8')))
  .map((d) => d.toJS() as Obj)
  .filter((o) => o?.kind === 'Service');

describe('demo pods', () => {
  it('are valid, running v1 Pods with distinct addresses in the example namespace', () => {
    expect(podObjects).toHaveLength(pods.length);
    for (const o of podObjects) {
      expect(() => new Pod(o as never).validate(), o.metadata.name).not.toThrow();
      expect(o.metadata.namespace).toBe(DEMO_NAMESPACE);
      expect(o.status?.phase).toBe('Running');
    }
    const ips = podObjects.map((o) => o.status!.podIP);
    expect(new Set(ips).size).toBe(ips.length);
  });

  it('back every example Service on its targetPort (three behind hostname-lb-svc)', () => {
    expect(services.map((s) => s.metadata.name).sort()).toEqual([
      'hostname-lb-svc',
      'hostname-svc',
      'tcp-echo-service',
      'ws-svc',
    ]);
    for (const svc of services) {
      const selected = podObjects.filter((p) =>
        Object.entries(svc.spec.selector!).every(([k, v]) => p.metadata.labels?.[k] === v),
      );
      expect(selected.length, svc.metadata.name).toBe(svc.metadata.name === 'hostname-lb-svc' ? 3 : 1);
      for (const p of selected)
        expect(p.spec.containers![0]!.ports.map((cp) => cp.containerPort)).toContain(
          svc.spec.ports![0]!.targetPort,
        );
    }
  });
});
