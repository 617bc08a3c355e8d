// Byte-stream protocols after a look at the first bytes: websocket/ws (the HTTP upgrade request's
// headers feed consistent hashing) and https (TLS passthrough; the ClientHello's SNI is the hash
// key and is logged). The bytes looked at are replayed unchanged, so endpoints see the original
// stream. Anything that does not parse is still forwarded: inspection is a hint, not a gate.
import type net from 'node:net';
import type { Balancer, PickContext } from '../lb/index.ts';
import type { Logger } from '../util/log.ts';
import { cookieValue } from './http-proxy.ts';
import { peek } from './peek.ts';
import { type ConnectOptions, clientIp, connectUpstream, DEFAULT_CONNECT, tunnel } from './tcp.ts';
import { MAX_CLIENT_HELLO, parseClientHello } from './tls-client-hello.ts';

/** How long a handler waits for the first bytes before forwarding without them. */
export const PEEK_TIMEOUT_MS = 3000;
const MAX_HTTP_HEAD = 16 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');

/** The header value (or cookie / query value) the balancer's hash source names, from a raw request head. */
export function hashKeyFromHead(head: Buffer, balancer: Balancer): string | undefined {
  const source = balancer.hashSource;
  if (!source || source.kind === 'sourceIp') return undefined;
  const end = head.indexOf(HEAD_END);
  if (end < 0) return undefined;
  const lines = head.subarray(0, end).toString('latin1').split('\r\n');
  const requestLine = lines[0] ?? '';
  if (source.kind === 'query') {
    const target = requestLine.split(' ')[1] ?? '';
    const q = target.indexOf('?');
    return q < 0 ? undefined : (new URLSearchParams(target.slice(q + 1)).get(source.name) ?? undefined);
  }
  const wanted = source.kind === 'header' ? source.name : 'cookie';
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0 || line.slice(0, colon).trim().toLowerCase() !== wanted) continue;
    const value = line.slice(colon + 1).trim();
    return source.kind === 'cookie' ? cookieValue(value, source.name) : value;
  }
  return undefined;
}

/** Connects per `ctx`, replays `first`, and joins the sockets; resets the client when nothing answers. */
async function forward(
  client: net.Socket,
  balancer: Balancer,
  ctx: PickContext,
  first: Buffer,
  opts: ConnectOptions,
): Promise<void> {
  const up = await connectUpstream(balancer, ctx, opts);
  if (!up) {
    client.resetAndDestroy();
    return;
  }
  if (client.destroyed) {
    up.socket.destroy();
    balancer.onResult?.(up.endpoint, true);
    return;
  }
  if (first.length > 0) up.socket.write(first);
  tunnel(client, up.socket, () => balancer.onResult?.(up.endpoint, true));
}

/** websocket/ws ports: TCP after reading the upgrade request's head for hashing (when configured). */
export async function handleWebsocket(
  client: net.Socket,
  balancer: Balancer,
  opts: ConnectOptions = DEFAULT_CONNECT,
): Promise<void> {
  // Nothing may be read before someone listens: data emitted while flowing would be lost.
  client.pause();
  client.on('error', () => client.destroy());
  const ctx: PickContext = { clientIp: clientIp(client) };
  let first: Buffer = Buffer.alloc(0);
  const source = balancer.hashSource;
  if (source && source.kind !== 'sourceIp') {
    first = await peek(client, (b) => b.includes(HEAD_END), MAX_HTTP_HEAD, PEEK_TIMEOUT_MS);
    const key = hashKeyFromHead(first, balancer);
    if (key !== undefined) ctx.hashKey = key;
  }
  await forward(client, balancer, ctx, first, opts);
}

/** https ports: TLS passthrough; the SNI (when present) is the hash key and goes to the log. */
export async function handleTlsPassthrough(
  client: net.Socket,
  balancer: Balancer,
  opts: ConnectOptions = DEFAULT_CONNECT,
  log?: Logger,
): Promise<string | undefined> {
  client.pause();
  client.on('error', () => client.destroy());
  const ctx: PickContext = { clientIp: clientIp(client) };
  const first = await peek(
    client,
    (b) => parseClientHello(b).status !== 'incomplete',
    MAX_CLIENT_HELLO,
    PEEK_TIMEOUT_MS,
  );
  const hello = parseClientHello(first);
  let sni: string | undefined;
  if (hello.status === 'complete') {
    sni = hello.sni;
    if (sni !== undefined && balancer.hashSource && balancer.hashSource.kind !== 'sourceIp')
      ctx.hashKey = sni;
    log?.debug({ client: ctx.clientIp, sni, alpn: hello.alpn }, 'tls passthrough');
  } else {
    log?.debug(
      { client: ctx.clientIp, reason: hello.status === 'invalid' ? hello.reason : 'timeout' },
      'no ClientHello',
    );
  }
  await forward(client, balancer, ctx, first, opts);
  return sni;
}
