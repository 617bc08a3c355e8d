// Upstream selection: resolv.conf parsing, skipping our own address, re-reading on change.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseResolvConf, parseUpstream, UpstreamList } from '../../src/dns/upstream-list.ts';
import { silentLogger } from '../../src/util/log.ts';

const dirs: string[] = [];
const lists: UpstreamList[] = [];
afterEach(() => {
  for (const l of lists.splice(0)) l.stop();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('upstreams', () => {
  it('parses nameserver lines, ignoring comments, options and junk', () => {
    const text =
      '# comment\nsearch corp.example\nnameserver 10.0.0.2 # primary\nnameserver bogus\noptions ndots:5\nnameserver fd00::53\n; x\n';
    expect(parseResolvConf(text)).toEqual([
      { host: '10.0.0.2', port: 53 },
      { host: 'fd00::53', port: 53 },
    ]);
    expect(parseUpstream('8.8.8.8')).toEqual({ host: '8.8.8.8', port: 53 });
    expect(parseUpstream('127.0.0.1:5353')).toEqual({ host: '127.0.0.1', port: 5353 });
    expect(parseUpstream('dns.example')).toBeUndefined();
  });

  it('skips our own listen address and follows resolv.conf when it changes', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-dns-up-'));
    dirs.push(dir);
    const file = path.join(dir, 'resolv.conf');
    fs.writeFileSync(file, 'nameserver 169.254.96.16\nnameserver 10.0.0.2\n');
    let changes = 0;
    const list = new UpstreamList({
      configured: [],
      resolvConf: file,
      self: [{ host: '169.254.96.16', port: 53 }],
      log: silentLogger,
      pollMs: 20,
      onChange: () => changes++,
    });
    lists.push(list);
    list.start();
    expect(list.servers).toEqual([{ host: '10.0.0.2', port: 53 }]);
    // Replaced by rename, as resolvconf/NetworkManager do.
    fs.writeFileSync(`${file}.new`, 'nameserver 10.0.0.3\n');
    fs.renameSync(`${file}.new`, file);
    for (let i = 0; i < 200 && list.servers[0]?.host !== '10.0.0.3'; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(list.servers).toEqual([{ host: '10.0.0.3', port: 53 }]);
    expect(changes).toBe(2);
  });

  it('uses configured upstreams as given, minus ourselves, and ignores resolv.conf', () => {
    const list = new UpstreamList({
      configured: ['127.0.0.1:53', '10.1.1.1', '10.1.1.2:5353'],
      resolvConf: '/nonexistent',
      self: [{ host: '0.0.0.0', port: 53 }],
      log: silentLogger,
    });
    lists.push(list);
    list.start();
    expect(list.servers).toEqual([{ host: '10.1.1.2', port: 5353 }]);
  });
});
