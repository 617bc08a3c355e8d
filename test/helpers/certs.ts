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
