// A pure parser for the start of a TLS connection: reassembles the ClientHello from one or more
// handshake records and reads the SNI host name and ALPN list, without terminating TLS. It never
// throws on any input (fuzzed); it says "incomplete" while more bytes could still make it parse.

/** What the first bytes of a connection say. */
export type ClientHelloResult =
  | { status: 'complete'; sni: string | undefined; alpn: string[]; bytes: number }
  | { status: 'incomplete' }
  | { status: 'invalid'; reason: string };

/** Largest ClientHello we wait for (post-quantum key shares make them ~2 KiB; leave room). */
export const MAX_CLIENT_HELLO = 64 * 1024;

const CONTENT_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;

function invalid(reason: string): ClientHelloResult {
  return { status: 'invalid', reason };
}

/** A DNS host name as SNI allows it (RFC 6066: ASCII, no trailing dot, no IP literals checked here). */
function validHostName(name: string): boolean {
  return name.length > 0 && name.length <= 253 && /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/.test(name);
}

/**
 * Parses the ClientHello at the start of `data` (all bytes received so far on a connection).
 * `bytes` in a complete result is how many bytes of `data` the records holding it used.
 */
export function parseClientHello(data: Uint8Array): ClientHelloResult {
  // 1. Reassemble the handshake message from consecutive handshake records.
  const parts: Uint8Array[] = [];
  let have = 0;
  let offset = 0;
  let need = -1;
  while (need < 0 || have < need) {
    if (data.length < offset + 5)
      return offset === 0 && data.length > 0 && data[0] !== CONTENT_HANDSHAKE
        ? invalid('not a TLS handshake record')
        : { status: 'incomplete' };
    if (data[offset] !== CONTENT_HANDSHAKE) return invalid('not a TLS handshake record');
    if (data[offset + 1] !== 0x03) return invalid('unknown TLS record version');
    const len = (data[offset + 3]! << 8) | data[offset + 4]!;
    if (len === 0 || len > 16384 + 2048) return invalid('bad TLS record length');
    if (data.length < offset + 5 + len) return { status: 'incomplete' };
    parts.push(data.subarray(offset + 5, offset + 5 + len));
    have += len;
    offset += 5 + len;
    if (need < 0 && have >= 4) {
      const first = concat(parts, have);
      if (first[0] !== HANDSHAKE_CLIENT_HELLO) return invalid('first handshake message is not a ClientHello');
      need = 4 + ((first[1]! << 16) | (first[2]! << 8) | first[3]!);
      if (need > MAX_CLIENT_HELLO) return invalid('ClientHello too large');
    }
    if (need < 0 && offset >= MAX_CLIENT_HELLO) return invalid('ClientHello too large');
  }
  const msg = concat(parts, have).subarray(4, need);
  const parsed = parseHelloBody(msg);
  if (parsed.status !== 'complete') return parsed;
  return { ...parsed, bytes: offset };
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Parses a ClientHello body (after the 4-byte handshake header). */
function parseHelloBody(b: Uint8Array): ClientHelloResult {
  let p = 0;
  const left = () => b.length - p;
  if (left() < 2 + 32 + 1) return invalid('ClientHello truncated');
  p += 2 + 32; // legacy_version, random
  const sid = b[p]!;
  p += 1;
  if (sid > 32 || left() < sid + 2) return invalid('bad session id');
  p += sid;
  const suites = (b[p]! << 8) | b[p + 1]!;
  p += 2;
  if (suites < 2 || suites % 2 !== 0 || left() < suites + 1) return invalid('bad cipher suites');
  p += suites;
  const comp = b[p]!;
  p += 1;
  if (comp < 1 || left() < comp) return invalid('bad compression methods');
  p += comp;
  const result = {
    status: 'complete' as const,
    sni: undefined as string | undefined,
    alpn: [] as string[],
    bytes: 0,
  };
  if (left() === 0) return result; // no extensions (old clients): no SNI
  if (left() < 2) return invalid('bad extensions length');
  const extLen = (b[p]! << 8) | b[p + 1]!;
  p += 2;
  if (extLen !== left()) return invalid('extensions length mismatch');
  const seen = new Set<number>();
  while (left() > 0) {
    if (left() < 4) return invalid('extension header truncated');
    const type = (b[p]! << 8) | b[p + 1]!;
    const len = (b[p + 2]! << 8) | b[p + 3]!;
    p += 4;
    if (len > left()) return invalid('extension truncated');
    if (seen.has(type)) return invalid('duplicate extension');
    seen.add(type);
    const ext = b.subarray(p, p + len);
    p += len;
    if (type === EXT_SERVER_NAME) {
      const sni = parseServerName(ext);
      if (sni === null) return invalid('bad server_name extension');
      result.sni = sni;
    } else if (type === EXT_ALPN) {
      const alpn = parseAlpn(ext);
      if (alpn === null) return invalid('bad ALPN extension');
      result.alpn = alpn;
    }
  }
  return result;
}

/** The host_name entry of a server_name extension; null when malformed. */
function parseServerName(e: Uint8Array): string | undefined | null {
  if (e.length === 0) return undefined; // a server's empty echo form; harmless in a ClientHello
  if (e.length < 2) return null;
  const listLen = (e[0]! << 8) | e[1]!;
  if (listLen !== e.length - 2) return null;
  let p = 2;
  let host: string | undefined;
  while (p < e.length) {
    if (e.length - p < 3) return null;
    const kind = e[p]!;
    const len = (e[p + 1]! << 8) | e[p + 2]!;
    p += 3;
    if (len > e.length - p) return null;
    if (kind === 0) {
      if (host !== undefined) return null; // RFC 6066: at most one host_name
      let s = '';
      for (let i = p; i < p + len; i++) s += String.fromCharCode(e[i]!);
      if (!validHostName(s)) return null;
      host = s.toLowerCase();
    }
    p += len;
  }
  return host;
}

/** The protocol names of an ALPN extension; null when malformed. */
function parseAlpn(e: Uint8Array): string[] | null {
  if (e.length < 2) return null;
  const listLen = (e[0]! << 8) | e[1]!;
  if (listLen !== e.length - 2 || listLen === 0) return null;
  const out: string[] = [];
  let p = 2;
  while (p < e.length) {
    const len = e[p]!;
    p += 1;
    if (len === 0 || len > e.length - p) return null;
    let s = '';
    for (let i = p; i < p + len; i++) s += String.fromCharCode(e[i]!);
    out.push(s);
    p += len;
  }
  return out;
}
