// Pure: one raw Service plus the objects around it (EndpointSlices, Endpoints, Pods,
// DestinationRules) → the ServiceEntry consumers see. Never throws on malformed input; bad ports
// and addresses are skipped.
import net from 'node:net';
import { trafficPolicyFor } from './destination-rule.ts';
import { type ObjectStore, objectKey, selectorMatches } from './object-store.ts';
import { arr, port, rec, str, strMap } from './raw.ts';
import type {
  AppProtocol,
  Endpoint,
  KubeObject,
  L4Protocol,
  ServiceEntry,
  ServicePortEntry,
} from './types.ts';

/** What the builder needs besides the objects. */
export interface BuildOptions {
  /** Label whose value "edgemesh" opts a Service out of interception (EdgeMesh's noproxy=edgemesh). */
  noProxyLabel: string;
}

/** Services never intercepted on edge nodes: the API server must stay reachable directly. */
const NEVER_PROXIED = new Set(['default/kubernetes']);

const appProtocols: Record<string, AppProtocol> = {
  http: 'http',
  https: 'https',
  tcp: 'tcp',
  udp: 'udp',
  websocket: 'websocket',
  ws: 'websocket',
  'kubernetes.io/ws': 'websocket',
};

/** The application protocol of a port: its appProtocol field, else its name `<proto>[-suffix]`. */
export function appProtocolOf(
  name: string,
  appProtocolField: string | undefined,
  l4: L4Protocol,
): AppProtocol {
  if (l4 === 'UDP') return 'udp';
  const fromField = appProtocolField ? appProtocols[appProtocolField.toLowerCase()] : undefined;
  if (fromField && fromField !== 'udp') return fromField;
  const fromName = appProtocols[name.toLowerCase().split('-')[0]];
  return fromName && fromName !== 'udp' ? fromName : 'tcp';
}

const serviceTypes = new Set(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);

/** Builds the ServiceEntry of one Service (frozen). */
export function buildService(svc: KubeObject, store: ObjectStore, options: BuildOptions): ServiceEntry {
  const key = objectKey(svc);
  const namespace = svc.metadata.namespace || 'default';
  const spec = rec(svc.spec) ?? {};
  const labels = strMap(svc.metadata.labels);
  const typeRaw = str(spec.type) ?? 'ClusterIP';
  const type = (serviceTypes.has(typeRaw) ? typeRaw : 'ClusterIP') as ServiceEntry['type'];
  const ipList = arr(spec.clusterIPs).length > 0 ? arr(spec.clusterIPs) : [spec.clusterIP];
  const headless = ipList[0] === 'None';
  const clusterIPs =
    type === 'ExternalName'
      ? []
      : ipList.filter((ip): ip is string => typeof ip === 'string' && net.isIP(ip) !== 0);

  const drKey = store.destinationRulesFor(key)[0] ?? (store.destinationRules.has(key) ? key : undefined);
  const drSpec = drKey ? store.destinationRules.get(drKey)?.spec : undefined;

  const endpointSource = pickEndpointSource(svc, key, store);
  const ports: ServicePortEntry[] = [];
  for (const raw of arr(spec.ports)) {
    const p = rec(raw);
    const number = port(p?.port);
    if (!p || number === undefined) continue;
    const name = str(p.name) ?? '';
    const protoRaw = str(p.protocol) ?? 'TCP';
    const protocol = (protoRaw === 'UDP' || protoRaw === 'SCTP' ? protoRaw : 'TCP') as L4Protocol;
    const tpRaw = p.targetPort;
    const targetPort: number | string =
      typeof tpRaw === 'string' && port(tpRaw) === undefined ? tpRaw : (port(tpRaw) ?? number);
    const entry: ServicePortEntry = {
      name,
      port: number,
      protocol,
      appProtocol: appProtocolOf(name, str(p.appProtocol), protocol),
      targetPort,
      endpoints: Object.freeze(endpointSource(name, targetPort)),
    };
    const nodePort = port(p.nodePort);
    if (nodePort !== undefined) entry.nodePort = nodePort;
    const tp = drSpec ? trafficPolicyFor(drSpec, number) : undefined;
    if (tp) entry.trafficPolicy = tp;
    ports.push(Object.freeze(entry));
  }

  const affinityType = str(spec.sessionAffinity) === 'ClientIP' ? 'ClientIP' : 'None';
  const timeout = port(rec(rec(spec.sessionAffinityConfig)?.clientIP)?.timeoutSeconds);
  const entry: ServiceEntry = {
    namespace,
    name: svc.metadata.name,
    key,
    clusterIPs: Object.freeze(clusterIPs),
    headless,
    type,
    ports: Object.freeze(ports),
    sessionAffinity: Object.freeze({
      type: affinityType,
      timeoutSeconds: affinityType === 'ClientIP' ? (timeout ?? 10_800) : 0,
    }),
    labels: Object.freeze(labels),
    proxied: !NEVER_PROXIED.has(key) && labels[options.noProxyLabel] !== 'edgemesh',
  };
  if (type === 'ExternalName') {
    const ext = str(spec.externalName);
    if (ext) entry.externalName = ext;
  }
  if (drKey) entry.destinationRule = drKey;
  return Object.freeze(entry);
}

