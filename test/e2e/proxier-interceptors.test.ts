// Runs the shared interceptor suite against iptables (legacy and nf_tables binaries), nftables and
// ebpf (cgroup hooks for the suite's local clients, which it runs inside the programs' cgroup).
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNative } from '../../src/native/index.ts';
import { createInterceptor } from '../../src/proxier/create-interceptor.ts';
import { EbpfInterceptor, findBpfObjects } from '../../src/proxier/ebpf/index.ts';
import { findCgroup2Root } from '../../src/proxier/ebpf/probe.ts';
import type { Interceptor } from '../../src/proxier/interceptor.ts';
import { IptablesInterceptor, ip6Binary } from '../../src/proxier/iptables.ts';
import { NftablesInterceptor } from '../../src/proxier/nftables.ts';
import { ROUTE_PROTO } from '../../src/proxier/vip-routes.ts';
import { type Logger, silentLogger } from '../../src/util/log.ts';
import { detachConnect4Link } from '../helpers/connect4-link.ts';
import { createNetns, type Netns, sh } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { clientMss, vipRoutes } from '../helpers/vip-routes.ts';
import { interceptorSuite, normalizeDump } from './interceptor-suite.ts';

const prefix = (ns: Netns) => ['ip', 'netns', 'exec', ns.name];

for (const binary of ['iptables-legacy', 'iptables-nft'] as const) {
  interceptorSuite(binary, {
    make: (ns, options) => new IptablesInterceptor({ ...options, binary, commandPrefix: prefix(ns) }),
    addForeignRule: async (ns) => {
      await ns.run(binary, '-t', 'nat', '-A', 'OUTPUT', '-d', '192.0.2.1/32', '-j', 'ACCEPT');
      await ns.run(ip6Binary(binary), '-t', 'nat', '-A', 'OUTPUT', '-d', '2001:db8::1/128', '-j', 'ACCEPT');
    },
    // nft list ruleset too: iptables-nft must not leave tables behind either.
    snapshot: async (ns) =>
      normalizeDump(
        `${await ns.run(`${binary}-save`)}\n${await ns.run(`${ip6Binary(binary)}-save`)}\n${binary === 'iptables-nft' ? await ns.run('nft', 'list', 'ruleset') : ''}`,
      ),
    sabotage: async (ns) => {
      const save = await ns.run(`${binary}-save`, '-t', 'nat');
      const jump = save.split('\n').find((l) => l.startsWith('-A OUTPUT') && l.endsWith('-j EDGEMESH'));
      if (!jump) throw new Error(`no jump to sabotage in\n${save}`);
      await ns.run('sh', '-c', `${binary} -t nat ${jump.replace(/^-A/, '-D')}`);
    },
    sabotage6: async (ns) => {
      await ns.run(ip6Binary(binary), '-t', 'nat', '-F', 'EDGEMESH');
    },
  });
}

interceptorSuite('nftables', {
  make: (ns, options) => new NftablesInterceptor({ ...options, commandPrefix: prefix(ns) }),
  addForeignRule: async (ns) => {
    await ns.exec('nft', ['-f', '-'], {
      input:
        'table ip foreign {\n  chain out { type nat hook output priority 0; ip daddr 192.0.2.1 accept; }\n}\n',
    });
  },
  snapshot: async (ns) => normalizeDump(await ns.run('nft', 'list', 'ruleset')),
  sabotage: async (ns) => {
    await ns.run('nft', 'flush', 'chain', 'ip', 'edgemesh', 'output');
  },
  sabotage6: async (ns) => {
    await ns.run('nft', 'flush', 'chain', 'ip6', 'edgemesh', 'output');
  },
});

// eBPF: programs on a cgroup made for the namespace, pins in a folder of its own, sk_lookup on the
// namespace. Needs root and a cgroup2 mount (CI has both); elsewhere the suite skips like the others.
const cgroupRoot = process.getuid?.() === 0 ? await findCgroup2Root().catch(() => undefined) : undefined;
const cgroupOf = (ns: Netns) => path.join(cgroupRoot ?? '/nonexistent', ns.name);
const pinDirOf = (ns: Netns) => `/sys/fs/bpf/${ns.name}`;
const cgroups = new Set<string>();
/** The namespace's cgroup, created on first use (the suite snapshots before it builds the interceptor). */
const cgroupFor = (ns: Netns): string => {
  mkdirSync(cgroupOf(ns), { recursive: true });
  cgroups.add(cgroupOf(ns));
  return cgroupOf(ns);
};
afterAll(() => {
  for (const dir of cgroups) if (existsSync(dir)) rmdirSync(dir);
});

