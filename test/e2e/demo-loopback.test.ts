// `edgemesh demo` without root (forced here with --loopback so it runs as root too): pods are
// built-in servers on loopback addresses, the agent runs with --intercept none, and every command
// the demo prints must work as printed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningCli, startCli } from '../helpers/cli.ts';
import { parseDemoCommands, runShell } from './demo-commands.ts';

describe('edgemesh demo --loopback', () => {
  let demo: RunningCli;

  beforeAll(async () => {
    demo = startCli(['demo', '--loopback', '--no-check']);
    await demo.waitFor(/Press Ctrl-C to stop/, 90_000);
  }, 120_000);

  afterAll(async () => {
    await demo?.stop('SIGTERM');
  }, 30_000);

  it('says that ClusterIP traffic is not intercepted and shows the example services', () => {
    const out = demo.output();
    expect(out).toContain('--intercept none');
    expect(out).toMatch(
      /edgemesh-test\/hostname-lb-svc\s+10\.96\.180\.13\s+12345\/TCP\/http\s+127\.0\.180\.11:9376,127\.0\.180\.12:9376,127\.0\.180\.13:9376/,
    );
    expect(out).toMatch(
      /edgemesh-test\/ws-svc\s+10\.96\.180\.12\s+12348\/TCP\/websocket\s+127\.0\.180\.15:8080/,
    );
  });

  it('every printed command works as printed', async () => {
    const commands = parseDemoCommands(demo.output());
    expect(commands.map((c) => c.title)).toEqual([
      'a hostname pod, directly',
      'the TCP echo pod, directly',
      'the WebSocket echo pod, directly',
      'what the agent serves',
    ]);
    for (const c of commands) {
      const r = await runShell(c.cmd, 45_000);
      expect({ title: c.title, code: r.code, stderr: r.stderr, stdout: r.stdout }).toMatchObject({ code: 0 });
      expect(r.stdout, c.title).toContain(c.expect);
    }
  }, 200_000);

  it('SIGTERM stops it cleanly: exit 0, pods and agent gone', async () => {
    expect(await demo.stop('SIGTERM')).toBe(0);
    expect(demo.output()).toContain('everything it created is removed');
    const r = await runShell('curl -s --max-time 2 127.0.180.11:9376');
    expect(r.code).not.toBe(0);
  }, 30_000);
});
