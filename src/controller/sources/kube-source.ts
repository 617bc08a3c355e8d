// The Kubernetes source: one @kubernetes/client-node ListWatch per resource against KubeEdge's
// metaServer, an in-cluster service account or a kubeconfig. The client's informer stops for good
// after any error, so every error restarts it here with capped exponential backoff and jitter; an
// outage is logged once. Lists are paged raw JSON (no typed deserialization: 10k objects must list
// in well under a second) and carry kind/apiVersion filled in, as list items omit them.
import http from 'node:http';
import https from 'node:https';
import { KubeConfig, ListWatch, Watch } from '@kubernetes/client-node';
import type { EdgemeshConfig } from '../../config/types.ts';
import { EdgemeshError, ErrorCode, errorMessage } from '../../errors.ts';
import type { Logger } from '../../util/log.ts';
import type { ControllerMetrics } from '../controller-metrics.ts';
import { rec, str } from '../raw.ts';
import type { Source, SourceSink } from '../source.ts';
import type { KubeObject } from '../types.ts';
import { TokenBucket } from './token-bucket.ts';

/** Tuning of the Kubernetes source (tests shorten the backoff). */
export interface KubeSourceOptions {
  /** First restart delay after an error. */
  backoffBaseMs?: number;
  /** Cap of the restart delay. */
  backoffMaxMs?: number;
  /** Retry period for resources the server does not have (absent Istio CRDs). */
  absentRetryMs?: number;
  /** Page size of list requests. */
  pageSize?: number;
  /** Server-side watch timeout; the watch is then resumed from its resourceVersion. */
  watchTimeoutSeconds?: number;
  /** A watch silent for its timeout plus this long is treated as dead and restarted. */
  watchIdleGraceMs?: number;
}

/** How long a reopened watch must stay open before the API counts as reachable again. */
const STABLE_WATCH_MS = 1_000;

/** One watched resource and the API paths that may serve it, in order of preference. */
interface ResourceDef {
  name: string;
  kind: string;
  /** [path, apiVersion] alternatives; a 404 moves to the next one. */
  versions: [string, string][];
  /** Absent on the server (404/403) is not an error: it is served as empty. */
  optional: boolean;
}

const istio = (plural: string, kind: string): ResourceDef => ({
  name: plural,
  kind,
  versions: [
    [`/apis/networking.istio.io/v1beta1/${plural}`, 'networking.istio.io/v1beta1'],
    [`/apis/networking.istio.io/v1alpha3/${plural}`, 'networking.istio.io/v1alpha3'],
  ],
  optional: true,
});

/** The resources watched; Secrets only when the gateway needs them. */
export function kubeResources(config: EdgemeshConfig): ResourceDef[] {
  const defs: ResourceDef[] = [
    { name: 'services', kind: 'Service', versions: [['/api/v1/services', 'v1']], optional: false },
    {
      name: 'endpointslices',
      kind: 'EndpointSlice',
      versions: [['/apis/discovery.k8s.io/v1/endpointslices', 'discovery.k8s.io/v1']],
      optional: false,
    },
    // Pods only feed endpoints of Services that have no EndpointSlices/Endpoints: optional.
    { name: 'pods', kind: 'Pod', versions: [['/api/v1/pods', 'v1']], optional: true },
    istio('destinationrules', 'DestinationRule'),
    istio('gateways', 'Gateway'),
    istio('virtualservices', 'VirtualService'),
  ];
  if (config.modules.edgeGateway.enable)
    defs.push({ name: 'secrets', kind: 'Secret', versions: [['/api/v1/secrets', 'v1']], optional: true });
  return defs;
}

/** The fallback for clusters without the EndpointSlice API. */
const endpointsDef: ResourceDef = {
  name: 'endpoints',
  kind: 'Endpoints',
  versions: [['/api/v1/endpoints', 'v1']],
  optional: false,
};

