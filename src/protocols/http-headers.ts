// Header and error-code sets shared by the two HTTP forwarders (the mesh HTTP engine and the
// ingress gateway), so both strip the same hop-by-hop headers and retry on the same failures.

/** Request headers that describe this hop only (RFC 9110 §7.6.1) or that undici sets itself. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'expect',
]);

/** Response headers not passed back to the client (Node frames the response itself). */
export const RESPONSE_HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
]);

/** Connect-phase failures: the request never reached the endpoint, so another may be tried. */
export const CONNECT_ERRORS: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
]);