// Three times: with socket-LB (the default), with ebpfSocketLb: false (every TCP service to the
// proxy), and that plus ebpfSockmap (clients join the sockhash; this suite's proxy and backends run
// outside the cgroup, so their peers never join: sk_msg must pass every byte through unchanged).
for (const [socketLb, sockmap] of [
  [true, false],
  [false, false],
  [false, true],
] as const) {
  interceptorSuite(socketLb ? 'ebpf' : sockmap ? 'ebpf (socket-LB off, sk_msg on)' : 'ebpf (socket-LB off)', {
    make: (ns, options) => {
      const native = loadNative();
      const objects = findBpfObjects(native.path);
      if (!native.binding || !objects || !cgroupRoot)
        throw new Error(
          `eBPF must be available for this suite (CI builds it): ${native.reason ?? 'no objects/cgroup2'}`,
        );
      return new EbpfInterceptor({
        ...options,
        binding: native.binding,
        objects,
        cgroupPath: cgroupFor(ns),
        pinDir: pinDirOf(ns),
        netnsPath: `/run/netns/${ns.name}`,
        commandPrefix: prefix(ns),
        nodeName: 'node-a',
        localEndpointsOnly: false,
        socketLb,
        sockmap,
      });
    },
    // Someone else's iptables rule: eBPF interception must neither need nor touch netfilter.
    addForeignRule: async (ns) => {
      await ns.run('iptables-nft', '-t', 'nat', '-A', 'OUTPUT', '-d', '192.0.2.1/32', '-j', 'ACCEPT');
    },
    snapshot: async (ns) =>
      normalizeDump(
        [
          await sh('bpftool', ['cgroup', 'show', cgroupFor(ns)]),
          await ns.run('bpftool', 'net', 'show'),
          existsSync(pinDirOf(ns)) ? `pins: ${readdirSync(pinDirOf(ns)).join(' ')}` : 'no pins',
          await ns.run('ip', '-4', 'route', 'show', 'table', 'local'),
          // Ours only: link-local addresses appear whenever their DAD finishes.
          await ns.run('ip', '-6', 'route', 'show', 'table', 'local', 'proto', String(ROUTE_PROTO)),
          await ns.run('iptables-nft-save'),
          await ns.run('nft', 'list', 'ruleset'),
        ].join('\n'),
      ),
    // Detach the connect4 link the way an admin with bpftool would (the link and its pin survive).
    sabotage: async (ns) => {
      await detachConnect4Link(cgroupOf(ns));
    },
    // IPv6 goes through the nftables interceptor the eBPF one hands it to.
    sabotage6: async (ns) => {
      await ns.run('nft', 'flush', 'chain', 'ip6', 'edgemesh', 'output');
    },
    clientPrefix: (ns) => [
      'sh',
      '-c',
      `echo $$ > ${cgroupOf(ns)}/cgroup.procs && exec ip netns exec ${ns.name} "$@"`,
      'sh',
    ],
    adoptsLeftovers: 'pinned maps and links keep live flows working across an agent restart',
    kill: (crashed: Interceptor) => (crashed as EbpfInterceptor).detachKeepPinned(),
    balancesSockets: socketLb,
  });
}

describe.skipIf(skipUnlessRoot('interceptor auto probe'))('--intercept auto in a fresh namespace', () => {
  let ns: Netns | undefined;
  afterAll(async () => {
    await ns?.destroy();
  });

  it('chooses iptables (nf_tables backend) because its probe works, and the probe leaves no trace', async () => {
    ns = await createNetns('ia');
    const choice = await createInterceptor({
      mode: 'auto',
      iptablesBackend: 'auto',
      log: silentLogger,
      commandPrefix: prefix(ns),
    });
    expect(choice.interceptor.mode).toBe('iptables');
    expect(choice.reason).toMatch(/auto: iptables nat REDIRECT works; iptables-nft/);
    expect((await ns.run('nft', 'list', 'ruleset')).trim()).toBe('');
  });
});

