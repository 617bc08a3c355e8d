import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startCli } from '../helpers/cli.ts';
import { freePort } from '../helpers/ports.ts';

describe('edgemesh CLI', () => {
  it('--help lists every command; each command has its own --help', async () => {
    const top = await runCli(['--help']);
    expect(top.code).toBe(0);
    for (const cmd of ['agent', 'gateway', 'relay', 'status']) {
      expect(top.stdout).toContain(cmd);
      const sub = await runCli([cmd, '--help']);
      expect(sub.code).toBe(0);
      expect(sub.stdout).toMatch(new RegExp(`^Usage: edgemesh ${cmd}`));
    }
    const agent = await runCli(['agent', '--help']);
    for (const flag of [
      '--config',
      '--manifests',
      '--kubeconfig',
      '--kube-api',
      '--node-name',
      '--intercept',
      '--dataplane',
      '--proxy-port',
      '--dns-listen',
      '--metrics-listen',
      '--state-dir',
    ]) {
      expect(agent.stdout).toContain(flag);
    }
  });

  it('exits 2 on an unknown command, an unknown flag, a bad value and a bad config', async () => {
    const unknownCmd = await runCli(['frobnicate']);
    expect(unknownCmd.code).toBe(2);
    expect(unknownCmd.stderr).toContain("unknown command 'frobnicate'");

    const unknownFlag = await runCli(['agent', '--bogus']);
    expect(unknownFlag.code).toBe(2);
    expect(unknownFlag.stderr).toContain("Unknown option '--bogus'");

    const badValue = await runCli(['agent', '--intercept', 'magic']);
    expect(badValue.code).toBe(2);
    expect(badValue.stderr).toContain(
      "--intercept: expected one of auto, iptables, nftables, ebpf, none, got 'magic'",
    );

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgemesh-cli-'));
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(file, 'modules:\n  edgeProxy:\n    subNet: nope\n');
    const badConfig = await runCli(['agent', '--config', file]);
    expect(badConfig.code).toBe(2);
    expect(badConfig.stderr).toContain(
      `${file}:3: modules.edgeProxy.subNet: expected a CIDR like 10.96.0.0/12, got string "nope"`,
    );
    fs.rmSync(dir, { recursive: true });
  });

  it('the agent serves /healthz, /readyz, /metrics, /status and stops cleanly on SIGTERM and SIGINT', async () => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const port = await freePort();
      const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgemesh-state-'));
      const agent = startCli([
        'agent',
        '--intercept',
        'none',
        '--no-dns',
        '--metrics-listen',
        `127.0.0.1:${port}`,
        '--state-dir',
        stateDir,
        '--node-name',
        'node-a',
      ]);
      try {
        await agent.waitFor(/agent started/);
        const base = `http://127.0.0.1:${port}`;
        expect(await (await fetch(`${base}/healthz`)).text()).toBe('ok\n');
        expect((await fetch(`${base}/readyz`)).status).toBe(200);
        const metrics = await (await fetch(`${base}/metrics`)).text();
        expect(metrics).toContain('edgemesh_process_cpu_seconds_total');
        const status = (await (await fetch(`${base}/status`)).json()) as { nodeName: string };
        expect(status.nodeName).toBe('node-a');
        const statusCli = await runCli(['status', '--metrics-listen', `127.0.0.1:${port}`]);
        expect(statusCli.code).toBe(0);
        expect(statusCli.stdout).toContain('node:       node-a');
        expect(statusCli.stdout).toContain('SERVICE');
      } finally {
        const code = await agent.stop(signal);
        expect(code).toBe(0);
        expect(agent.output()).toContain('agent stopped');
        fs.rmSync(stateDir, { recursive: true, force: true });
      }
    }
  });

  it('status reports a missing agent with exit 1', async () => {
    const port = await freePort();
    const r = await runCli(['status', '--metrics-listen', `127.0.0.1:${port}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`no agent answering on 127.0.0.1:${port}`);
  });
});
