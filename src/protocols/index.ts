// Protocol handlers by Service port appProtocol (DESIGN.md §3): http (per-request load balancing
// over pooled upstream connections), websocket/ws and https (byte streams after a look at the
// first bytes), plus the UDP flow proxy. The TS data plane loads this module in each listener
// worker and calls registerHandlers(); `handlers` is the same table for direct use.
import type { AppProtocol, ServiceEntry, ServicePortEntry } from '../controller/types.ts';
import type { ProtocolHandler } from '../dataplane/ts/handlers.ts';
import type { Balancer, BalancerOptions } from '../lb/index.ts';
import { BalancerRegistry } from './balancer-registry.ts';
import { HttpProxy, type HttpProxyOptions } from './http-proxy.ts';
import { handleTlsPassthrough, handleWebsocket } from './stream-handlers.ts';

export { BalancerRegistry } from './balancer-registry.ts';
export {
  cookieValue,
  DEFAULT_HTTP_OPTIONS,
  HttpProxy,
  type HttpProxyOptions,
  hashKeyOf,
} from './http-proxy.ts';
export { peek } from './peek.ts';
export {
  ProtocolMetrics,
  type ProxyReplyReason,
  registerWorkerProtocolMetrics,
  serviceLabel,
  threadProtocolMetrics,
} from './protocol-metrics.ts';
export { handleTlsPassthrough, handleWebsocket, hashKeyFromHead } from './stream-handlers.ts';
export { clientIp, connectUpstream, DEFAULT_CONNECT, tunnel } from './tcp.ts';
export { type ClientHelloResult, parseClientHello } from './tls-client-hello.ts';
export { UdpProxy, type UdpProxyOptions } from './udp-proxy.ts';

// The handler signature is the data plane's dispatch contract; re-exported for handler authors.
export type { ProtocolHandler };

let registry: BalancerRegistry | undefined;
let httpProxy: HttpProxy | undefined;

/** Settings for this thread's handlers; call before the first connection (tests, data plane). */
export function configureProtocols(opts: {
  balancer?: BalancerOptions;
  http?: Partial<HttpProxyOptions>;
}): void {
  registry = new BalancerRegistry(opts.balancer);
  void httpProxy?.close();
  httpProxy = new HttpProxy(opts.http);
}

function balancerOf(service: ServiceEntry, port: ServicePortEntry, given: Balancer | undefined): Balancer {
  if (given) return given;
  registry ??= new BalancerRegistry({
    ...(process.env.NODE_NAME ? { nodeName: process.env.NODE_NAME } : {}),
  });
  return registry.get(service, port);
}

/** This thread's HTTP engine (created on first use). */
export function threadHttpProxy(): HttpProxy {
  httpProxy ??= new HttpProxy();
  return httpProxy;
}

const httpHandler: ProtocolHandler = (client, service, port, balancer) => {
  threadHttpProxy().handle(client, service, port, balancerOf(service, port, balancer));
};

const websocketHandler: ProtocolHandler = (client, service, port, balancer) => {
  void handleWebsocket(client, balancerOf(service, port, balancer));
};

const httpsHandler: ProtocolHandler = (client, service, port, balancer) => {
  void handleTlsPassthrough(client, balancerOf(service, port, balancer));
};

/** Handlers by appProtocol ('tcp' and 'udp' have none: the data plane forwards those itself). */
export const handlers: Readonly<Partial<Record<AppProtocol, ProtocolHandler>>> = {
  http: httpHandler,
  websocket: websocketHandler,
  https: httpsHandler,
};

/** The data plane's hook (src/dataplane/ts/handlers.ts): registers every handler above. */
export function registerHandlers(register: (protocol: AppProtocol, handler: ProtocolHandler) => void): void {
  for (const [protocol, handler] of Object.entries(handlers)) register(protocol as AppProtocol, handler);
}