type EndpointSource = (portName: string, targetPort: number | string) => Endpoint[];

/** EndpointSlices first, then an Endpoints object, then Pods matching the selector. */
function pickEndpointSource(svc: KubeObject, key: string, store: ObjectStore): EndpointSource {
  if (store.hasSlices(key)) return (name) => fromSlices(store.slicesOf(key), name);
  const eps = store.endpoints.get(key);
  if (eps) return (name) => fromEndpoints(eps, name);
  const selector = rec(svc.spec)?.selector;
  if (!rec(selector)) return () => [];
  const namespace = svc.metadata.namespace || 'default';
  const pods = [...store.podsIn(namespace)].filter((pod) =>
    selectorMatches(selector, pod.metadata.labels ?? {}),
  );
  return (_name, targetPort) => fromPods(pods, targetPort);
}

/** Adds an endpoint, keeping one per ip:port (a ready duplicate wins). */
function add(out: Map<string, Endpoint>, ep: Endpoint): void {
  const k = `${ep.ip}|${ep.port}`;
  const prev = out.get(k);
  if (!prev || (!prev.ready && ep.ready)) out.set(k, Object.freeze(ep));
}

function sorted(out: Map<string, Endpoint>): Endpoint[] {
  return [...out.values()].sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port));
}

function targetRefOf(v: unknown): string | undefined {
  const ref = rec(v);
  const name = str(ref?.name);
  return name ? `${str(ref?.namespace) ?? ''}/${name}` : undefined;
}

function fromSlices(slices: Iterable<KubeObject>, portName: string): Endpoint[] {
  const out = new Map<string, Endpoint>();
  for (const slice of slices) {
    const addressType = str(slice.addressType);
    if (addressType !== 'IPv4' && addressType !== 'IPv6') continue;
    const sp = arr(slice.ports)
      .map(rec)
      .find((p) => p && (str(p.name) ?? '') === portName);
    const number = port(sp?.port);
    if (number === undefined) continue;
    for (const raw of arr(slice.endpoints)) {
      const e = rec(raw);
      const ip = str(arr(e?.addresses)[0]);
      if (!e || !ip || net.isIP(ip) === 0) continue;
      const cond = rec(e.conditions) ?? {};
      // Kubernetes semantics: an unknown ready condition means ready; serving defaults to ready.
      const ready = cond.ready !== false;
      const ep: Endpoint = {
        ip,
        port: number,
        ready,
        serving: typeof cond.serving === 'boolean' ? cond.serving : ready,
        terminating: cond.terminating === true,
      };
      const nodeName = str(e.nodeName);
      if (nodeName) ep.nodeName = nodeName;
      const hostname = str(e.hostname);
      if (hostname) ep.hostname = hostname;
      const zone = str(e.zone);
      if (zone) ep.zone = zone;
      const ref = targetRefOf(e.targetRef);
      if (ref) ep.targetRef = ref;
      add(out, ep);
    }
  }
  return sorted(out);
}

