// Test certificates made by openssl (no keys checked in): a CA, and a server and a client
// certificate it signed, for TLS tests; EC CAs and node certificates for the tunnel's cert mode.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** openssl-generated CA, server and client certificates in `dir`. */
export function makeCerts(dir: string, cn: string): void {
  const o = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  o(
    'req',
    '-x509',
    '-nodes',
    '-newkey',
    'rsa:2048',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=test-ca',
  );
  for (const name of ['server', 'client']) {
    o(
      'req',
      '-nodes',
      '-newkey',
      'rsa:2048',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${cn}-${name}`,
    );
    o(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
    );
  }
}

/** A self-signed EC P-256 certificate (1 day) written to certPath/keyPath, with the given subject and DNS names. */
export function makeSelfSigned(certPath: string, keyPath: string, subj: string, dnsNames: string[]): void {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-subj',
      subj,
      '-addext',
      `subjectAltName=${dnsNames.map((n) => `DNS:${n}`).join(',')}`,
    ],
    { stdio: 'ignore' },
  );
}

/** A test CA: its certificate and key files. */
export interface TestCa {
  dir: string;
  crt: string;
  key: string;
}

/** A node certificate and key the CA signed. */
export interface NodeCert {
  crt: string;
  key: string;
}

/** An EC P-256 CA (1 day) named `name`, written to dir/<name>.crt and dir/<name>.key. */
export function makeCa(dir: string, name: string): TestCa {
  const ca = { dir, crt: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  const subj = `/CN=${name}`;
  execFileSync(
    'openssl',
    [...EC_REQ, '-x509', '-days', '1', '-keyout', ca.key, '-out', ca.crt, '-subj', subj],
    {
      stdio: 'ignore',
    },
  );
  return ca;
}

/**
 * A certificate `ca` signed for subject CN `cn` with DNS SANs `dnsNames` (none by default), written
 * to ca.dir/<file>.crt and .key (file defaults to cn). The tunnel reads a node name from CN or a DNS SAN.
 */
export function makeNodeCert(ca: TestCa, cn: string, dnsNames: string[] = [], file = cn): NodeCert {
  const ext = dnsNames.length ? `subjectAltName=${dnsNames.map((n) => `DNS:${n}`).join(',')}\n` : '';
  return signCert(ca, cn, file, ext);
}

/**
 * Like makeNodeCert, but the SANs are raw openssl config lines (`DNS.1 = x, DNS:b1`, `URI.1 = ...`,
 * `IP.1 = ...`): values are taken literally, commas included (for identity-parsing tests).
 */
export function makeCertWithSans(ca: TestCa, cn: string, sanLines: string[], file: string): NodeCert {
  return signCert(ca, cn, file, `subjectAltName=@alt\n[alt]\n${sanLines.join('\n')}\n`);
}

// A new EC key + CSR for CN `cn`, signed by `ca` with the extensions file text `ext`.
function signCert(ca: TestCa, cn: string, file: string, ext: string): NodeCert {
  const out = { crt: path.join(ca.dir, `${file}.crt`), key: path.join(ca.dir, `${file}.key`) };
  const csr = path.join(ca.dir, `${file}.csr`);
  execFileSync('openssl', [...EC_REQ, '-keyout', out.key, '-out', csr, '-subj', `/CN=${cn}`], {
    stdio: 'ignore',
  });
  const extFile = path.join(ca.dir, `${file}.ext`);
  fs.writeFileSync(extFile, ext);
  execFileSync(
    'openssl',
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.crt,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      extFile,
      '-out',
      out.crt,
    ],
    { stdio: 'ignore' },
  );
  return out;
}

// `openssl req` arguments for a new unencrypted EC P-256 key (faster to make than RSA).
const EC_REQ = ['req', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
