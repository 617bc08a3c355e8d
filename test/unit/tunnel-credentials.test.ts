// Tunnel credentials: which combinations are accepted, that errors name the key (never the PSK),
// and how relay/peer addresses are split.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.ts';
import { loadCredentials } from '../../src/tunnel/credentials.ts';
import { splitAddress } from '../../src/tunnel/edge-tunnel.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-tunnel-creds-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const none = { pskFile: '', caFile: '', certFile: '', keyFile: '' };

describe('loadCredentials', () => {
  it('refuses to run without credentials, with half a certificate set, or with a short PSK', async () => {
    await expect(loadCredentials(none)).rejects.toMatchObject({ code: ErrorCode.CONFIG });
    await expect(loadCredentials({ ...none, caFile: '/x' })).rejects.toThrow(/go together/);
    fs.writeFileSync(path.join(dir, 'short'), 'short-secret\n');
    const err = await loadCredentials({ ...none, pskFile: path.join(dir, 'short') }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: ErrorCode.CONFIG });
    expect((err as Error).message).toMatch(/pskFile/);
    expect((err as Error).message).not.toContain('short-secret');
    await expect(loadCredentials({ ...none, pskFile: path.join(dir, 'missing') })).rejects.toThrow(
      /modules\.edgeTunnel\.pskFile: cannot read/,
    );
  });

  it('PSK mode: a throwaway certificate, the key hashed to 32 bytes', async () => {
    fs.writeFileSync(path.join(dir, 'psk'), '  sixteen-plus characters  \n');
    const c = await loadCredentials({ ...none, pskFile: path.join(dir, 'psk') });
    expect(c.verifyCerts).toBe(false);
    expect(c.psk?.length).toBe(32);
    expect(c.cert).toMatch(/BEGIN CERTIFICATE/);
    expect(c.key).toMatch(/BEGIN PRIVATE KEY/);
  });
});

describe('splitAddress', () => {
  it('takes ip or ip:port, defaulting the port', () => {
    expect(splitAddress('10.0.0.1', 20006)).toEqual({ host: '10.0.0.1', port: 20006 });
    expect(splitAddress('10.0.0.1:20007', 20006)).toEqual({ host: '10.0.0.1', port: 20007 });
  });
});
