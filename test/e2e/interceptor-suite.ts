// The one interceptor test suite, run against every implementation (iptables-legacy, iptables-nft,
// nftables ...): real rules in a throwaway netns, real connections through them.
// Plan: lo holds "ClusterIPs" 10.96.0.10 and 10.96.0.11 locally, so a connection
// that is NOT redirected reaches the "direct" server on :80, and one that is redirected reaches
// the server on the target's toPort (21000 → "port-a", 21001 → "port-b"). ClusterIP 10.97.0.10 is
// not local: 10.97.0.0/16 is routed to a 1500-MTU bridge (as a service CIDR is on a node), so only
// the interceptor's local VIP route (vip-routes.ts) gives its node-local clients lo's MTU. A pod
// namespace (10.245.0.2, veth to the node at 10.245.0.1) is the client from elsewhere.
// IPv6 plan, the same shape: fd00:96::10 and fd00:96::11 on lo, fd00:97::/64 routed to svc0, the
// pod at fd00:245::2 (node fd00:245::1); an IPv6-only backend answers "direct6" on :80 and
// "port-6" on 21002, the latter with the connection's original destination (orig-dst-server.py;
// without a nat entry, as for "direct6", the kernel may have none to give).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMPTY_TABLE, type ServiceEntry } from '../../src/controller/types.ts';
import type { Interceptor, InterceptTarget } from '../../src/proxier/interceptor.ts';
import type { RuleOptions } from '../../src/proxier/iptables-render.ts';
import { silentLogger } from '../../src/util/log.ts';
import { runProcess } from '../../src/util/run-process.ts';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { clientMss as clientMssVia, vipRoutes } from '../helpers/vip-routes.ts';

/** How one implementation plugs into the suite. */
export interface InterceptorSuiteImpl {
  /** Builds the interceptor, running its tools inside `ns` (commandPrefix). */
  make(ns: Netns, options: RuleOptions & { log: typeof silentLogger; localVipRoutes: boolean }): Interceptor;
  /** Adds someone else's rule (must survive everything we do). */
  addForeignRule(ns: Netns): Promise<void>;
  /** The ruleset as this backend shows it, normalized (no counters, no timestamps). */
  snapshot(ns: Netns): Promise<string>;
  /** Deletes part of our installed state the way a careless admin would. */
  sabotage(ns: Netns): Promise<void>;
  /** The same for the IPv6 rules (eBPF: those of the rule interceptor it hands IPv6 to). */
  sabotage6(ns: Netns): Promise<void>;
  /**
   * argv prefix that runs a client command in `ns` (default `ip netns exec <ns>`). eBPF: the client
   * must also sit in the cgroup the programs are attached to (cgroup hooks cover nothing else).
   */
  clientPrefix?(ns: Netns): string[];
  /**
   * Set (to the reason) when start() deliberately adopts a crashed run's state instead of removing
   * it (eBPF: pinned maps and links keep the killed agent's flows working across a restart). The
   * crash case then checks adoption: old services keep working until the first sync removes them.
   */
  adoptsLeftovers?: string;
  /** What a killed agent's process exit does to a crashed interceptor (eBPF: its fds close). */
  kill?(crashed: Interceptor): Promise<void>;
  /**
   * True when L4 services with reachable endpoints bypass the proxy (eBPF socket-LB: connect()
   * goes straight to an endpoint); otherwise they are redirected to the proxy like any target.
   */
  balancesSockets?: boolean;
}

const BYPASS_GID = 40001;
const a = (toPort: number): InterceptTarget => ({
  id: 't/a:tcp',
  clusterIP: '10.96.0.10',
  port: 80,
  protocol: 'TCP',
  toPort,
});
const b = (toPort: number): InterceptTarget => ({
  id: 't/b',
  clusterIP: '10.96.0.11',
  port: 80,
  protocol: 'TCP',
  toPort,
});
/** The routed (not local) ClusterIP. */
const ROUTED_VIP = '10.97.0.10';
const c = (toPort: number): InterceptTarget => ({
  id: 't/c',
  clusterIP: ROUTED_VIP,
  port: 80,
  protocol: 'TCP',
  toPort,
});