function fromEndpoints(eps: KubeObject, portName: string): Endpoint[] {
  const out = new Map<string, Endpoint>();
  for (const rawSubset of arr(eps.subsets)) {
    const subset = rec(rawSubset);
    if (!subset) continue;
    const sp = arr(subset.ports)
      .map(rec)
      .find((p) => p && (str(p.name) ?? '') === portName);
    const number = port(sp?.port);
    if (number === undefined) continue;
    const groups: [unknown, boolean][] = [
      [subset.addresses, true],
      [subset.notReadyAddresses, false],
    ];
    for (const [list, ready] of groups) {
      for (const rawAddr of arr(list)) {
        const a = rec(rawAddr);
        const ip = str(a?.ip);
        if (!a || !ip || net.isIP(ip) === 0) continue;
        const ep: Endpoint = { ip, port: number, ready, serving: ready, terminating: false };
        const nodeName = str(a.nodeName);
        if (nodeName) ep.nodeName = nodeName;
        const hostname = str(a.hostname);
        if (hostname) ep.hostname = hostname;
        const ref = targetRefOf(a.targetRef);
        if (ref) ep.targetRef = ref;
        add(out, ep);
      }
    }
  }
  return sorted(out);
}

/** Endpoints computed from Pods (the manifests source without Endpoints objects). */
function fromPods(pods: KubeObject[], targetPort: number | string): Endpoint[] {
  const out = new Map<string, Endpoint>();
  for (const pod of pods) {
    const ep = podEndpoint(pod, targetPort);
    if (ep) add(out, ep);
  }
  return sorted(out);
}

/** The endpoint a Pod offers for a targetPort (named ports resolved on this Pod), or undefined. */
export function podEndpoint(pod: KubeObject, targetPort: number | string): Endpoint | undefined {
  const spec = rec(pod.spec) ?? {};
  const status = rec(pod.status) ?? {};
  const phase = str(status.phase);
  if (phase !== undefined && phase !== 'Running') return undefined;
  const containerPorts = arr(spec.containers).flatMap((c) => arr(rec(c)?.ports).map(rec));
  const cp = containerPorts.find((p) =>
    typeof targetPort === 'string' ? str(p?.name) === targetPort : port(p?.containerPort) === targetPort,
  );
  if (typeof targetPort === 'string' && !cp) return undefined;
  const podIP = str(status.podIP);
  const hostIP = str(status.hostIP);
  const hostPort = port(cp?.hostPort);
  let ip: string;
  let number: number;
  if (podIP && net.isIP(podIP) !== 0) {
    ip = podIP;
    number = typeof targetPort === 'number' ? targetPort : port(cp?.containerPort)!;
  } else if (hostIP && net.isIP(hostIP) !== 0 && hostPort !== undefined) {
    ip = hostIP;
    number = hostPort;
  } else return undefined;
  if (number === undefined) return undefined;
  // A Pod without conditions (hand-written manifests) counts as ready once it has an address.
  const readyCond = arr(status.conditions)
    .map(rec)
    .find((c) => str(c?.type) === 'Ready');
  const deleting = (pod.metadata as Record<string, unknown>).deletionTimestamp != null;
  const ready = readyCond ? str(readyCond.status) === 'True' : true;
  const ep: Endpoint = { ip, port: number, ready: ready && !deleting, serving: ready, terminating: deleting };
  const nodeName = str(spec.nodeName);
  if (nodeName) ep.nodeName = nodeName;
  const hostname = str(spec.hostname);
  if (hostname) ep.hostname = hostname;
  ep.targetRef = objectKey(pod);
  return ep;
}
