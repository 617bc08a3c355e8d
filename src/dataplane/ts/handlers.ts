// The dispatch point where protocol handlers (HTTP per-request LB, websocket, TLS SNI ...) plug
// into the TS data plane: a connection whose port's appProtocol has a handler goes to it instead
// of the plain TCP forwarder. Registries are per thread: each listener worker imports the modules
// named in PROTOCOL_HANDLER_MODULES at boot and lets them register.
import type net from 'node:net';
import type { AppProtocol, ServiceEntry, ServicePortEntry } from '../../controller/types.ts';
import type { Balancer } from '../../lb/index.ts';

/**
 * Takes over one accepted client connection of `service`/`port` (owns the socket from then on);
 * `balancer` is the listener's balancer for that port (shared ejection/affinity state).
 */
export type ProtocolHandler = (
  client: net.Socket,
  service: ServiceEntry,
  port: ServicePortEntry,
  balancer?: Balancer,
) => void;

/** What a handler module exports: `registerHandlers(register)` is called once per worker thread. */
export type RegisterHandlers = (register: (protocol: AppProtocol, handler: ProtocolHandler) => void) => void;

/**
 * Handler modules every listener worker loads (URLs relative to this file): src/protocols registers
 * http, websocket and https; other appProtocols are forwarded as plain TCP.
 */
export const PROTOCOL_HANDLER_MODULES: readonly string[] = ['../../protocols/index.ts'];

const handlers = new Map<AppProtocol, ProtocolHandler>();

/** Registers (or replaces) this thread's handler for a protocol. */
export function registerHandler(protocol: AppProtocol, handler: ProtocolHandler): void {
  handlers.set(protocol, handler);
}

/** This thread's handler for a protocol, if one is registered. */
export function handlerFor(protocol: AppProtocol): ProtocolHandler | undefined {
  return handlers.get(protocol);
}

/** Imports handler modules (URLs or paths resolved against this file) and lets each register. */
export async function loadHandlerModules(modules: readonly string[]): Promise<void> {
  for (const spec of modules) {
    const mod = (await import(new URL(spec, import.meta.url).href)) as {
      registerHandlers?: RegisterHandlers;
    };
    if (typeof mod.registerHandlers !== 'function') {
      throw new Error(`protocol handler module ${spec} does not export registerHandlers()`);
    }
    mod.registerHandlers(registerHandler);
  }
}