describe.skipIf(skipUnlessRoot('localVipRoutes off'))('localVipRoutes: false', () => {
  let ns: Netns | undefined;
  afterAll(async () => {
    await ns?.destroy();
  });

  it("adds no route (node-local clients keep the service route: MSS 1448), and start removes a crashed run's routes", async () => {
    ns = await createNetns('iv');
    await ns.run('ip', 'link', 'add', 'svc0', 'type', 'bridge');
    await ns.run('ip', 'link', 'set', 'svc0', 'up');
    await ns.run('ip', 'route', 'add', '10.97.0.0/16', 'dev', 'svc0');
    await ns.backend('s', ['--text', '21000:port-a']);
    // A crashed run's route, and someone else's local route that must stay.
    await ns.run(
      'ip',
      'route',
      'add',
      'local',
      '10.97.0.99/32',
      'dev',
      'lo',
      'table',
      'local',
      'proto',
      String(ROUTE_PROTO),
    );
    await ns.run(
      'ip',
      'route',
      'add',
      'local',
      '10.97.0.98/32',
      'dev',
      'lo',
      'table',
      'local',
      'proto',
      'static',
    );
    const ic = new IptablesInterceptor({
      log: silentLogger,
      binary: 'iptables-nft',
      commandPrefix: prefix(ns),
      localVipRoutes: false,
    });
    await ic.start();
    try {
      expect(await vipRoutes(ns)).toEqual([]);
      await ic.sync([{ id: 't/c', clusterIP: '10.97.0.10', port: 80, protocol: 'TCP', toPort: 21000 }]);
      expect(await vipRoutes(ns)).toEqual([]);
      expect(await ic.repair()).toBe(false);
      expect(await clientMss(prefix(ns), '10.97.0.10')).toBe(1448);
      expect(await ns.run('ip', '-4', 'route', 'show', 'table', 'local', '10.97.0.98')).toMatch(
        /proto static/,
      );
    } finally {
      await ic.stop();
    }
  });
});

describe.skipIf(skipUnlessRoot('IPv6 unusable'))('IPv6 disabled in the namespace', () => {
  let ns: Netns | undefined;
  afterAll(async () => {
    await ns?.destroy();
  });

  it('every rule interceptor says why IPv6 is not intercepted, skips IPv6 targets with one warning, IPv4 unaffected', async () => {
    ns = await createNetns('i6');
    await ns.run('sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1');
    await ns.run('ip', 'addr', 'add', '10.96.0.10/32', 'dev', 'lo');
    await ns.backend('s', ['--text', '80:direct', '--text', '21000:port-a']);
    const targets = [
      { id: 't/a', clusterIP: '10.96.0.10', port: 80, protocol: 'TCP' as const, toPort: 21000 },
      { id: 't/a6', clusterIP: 'fd00:96::10', port: 80, protocol: 'TCP' as const, toPort: 21000 },
      { id: 't/b6', clusterIP: 'fd00:97::10', port: 80, protocol: 'TCP' as const, toPort: 21000 },
    ];
    const before = normalizeDump(
      `${await ns.run('ip6tables-nft-save')}\n${await ns.run('nft', 'list', 'ruleset')}`,
    );
    for (const make of [
      (log: Logger) =>
        new IptablesInterceptor({
          log,
          binary: 'iptables-nft',
          commandPrefix: prefix(ns!),
          localVipRoutes: true,
        }),
      (log: Logger) => new NftablesInterceptor({ log, commandPrefix: prefix(ns!), localVipRoutes: true }),
    ]) {
      const warnings: string[] = [];
      const log = pino({ level: 'warn' }, { write: (s: string) => void warnings.push(JSON.parse(s).msg) });
      const ic = make(log);
      await ic.start();
      try {
        expect(ic.ipv6).toEqual({
          intercepted: false,
          detail: 'IPv6 is disabled (net.ipv6.conf.all.disable_ipv6 = 1)',
        });
        await ic.sync(targets);
        await ic.sync(targets);
        expect(warnings.filter((m) => m.startsWith('skipping IPv6 ClusterIPs'))).toHaveLength(1);
        expect((await ns.exec('socat', ['-T', '2', '-', 'TCP:10.96.0.10:80'])).stdout.trim()).toBe('port-a');
        expect(await ic.repair()).toBe(false);
        expect(await vipRoutes(ns)).toEqual([]);
        // No IPv6 rules or tables at all.
        expect(await ns.run('ip6tables-nft-save')).not.toMatch(/EDGEMESH/);
        expect(await ns.run('nft', 'list', 'ruleset')).not.toMatch(/ip6 edgemesh/);
      } finally {
        await ic.stop();
      }
    }
    expect(
      normalizeDump(`${await ns.run('ip6tables-nft-save')}\n${await ns.run('nft', 'list', 'ruleset')}`),
    ).toBe(before);
  });
});
