// An agent without root cannot create the edgemesh0 bridge: it must say so clearly and keep
// running (metrics, controller) instead of failing hard. As root the test drops to `nobody`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { binPath, type RunningCli, startCli } from '../helpers/cli.ts';
import { freePort } from '../helpers/ports.ts';
import { isRoot } from '../helpers/privileges.ts';

let agent: RunningCli | undefined;
let dir: string | undefined;
afterEach(async () => {
  await agent?.stop('SIGKILL');
  agent = undefined;
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('dns without root', () => {
  it('logs that DNS is not served and keeps the agent running', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-dns-nonroot-'));
    fs.chmodSync(dir, 0o777);
    const metrics = await freePort();
    // setpriv execs in place (no parent left behind), so stopping the child stops the agent.
    const asNobody = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--inh-caps=-all'];
    const command = isRoot ? [...asNobody, process.execPath, binPath] : [process.execPath, binPath];
    agent = startCli(
      [
        'agent',
        '--intercept',
        'none',
        '--state-dir',
        path.join(dir, 'state'),
        '--metrics-listen',
        `127.0.0.1:${metrics}`,
        '--config',
        writeConfig(dir),
      ],
      { command },
    );
    await agent.waitFor(/NOT SERVING \(not root\)/, 30_000);
    expect(agent.output()).toMatch(/needs root \(CAP_NET_ADMIN\).*--dns-listen/);
    await agent.waitFor(/agent started/, 30_000);
    const res = await fetch(`http://127.0.0.1:${metrics}/healthz`);
    expect(res.status).toBe(200);
    expect(agent.child.exitCode).toBeNull();
  });
});

function writeConfig(dir: string): string {
  // The proxy needs root too; this test is about DNS only.
  const file = path.join(dir, 'edgemesh.yaml');
  fs.writeFileSync(file, 'modules:\n  edgeProxy: { enable: false }\n');
  fs.chmodSync(file, 0o644);
  return file;
}
