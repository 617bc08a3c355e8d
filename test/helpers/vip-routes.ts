// What the local VIP routes do, seen from a test: which VIPs have an edgemesh route in a namespace,
// and the MSS a client socket to a VIP gets (src/proxier/vip-routes.ts).
import path from 'node:path';
import { ROUTE_PROTO } from '../../src/proxier/vip-routes.ts';
import { runProcess } from '../../src/util/run-process.ts';
import { repoRoot } from './cli.ts';
import type { Netns } from './netns.ts';

/** The VIPs (IPv4 and IPv6) that have an edgemesh local route (proto 228) in `ns`, sorted. */
export async function vipRoutes(ns: Netns): Promise<string[]> {
  const show = (fam: string) =>
    ns.run('ip', fam, 'route', 'show', 'table', 'local', 'proto', String(ROUTE_PROTO));
  const out = `${await show('-4')}\n${await show('-6')}`;
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[1] ?? '')
    .filter(Boolean)
    .sort();
}

/** The MSS of a client socket to ip:port run under `prefix` (ss -ti via client-mss.mjs, read while connected). */
export async function clientMss(prefix: readonly string[], ip: string, port = 80): Promise<number> {
  const helper = path.join(repoRoot, 'test/helpers/client-mss.mjs');
  const r = await runProcess([...prefix, process.execPath, helper, ip, String(port)], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`client-mss ${ip}:${port}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { mss: number }).mss;
}
