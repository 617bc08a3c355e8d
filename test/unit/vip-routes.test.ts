// The local VIP route reconciler without root: what it would change (pure), and that a missing or
// failing `ip` costs one warning and never an exception (the real routes are tested in the shared
// interceptor suite, test/e2e/interceptor-suite.ts).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { EMPTY_TABLE, type ServiceEntry, type ServiceTable } from '../../src/controller/types.ts';
import type { InterceptTarget } from '../../src/proxier/interceptor.ts';
import {
  parseLocalRoutes,
  ROUTE_PROTO,
  renderRouteBatch,
  VipRoutes,
  vipsOf,
} from '../../src/proxier/vip-routes.ts';
import { silentLogger } from '../../src/util/log.ts';

const target = (clusterIP: string, port: number): InterceptTarget => ({
  id: `t/${clusterIP}:${port}`,
  clusterIP,
  port,
  protocol: 'TCP',
  toPort: 40001,
});

/** A logger that keeps warn-and-above records. */
function recordingLogger() {
  const warnings: Array<{ msg: string; reason?: string }> = [];
  const log = pino({ level: 'warn' }, { write: (s: string) => void warnings.push(JSON.parse(s)) });
  return { log, warnings };
}

describe('vip routes: desired set and batch', () => {
  it('wants each ClusterIP of the targets once, IPv6 in canonical form, per family when asked', () => {
    const ts = [target('10.96.0.10', 80), target('10.96.0.10', 443), target('FD00:0::0001', 80)];
    expect([...vipsOf(ts)]).toEqual(['10.96.0.10', 'fd00::1']);
    expect([...vipsOf(ts, 'ipv4')]).toEqual(['10.96.0.10']);
    expect([...vipsOf(ts, 'ipv6')]).toEqual(['fd00::1']);
  });

  it('parses `ip -6 route show table local` (no /128 suffix) and renders /128 routes', () => {
    const installed = [
      'local ::1 dev lo proto kernel metric 0 pref medium',
      `local fd00:96::10 dev lo proto ${ROUTE_PROTO} metric 1024 pref medium`, // ours, gone
      `local fd00:96::11 dev lo proto ${ROUTE_PROTO} metric 1024 pref medium`, // ours, wanted
      'local fe80::/64 dev lo proto kernel metric 256 pref medium', // a prefix, never a VIP
      'multicast ff00::/8 dev lo proto kernel metric 256 pref medium',
    ].join('\n');
    const parsed = parseLocalRoutes(installed);
    expect([...parsed.all].sort()).toEqual(['::1', 'fd00:96::10', 'fd00:96::11']);
    expect([...parsed.ours].sort()).toEqual(['fd00:96::10', 'fd00:96::11']);
    expect(renderRouteBatch(new Set(['fd00:96::11', 'fd00:96::12', '::1', '10.96.0.1']), installed)).toEqual([
      `route add local 10.96.0.1/32 dev lo table local proto ${ROUTE_PROTO}`,
      `route add local fd00:96::12/128 dev lo table local proto ${ROUTE_PROTO}`,
      `route del local fd00:96::10/128 dev lo table local proto ${ROUTE_PROTO}`,
    ]);
  });

  it('adds what is not local yet, deletes only our routes that are no longer wanted', () => {
    const installed = [
      'local 10.96.0.10 dev lo proto kernel scope host src 10.96.0.10 ', // an address on lo: not ours
      `local 10.96.0.12 dev lo proto ${ROUTE_PROTO} scope host `, // ours, still wanted
      `local 10.96.0.13 dev lo proto ${ROUTE_PROTO} scope host `, // ours, gone
      'local 10.96.0.14 dev lo proto static scope host ', // someone else's, not wanted: kept
      'local 127.0.0.0/8 dev lo proto kernel scope host src 127.0.0.1 ',
    ].join('\n');
    const desired = new Set(['10.96.0.20', '10.96.0.10', '10.96.0.12', '10.96.0.11']);
    expect(renderRouteBatch(desired, installed)).toEqual([
      `route add local 10.96.0.11/32 dev lo table local proto ${ROUTE_PROTO}`,
      `route add local 10.96.0.20/32 dev lo table local proto ${ROUTE_PROTO}`,
      `route del local 10.96.0.13/32 dev lo table local proto ${ROUTE_PROTO}`,
    ]);
    expect(renderRouteBatch(new Set(['10.96.0.12']), installed)).toEqual([
      `route del local 10.96.0.13/32 dev lo table local proto ${ROUTE_PROTO}`,
    ]);
  });
});

