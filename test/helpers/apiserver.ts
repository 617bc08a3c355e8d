// A Kubernetes API server fixture that speaks the real protocol over HTTP, for the real
// @kubernetes/client-node: lists with resourceVersion and limit/continue, chunked watch streams
// (JSON lines) replaying history from a resourceVersion, ERROR 410 Expired after compaction,
// bookmarks when asked, server-side watch timeouts, 404 for absent API groups (CRDs not
// installed), and restart on the same port with the state kept (like etcd behind a restarted
// apiserver).
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** A stored object (raw JSON). */
export type ApiObject = {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: unknown };
  [k: string]: unknown;
};

interface ResourceType {
  group: string;
  versions: string[];
  plural: string;
  kind: string;
  namespaced: boolean;
}

/** The resource types the fixture serves (by plural). */
export const RESOURCE_TYPES: ResourceType[] = [
  { group: '', versions: ['v1'], plural: 'services', kind: 'Service', namespaced: true },
  { group: '', versions: ['v1'], plural: 'endpoints', kind: 'Endpoints', namespaced: true },
  { group: '', versions: ['v1'], plural: 'pods', kind: 'Pod', namespaced: true },
  { group: '', versions: ['v1'], plural: 'secrets', kind: 'Secret', namespaced: true },
  {
    group: 'discovery.k8s.io',
    versions: ['v1'],
    plural: 'endpointslices',
    kind: 'EndpointSlice',
    namespaced: true,
  },
  ...(['destinationrules', 'gateways', 'virtualservices'] as const).map((plural) => ({
    group: 'networking.istio.io',
    versions: ['v1beta1', 'v1alpha3'],
    plural,
    kind: { destinationrules: 'DestinationRule', gateways: 'Gateway', virtualservices: 'VirtualService' }[
      plural
    ],
    namespaced: true,
  })),
];

interface WatchEvent {
  rv: number;
  plural: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: ApiObject;
}

export interface FakeApiServerOptions {
  /** API groups answered with 404 (e.g. 'networking.istio.io': Istio CRDs not installed). */
  absentGroups?: string[];
  /** Cap of every watch's duration, whatever timeoutSeconds the client asked (server-side timeout). */
  maxWatchMs?: number;
  /** Bookmark period for watches that asked for bookmarks. */
  bookmarkIntervalMs?: number;
}

interface OpenWatch {
  plural: string;
  res: http.ServerResponse;
  timers: NodeJS.Timeout[];
  /** A frozen watch stays open but never sends again (a half-open connection). */
  frozen?: boolean;
}

/** Requests seen, for assertions (path and query). */
export interface SeenRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
}

/** The fixture; start() it, point the client at `url`, mutate with upsert()/remove(). */
export class FakeApiServer {
  private server: http.Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly objects = new Map<string, Map<string, ApiObject>>();
  private history: WatchEvent[] = [];
  /** Watches from a resourceVersion older than this get 410 Expired. */
  private oldestRv = 0;
  private rv = 100;
  private readonly watches = new Set<OpenWatch>();
  private readonly sortedCache = new Map<string, [string, ApiObject][]>();
  private port = 0;
  readonly absentGroups: Set<string>;
  readonly requests: SeenRequest[] = [];
  /** When set, the next request with a continue token gets 410 Expired (then it resets). */
  expireNextContinue = false;

  constructor(private readonly options: FakeApiServerOptions = {}) {
    this.absentGroups = new Set(options.absentGroups ?? []);
    for (const t of RESOURCE_TYPES) this.objects.set(t.plural, new Map());
  }

  /** Base URL, e.g. http://127.0.0.1:41234. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The current resourceVersion. */
  get resourceVersion(): number {
    return this.rv;
  }

