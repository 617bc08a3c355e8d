// Every Kubernetes manifest in deploy/ and examples/ is valid for the API server: each object is
// checked against the Kubernetes (and Istio) OpenAPI schemas shipped by kubernetes-models, plus a
// strict unknown-field walk over @kubernetes/client-node's generated models — the equivalent of
// `kubectl apply --validate=strict` — and the ConfigMaps' config files load with our own loader.
import fs from 'node:fs';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseConfigText } from '../../src/config/load.ts';
import { repoRoot } from '../helpers/cli.ts';

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  [k: string]: unknown;
}
interface Doc {
  file: string;
  obj: Obj;
}

/** All *.yaml/*.yml files under `dir` (recursively), relative to the repo. */
function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...yamlFiles(rel));
    else if (/\.ya?ml$/.test(e.name)) out.push(rel);
  }
  return out.sort();
}

function loadDocs(file: string): Doc[] {
  const docs = parseAllDocuments(fs.readFileSync(path.join(repoRoot, file), 'utf8'));
  const out: Doc[] = [];
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
    const obj = d.toJS() as Obj | null;
    if (obj !== null) out.push({ file, obj });
  }
  return out;
}

const manifestFiles = [...yamlFiles('deploy'), ...yamlFiles('examples')];
const allDocs = manifestFiles.flatMap(loadDocs);

/** The kubernetes-models class for an apiVersion/kind, e.g. apps/v1 Deployment. */
async function modelFor(apiVersion: string, kind: string): Promise<new (d: unknown) => { validate(): void }> {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  const spec =
    group === 'networking.istio.io'
      ? `@kubernetes-models/istio/networking.istio.io/${version}/${kind}`
      : group === ''
        ? `kubernetes-models/${version}/${kind}`
        : `kubernetes-models/${group}/${version}/${kind}`;
  const mod = (await import(spec)) as Record<string, new (d: unknown) => { validate(): void }>;
  const cls = mod[kind];
  if (!cls) throw new Error(`no model for ${apiVersion} ${kind}`);
  return cls;
}

type TypeMap = Array<{ name: string; baseName: string; type: string }>;
const models = k8s as unknown as Record<string, { getAttributeTypeMap?: () => TypeMap } | undefined>;

/** Paths of fields that the generated client models do not know (what strict validation rejects). */
function unknownFields(value: unknown, type: string, at: string): string[] {
  if (value === null || value === undefined) return [];
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr)
    return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, arr[1]!, `${at}[${i}]`)) : [];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map)
    return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) =>
      unknownFields(v, map[1]!, `${at}.${k}`),
    );
  const attrs = models[type]?.getAttributeTypeMap?.();
  if (!attrs || typeof value !== 'object') return []; // primitives, IntOrString, any
  const byJsonName = new Map(attrs.map((a) => [a.baseName, a.type]));
  return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => {
    const t = byJsonName.get(k);
    return t === undefined ? [`${at}.${k}`] : unknownFields(v, t, `${at}.${k}`);
  });
}

// Istio's CRD schemas keep unknown fields, so the Istio kinds get a whitelist of the fields Istio
// defines (at the levels our files use) to catch typos like `trafficPolicyy`.
const istioFields: Record<string, Record<string, string[]>> = {
  DestinationRule: {
    spec: ['host', 'trafficPolicy', 'subsets', 'exportTo', 'workloadSelector'],
    'spec.trafficPolicy': [
      'loadBalancer',
      'connectionPool',
      'outlierDetection',
      'tls',
      'portLevelSettings',
      'tunnel',
      'proxyProtocol',
    ],
    'spec.trafficPolicy.loadBalancer': [
      'simple',
      'consistentHash',
      'localityLbSetting',
      'warmupDurationSecs',
    ],
  },
  Gateway: { spec: ['selector', 'servers'] },
  VirtualService: { spec: ['hosts', 'gateways', 'http', 'tls', 'tcp', 'exportTo'] },
};

function istioUnknownFields(obj: Obj): string[] {
  const rules = istioFields[obj.kind] ?? {};
  const out: string[] = [];
  for (const [p, allowed] of Object.entries(rules)) {
    let v: unknown = obj;
    for (const k of p.split('.')) v = (v as Record<string, unknown> | undefined)?.[k];
    if (v && typeof v === 'object')
      for (const k of Object.keys(v)) if (!allowed.includes(k)) out.push(`${p}.${k}`);
  }
  return out;
}

