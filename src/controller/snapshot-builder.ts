// Folds the store's pending changes into a new immutable ServiceTable. Only dirty Services are
// rebuilt; an entry whose content did not change keeps its identity, so diffs and consumers can
// compare by reference.
import { BucketMap } from './bucket-map.ts';
import type { ObjectStore } from './object-store.ts';
import { jsonEqual } from './raw.ts';
import { type BuildOptions, buildService } from './service-builder.ts';
import type { KubeObject, ServiceEntry, ServiceTable, ServiceTableDiff } from './types.ts';

/** Builds the next table, or returns undefined when nothing consumers see changed. */
export function buildTable(
  prev: ServiceTable,
  store: ObjectStore,
  changes: { dirty: Set<string>; istioDirty: boolean },
  full: boolean,
  options: BuildOptions,
): ServiceTable | undefined {
  const keys: Iterable<string> = full
    ? new Set([...prev.services.keys(), ...store.services.keys()])
    : changes.dirty;
  const sets: [string, ServiceEntry][] = [];
  const deletes: string[] = [];
  for (const key of keys) {
    const raw = store.services.get(key);
    const old = prev.services.get(key);
    if (!raw) {
      if (old) deletes.push(key);
      continue;
    }
    const next = buildService(raw, store, options);
    if (old && jsonEqual(old, next)) continue;
    sets.push([key, next]);
  }
  const services =
    sets.length + deletes.length > 0 ? BucketMap.from(prev.services).withChanges(sets, deletes) : undefined;
  const istio =
    changes.istioDirty || full
      ? {
          gateways: new Map(store.gateways),
          virtualServices: new Map(store.virtualServices),
          destinationRules: new Map(store.destinationRules),
          secrets: new Map(store.secrets),
        }
      : undefined;
  const istioChanged =
    istio !== undefined &&
    !(
      sameObjects(prev.gateways, istio.gateways) &&
      sameObjects(prev.virtualServices, istio.virtualServices) &&
      sameObjects(prev.destinationRules, istio.destinationRules) &&
      sameObjects(prev.secrets, istio.secrets)
    );
  if (!services && !istioChanged) return undefined;
  return Object.freeze({
    generation: prev.generation + 1,
    services: services ?? prev.services,
    gateways: istioChanged ? istio.gateways : prev.gateways,
    virtualServices: istioChanged ? istio.virtualServices : prev.virtualServices,
    destinationRules: istioChanged ? istio.destinationRules : prev.destinationRules,
    secrets: istioChanged ? istio.secrets : prev.secrets,
  });
}

function sameObjects(a: ReadonlyMap<string, KubeObject>, b: ReadonlyMap<string, KubeObject>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (w === undefined || !(w === v || jsonEqual(stripVolatile(v), stripVolatile(w)))) return false;
  }
  return true;
}

/** An object without the metadata that changes on every write (resourceVersion, managedFields). */
function stripVolatile(obj: KubeObject): unknown {
  const { resourceVersion: _rv, managedFields: _mf, ...metadata } = obj.metadata as Record<string, unknown>;
  return { ...obj, metadata };
}

/** What changed from `a` to `b`: by key, with entries compared by identity, then by content. */
export function diffTables(a: ServiceTable, b: ServiceTable): ServiceTableDiff {
  const added: string[] = [];
  const updated: string[] = [];
  const removed: string[] = [];
  if (a.services !== b.services) {
    for (const [key, entry] of b.services) {
      const old = a.services.get(key);
      if (old === undefined) added.push(key);
      else if (old !== entry && !jsonEqual(old, entry)) updated.push(key);
    }
    for (const key of a.services.keys()) if (!b.services.has(key)) removed.push(key);
  }
  const istioChanged =
    a.gateways !== b.gateways ||
    a.virtualServices !== b.virtualServices ||
    a.destinationRules !== b.destinationRules ||
    a.secrets !== b.secrets;
  return { added: added.sort(), updated: updated.sort(), removed: removed.sort(), istioChanged };
}