  /** Listens (on the previous port after a restart). */
  async start(): Promise<void> {
    const server = http.createServer((req, res) => this.handle(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops listening and cuts every connection (watches end abruptly, like a crash). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const w of this.watches) for (const t of w.timers) clearTimeout(t);
    this.watches.clear();
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** A crash and restart with the same state (and port). */
  async restart(downMs = 0): Promise<void> {
    await this.stop();
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    await this.start();
  }

  /** Forgets the event history: clients watching from an older resourceVersion must relist. */
  compact(): void {
    this.history = [];
    this.oldestRv = this.rv;
  }

  /** Adds or replaces an object (kind/apiVersion are filled from the plural). */
  upsert(plural: string, obj: ApiObject): ApiObject {
    const type = this.type(plural);
    const store = this.objects.get(plural)!;
    const key = `${obj.metadata.namespace ?? 'default'}/${obj.metadata.name}`;
    const existed = store.has(key);
    this.rv++;
    const stored: ApiObject = structuredClone({
      ...obj,
      apiVersion: obj.apiVersion ?? (type.group ? `${type.group}/${type.versions[0]}` : 'v1'),
      kind: type.kind,
      metadata: {
        ...obj.metadata,
        namespace: obj.metadata.namespace ?? 'default',
        resourceVersion: String(this.rv),
      },
    });
    store.set(key, stored);
    this.sortedCache.delete(plural);
    this.emit({ rv: this.rv, plural, type: existed ? 'MODIFIED' : 'ADDED', object: stored });
    return stored;
  }

  /** Deletes an object; false when it did not exist. */
  remove(plural: string, namespace: string, name: string): boolean {
    const store = this.objects.get(plural)!;
    const key = `${namespace}/${name}`;
    const old = store.get(key);
    if (!old) return false;
    store.delete(key);
    this.sortedCache.delete(plural);
    this.rv++;
    this.emit({
      rv: this.rv,
      plural,
      type: 'DELETED',
      object: { ...old, metadata: { ...old.metadata, resourceVersion: String(this.rv) } },
    });
    return true;
  }

  /** Adds many objects without recording watch history (initial state for big lists). */
  seed(plural: string, objs: ApiObject[]): void {
    const type = this.type(plural);
    const store = this.objects.get(plural)!;
    for (const obj of objs) {
      this.rv++;
      store.set(`${obj.metadata.namespace ?? 'default'}/${obj.metadata.name}`, {
        ...obj,
        apiVersion: type.group ? `${type.group}/${type.versions[0]}` : 'v1',
        kind: type.kind,
        metadata: {
          ...obj.metadata,
          namespace: obj.metadata.namespace ?? 'default',
          resourceVersion: String(this.rv),
        },
      });
    }
    this.sortedCache.delete(plural);
    this.compact();
  }

  /** Number of watch streams currently open (optionally for one plural). */
  openWatches(plural?: string): number {
    let n = 0;
    for (const w of this.watches) if (!plural || w.plural === plural) n++;
    return n;
  }

  /** Makes every open watch go silent without closing it: no events, bookmarks or timeout. */
  freezeWatches(): void {
    for (const w of this.watches) {
      for (const t of w.timers) clearTimeout(t);
      w.frozen = true;
    }
  }

  /** Ends every open watch cleanly (what a server-side timeout looks like to the client). */
  endWatches(): void {
    for (const w of [...this.watches]) this.closeWatch(w);
  }

  /** Objects of a plural sorted by key; cached until the next write (pages must not re-sort). */
  private sorted(plural: string): [string, ApiObject][] {
    let cached = this.sortedCache.get(plural);
    if (!cached) {
      cached = [...this.objects.get(plural)!.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      this.sortedCache.set(plural, cached);
    }
    return cached;
  }

  private type(plural: string): ResourceType {
    const t = RESOURCE_TYPES.find((x) => x.plural === plural);
    if (!t) throw new Error(`fixture: unknown resource ${plural}`);
    return t;
  }

  private emit(event: WatchEvent): void {
    this.history.push(event);
    for (const w of this.watches) if (w.plural === event.plural && !w.frozen) this.send(w, event);
  }

  private send(w: OpenWatch, event: WatchEvent): void {
    w.res.write(`${JSON.stringify({ type: event.type, object: event.object })}\n`);
  }

  private closeWatch(w: OpenWatch): void {
    for (const t of w.timers) clearTimeout(t);
    this.watches.delete(w);
    w.res.end();
  }

  private status(res: http.ServerResponse, code: number, reason: string, message: string): void {
    res
      .writeHead(code, { 'content-type': 'application/json' })
      .end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message, reason, code }));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push({
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
    });
    // /api/v1[/namespaces/NS]/PLURAL or /apis/GROUP/VERSION[/namespaces/NS]/PLURAL
    const m =
      /^\/api\/(v1)(?:\/namespaces\/([^/]+))?\/([a-z]+)$/.exec(url.pathname) ??
      /^\/apis\/([^/]+\/[^/]+)(?:\/namespaces\/([^/]+))?\/([a-z]+)$/.exec(url.pathname);
    if (!m || req.method !== 'GET') {
      this.status(res, 404, 'NotFound', 'the server could not find the requested resource');
      return;
    }
    const [group, version] = m[1] === 'v1' ? ['', 'v1'] : m[1].split('/');
    const namespace = m[2];
    const type = RESOURCE_TYPES.find(
      (t) => t.plural === m[3] && t.group === group && t.versions.includes(version),
    );
    if (!type || this.absentGroups.has(group) || this.absentGroups.has(`${group}/${type.plural}`)) {
      this.status(res, 404, 'NotFound', 'the server could not find the requested resource');
      return;
    }
    const apiVersion = group ? `${group}/${version}` : 'v1';
    if (url.searchParams.get('watch') === 'true')
      this.watch(type, apiVersion, namespace, url.searchParams, res);
    else this.list(type, apiVersion, namespace, url.searchParams, res);
  }

