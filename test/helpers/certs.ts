// Test certificates made by openssl (no keys checked in): a CA, and a server and a client
// certificate it signed, for TLS tests.
import { execFileSync } from 'node:child_process';

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