describe('vip routes: endpoint addresses stay non-local', () => {
  it('a ClusterIP that is also an endpoint gets no route (the proxy connects to it for real)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'em-vip-routes-'));
    try {
      const batch = path.join(dir, 'batch');
      // A stand-in `ip`: `show` lists one route of ours, `-force -batch -` keeps its input.
      const fakeIp = `if [ "$2" = -force ]; then cat > "$0"; else echo 'local 10.96.0.12 dev lo proto ${ROUTE_PROTO} scope host'; fi`;
      const routes = new VipRoutes({
        log: silentLogger,
        commandPrefix: ['sh', '-c', fakeIp, batch],
        owner: 'iptables',
      });
      // "chain" (10.96.0.103) has an endpoint at 10.96.0.104, the ClusterIP of "shadow".
      const chain = {
        ports: [{ endpoints: [{ ip: '10.96.0.104', port: 9376 }] }],
      } as unknown as ServiceEntry;
      const table: ServiceTable = { ...EMPTY_TABLE, services: new Map([['t/chain', chain]]) };
      routes.observe(table);
      expect(await routes.syncTargets([target('10.96.0.103', 80), target('10.96.0.104', 9376)])).toBe(true);
      expect(readFileSync(batch, 'utf8').trim().split('\n')).toEqual([
        `route add local 10.96.0.103/32 dev lo table local proto ${ROUTE_PROTO}`,
        `route del local 10.96.0.12/32 dev lo table local proto ${ROUTE_PROTO}`,
      ]);
      // The same set again runs no `ip` at all; the drift check still looks (and, as this fake `ip`
      // never changes, finds the same work again).
      rmSync(batch);
      expect(await routes.syncTargets([target('10.96.0.104', 9376), target('10.96.0.103', 80)])).toBe(false);
      expect(existsSync(batch)).toBe(false);
      expect(await routes.reconcile()).toBe(true);
      expect(existsSync(batch)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('vip routes: failures never throw and warn once', () => {
  it('`ip` not found: one warning naming the reason, sync and repair report no change', async () => {
    const { log, warnings } = recordingLogger();
    const routes = new VipRoutes({ log, commandPrefix: ['/nonexistent/edgemesh-test'], owner: 'iptables' });
    await routes.start();
    expect(await routes.syncTargets([target('10.96.0.10', 80)])).toBe(false);
    expect(await routes.reconcile()).toBe(false);
    await routes.clear();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toMatch(/cannot manage local VIP routes: interception still works/);
    expect(warnings[0]!.reason).toMatch(/cannot run/);
  });

  it('`ip` failing: one warning with its exit status', async () => {
    const { log, warnings } = recordingLogger();
    // `sh -c 'exit 3' x ip ...`: an ip that always fails.
    const routes = new VipRoutes({ log, commandPrefix: ['sh', '-c', 'exit 3', 'x'], owner: 'nftables' });
    expect(await routes.syncTargets([target('10.96.0.10', 80)])).toBe(false);
    expect(await routes.reconcile()).toBe(false);
    expect(warnings.map((w) => w.reason)).toEqual(['ip route show failed: exit 3']);
  });

  it('switched off: nothing is changed and nothing warned, even without `ip`', async () => {
    const { log, warnings } = recordingLogger();
    const routes = new VipRoutes({
      log,
      commandPrefix: ['/nonexistent/edgemesh-test'],
      owner: 'iptables',
      enabled: false,
    });
    await routes.start();
    expect(await routes.syncTargets([target('10.96.0.10', 80)])).toBe(false);
    await routes.clear();
    expect(warnings).toEqual([]);
  });
});
