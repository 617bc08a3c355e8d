// examples/ works for both consumers: `kubectl apply -f` (Deployments whose pods back the Services)
// and `edgemesh agent --manifests examples/` (one consistent set of objects, fixed ClusterIPs).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { repoRoot } from '../helpers/cli.ts';

// biome-ignore lint/suspicious/noExplicitAny: parsed YAML is untyped; the checks below narrow it
type Json = any;

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec: Record<string, Json>;
}

const dir = path.join(repoRoot, 'examples');
const load = (file: string): Obj[] =>
  parseAllDocuments(fs.readFileSync(file, 'utf8'))
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null);
/** What `kubectl apply -f examples/` reads (top level only) or the manifests source reads (subfolders
 * too, hidden entries skipped). */
function manifestFiles(d: string, recursive: boolean): string[] {
  return fs
    .readdirSync(d, { withFileTypes: true })
    .filter((e) => !e.name.startsWith('.'))
    .flatMap((e) =>
      e.isDirectory()
        ? recursive
          ? manifestFiles(path.join(d, e.name), true)
          : []
        : /\.ya?ml$/.test(e.name)
          ? [path.join(d, e.name)]
          : [],
    );
}
const topFiles = manifestFiles(dir, false);
const variantFiles = fs
  .readdirSync(path.join(dir, '.lb-variants'))
  .map((f) => path.join(dir, '.lb-variants', f));

/** The objects `--manifests examples/` sees, optionally with one file swapped for a variant. */
function objectSet(swap?: { out: string; in: string }): Obj[] {
  return topFiles.map((f) => (swap && path.basename(f) === swap.out ? swap.in : f)).flatMap(load);
}

/** Problems that would make the set inconsistent or unusable; [] when fine. */
function problems(objs: Obj[]): string[] {
  const out: string[] = [];
  const ids = objs.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`);
  for (const id of ids) if (ids.indexOf(id) !== ids.lastIndexOf(id)) out.push(`duplicate ${id}`);
  const services = objs.filter((o) => o.kind === 'Service');
  const deployments = objs.filter((o) => o.kind === 'Deployment');
  const ips = services.map((s) => s.spec.clusterIP as string);
  if (new Set(ips).size !== ips.length) out.push(`duplicate clusterIPs ${ips}`);
  for (const o of objs)
    if (o.kind !== 'Namespace' && o.metadata.namespace !== 'edgemesh-test')
      out.push(`${o.kind}/${o.metadata.name} not in edgemesh-test`);
  for (const s of services) {
    const name = s.metadata.name;
    if (!/^10\.96\.180\.\d+$/.test(s.spec.clusterIP)) out.push(`${name}: clusterIP outside 10.96.180.0/24`);
    const backing = deployments.filter((d) =>
      Object.entries(s.spec.selector).every(([k, v]) => d.spec.template.metadata.labels[k] === v),
    );
    if (backing.length !== 1) out.push(`${name}: ${backing.length} Deployments match the selector`);
    for (const p of s.spec.ports) {
      if (!/^(http|https|tcp|websocket|ws|udp)(-[a-z0-9-]+)?$/.test(p.name))
        out.push(`${name}: port name ${p.name} names no protocol`);
      const containerPorts = backing.flatMap((d) =>
        d.spec.template.spec.containers.flatMap((c: Json) => c.ports ?? []),
      );
      const target = containerPorts.find((cp: Json) => cp.containerPort === p.targetPort);
      if (!target) out.push(`${name}: no container port ${p.targetPort}`);
      else if (!target.hostPort) out.push(`${name}: container port ${p.targetPort} has no hostPort`);
    }
  }
  for (const dr of objs.filter((o) => o.kind === 'DestinationRule')) {
    const svc = services.find((s) => s.metadata.name === dr.metadata.name);
    if (!svc) out.push(`DestinationRule ${dr.metadata.name} names no Service`);
    if (dr.spec.host !== dr.metadata.name)
      out.push(`DestinationRule ${dr.metadata.name}: host ${dr.spec.host}`);
  }
  const gateways = objs.filter((o) => o.kind === 'Gateway').map((g) => g.metadata.name);
  for (const vs of objs.filter((o) => o.kind === 'VirtualService')) {
    for (const g of vs.spec.gateways)
      if (!gateways.includes(g)) out.push(`VirtualService → missing Gateway ${g}`);
    for (const route of vs.spec.http.flatMap((h: Json) => h.route)) {
      const svc = services.find((s) => s.metadata.name === route.destination.host);
      if (!svc?.spec.ports.some((p: Json) => p.port === route.destination.port.number))
        out.push(`VirtualService → missing ${route.destination.host}:${route.destination.port.number}`);
    }
  }
  const ports = objs
    .filter((o) => o.kind === 'Gateway')
    .flatMap((g) => g.spec.servers.map((s: Json) => s.port.number));
  if (new Set(ports).size !== ports.length) out.push(`gateways share a port: ${ports}`);
  return out;
}

describe('examples/', () => {
  it('kubectl and the manifests source read the same files', () => {
    expect(manifestFiles(dir, true).sort()).toEqual([...topFiles].sort());
  });

  it('the folder is one consistent set with the seed services', () => {
    const objs = objectSet();
    expect(problems(objs)).toEqual([]);
    const svc = (name: string) => objs.find((o) => o.kind === 'Service' && o.metadata.name === name)!.spec;
    expect(svc('hostname-svc').ports[0]).toMatchObject({ port: 12345, targetPort: 9376, name: 'http-0' });
    expect(svc('hostname-lb-svc').ports[0]).toMatchObject({ port: 12345, targetPort: 9376 });
    expect(svc('tcp-echo-service').ports[0]).toMatchObject({ port: 2701, name: 'tcp-0' });
    expect(svc('ws-svc').ports[0]).toMatchObject({ port: 12348, targetPort: 8080, name: 'websocket-0' });
    const dr = objs.find((o) => o.kind === 'DestinationRule')!;
    expect(dr.spec.trafficPolicy.loadBalancer).toEqual({ simple: 'RANDOM' });
    const tls = objs.find((o) => o.kind === 'Gateway' && o.spec.servers[0].tls)!;
    expect(tls.spec.servers[0].tls).toEqual({ mode: 'SIMPLE', credentialName: 'gw-secret' });
    expect(tls.spec.selector).toEqual({ kubeedge: 'edgemesh-gateway' });
  });

  it.each(variantFiles.map((f) => path.basename(f)))(
    '.lb-variants/%s replaces hostname-lb-random.yaml cleanly',
    (f) => {
      const objs = objectSet({ out: 'hostname-lb-random.yaml', in: path.join(dir, '.lb-variants', f) });
      expect(problems(objs)).toEqual([]);
      const policy = objs.find((o) => o.kind === 'DestinationRule')!.spec.trafficPolicy.loadBalancer;
      expect(policy).toEqual(
        f.includes('roundrobin')
          ? { simple: 'ROUND_ROBIN' }
          : { consistentHash: { httpHeaderName: 'User-Agent' } },
      );
    },
  );

  it('adding a variant next to the random file would be caught as a conflict', () => {
    const objs = [...objectSet(), ...load(variantFiles[0]!)];
    expect(problems(objs)).toEqual(expect.arrayContaining([expect.stringMatching(/^duplicate Service/)]));
  });
});