  private list(
    type: ResourceType,
    apiVersion: string,
    namespace: string | undefined,
    q: URLSearchParams,
    res: http.ServerResponse,
  ): void {
    const all = namespace
      ? this.sorted(type.plural).filter(([key]) => key.startsWith(`${namespace}/`))
      : this.sorted(type.plural);
    const limit = Number(q.get('limit') ?? 0);
    let offset = 0;
    let listRv = this.rv;
    const cont = q.get('continue');
    if (cont) {
      const token = JSON.parse(Buffer.from(cont, 'base64url').toString()) as { rv: number; offset: number };
      // A continue token older than the compacted history has expired, as in etcd.
      if (token.rv < this.oldestRv || this.expireNextContinue) {
        this.expireNextContinue = false;
        this.status(res, 410, 'Expired', 'continue token expired');
        return;
      }
      offset = token.offset;
      listRv = token.rv;
    }
    const page = limit > 0 ? all.slice(offset, offset + limit) : all.slice(offset);
    const next = limit > 0 && offset + limit < all.length ? offset + limit : undefined;
    const metadata: Record<string, string> = { resourceVersion: String(listRv) };
    if (next !== undefined)
      metadata.continue = Buffer.from(JSON.stringify({ rv: listRv, offset: next })).toString('base64url');
    // Like the real server, items of a list carry no kind/apiVersion.
    const items = page.map(([, o]) => {
      const { kind: _k, apiVersion: _a, ...rest } = o;
      return rest;
    });
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ kind: `${type.kind}List`, apiVersion, metadata, items }));
  }

  private watch(
    type: ResourceType,
    apiVersion: string,
    namespace: string | undefined,
    q: URLSearchParams,
    res: http.ServerResponse,
  ): void {
    const from = Number(q.get('resourceVersion') || 0);
    // Transfer-Encoding: chunked (no content-length), one JSON event per line.
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // Like the real server: headers go out at once, before the first event.
    res.flushHeaders();
    const w: OpenWatch = { plural: type.plural, res, timers: [] };
    if (from !== 0 && from < this.oldestRv) {
      res.write(
        `${JSON.stringify({
          type: 'ERROR',
          object: {
            kind: 'Status',
            apiVersion: 'v1',
            status: 'Failure',
            reason: 'Expired',
            code: 410,
            message: 'too old resource version',
          },
        })}\n`,
      );
      res.end();
      return;
    }
    const inNs = (o: ApiObject) => !namespace || o.metadata.namespace === namespace;
    if (from === 0) {
      for (const o of this.objects.get(type.plural)!.values())
        if (inNs(o)) this.send(w, { rv: this.rv, plural: type.plural, type: 'ADDED', object: o });
    } else {
      for (const e of this.history)
        if (e.plural === type.plural && e.rv > from && inNs(e.object)) this.send(w, e);
    }
    this.watches.add(w);
    res.on('close', () => {
      for (const t of w.timers) clearTimeout(t);
      this.watches.delete(w);
    });
    const asked = Number(q.get('timeoutSeconds') || 0) * 1000;
    const cap = this.options.maxWatchMs ?? 0;
    const timeout = asked > 0 && cap > 0 ? Math.min(asked, cap) : asked || cap;
    if (timeout > 0) w.timers.push(setTimeout(() => this.closeWatch(w), timeout));
    if (q.get('allowWatchBookmarks') === 'true') {
      const tick = () => {
        res.write(
          `${JSON.stringify({
            type: 'BOOKMARK',
            object: { kind: type.kind, apiVersion, metadata: { resourceVersion: String(this.rv) } },
          })}\n`,
        );
        w.timers[1] = setTimeout(tick, this.options.bookmarkIntervalMs ?? 1_000);
      };
      w.timers[1] = setTimeout(tick, this.options.bookmarkIntervalMs ?? 1_000);
    }
  }
}
