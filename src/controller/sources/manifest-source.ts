// The files source (`--manifests DIR`): multi-document YAML (or JSON) files of Kubernetes objects,
// watched live. A broken file is reported by path and line and its last good objects stay served;
// an object defined in two files survives until both drop it.
import { type Dirent, type FSWatcher, promises as fs, watch } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { EdgemeshError, ErrorCode } from '../../errors.ts';
import type { Logger } from '../../util/log.ts';
import type { ControllerMetrics } from '../controller-metrics.ts';
import { kindOf } from '../object-store.ts';
import { arr, getOrInit, jsonEqual, port, rec, str } from '../raw.ts';
import type { Source, SourceSink } from '../source.ts';
import type { KubeObject } from '../types.ts';

export interface ManifestSourceOptions {
  /** Quiet time after a file event before rescanning (editors write in several steps). */
  debounceMs?: number;
  /** Full rescan period, a safety net for missed inotify events (0 = none). */
  pollMs?: number;
}

interface FileState {
  signature: string;
  /** Objects of the last good parse, by identity key. */
  objects: Map<string, KubeObject>;
  error?: string;
}

const manifestExt = /\.(ya?ml|json)$/i;

/** Identity of an object across files: kind, group, namespace, name. */
function identity(obj: KubeObject): string {
  const group = obj.apiVersion.includes('/') ? obj.apiVersion.split('/')[0] : '';
  return `${obj.kind}|${group}|${obj.metadata.namespace}|${obj.metadata.name}`;
}

/** Serves the objects in folders of manifest files, watched live. */
export class ManifestSource implements Source {
  readonly name = 'manifests';
  private sink: SourceSink | undefined;
  private readonly files = new Map<string, FileState>();
  /** Object identity → files defining it (the last one in path order wins). */
  private readonly owners = new Map<string, Set<string>>();
  private readonly served = new Map<string, KubeObject>();
  private readonly watchers = new Map<string, FSWatcher>();
  private readonly missingDirs = new Set<string>();
  private debounceTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private scanAgain = false;
  private stopped = false;
  private readonly debounceMs: number;
  private readonly pollMs: number;

  constructor(
    private readonly dirs: readonly string[],
    private readonly log: Logger,
    private readonly metrics: ControllerMetrics,
    options: ManifestSourceOptions = {},
  ) {
    this.debounceMs = options.debounceMs ?? 100;
    this.pollMs = options.pollMs ?? 2_000;
  }

  async start(sink: SourceSink): Promise<void> {
    this.sink = sink;
    await this.scan();
    this.metrics.sourceUp.set({ source: this.name }, 1);
    sink.synced();
    if (this.pollMs > 0) {
      this.pollTimer = setInterval(() => this.requestScan(0), this.pollMs);
      this.pollTimer.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.debounceTimer);
    clearInterval(this.pollTimer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    await this.scanning;
  }

  /** Files currently broken, with the error reported for each. */
  brokenFiles(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [file, state] of this.files) if (state.error) out.set(file, state.error);
    return out;
  }