/** IPv6 ClusterIPs: one on lo (local already), one only routed (gets a /128 local route). */
const LOCAL_VIP6 = 'fd00:96::10';
const ROUTED_VIP6 = 'fd00:97::10';
const a6: InterceptTarget = { id: 't/a6', clusterIP: LOCAL_VIP6, port: 80, protocol: 'TCP', toPort: 21002 };
const c6: InterceptTarget = { id: 't/c6', clusterIP: ROUTED_VIP6, port: 80, protocol: 'TCP', toPort: 21002 };

/** Strips what changes between two dumps of the same rules. */
export function normalizeDump(text: string): string {
  return text
    .split('\n')
    .filter((l) => !l.startsWith('#') && l.trim() !== '')
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
}

/**
 * Every rule an agent intercepting with `mode` may touch in `ns`, normalized for before/after
 * comparison: iptables mode = both families' iptables dumps plus the nft ruleset (the nft backend
 * keeps its tables there), nftables mode = the nft ruleset.
 */
export async function rulesetDump(ns: Netns, mode: 'iptables' | 'nftables'): Promise<string> {
  const nft = await ns.run('nft', 'list', 'ruleset');
  if (mode === 'nftables') return normalizeDump(nft);
  return normalizeDump(`${await ns.run('iptables-save')}\n${await ns.run('ip6tables-save')}\n${nft}`);
}

