// The contract between the controller and where objects come from (manifest files, the Kubernetes
// API). A source only reports objects; it never builds snapshots or talks to consumers.
import type { KubeObject } from './types.ts';

/** What a source reports into; every call only records (the controller's sync does the work). */
export interface SourceSink {
  /** An object was added or changed. */
  upsert(obj: KubeObject): void;
  /** An object was deleted (kind, namespace and name are enough). */
  remove(obj: KubeObject): void;
  /** The source has delivered its complete current state (first list, or a relist). */
  synced(): void;
  /** The source cannot reach its origin (the controller may serve the persisted snapshot). */
  unavailable(err: unknown): void;
}

/** A source of Kubernetes objects; started once, stopped once. */
export interface Source {
  readonly name: string;
  /** Starts delivering; resolves once started (not necessarily synced: an API may be down). */
  start(sink: SourceSink): Promise<void>;
  stop(): Promise<void>;
}