  private requestScan(delay = this.debounceMs): void {
    if (this.stopped) return;
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.scan(), delay);
    this.debounceTimer.unref();
  }

  /** One rescan at a time; a request during a scan triggers one more afterwards. */
  private scan(): Promise<void> {
    if (this.scanning) {
      this.scanAgain = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.scanAgain = false;
        try {
          await this.scanOnce();
        } catch (err) {
          this.log.error({ err }, 'manifests: scan failed');
        }
      } while (this.scanAgain && !this.stopped);
    })().finally(() => {
      this.scanning = undefined;
    });
    return this.scanning;
  }

  private async scanOnce(): Promise<void> {
    const found = new Map<string, string>();
    const dirsSeen = new Set<string>();
    for (const dir of this.dirs) await this.walk(dir, found, dirsSeen, true);
    this.syncWatchers(dirsSeen);

    const touched = new Set<string>();
    for (const [file, state] of this.files) {
      if (found.has(file)) continue;
      this.files.delete(file);
      for (const id of state.objects.keys()) {
        this.owners.get(id)?.delete(file);
        touched.add(id);
      }
      this.log.info({ file }, 'manifests: file removed');
    }
    for (const [file, signature] of found) {
      const prev = this.files.get(file);
      if (prev && prev.signature === signature) continue;
      let text: string;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch {
        continue; // Deleted between listing and reading: the next scan drops it.
      }
      const parsed = this.parse(file, text);
      if (parsed instanceof EdgemeshError) {
        if (prev?.error !== parsed.message) {
          this.metrics.manifestErrors.inc();
          this.log.error({ file, code: parsed.code }, parsed.message);
        }
        // Keep the last good objects of this file; remember the signature so the error is logged once.
        this.files.set(file, { signature, objects: prev?.objects ?? new Map(), error: parsed.message });
        continue;
      }
      if (prev?.error) this.log.info({ file }, 'manifests: file fixed');
      for (const id of prev?.objects.keys() ?? []) {
        this.owners.get(id)?.delete(file);
        touched.add(id);
      }
      for (const id of parsed.keys()) {
        const set = getOrInit(this.owners, id, () => new Set());
        set.add(file);
        touched.add(id);
      }
      this.files.set(file, { signature, objects: parsed });
    }
    this.metrics.manifestFilesBroken.set(this.brokenFiles().size);
    for (const id of touched) this.publish(id);
  }

  /** Reports the effective object for an identity to the sink, if it changed. */
  private publish(id: string): void {
    const owners = this.owners.get(id);
    const winner = owners && owners.size > 0 ? [...owners].sort().at(-1)! : undefined;
    const obj = winner ? this.files.get(winner)?.objects.get(id) : undefined;
    const before = this.served.get(id);
    if (!obj) {
      this.owners.delete(id);
      if (before) {
        this.served.delete(id);
        this.sink?.remove(before);
      }
      return;
    }
    if (before && jsonEqual(before, obj)) return;
    this.served.set(id, obj);
    this.sink?.upsert(obj);
  }

  private async walk(
    dir: string,
    found: Map<string, string>,
    dirs: Set<string>,
    top: boolean,
  ): Promise<void> {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (top && !this.missingDirs.has(dir)) {
        this.missingDirs.add(dir);
        this.log.warn({ dir, err: (err as Error).message }, 'manifests: folder not readable; polling for it');
      }
      return;
    }
    if (top) this.missingDirs.delete(dir);
    dirs.add(dir);
    for (const e of entries) {
      // Hidden entries are editor swap files and Kubernetes ConfigMap ..data links.
      if (e.name.startsWith('.')) continue;
      const full = path.join(dir, e.name);
      if (e.isDirectory()) await this.walk(full, found, dirs, false);
      else if (manifestExt.test(e.name) && (e.isFile() || e.isSymbolicLink())) {
        try {
          const st = await fs.stat(full);
          if (st.isFile()) found.set(full, `${st.ino}:${st.size}:${st.mtimeMs}`);
        } catch {
          // Vanished: treated as removed.
        }
      }
    }
  }

  private syncWatchers(dirs: Set<string>): void {
    if (this.stopped) return;
    for (const [dir, w] of this.watchers) {
      if (dirs.has(dir)) continue;
      w.close();
      this.watchers.delete(dir);
    }
    for (const dir of dirs) {
      if (this.watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, () => this.requestScan());
        w.on('error', () => {
          w.close();
          this.watchers.delete(dir);
          this.requestScan();
        });
        this.watchers.set(dir, w);
      } catch {
        // The poll covers folders that cannot be watched.
      }
    }
  }

  /** Parses one file into its objects, or the error naming path and line. */
  private parse(file: string, text: string): Map<string, KubeObject> | EdgemeshError {
    const lineCounter = new LineCounter();
    const fail = (offset: number | undefined, detail: string) => {
      const pos = offset === undefined ? undefined : lineCounter.linePos(offset);
      const where = pos ? `${file}:${pos.line}:${pos.col}` : file;
      return new EdgemeshError(ErrorCode.MANIFEST, `${where}: ${detail}`);
    };
    const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false });
    if (!Array.isArray(docs)) return new Map();
    const out = new Map<string, KubeObject>();
    for (const doc of docs) {
      const err = doc.errors[0];
      if (err) return fail(err.pos[0], err.message.split('\n')[0]);
      const value: unknown = doc.toJS();
      if (value === null || value === undefined) continue;
      const offset = doc.contents?.range?.[0];
      const items = rec(value)?.kind === 'List' ? arr(rec(value)?.items) : [value];
      for (const item of items) {
        const checked = validateObject(item);
        if (typeof checked === 'string') return fail(offset, checked);
        if (!kindOf(checked)) {
          this.log.debug(
            { file, kind: checked.kind, name: checked.metadata.name },
            'manifests: kind ignored',
          );
          continue;
        }
        out.set(identity(checked), checked);
      }
    }
    return out;
  }
}

/** A Kubernetes object with namespace defaulted, or a sentence saying what is wrong with it. */
export function validateObject(v: unknown): KubeObject | string {
  const o = rec(v);
  if (!o) return 'expected a Kubernetes object (a mapping)';
  const kind = str(o.kind);
  const apiVersion = str(o.apiVersion);
  if (!kind) return 'kind: expected a string';
  if (!apiVersion) return `${kind}: apiVersion: expected a string`;
  const meta = rec(o.metadata);
  const name = str(meta?.name);
  if (!meta || !name) return `${kind}: metadata.name: expected a string`;
  const namespace = meta.namespace === undefined ? 'default' : str(meta.namespace);
  if (!namespace) return `${kind} ${name}: metadata.namespace: expected a string`;
  const obj = { ...o, metadata: { ...meta, namespace } } as KubeObject;
  if (kind === 'Service' && apiVersion === 'v1') {
    const spec = rec(o.spec) ?? {};
    for (const [i, raw] of arr(spec.ports).entries()) {
      const p = rec(raw);
      if (port(p?.port) === undefined)
        return `Service ${namespace}/${name}: spec.ports[${i}].port: expected 1-65535, got ${JSON.stringify(p?.port)}`;
      const tp = p?.targetPort;
      if (tp !== undefined && typeof tp !== 'string' && port(tp) === undefined)
        return `Service ${namespace}/${name}: spec.ports[${i}].targetPort: expected a port number or name`;
    }
    const ip = spec.clusterIP;
    if (ip !== undefined && ip !== 'None' && ip !== '' && (typeof ip !== 'string' || net.isIP(ip) === 0))
      return `Service ${namespace}/${name}: spec.clusterIP: expected an IP address or None, got ${JSON.stringify(ip)}`;
  }
  if (kind === 'Secret' && apiVersion === 'v1' && o.stringData !== undefined) {
    // What the API server does on write: stringData is merged into data, base64-encoded.
    const stringData = rec(o.stringData);
    if (!stringData) return `Secret ${namespace}/${name}: stringData: expected a mapping`;
    const data: Record<string, string> = { ...(rec(o.data) as Record<string, string> | undefined) };
    for (const [k, v] of Object.entries(stringData)) {
      if (typeof v !== 'string') return `Secret ${namespace}/${name}: stringData.${k}: expected a string`;
      data[k] = Buffer.from(v, 'utf8').toString('base64');
    }
    const { stringData: _sd, ...rest } = obj;
    return { ...rest, data } as KubeObject;
  }
  return obj;
}
