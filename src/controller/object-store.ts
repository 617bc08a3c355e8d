// The controller's view of the raw objects all sources delivered, plus the change tracker: every
// upsert/remove only records which Services it affects (kube-proxy's "handlers only record"); the
// sync later rebuilds exactly those Services.
import { getOrInit, rec, str, strMap } from './raw.ts';
import type { KubeObject } from './types.ts';

/** The object kinds the controller understands. */
export type ObjectKind =
  | 'Service'
  | 'EndpointSlice'
  | 'Endpoints'
  | 'Pod'
  | 'DestinationRule'
  | 'Gateway'
  | 'VirtualService'
  | 'Secret';

const coreKinds = new Set(['Service', 'Endpoints', 'Pod', 'Secret']);
const istioKinds = new Set(['DestinationRule', 'Gateway', 'VirtualService']);

/** The kind of a raw object, or undefined for kinds the controller ignores (Deployments, ...). */
export function kindOf(obj: KubeObject): ObjectKind | undefined {
  const kind = obj.kind;
  const group = typeof obj.apiVersion === 'string' ? obj.apiVersion.split('/')[0] : '';
  if (coreKinds.has(kind) && (obj.apiVersion === 'v1' || obj.apiVersion === undefined))
    return kind as ObjectKind;
  if (kind === 'EndpointSlice' && group === 'discovery.k8s.io') return 'EndpointSlice';
  // Gateway API also has a kind "Gateway"; only Istio's group is ours.
  if (istioKinds.has(kind) && group === 'networking.istio.io') return kind as ObjectKind;
  return undefined;
}

/** `namespace/name` of an object (namespace defaults to "default"). */
export function objectKey(obj: KubeObject): string {
  return `${obj.metadata.namespace || 'default'}/${obj.metadata.name}`;
}

/** The label EndpointSlices carry to name their Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** Raw objects by kind with the indexes the service builder needs, and the pending changes. */
export class ObjectStore {
  readonly services = new Map<string, KubeObject>();
  private readonly servicesByNs = new Map<string, Set<string>>();
  private readonly sliceOwner = new Map<string, string>();
  private readonly slicesBySvc = new Map<string, Map<string, KubeObject>>();
  readonly endpoints = new Map<string, KubeObject>();
  private readonly podsByNs = new Map<string, Map<string, KubeObject>>();
  readonly destinationRules = new Map<string, KubeObject>();
  /** Service key → keys of DestinationRules whose spec.host names it. */
  private readonly drTargets = new Map<string, Set<string>>();
  readonly gateways = new Map<string, KubeObject>();
  readonly virtualServices = new Map<string, KubeObject>();
  readonly secrets = new Map<string, KubeObject>();

  /** Service keys to rebuild at the next sync. */
  readonly dirty = new Set<string>();
  /** Istio objects or Secrets changed since the last sync. */
  istioDirty = false;

  constructor(private readonly clusterDomain = 'cluster.local') {}

  /** Records an added or updated object; returns false for kinds the controller ignores. */
  upsert(obj: KubeObject): boolean {
    const kind = kindOf(obj);
    if (!kind || typeof obj.metadata?.name !== 'string') return false;
    this.removeKey(kind, objectKey(obj));
    this.insert(kind, obj);
    return true;
  }

  /** Records a deleted object (only its kind, namespace and name matter). */
  remove(obj: KubeObject): boolean {
    const kind = kindOf(obj);
    if (!kind || typeof obj.metadata?.name !== 'string') return false;
    this.removeKey(kind, objectKey(obj));
    return true;
  }

  /** Takes the pending changes (the sync folds them into a new snapshot). */
  takeChanges(): { dirty: Set<string>; istioDirty: boolean } {
    const out = { dirty: new Set(this.dirty), istioDirty: this.istioDirty };
    this.dirty.clear();
    this.istioDirty = false;
    return out;
  }

  /** EndpointSlices of a Service. */
  slicesOf(svcKey: string): Iterable<KubeObject> {
    return this.slicesBySvc.get(svcKey)?.values() ?? [];
  }

  /** True when a Service has at least one EndpointSlice. */
  hasSlices(svcKey: string): boolean {
    return (this.slicesBySvc.get(svcKey)?.size ?? 0) > 0;
  }

  /** Pods of a namespace. */
  podsIn(namespace: string): Iterable<KubeObject> {
    return this.podsByNs.get(namespace)?.values() ?? [];
  }

  /** Keys of the DestinationRules whose host names this Service, sorted. */
  destinationRulesFor(svcKey: string): string[] {
    const set = this.drTargets.get(svcKey);
    return set ? [...set].sort() : [];
  }

  /** The Service key an Istio host names (short name, name.ns, name.ns.svc, FQDN), or undefined. */
  hostToServiceKey(host: string, namespace: string): string | undefined {
    if (!host || host.includes('*')) return undefined;
    let h = host.toLowerCase();
    const suffix = `.svc.${this.clusterDomain}`;
    if (h.endsWith(suffix)) h = h.slice(0, -suffix.length);
    else if (h.endsWith('.svc')) h = h.slice(0, -4);
    const parts = h.split('.');
    if (parts.length === 1) return `${namespace}/${parts[0]}`;
    if (parts.length === 2) return `${parts[1]}/${parts[0]}`;
    return undefined;
  }

