// Tunnel credentials: certificates from an operator CA (mutual TLS 1.3, the peer's node name must
// be in its certificate) and/or a pre-shared key. In PSK-only mode TLS runs on a throwaway
// self-signed certificate (encryption only) and the PSK authenticates both ends by an HMAC bound
// to the TLS session (see handshake.ts) — Node's own TLS-PSK is limited to TLS 1.2.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import type tls from 'node:tls';
import { promisify } from 'node:util';
import { EdgemeshError, ErrorCode } from '../errors.ts';

const execFileP = promisify(execFile);

/** The credential file paths (modules.edgeTunnel keys or relay flags). */
export interface CredentialFiles {
  pskFile: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** Loaded credentials: what TLS uses, and the PSK (never logged) when one is configured. */
export interface TunnelCredentials {
  /** Certificates are verified against `ca` and must name the peer node. */
  verifyCerts: boolean;
  psk?: Buffer;
  key: string;
  cert: string;
  ca?: string;
}

function readFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new EdgemeshError(ErrorCode.CONFIG, `modules.edgeTunnel.${what}: cannot read ${file}`, {
      cause: err,
    });
  }
}

let ephemeral: Promise<{ key: string; cert: string }> | undefined;

/** A self-signed P-256 certificate made once per process by openssl (encryption only, never trusted). */
function ephemeralCert(): Promise<{ key: string; cert: string }> {
  ephemeral ??= (async () => {
    const { stdout } = await execFileP('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-subj',
      '/CN=edgemesh-tunnel',
      '-days',
      '3650',
      '-keyout',
      '-',
    ]).catch((err: unknown) => {
      ephemeral = undefined;
      throw new EdgemeshError(ErrorCode.TUNNEL, 'openssl could not make the tunnel certificate', {
        cause: err,
      });
    });
    const key = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/.exec(stdout)?.[0];
    const cert = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(stdout)?.[0];
    if (!key || !cert) throw new EdgemeshError(ErrorCode.TUNNEL, 'openssl printed no certificate');
    return { key: `${key}\n`, cert: `${cert}\n` };
  })();
  return ephemeral;
}

/**
 * Loads the configured credentials. Needs pskFile, or caFile + certFile + keyFile, or both
 * (then both must match). Throws a CONFIG error naming the key, never the PSK.
 */
export async function loadCredentials(files: CredentialFiles): Promise<TunnelCredentials> {
  const certParts = [files.caFile, files.certFile, files.keyFile].filter((f) => f !== '').length;
  if (certParts !== 0 && certParts !== 3)
    throw new EdgemeshError(
      ErrorCode.CONFIG,
      'modules.edgeTunnel: caFile, certFile and keyFile go together (all three or none)',
    );
  if (certParts === 0 && files.pskFile === '')
    throw new EdgemeshError(
      ErrorCode.CONFIG,
      'modules.edgeTunnel: set pskFile, or caFile + certFile + keyFile (the tunnel never runs unauthenticated)',
    );
  let psk: Buffer | undefined;
  if (files.pskFile !== '') {
    const text = readFile(files.pskFile, 'pskFile').trim();
    if (text.length < 16)
      throw new EdgemeshError(
        ErrorCode.CONFIG,
        `modules.edgeTunnel.pskFile: ${files.pskFile} holds fewer than 16 characters`,
      );
    // Hash the text so keys of any length become one fixed-size HMAC key.
    psk = crypto.createHash('sha256').update(text).digest();
  }
  if (certParts === 3) {
    return {
      verifyCerts: true,
      ...(psk ? { psk } : {}),
      ca: readFile(files.caFile, 'caFile'),
      cert: readFile(files.certFile, 'certFile'),
      key: readFile(files.keyFile, 'keyFile'),
    };
  }
  const own = await ephemeralCert();
  return { verifyCerts: false, ...(psk ? { psk } : {}), ...own };
}

/**
 * TLS 1.3 suites, AES-128-GCM first: with AES-NI it is the cheapest per byte (openssl speed on the
 * build host, 16 KiB blocks: 2.3 GB/s vs 1.8 for ChaCha20-Poly1305 and less for AES-256-GCM), and
 * the tunnel's throughput is bound by the CPU of the TLS ends.
 */
const CIPHER_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

// Both ends: TLS 1.3 only, the fast suites, our identity, and the CA when one is configured.
function commonTlsOptions(
  c: TunnelCredentials,
): tls.SecureContextOptions & { minVersion: tls.SecureVersion } {
  return {
    minVersion: 'TLSv1.3',
    ciphers: CIPHER_SUITES,
    key: c.key,
    cert: c.cert,
    ...(c.ca ? { ca: c.ca } : {}),
  };
}

/**
 * TLS server options: TLS 1.3 only, client certificate requested. In cert mode the Session checks
 * it (`socket.authorized`, then the node name) before anything else and answers AUTH_FAIL with the
 * reason: Node's own TLS-level rejection drops the socket after the handshake with no alert, so the
 * dialing agent saw only "tunnel closed during handshake" and could not log why.
 */
export function serverTlsOptions(c: TunnelCredentials): tls.TlsOptions {
  return {
    ...commonTlsOptions(c),
    requestCert: true,
    rejectUnauthorized: false,
  };
}

/** TLS client options: TLS 1.3 only; the node name is checked by the handshake, not the hostname. */
export function clientTlsOptions(c: TunnelCredentials): tls.ConnectionOptions {
  return {
    ...commonTlsOptions(c),
    rejectUnauthorized: c.verifyCerts,
    checkServerIdentity: () => undefined,
  };
}

/** The names a verified peer certificate carries (subject CN and DNS SANs). */
export function certificateNames(cert: tls.PeerCertificate | undefined): string[] {
  if (!cert || Object.keys(cert).length === 0) return [];
  const names: string[] = [];
  const cn = cert.subject?.CN;
  if (typeof cn === 'string') names.push(cn);
  else if (Array.isArray(cn)) names.push(...cn);
  for (const part of (cert.subjectaltname ?? '').split(',')) {
    const m = /^\s*DNS:(.+)$/.exec(part);
    if (m) names.push(m[1]!.trim());
  }
  return names;
}