/** Registers the suite for one implementation. */
export function interceptorSuite(label: string, impl: InterceptorSuiteImpl): void {
  const skip = skipUnlessRoot(`interceptor suite (${label})`);
  describe.skipIf(skip)(`interceptor suite: ${label}`, () => {
    let ns: Netns;
    let pod: Netns;
    let before = '';
    let interceptor: Interceptor;
    const options = { log: silentLogger, bypassGid: BYPASS_GID, localVipRoutes: true };
    const reach = async (ip: string, gid?: number): Promise<string> => {
      const cmd = gid === undefined ? ['socat'] : ['setpriv', `--regid=${gid}`, '--clear-groups', 'socat'];
      const prefix = impl.clientPrefix?.(ns) ?? ['ip', 'netns', 'exec', ns.name];
      const r = await runProcess([...prefix, ...cmd, '-T', '2', '-', `TCP:${ip}:80,connect-timeout=3`], {
        input: '',
        timeoutMs: 20_000,
      });
      return r.stdout.trim();
    };
    /** What a client in the pod namespace gets from ip:80 (over the veth: PREROUTING / sk_lookup). */
    const reachFromPod = async (ip: string): Promise<string> =>
      (await pod.exec('socat', ['-T', '2', '-', `TCP:${ip}:80,connect-timeout=3`])).stdout.trim();
    const clientMss = (ip: string) =>
      clientMssVia(impl.clientPrefix?.(ns) ?? ['ip', 'netns', 'exec', ns.name], ip);

    beforeAll(async () => {
      ns = await createNetns('ic');
      // No dummy devices in this kernel: the VIPs live on lo.
      await ns.run('ip', 'addr', 'add', '10.96.0.10/32', 'dev', 'lo');
      await ns.run('ip', 'addr', 'add', '10.96.0.11/32', 'dev', 'lo');
      // The service CIDR on a 1500-MTU device (a bridge: this kernel may lack the dummy driver).
      await ns.run('ip', 'link', 'add', 'svc0', 'type', 'bridge');
      await ns.run('ip', 'link', 'set', 'svc0', 'up');
      await ns.run('ip', 'route', 'add', '10.97.0.0/16', 'dev', 'svc0');
      pod = await createNetns('ip');
      await ns.run('ip', 'link', 'add', 'vp0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.name);
      await ns.run('ip', 'addr', 'add', '10.245.0.1/24', 'dev', 'vp0');
      await ns.run('ip', 'link', 'set', 'vp0', 'up');
      await pod.run('ip', 'link', 'set', 'lo', 'up');
      await pod.run('ip', 'addr', 'add', '10.245.0.2/24', 'dev', 'eth0');
      await pod.run('ip', 'link', 'set', 'eth0', 'up');
      await pod.run('ip', 'route', 'add', 'default', 'via', '10.245.0.1');
      await ns.backend('s', ['--text', '80:direct', '--text', '21000:port-a', '--text', '21001:port-b']);
      await ns.addr6(`${LOCAL_VIP6}/128`, 'lo');
      await ns.addr6('fd00:96::11/128', 'lo');
      await ns.run('ip', '-6', 'route', 'add', 'fd00:97::/64', 'dev', 'svc0');
      await ns.addr6('fd00:245::1/64', 'vp0');
      await pod.addr6('fd00:245::2/64', 'eth0');
      await pod.run('ip', '-6', 'route', 'add', 'default', 'via', 'fd00:245::1');
      await ns.backend6(['--tcp', '80:direct6', '--tcp', '21002:port-6']);
      await impl.addForeignRule(ns);
      before = await impl.snapshot(ns);
      interceptor = impl.make(ns, options);
    });
    afterAll(async () => {
      await interceptor?.stop().catch(() => {});
      await pod?.destroy();
      await ns?.destroy();
    });

    it('redirects a ClusterIP:port to its target port and leaves other addresses alone', async () => {
      await interceptor.start();
      await interceptor.sync([a(21000)]);
      expect(await reach('10.96.0.10')).toBe('port-a');
      expect(await reach('10.96.0.11')).toBe('direct');
    });

    it("never intercepts the proxy's own connections (bypass gid)", async () => {
      expect(await reach('10.96.0.10', BYPASS_GID)).toBe('direct');
      expect(await reach('10.96.0.10', BYPASS_GID + 1)).toBe('port-a');
    });

    it('applies changes (moved target, added and removed services)', async () => {
      await interceptor.sync([a(21001), b(21000)]);
      expect(await reach('10.96.0.10')).toBe('port-b');
      expect(await reach('10.96.0.11')).toBe('port-a');
      await interceptor.sync([b(21000)]);
      expect(await reach('10.96.0.10')).toBe('direct');
      await interceptor.sync([a(21000), b(21001)]);
      expect(await reach('10.96.0.10')).toBe('port-a');
      expect(await reach('10.96.0.11')).toBe('port-b');
    });

    it(
      impl.balancesSockets
        ? 'an L4 service with a reachable endpoint is balanced at connect(): the endpoint, not the proxy'
        : 'an L4 service with a reachable endpoint still goes through the proxy',
      async () => {
        // t/a's endpoint is the "direct" server (10.96.0.11:80 is an address on lo).
        const l4 = {
          key: 't/a',
          clusterIPs: ['10.96.0.10'],
          headless: false,
          proxied: true,
          sessionAffinity: { type: 'None', timeoutSeconds: 0 },
          ports: [
            {
              port: 80,
              protocol: 'TCP',
              appProtocol: 'tcp',
              endpoints: [{ ip: '10.96.0.11', port: 80, ready: true, serving: true, terminating: false }],
            },
          ],
        } as unknown as ServiceEntry;
        interceptor.observe?.({ ...EMPTY_TABLE, services: new Map([[l4.key, l4]]) });
        await interceptor.sync([a(21000), b(21001)]);
        expect(await reach('10.96.0.10')).toBe(impl.balancesSockets ? 'direct' : 'port-a');
        expect(await reach('10.96.0.11')).toBe('port-b');
        interceptor.observe?.(EMPTY_TABLE);
        await interceptor.sync([a(21000), b(21001)]);
        expect(await reach('10.96.0.10')).toBe('port-a');
      },
    );

    it('repairs drift: rules someone deleted are restored by repair()', async () => {
      expect(await interceptor.repair?.()).toBe(false);
      await impl.sabotage(ns);
      expect(await reach('10.96.0.10')).toBe('direct');
      expect(await interceptor.repair?.()).toBe(true);
      expect(await reach('10.96.0.10')).toBe('port-a');
      expect(await reach('10.96.0.11')).toBe('port-b');
    });

    it('a node-local client reaches a routed VIP over lo: local route on sync, MSS above 1448', async () => {
      // Without our route the VIP takes svc0 (MTU 1500): MSS 1448, the cost this route removes.
      await interceptor.sync([a(21000), b(21001), c(21000)]);
      // 10.96.0.10/11 are addresses on lo already: only the routed VIP needs (and gets) a route.
      expect(await vipRoutes(ns)).toEqual([ROUTED_VIP]);
      expect(await reach(ROUTED_VIP)).toBe('port-a');
      expect(await clientMss(ROUTED_VIP)).toBeGreaterThan(1448);
    });

    it('pods over veth still reach routed and local VIPs', async () => {
      expect(await reachFromPod(ROUTED_VIP)).toBe('port-a');
      expect(await reachFromPod('10.96.0.11')).toBe('port-b');
    });

    it('IPv6: a ClusterIP reaches the redirect port with its original destination (node and pod), bypass gid kept out', async () => {
      await interceptor.sync([a(21000), b(21001), c(21000), a6, c6]);
      expect(interceptor.ipv6?.intercepted).toBe(true);
      expect(await reach(`[${LOCAL_VIP6}]`)).toBe(`port-6 [${LOCAL_VIP6}]:80`);
      expect(await reach('[fd00:96::11]')).toMatch(/^direct6 /);
      expect(await reach(`[${LOCAL_VIP6}]`, BYPASS_GID)).toMatch(/^direct6 /);
      // The routed IPv6 VIP gets its /128 local route beside the IPv4 one.
      expect(await vipRoutes(ns)).toEqual([ROUTED_VIP, ROUTED_VIP6]);
      expect(await reach(`[${ROUTED_VIP6}]`)).toBe(`port-6 [${ROUTED_VIP6}]:80`);
      expect(await reachFromPod(`[${ROUTED_VIP6}]`)).toBe(`port-6 [${ROUTED_VIP6}]:80`);
      expect(await reachFromPod(`[${LOCAL_VIP6}]`)).toBe(`port-6 [${LOCAL_VIP6}]:80`);
      expect(await reach('10.96.0.10')).toBe('port-a');
    });

    it('IPv6: drift repaired; a removed IPv6 service loses its rule and route', async () => {
      expect(await interceptor.repair?.()).toBe(false);
      await impl.sabotage6(ns);
      expect(await reach(`[${ROUTED_VIP6}]`)).not.toMatch(/^port-6/);
      expect(await interceptor.repair?.()).toBe(true);
      expect(await reach(`[${ROUTED_VIP6}]`)).toBe(`port-6 [${ROUTED_VIP6}]:80`);
      await ns.run('ip', '-6', 'route', 'del', 'local', `${ROUTED_VIP6}/128`, 'table', 'local');
      expect(await interceptor.repair?.()).toBe(true);
      expect(await vipRoutes(ns)).toEqual([ROUTED_VIP, ROUTED_VIP6]);
      await interceptor.sync([a(21000), b(21001), c(21000)]);
      expect(await vipRoutes(ns)).toEqual([ROUTED_VIP]);
      expect(await reach(`[${LOCAL_VIP6}]`)).toMatch(/^direct6 /);
    });

    it('a routed VIP port with no service is refused at once (node and pod), as kube-proxy rejects it', async () => {
      const prefix = impl.clientPrefix?.(ns) ?? ['ip', 'netns', 'exec', ns.name];
      const dial = `TCP:${ROUTED_VIP}:81,connect-timeout=3`;
      const node = await runProcess([...prefix, 'socat', '-T', '2', '-', dial], {
        input: '',
        timeoutMs: 20_000,
      });
      expect(node.stderr).toMatch(/Connection refused/);
      expect((await pod.exec('socat', ['-T', '2', '-', dial])).stderr).toMatch(/Connection refused/);
    });

    it('a VIP that is also an endpoint address gets no route (the proxy connects to it for real)', async () => {
      // Service "chain" has an endpoint at the routed VIP (the address of another service).
      const chain = {
        key: 't/chain',
        clusterIPs: ['10.96.0.12'],
        headless: false,
        proxied: false,
        sessionAffinity: { type: 'None', timeoutSeconds: 0 },
        ports: [{ port: 80, protocol: 'TCP', endpoints: [{ ip: ROUTED_VIP, port: 80, ready: true }] }],
      } as unknown as ServiceEntry;
      interceptor.observe?.({ ...EMPTY_TABLE, services: new Map([[chain.key, chain]]) });
      await interceptor.sync([a(21000), b(21001), c(21000)]);
      expect(await vipRoutes(ns)).toEqual([]);
      interceptor.observe?.(EMPTY_TABLE);
      await interceptor.sync([a(21000), b(21001), c(21000)]);
      expect(await vipRoutes(ns)).toEqual([ROUTED_VIP]);
    });

    it('a removed service loses its route; repair() restores a route someone deleted', async () => {
      await interceptor.sync([a(21000), b(21001)]);
      expect(await vipRoutes(ns)).toEqual([]);
      await interceptor.sync([a(21000), b(21001), c(21001)]);
      expect(await vipRoutes(ns)).toEqual([ROUTED_VIP]);
      await ns.run('ip', 'route', 'del', 'local', `${ROUTED_VIP}/32`, 'table', 'local');
      expect(await interceptor.repair?.()).toBe(true);
      expect(await vipRoutes(ns)).toEqual([ROUTED_VIP]);
      expect(await reach(ROUTED_VIP)).toBe('port-b');
      expect(await interceptor.repair?.()).toBe(false);
    });

    it('stop() leaves the ruleset exactly as before start (foreign rules kept) and removes the VIP routes', async () => {
      await interceptor.stop();
      expect(await impl.snapshot(ns)).toBe(before);
      expect(await vipRoutes(ns)).toEqual([]);
      expect(await reach('10.96.0.10')).toBe('direct');
    });

    it(
      impl.adoptsLeftovers
        ? `start() adopts the state of a crashed run (${impl.adoptsLeftovers}); the first sync drops what is gone`
        : 'start() removes the leftovers of a crashed run',
      async () => {
        const crashed = impl.make(ns, options);
        await crashed.start();
        await crashed.sync([a(21000), b(21001), c(21000), a6]);
        expect(await impl.snapshot(ns)).not.toBe(before);
        // No stop(): a new agent starts over what the killed one left.
        await impl.kill?.(crashed);
        interceptor = impl.make(ns, options);
        await interceptor.start();
        // VIP routes are adopted whatever the interceptor does with its rules: the first sync decides.
        expect(await vipRoutes(ns)).toEqual([ROUTED_VIP]);
        if (impl.adoptsLeftovers) {
          expect(await reach('10.96.0.10')).toBe('port-a');
          expect(await reach('10.96.0.11')).toBe('port-b');
        } else {
          expect(await impl.snapshot(ns)).toBe(before);
        }
        await interceptor.sync([a(21001)]);
        expect(await vipRoutes(ns)).toEqual([]);
        expect(await reach(`[${LOCAL_VIP6}]`)).toMatch(/^direct6 /);
        expect(await reach('10.96.0.10')).toBe('port-b');
        expect(await reach('10.96.0.11')).toBe('direct');
        await interceptor.stop();
        expect(await impl.snapshot(ns)).toBe(before);
      },
    );
  });
}