  private insert(kind: ObjectKind, obj: KubeObject): void {
    const key = objectKey(obj);
    const ns = obj.metadata.namespace || 'default';
    switch (kind) {
      case 'Service': {
        this.services.set(key, obj);
        const set = getOrInit(this.servicesByNs, ns, () => new Set());
        set.add(key);
        this.dirty.add(key);
        return;
      }
      case 'EndpointSlice': {
        const svcName = strMap(obj.metadata.labels)[SERVICE_NAME_LABEL];
        if (!svcName) return;
        const svcKey = `${ns}/${svcName}`;
        this.sliceOwner.set(key, svcKey);
        const slices = getOrInit(this.slicesBySvc, svcKey, () => new Map());
        slices.set(key, obj);
        this.dirty.add(svcKey);
        return;
      }
      case 'Endpoints':
        this.endpoints.set(key, obj);
        this.dirty.add(key);
        return;
      case 'Pod': {
        const pods = getOrInit(this.podsByNs, ns, () => new Map());
        pods.set(key, obj);
        this.markPodServices(ns, obj);
        return;
      }
      case 'DestinationRule': {
        this.destinationRules.set(key, obj);
        for (const svcKey of this.drHosts(obj)) {
          const set = getOrInit(this.drTargets, svcKey, () => new Set());
          set.add(key);
          this.dirty.add(svcKey);
        }
        // The seed's fallback: a DestinationRule applies to the Service of the same name.
        this.dirty.add(key);
        this.istioDirty = true;
        return;
      }
      case 'Gateway':
        this.gateways.set(key, obj);
        this.istioDirty = true;
        return;
      case 'VirtualService':
        this.virtualServices.set(key, obj);
        this.istioDirty = true;
        return;
      case 'Secret':
        this.secrets.set(key, obj);
        this.istioDirty = true;
        return;
    }
  }

  private removeKey(kind: ObjectKind, key: string): void {
    const ns = key.slice(0, key.indexOf('/'));
    switch (kind) {
      case 'Service':
        if (this.services.delete(key)) {
          this.servicesByNs.get(ns)?.delete(key);
          this.dirty.add(key);
        }
        return;
      case 'EndpointSlice': {
        const svcKey = this.sliceOwner.get(key);
        if (svcKey === undefined) return;
        this.sliceOwner.delete(key);
        const slices = this.slicesBySvc.get(svcKey);
        slices?.delete(key);
        if (slices?.size === 0) this.slicesBySvc.delete(svcKey);
        this.dirty.add(svcKey);
        return;
      }
      case 'Endpoints':
        if (this.endpoints.delete(key)) this.dirty.add(key);
        return;
      case 'Pod': {
        const pods = this.podsByNs.get(ns);
        const old = pods?.get(key);
        if (!old) return;
        pods!.delete(key);
        if (pods!.size === 0) this.podsByNs.delete(ns);
        this.markPodServices(ns, old);
        return;
      }
      case 'DestinationRule': {
        const old = this.destinationRules.get(key);
        if (!old) return;
        this.destinationRules.delete(key);
        for (const svcKey of this.drHosts(old)) {
          const set = this.drTargets.get(svcKey);
          set?.delete(key);
          if (set?.size === 0) this.drTargets.delete(svcKey);
          this.dirty.add(svcKey);
        }
        this.dirty.add(key);
        this.istioDirty = true;
        return;
      }
      case 'Gateway':
        if (this.gateways.delete(key)) this.istioDirty = true;
        return;
      case 'VirtualService':
        if (this.virtualServices.delete(key)) this.istioDirty = true;
        return;
      case 'Secret':
        if (this.secrets.delete(key)) this.istioDirty = true;
        return;
    }
  }

  private drHosts(dr: KubeObject): string[] {
    const host = str(rec(dr.spec)?.host);
    const key = host ? this.hostToServiceKey(host, dr.metadata.namespace || 'default') : undefined;
    return key ? [key] : [];
  }

  /** A Pod change affects the Services in its namespace whose selector matches its labels. */
  private markPodServices(ns: string, pod: KubeObject): void {
    const keys = this.servicesByNs.get(ns);
    if (!keys) return;
    const labels = pod.metadata.labels ?? {};
    for (const svcKey of keys) {
      const selector = rec(this.services.get(svcKey)?.spec)?.selector;
      if (selectorMatches(selector, labels)) this.dirty.add(svcKey);
    }
  }
}

/** True when a non-empty Service selector matches the labels (an empty selector selects nothing). */
export function selectorMatches(selector: unknown, labels: Record<string, string>): boolean {
  const sel = rec(selector);
  if (!sel) return false;
  let any = false;
  for (const [k, v] of Object.entries(sel)) {
    if (labels[k] !== v) return false;
    any = true;
  }
  return any;
}