const find = (kind: string, name: string) =>
  allDocs.find((d) => d.obj.kind === kind && d.obj.metadata.name === name);

describe('manifests in deploy/ and examples/', () => {
  it('finds the expected files', () => {
    expect(manifestFiles).toEqual(
      expect.arrayContaining([
        'deploy/kubernetes/edgemesh/02-clusterrole.yaml',
        'deploy/kubernetes/edgemesh/03-configmap.yaml',
        'deploy/kubernetes/edgemesh/04-daemonset.yaml',
        'deploy/kubernetes/edgemesh-gateway/03-configmap.yaml',
        'deploy/kubernetes/edgemesh-gateway/04-deployment.yaml',
        'deploy/istio/destinationrule-crd.yaml',
        'deploy/istio/gateway-crd.yaml',
        'deploy/istio/virtualservice-crd.yaml',
        'examples/hostname.yaml',
        'examples/tcp-echo-service.yaml',
        'examples/websocket.yaml',
        'examples/hostname-lb-random.yaml',
        'examples/.lb-variants/hostname-lb-roundrobin.yaml',
        'examples/.lb-variants/hostname-lb-consistenthash.yaml',
        'examples/hostname-lb-random-gateway.yaml',
        'examples/hostname-lb-random-gateway-tls.yaml',
      ]),
    );
    expect(allDocs.length).toBeGreaterThan(20);
  });

  it.each(manifestFiles)('%s validates against the OpenAPI schemas, strictly', async (file) => {
    for (const { obj } of allDocs.filter((d) => d.file === file)) {
      const where = `${file} ${obj.kind}/${obj.metadata?.name}`;
      expect(obj.metadata?.name, where).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
      const Model = await modelFor(obj.apiVersion, obj.kind);
      expect(() => new Model(obj).validate(), where).not.toThrow();
      const extra = obj.apiVersion.startsWith('networking.istio.io/')
        ? istioUnknownFields(obj)
        : unknownFields(obj, `V1${obj.kind}`, obj.kind);
      expect(extra, `${where}: unknown fields`).toEqual([]);
    }
  });

  it('the strict walk rejects a misspelt field (the check itself can fail)', async () => {
    const ds = structuredClone(find('DaemonSet', 'edgemesh-agent')!.obj) as Obj;
    const pod = (ds.spec!.template as { spec: Record<string, unknown> }).spec;
    pod.hostNetwrok = true;
    expect(unknownFields(ds, 'V1DaemonSet', 'DaemonSet')).toEqual([
      'DaemonSet.spec.template.spec.hostNetwrok',
    ]);
    const Model = await modelFor('apps/v1', 'DaemonSet');
    (pod.containers as Array<Record<string, unknown>>)[0]!.ports = [{ containerPort: 'x' }];
    expect(() => new Model(ds).validate()).toThrow(/containerPort/);
  });

  it('the ConfigMaps hold configs our loader accepts', () => {
    const agentCm = find('ConfigMap', 'edgemesh-agent-cfg')!.obj;
    const agent = parseConfigText(agentCm.data!['edgemesh-agent.yaml']!, 'edgemesh-agent.yaml');
    expect(agent.modules.edgeProxy.enable).toBe(true);
    expect(agent.modules.edgeProxy.listenPort).toBe(40001);
    expect(agent.modules.edgeDNS.enable).toBe(true);
    expect(agent.kubeAPIConfig.master).toBe('http://127.0.0.1:10550');
    const gwCm = find('ConfigMap', 'edgemesh-gateway-cfg')!.obj;
    const gw = parseConfigText(gwCm.data!['edgemesh-gateway.yaml']!, 'edgemesh-gateway.yaml');
    expect(gw.modules.edgeGateway.enable).toBe(true);
    expect(gw.modules.edgeGateway.selector).toEqual({ kubeedge: 'edgemesh-gateway' });
    // And the loader does reject a bad key there (unknown keys are errors).
    expect(() => parseConfigText(`${agentCm.data!['edgemesh-agent.yaml']}bogus: 1\n`, 'x.yaml')).toThrow(
      /bogus/,
    );
  });

  it('the DaemonSet mounts the config where its args point, probes the metrics listener and keeps state', () => {
    const ds = find('DaemonSet', 'edgemesh-agent')!.obj as unknown as k8s.V1DaemonSet;
    const pod = ds.spec!.template.spec!;
    const c = pod.containers[0]!;
    const cfg = parseConfigText(
      find('ConfigMap', 'edgemesh-agent-cfg')!.obj.data!['edgemesh-agent.yaml']!,
      'edgemesh-agent.yaml',
    );
    expect(pod.hostNetwork).toBe(true);
    expect(c.securityContext?.privileged).not.toBe(true);
    expect(c.securityContext?.capabilities?.add).toEqual(
      expect.arrayContaining(['NET_ADMIN', 'NET_RAW', 'BPF']),
    );
    expect(c.args).toEqual(['agent', '--config', '/etc/edgemesh/config/edgemesh-agent.yaml']);
    const cfgMount = c.volumeMounts!.find((m) => m.mountPath === '/etc/edgemesh/config')!;
    expect(pod.volumes!.find((v) => v.name === cfgMount.name)?.configMap?.name).toBe('edgemesh-agent-cfg');
    const metricsPort = Number(cfg.metricsListen.split(':')[1]);
    expect(c.livenessProbe?.httpGet).toMatchObject({ path: '/healthz', port: metricsPort });
    expect(c.readinessProbe?.httpGet).toMatchObject({ path: '/readyz', port: metricsPort });
    const stateMount = c.volumeMounts!.find((m) => m.mountPath === cfg.stateDir)!;
    expect(pod.volumes!.find((v) => v.name === stateMount.name)?.hostPath?.path).toBe(cfg.stateDir);
    expect(c.resources?.requests).toBeDefined();
    expect(c.resources?.limits).toBeDefined();
    const terms =
      pod.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms;
    expect(terms[0]!.matchExpressions![0]!.key).toBe('node-role.kubernetes.io/edge');
    expect(pod.serviceAccountName).toBe(find('ServiceAccount', 'edgemesh')!.obj.metadata.name);
  });

  it('RBAC grants read-only access to exactly what the controller reads', () => {
    const role = find('ClusterRole', 'edgemesh')!.obj as unknown as k8s.V1ClusterRole;
    const granted = role.rules!.flatMap((r) => r.resources!.map((res) => `${r.apiGroups![0]}/${res}`)).sort();
    expect(granted).toEqual(
      [
        '/endpoints',
        '/pods',
        '/secrets',
        '/services',
        'discovery.k8s.io/endpointslices',
        'networking.istio.io/destinationrules',
        'networking.istio.io/gateways',
        'networking.istio.io/virtualservices',
      ].sort(),
    );
    for (const r of role.rules!) expect(r.verbs.sort()).toEqual(['get', 'list', 'watch']);
    const binding = find('ClusterRoleBinding', 'edgemesh')!.obj as unknown as k8s.V1ClusterRoleBinding;
    expect(binding.roleRef.name).toBe('edgemesh');
    expect(binding.subjects![0]).toMatchObject({
      kind: 'ServiceAccount',
      name: 'edgemesh',
      namespace: 'kubeedge',
    });
  });

  it('every Istio object in examples/ has a CRD in deploy/istio serving its version', () => {
    const crds = allDocs
      .filter((d) => d.obj.kind === 'CustomResourceDefinition')
      .map((d) => d.obj as unknown as k8s.V1CustomResourceDefinition);
    for (const crd of crds) expect(crd.metadata!.name).toBe(`${crd.spec.names.plural}.${crd.spec.group}`);
    for (const crd of crds) expect(crd.spec.versions.filter((v) => v.storage)).toHaveLength(1);
    const istio = allDocs.filter((d) => d.obj.apiVersion.startsWith('networking.istio.io/'));
    expect(istio.length).toBeGreaterThan(0);
    for (const { file, obj } of istio) {
      const [group, version] = obj.apiVersion.split('/');
      const crd = crds.find((c) => c.spec.group === group && c.spec.names.kind === obj.kind);
      expect(crd, `${file}: no CRD for ${obj.kind}`).toBeDefined();
      expect(crd!.spec.versions.some((v) => v.name === version && v.served)).toBe(true);
      if (obj.kind === 'DestinationRule') {
        // The CRD's own schema: host is required and the simple policy is one of Istio's.
        const spec = crd!.spec.versions[0]!.schema!.openAPIV3Schema!.properties!.spec!;
        expect(spec.required).toContain('host');
        const simple = spec.properties!.trafficPolicy!.properties!.loadBalancer!.properties!.simple!;
        const lb = (obj.spec!.trafficPolicy as { loadBalancer: { simple?: string } }).loadBalancer;
        if (lb.simple) expect((simple as { enum?: string[] }).enum).toContain(lb.simple);
      }
    }
  });
});