/** Builds the client config: --kubeconfig, else --kube-api (plain http allowed), else in-cluster. */
export function makeKubeConfig(config: EdgemeshConfig): KubeConfig {
  const { master, kubeConfig } = config.kubeAPIConfig;
  const kc = new KubeConfig();
  try {
    if (kubeConfig) {
      kc.loadFromFile(kubeConfig);
      // Like client-go: an explicit master overrides the kubeconfig's server.
      if (master) {
        const current = kc.getCurrentCluster()?.name;
        kc.clusters = kc.clusters.map((c) => (c.name === current ? { ...c, server: master } : c));
      }
    } else if (master) {
      kc.loadFromOptions({
        clusters: [{ name: 'edgemesh', server: master, skipTLSVerify: master.startsWith('http:') }],
        users: [{ name: 'edgemesh' }],
        contexts: [{ name: 'edgemesh', cluster: 'edgemesh', user: 'edgemesh' }],
        currentContext: 'edgemesh',
      });
    } else kc.loadFromCluster();
  } catch (err) {
    throw new EdgemeshError(ErrorCode.KUBE_API, `kubeconfig ${kubeConfig}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  if (!kc.getCurrentCluster())
    throw new EdgemeshError(ErrorCode.KUBE_API, `kubeconfig ${kubeConfig}: no current cluster`);
  return kc;
}

/** An HTTP error with the status the ListWatch looks at (410 → relist). */
class ApiStatusError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A Watch that asks for bookmarks and a server-side timeout, reports when a watch is open, and
 * aborts a watch that stays silent past that timeout plus a grace: a half-open connection (the
 * server vanished without a FIN) would otherwise hang until TCP keepalive gives up, minutes later.
 */
class TunedWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly timeoutSeconds: number,
    private readonly idleGraceMs: number,
    private readonly onOpen: (isOpen: () => boolean) => void,
    private readonly limiter: TokenBucket,
  ) {
    super(kc);
  }

  override async watch(
    path: string,
    queryParams: Record<string, unknown>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    await this.limiter.take();
    let finished = false;
    let idle: NodeJS.Timeout | undefined;
    let controller: AbortController | undefined;
    // Spread the timeouts so the watches of many agents do not reconnect in lockstep.
    const timeout = Math.max(1, Math.round(this.timeoutSeconds * (1 + Math.random())));
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(
        () => {
          if (finished) return;
          finished = true;
          controller?.abort();
          done(
            Object.assign(new Error(`watch ${path}: no data for ${timeout}s + grace`), { code: 'ETIMEDOUT' }),
          );
        },
        timeout * 1000 + this.idleGraceMs,
      );
      idle.unref();
    };
    // Armed before the request too: a server that accepts but never answers must not hang us.
    arm();
    controller = await super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: timeout },
      (phase, obj, watchObj) => {
        arm();
        callback(phase, obj, watchObj);
      },
      (err) => {
        clearTimeout(idle);
        if (finished) return;
        finished = true;
        done(err);
      },
    );
    if (finished)
      controller.abort(); // the watchdog gave up while the request was pending
    else {
      arm();
      this.onOpen(() => !finished);
    }
    return controller;
  }
}

interface ResourceState {
  def: ResourceDef;
  versionIndex: number;
  informer: ListWatch<KubeObject & { metadata: { name: string } }> | undefined;
  failures: number;
  synced: boolean;
  timer: NodeJS.Timeout | undefined;
  absentLogged: boolean;
}

/** List-watch of the Kubernetes API as a controller source. */
export class KubeSource implements Source {
  readonly name = 'kube';
  private readonly log: Logger;
  private sink: SourceSink | undefined;
  private kc: KubeConfig | undefined;
  private readonly resources: ResourceState[] = [];
  private stopped = false;
  private down = false;
  private downSince = 0;
  private reportedSynced = false;
  private readonly opts: Required<KubeSourceOptions>;
  private readonly limiter: TokenBucket;

  constructor(
    private readonly config: EdgemeshConfig,
    log: Logger,
    private readonly metrics: ControllerMetrics,
    options: KubeSourceOptions = {},
  ) {
    this.log = log.child({ source: 'kube' });
    this.opts = {
      backoffBaseMs: options.backoffBaseMs ?? 500,
      backoffMaxMs: options.backoffMaxMs ?? 30_000,
      absentRetryMs: options.absentRetryMs ?? 60_000,
      pageSize: options.pageSize ?? 500,
      watchTimeoutSeconds: options.watchTimeoutSeconds ?? 300,
      watchIdleGraceMs: options.watchIdleGraceMs ?? 60_000,
    };
    this.limiter = new TokenBucket(config.kubeAPIConfig.qps, config.kubeAPIConfig.burst);
  }

  async start(sink: SourceSink): Promise<void> {
    this.sink = sink;
    this.kc = makeKubeConfig(this.config);
    this.metrics.sourceUp.set({ source: this.name }, 0);
    this.log.info({ server: this.kc.getCurrentCluster()?.server }, 'list-watching the Kubernetes API');
    for (const def of kubeResources(this.config)) {
      const rs: ResourceState = {
        def,
        versionIndex: 0,
        informer: undefined,
        failures: 0,
        synced: false,
        timer: undefined,
        absentLogged: false,
      };
      this.resources.push(rs);
      this.launch(rs);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const rs of this.resources) {
      clearTimeout(rs.timer);
      await rs.informer?.stop();
    }
  }

  /** Creates the informer for the resource's current API version and starts it. */
  private launch(rs: ResourceState): void {
    const kc = this.kc!;
    const [path, apiVersion] = rs.def.versions[rs.versionIndex];
    const fill = (obj: KubeObject): KubeObject => {
      // List items carry no kind/apiVersion; the snapshot and the store need them.
      obj.kind ??= rs.def.kind;
      obj.apiVersion ??= apiVersion;
      return obj;
    };
    const watch = new TunedWatch(
      kc,
      this.opts.watchTimeoutSeconds,
      this.opts.watchIdleGraceMs,
      (isOpen) => {
        // A watch that opens while the server is going down is not a recovery: count it once it held.
        const check = setTimeout(() => {
          if (isOpen() && !this.stopped) this.succeeded(rs);
        }, STABLE_WATCH_MS);
        check.unref();
      },
      this.limiter,
    );
    const list = async () => {
      const result = await this.listAll(path);
      this.succeeded(rs);
      // The informer adds the items right after this promise settles; synced is reported after that.
      setImmediate(() => this.markSynced(rs));
      return result;
    };
    // biome-ignore lint/suspicious/noExplicitAny: the client's generic list type is not ours to satisfy.
    const informer = new ListWatch(path, watch, list as any, false) as ResourceState['informer'] & {};
    informer.on('add', (obj) => this.sink?.upsert(fill(obj)));
    informer.on('update', (obj) => this.sink?.upsert(fill(obj)));
    informer.on('delete', (obj) => this.sink?.remove(fill(obj)));
    informer.on('error', (err) => this.failed(rs, err));
    rs.informer = informer;
    void informer.start();
  }

  /** GETs every page of a list (limit/continue); items as raw JSON. */
  private async listAll(
    path: string,
  ): Promise<{ metadata: { resourceVersion: string }; items: KubeObject[] }> {
    const items: KubeObject[] = [];
    let cont = '';
    let resourceVersion = '';
    do {
      const q = new URLSearchParams({ limit: String(this.opts.pageSize) });
      if (cont) q.set('continue', cont);
      await this.limiter.take();
      const body = rec(await this.getJson(`${path}?${q}`));
      const list = Array.isArray(body?.items) ? (body.items as KubeObject[]) : [];
      for (const item of list) items.push(item);
      const meta = rec(body?.metadata);
      cont = str(meta?.continue) ?? '';
      resourceVersion = str(meta?.resourceVersion) ?? resourceVersion;
    } while (cont);
    return { metadata: { resourceVersion }, items };
  }

  private async getJson(pathAndQuery: string): Promise<unknown> {
    const kc = this.kc!;
    const server = kc.getCurrentCluster()!.server;
    const init = await kc.applyToFetchOptions({});
    const headers: Record<string, string> = { accept: 'application/json' };
    (init.headers as Headers | undefined)?.forEach((v, k) => {
      headers[k] = v;
    });
    const url = new URL(server.replace(/\/$/, '') + pathAndQuery);
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(
        url,
        { method: 'GET', headers, agent: init.agent as http.Agent | undefined, timeout: 30_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode !== 200) {
              reject(new ApiStatusError(res.statusCode ?? 0, `GET ${url.pathname}: HTTP ${res.statusCode}`));
              return;
            }
            try {
              resolve(JSON.parse(text));
            } catch (err) {
              reject(new Error(`GET ${url.pathname}: invalid JSON (${errorMessage(err)})`));
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`GET ${url.pathname}: timed out`)));
      req.on('error', reject);
      req.end();
    });
  }

  private markSynced(rs: ResourceState): void {
    if (this.stopped || rs.synced) return;
    rs.synced = true;
    if (!this.reportedSynced && this.resources.every((r) => r.synced)) {
      this.reportedSynced = true;
      this.log.info('initial list complete');
      this.sink?.synced();
    }
  }

  private succeeded(rs: ResourceState): void {
    rs.failures = 0;
    if (this.down && !this.stopped) {
      this.down = false;
      this.log.info(
        { downSeconds: Math.round((Date.now() - this.downSince) / 1000) },
        'Kubernetes API reachable again',
      );
    }
    this.metrics.sourceUp.set({ source: this.name }, 1);
  }

  /** The informer stopped after an error: pick a fallback, or restart it after a backoff. */
  private failed(rs: ResourceState, err: unknown): void {
    if (this.stopped) return; // stop() aborts the watch, which reports an AbortError.
    const status = (err as { statusCode?: number }).statusCode;
    const resource = rs.def.name;
    if (status === 404 && rs.versionIndex + 1 < rs.def.versions.length) {
      rs.versionIndex++;
      this.launch(rs);
      return;
    }
    if ((status === 404 || status === 403) && rs.def.name === 'endpointslices') {
      this.log.info('no EndpointSlice API on this server; using Endpoints');
      rs.def = endpointsDef;
      rs.versionIndex = 0;
      this.launch(rs);
      return;
    }
    if ((status === 404 || status === 403) && rs.def.optional) {
      if (!rs.absentLogged)
        this.log.info({ resource, status }, 'resource not served by this API server; treated as empty');
      rs.absentLogged = true;
      rs.versionIndex = 0;
      this.markSynced(rs);
      rs.timer = setTimeout(() => this.launch(rs), this.opts.absentRetryMs);
      rs.timer.unref();
      return;
    }
    if (status === 410) {
      // An expired continue token mid-list: relist (the informer's resourceVersion is already
      // cleared); the server is fine, so this is no outage.
      this.log.debug({ resource }, 'list expired (410); relisting');
    } else if (!this.down) {
      // Logged once per outage; the reconnect counter shows the retries.
      this.down = true;
      this.downSince = Date.now();
      this.log.warn(
        { resource, err: errorMessage(err) },
        'Kubernetes API unreachable; retrying with backoff',
      );
      this.sink?.unavailable(err);
    } else this.log.debug({ resource, err: errorMessage(err) }, 'list-watch failed again');
    if (status !== 410) this.metrics.sourceUp.set({ source: this.name }, 0);
    this.metrics.sourceReconnects.inc({ source: this.name, resource });
    const ceiling = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** rs.failures);
    rs.failures = Math.min(rs.failures + 1, 30);
    // Jitter in [ceiling/2, ceiling]: spread reconnects of many agents after an API restart.
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    clearTimeout(rs.timer);
    rs.timer = setTimeout(() => {
      if (!this.stopped) void rs.informer?.start();
    }, delay);
    rs.timer.unref();
  }
}
