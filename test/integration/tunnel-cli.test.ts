// `edgemesh relay` as users run it: help, bad usage and missing credentials exit 2 with a message
// naming the flag or key; a relay with a PSK starts, serves /healthz and /status, and stops on SIGTERM.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, startCli } from '../helpers/cli.ts';
import { freePort } from '../helpers/ports.ts';

describe('edgemesh relay (CLI)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-relay-cli-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('documents its flags', async () => {
    const r = await runCli(['relay', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--listen', '--psk-file', '--ca-file', '--cert-file', '--key-file', '--node-name'])
      expect(r.stdout).toContain(flag);
  });

  it('exits 2 on bad usage and without credentials, naming what is wrong', async () => {
    const bad = await runCli(['relay', '--listen', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--listen: expected IP:PORT/);
    const none = await runCli(['relay', '--listen', '127.0.0.1:20999']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/modules\.edgeTunnel: set pskFile/);
    fs.writeFileSync(path.join(dir, 'short'), 'tiny\n');
    const short = await runCli(['relay', '--psk-file', path.join(dir, 'short')]);
    expect(short.code).toBe(2);
    expect(short.stderr).toMatch(/pskFile: .*fewer than 16 characters/);
    expect(short.stderr).not.toContain('tiny');
  });

  it('an agent with the tunnel enabled but no credentials exits 2 before starting anything', async () => {
    fs.writeFileSync(path.join(dir, 'agent.yaml'), 'modules:\n  edgeTunnel:\n    enable: true\n');
    const r = await runCli(['agent', '--config', path.join(dir, 'agent.yaml'), '--no-dns']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/edgemesh agent: modules\.edgeTunnel: set pskFile/);
  });

  it('runs with a PSK, serves /status, and exits 0 on SIGTERM', async () => {
    fs.writeFileSync(path.join(dir, 'psk'), 'a long enough pre-shared key\n');
    const metrics = `127.0.0.1:${await freePort()}`;
    const relay = startCli([
      'relay',
      '--node-name',
      'relay-cli',
      '--listen',
      `127.0.0.1:${await freePort()}`,
      '--psk-file',
      path.join(dir, 'psk'),
      '--metrics-listen',
      metrics,
    ]);
    try {
      await relay.waitFor(/relay started/, 20_000);
      const status = (await (await fetch(`http://${metrics}/status`)).json()) as {
        nodeName: string;
        agents: unknown[];
      };
      expect(status).toMatchObject({ nodeName: 'relay-cli', agents: [], pump: { active: 0, bytes: 0 } });
      expect(await (await fetch(`http://${metrics}/metrics`)).text()).toMatch(/edgemesh_relay_agents 0/);
    } finally {
      expect(await relay.stop('SIGTERM')).toBe(0);
    }
    expect(relay.output()).not.toContain('a long enough');
  });
});
