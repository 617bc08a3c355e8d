// VirtualService HTTP routing for the gateway: which VirtualServices serve a Gateway, host matching
// (exact and `*.suffix`), and the first http[] route whose match[] accepts a request. Pure functions
// over raw Istio objects, so bad fields are skipped instead of failing the whole table.
import type { KubeObject } from '../controller/types.ts';

/** Istio StringMatch: exactly one of exact / prefix / regex. */
export interface StringMatch {
  exact?: string;
  prefix?: string;
  regex?: string;
}

/** One route[] entry of an http/tcp/tls route. */
export interface RouteDestination {
  host: string;
  port?: number;
  weight: number;
}

/** One compiled http[] route. */
export interface HttpRoute {
  /** `namespace/name` of the VirtualService it came from (destinations resolve in its namespace). */
  vs: string;
  namespace: string;
  name: string;
  matches: CompiledMatch[];
  destinations: RouteDestination[];
  rewriteUri?: string;
  timeoutSeconds?: number;
  retries?: { attempts: number; perTryTimeoutSeconds?: number };
}

interface CompiledMatch {
  uri?: Matcher;
  method?: Matcher;
  headers: Array<[string, Matcher]>;
  queryParams: Array<[string, Matcher]>;
  /** The matched uri prefix (rewrite.uri replaces only this part). */
  uriPrefix?: string;
}

type Matcher = (value: string | undefined) => boolean;

/** What routing looks at in a request. */
export interface RequestView {
  host: string;
  /** Path plus query, as sent. */
  url: string;
  method: string;
  headers: Record<string, string | string[] | undefined>;
}

/** The route chosen for a request and the path to send upstream. */
export interface RouteChoice {
  route: HttpRoute;
  path: string;
}

function rec(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function strings(v: unknown): string[] {
  return list(v).filter((x): x is string => typeof x === 'string');
}

/** Compiles a StringMatch; undefined when it is malformed (bad regex, no known field). */
function compileMatcher(v: unknown): Matcher | undefined {
  const m = rec(v);
  if (!m) return undefined;
  if (typeof m.exact === 'string') {
    const e = m.exact;
    return (s) => s === e;
  }
  if (typeof m.prefix === 'string') {
    const p = m.prefix;
    return (s) => typeof s === 'string' && s.startsWith(p);
  }
  if (typeof m.regex === 'string') {
    let re: RegExp;
    try {
      // Istio regexes are RE2 full matches.
      re = new RegExp(`^(?:${m.regex})$`);
    } catch {
      return undefined;
    }
    return (s) => s !== undefined && re.test(s);
  }
  return undefined;
}

function compileMatch(v: unknown): CompiledMatch | undefined {
  const m = rec(v);
  if (!m) return undefined;
  const out: CompiledMatch = { headers: [], queryParams: [] };
  if (m.uri !== undefined) {
    out.uri = compileMatcher(m.uri);
    if (!out.uri) return undefined;
    const prefix = rec(m.uri)?.prefix;
    if (typeof prefix === 'string') out.uriPrefix = prefix;
  }
  if (m.method !== undefined) {
    out.method = compileMatcher(m.method);
    if (!out.method) return undefined;
  }
  for (const [field, target] of [
    ['headers', out.headers],
    ['queryParams', out.queryParams],
  ] as const) {
    for (const [k, mv] of Object.entries(rec(m[field]) ?? {})) {
      const matcher = compileMatcher(mv);
      if (!matcher) return undefined;
      target.push([field === 'headers' ? k.toLowerCase() : k, matcher]);
    }
  }
  return out;
}

/** Parses route[] entries; weights default to an even split of what is left (Istio: 100 total). */
export function parseDestinations(v: unknown): RouteDestination[] {
  const out: RouteDestination[] = [];
  for (const r of list(v)) {
    const d = rec(rec(r)?.destination);
    if (!d || typeof d.host !== 'string' || d.host === '') continue;
    const port = rec(d.port)?.number;
    const w = rec(r)?.weight;
    out.push({
      host: d.host,
      ...(typeof port === 'number' ? { port } : {}),
      weight: typeof w === 'number' && w >= 0 ? w : -1,
    });
  }
  const unset = out.filter((d) => d.weight < 0);
  if (unset.length > 0) {
    const left = Math.max(0, 100 - out.filter((d) => d.weight >= 0).reduce((a, d) => a + d.weight, 0));
    for (const d of unset) d.weight = left / unset.length;
  }
  return out;
}

/** True when `host` (no port, lower case) matches a VirtualService/Gateway host pattern. */
export function hostMatches(pattern: string, host: string): boolean {
  // Gateway server hosts may be written `namespace/host`.
  const p = (pattern.includes('/') ? pattern.slice(pattern.indexOf('/') + 1) : pattern).toLowerCase();
  if (p === '*') return true;
  if (p.startsWith('*.')) return host.endsWith(p.slice(1)) && host.length > p.length - 1;
  return p === host;
}

/**
 * How specifically `pattern` matches `host`: -1 no match, 0 for `*`, the suffix length for
 * `*.suffix`, and above every wildcard for an exact name. Istio serves a host from the
 * VirtualServices with its most specific matching host, not from whichever sorts first.
 */
export function hostSpecificity(pattern: string, host: string): number {
  if (!hostMatches(pattern, host)) return -1;
  const p = (pattern.includes('/') ? pattern.slice(pattern.indexOf('/') + 1) : pattern).toLowerCase();
  if (p === '*') return 0;
  if (p.startsWith('*.')) return p.length - 1;
  return 1_000_000;
}

/** True when VirtualService `vs` is bound to Gateway `gatewayKey` (`namespace/name`). */
export function boundTo(vs: KubeObject, gatewayKey: string): boolean {
  const [gwNs, gwName] = gatewayKey.split('/') as [string, string];
  const vsNs = vs.metadata.namespace ?? 'default';
  return strings(vs.spec?.gateways).some((g) => {
    if (g.includes('/')) return g === gatewayKey;
    // Short names are in the VirtualService's namespace (`name.ns.svc...` FQDN forms also accepted).
    return (g === gwName && vsNs === gwNs) || (g.split('.')[0] === gwName && g.split('.')[1] === gwNs);
  });
}

/** The compiled http[] routes of one VirtualService, in order; malformed routes are dropped. */
export function compileHttpRoutes(vs: KubeObject): HttpRoute[] {
  const namespace = vs.metadata.namespace ?? 'default';
  const out: HttpRoute[] = [];
  for (const r of list(vs.spec?.http)) {
    const route = rec(r);
    if (!route) continue;
    const matches: CompiledMatch[] = [];
    let bad = false;
    for (const m of list(route.match)) {
      const c = compileMatch(m);
      if (c) matches.push(c);
      else bad = true;
    }
    // A route whose every match is malformed must not turn into a catch-all.
    if (bad && matches.length === 0) continue;
    const destinations = parseDestinations(route.route);
    if (destinations.length === 0) continue;
    const compiled: HttpRoute = {
      vs: `${namespace}/${vs.metadata.name}`,
      namespace,
      name: typeof route.name === 'string' ? route.name : '',
      matches,
      destinations,
    };
    const rewrite = rec(route.rewrite)?.uri;
    if (typeof rewrite === 'string') compiled.rewriteUri = rewrite;
    const timeout = parseSeconds(route.timeout);
    if (timeout !== undefined && timeout > 0) compiled.timeoutSeconds = timeout;
    const retries = rec(route.retries);
    if (retries && typeof retries.attempts === 'number' && retries.attempts > 0) {
      const per = parseSeconds(retries.perTryTimeout);
      compiled.retries = {
        attempts: Math.min(10, Math.floor(retries.attempts)),
        ...(per !== undefined && per > 0 ? { perTryTimeoutSeconds: per } : {}),
      };
    }
    out.push(compiled);
  }
  return out;
}

/** Seconds in "1.5s" / "500ms" / "2m" (the forms Istio route timeouts use). */
export function parseSeconds(v: unknown): number | undefined {
  if (typeof v === 'number' && v >= 0) return v;
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v.trim());
  if (!m) return undefined;
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}

function firstValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(',') : v;
}

/** True when one compiled match accepts the request. */
function matchOne(m: CompiledMatch, req: RequestView, path: string, query: URLSearchParams): boolean {
  if (m.uri && !m.uri(path)) return false;
  if (m.method && !m.method(req.method)) return false;
  for (const [name, f] of m.headers) if (!f(firstValue(req.headers[name]))) return false;
  for (const [name, f] of m.queryParams) if (!f(query.get(name) ?? undefined)) return false;
  return true;
}

/**
 * The first route (in VirtualService order, then http[] order) that accepts the request, with the
 * upstream path after rewrite.uri; undefined when none does.
 */
export function chooseRoute(routes: readonly HttpRoute[], req: RequestView): RouteChoice | undefined {
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1));
  for (const route of routes) {
    let matched: CompiledMatch | undefined;
    if (route.matches.length === 0) matched = { headers: [], queryParams: [] };
    else matched = route.matches.find((m) => matchOne(m, req, path, query));
    if (!matched) continue;
    let upstreamPath = req.url;
    if (route.rewriteUri !== undefined) {
      // Istio: with a prefix match only the matched prefix is replaced, otherwise the whole path.
      const rest = matched.uriPrefix !== undefined ? path.slice(matched.uriPrefix.length) : '';
      let rewritten = route.rewriteUri + rest;
      if (rewritten === '') rewritten = '/';
      upstreamPath = rewritten + (q < 0 ? '' : req.url.slice(q));
    }
    return { route, path: upstreamPath };
  }
  return undefined;
}

/** A destination by weight; `random` in [0, 1). */
export function pickWeighted(
  destinations: readonly RouteDestination[],
  random: () => number = Math.random,
): RouteDestination | undefined {
  const total = destinations.reduce((a, d) => a + d.weight, 0);
  if (total <= 0) return destinations[0];
  let r = random() * total;
  for (const d of destinations) {
    if (r < d.weight) return d;
    r -= d.weight;
  }
  return destinations[destinations.length - 1];
}
