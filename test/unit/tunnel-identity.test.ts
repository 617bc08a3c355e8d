// Which node names a peer certificate carries (certificateNames), read from the certificate a real
// TLS 1.3 handshake on loopback delivers: the CN and DNS SANs count; a SAN value that merely
// contains "DNS:b1" (Node quotes and escapes such values), a URI SAN "DNS:b1" or an IP SAN does not.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certificateNames } from '../../src/tunnel/credentials.ts';
import { makeCa, makeCertWithSans, type TestCa } from '../helpers/certs.ts';

let dir: string;
let ca: TestCa;
let n = 0;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-identity-'));
  ca = makeCa(dir, 'ca');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The peer certificate a TLS client sees from a server presenting ca-signed `cn` with `sans`. */
async function peerCertificate(cn: string, sans: string[]): Promise<tls.PeerCertificate> {
  const cert = makeCertWithSans(ca, cn, sans, `cert${++n}`);
  const server = tls.createServer(
    { key: fs.readFileSync(cert.key), cert: fs.readFileSync(cert.crt), minVersion: 'TLSv1.3' },
    (s) => s.end(),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as { port: number }).port;
    return await new Promise((resolve, reject) => {
      const c = tls.connect({
        host: '127.0.0.1',
        port,
        ca: fs.readFileSync(ca.crt),
        checkServerIdentity: () => undefined,
      });
      c.once('secureConnect', () => {
        resolve(c.getPeerCertificate());
        c.destroy();
      });
      c.once('error', reject);
    });
  } finally {
    server.close();
  }
}

describe('certificateNames', () => {
  it('takes the CN and every DNS SAN', async () => {
    const names = certificateNames(await peerCertificate('a1', ['DNS.1 = a1.edge', 'DNS.2 = node-a1']));
    expect(names.sort()).toEqual(['a1', 'a1.edge', 'node-a1']);
  });

  it('a SAN value containing ", DNS:b1" does not name b1 (Node quotes it; no naive split)', async () => {
    const cert = await peerCertificate('a1', ['DNS.1 = x, DNS:b1', 'DNS.2 = y']);
    // The dangerous text really is in the certificate (escaped by Node).
    expect(cert.subjectaltname).toMatch(/DNS:b1/);
    const names = certificateNames(cert);
    expect(names).not.toContain('b1');
    expect(names).toContain('a1');
    expect(names).toContain('y');
  });

  it('URI, IP and email SANs name no node', async () => {
    const names = certificateNames(
      await peerCertificate('a1', ['URI.1 = DNS:b1', 'IP.1 = 10.2.0.2', 'email.1 = b1@DNS']),
    );
    expect(names).toEqual(['a1']);
  });

  it('no certificate names nothing', () => {
    expect(certificateNames(undefined)).toEqual([]);
    expect(certificateNames({} as tls.PeerCertificate)).toEqual([]);
  });
});
