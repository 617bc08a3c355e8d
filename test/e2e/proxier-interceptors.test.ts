// Runs the shared interceptor suite against iptables (legacy and nf_tables binaries) and nftables.
import { afterAll, describe, expect, it } from 'vitest';
import { createInterceptor } from '../../src/proxier/create-interceptor.ts';
import { IptablesInterceptor } from '../../src/proxier/iptables.ts';
import { NftablesInterceptor } from '../../src/proxier/nftables.ts';
import { silentLogger } from '../../src/util/log.ts';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { interceptorSuite, normalizeDump } from './interceptor-suite.ts';

const prefix = (ns: Netns) => ['ip', 'netns', 'exec', ns.name];

for (const binary of ['iptables-legacy', 'iptables-nft'] as const) {
  interceptorSuite(binary, {
    make: (ns, options) => new IptablesInterceptor({ ...options, binary, commandPrefix: prefix(ns) }),
    addForeignRule: async (ns) => {
      await ns.run(binary, '-t', 'nat', '-A', 'OUTPUT', '-d', '192.0.2.1/32', '-j', 'ACCEPT');
    },
    // nft list ruleset too: iptables-nft must not leave tables behind either.
    snapshot: async (ns) =>
      normalizeDump(
        `${await ns.run(`${binary}-save`)}\n${binary === 'iptables-nft' ? await ns.run('nft', 'list', 'ruleset') : ''}`,
      ),
    sabotage: async (ns) => {
      const save = await ns.run(`${binary}-save`, '-t', 'nat');
      const jump = save.split('\n').find((l) => l.startsWith('-A OUTPUT') && l.endsWith('-j EDGEMESH'));
      if (!jump) throw new Error(`no jump to sabotage in\n${save}`);
      await ns.run('sh', '-c', `${binary} -t nat ${jump.replace(/^-A/, '-D')}`);
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
});

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
