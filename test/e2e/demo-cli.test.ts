// `edgemesh demo` usage: help, bad flags and bad helper arguments exit 2 with a clear message.
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.ts';

describe('edgemesh demo usage', () => {
  it('--help documents the flags and helpers', async () => {
    const r = await runCli(['demo', '--help']);
    expect(r.code).toBe(0);
    for (const flag of [
      '--prefix',
      '--intercept',
      '--dataplane',
      '--loopback',
      '--no-check',
      'demo ws',
      'demo pod',
    ])
      expect(r.stdout).toContain(flag);
  });

  it('rejects a prefix that cannot name devices, and bad helper arguments, with exit 2', async () => {
    const bad = await runCli(['demo', '--prefix', 'Way-Too-Long-Prefix']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--prefix');
    const ws = await runCli(['demo', 'ws', 'http://x']);
    expect(ws.code).toBe(2);
    expect(ws.stderr).toContain('usage: edgemesh demo ws');
    const pod = await runCli(['demo', 'pod', 'nginx', 'a', '1.2.3.4:80']);
    expect(pod.code).toBe(2);
    expect(pod.stderr).toContain('hostname|tcp-echo|websocket');
  });

  it('demo ws reports an unreachable server with exit 1', async () => {
    const r = await runCli(['demo', 'ws', 'ws://127.0.0.1:1', 'hi']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ws://127.0.0.1:1');
  });
});
