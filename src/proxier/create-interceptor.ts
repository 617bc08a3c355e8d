// Chooses and builds the interceptor for `--intercept auto|iptables|nftables|ebpf|none`, probing
// what the kernel and the installed tools support and saying why it chose what it chose.
import { readdir, stat } from 'node:fs/promises';
import type { InterceptMode } from '../config/types.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../util/log.ts';
import type { EbpfChoiceOptions } from './ebpf/create-ebpf-interceptor.ts';
import { type Interceptor, PROXY_MARK } from './interceptor.ts';
import { type IptablesBinary, IptablesInterceptor } from './iptables.ts';
import type { RuleOptions } from './iptables-render.ts';
import { NftablesInterceptor } from './nftables.ts';
import { NoneInterceptor } from './none.ts';
import { type CommandPrefix, haveCommand, runCommand } from './run-command.ts';

export interface CreateInterceptorOptions extends RuleOptions {
  mode: InterceptMode;
  /** For `iptables`: which binaries (auto = the backend that already holds rules, else nft-backed). */
  iptablesBackend: 'auto' | 'legacy' | 'nft';
  log: Logger;
  commandPrefix?: CommandPrefix;
  /** For `iptables`/`nftables`: a local /32 route per intercepted ClusterIP (vip-routes.ts). */
  localVipRoutes?: boolean;
  /** For `ebpf`: where to attach and pin, and what counts as directly reachable. */
  ebpf?: Omit<EbpfChoiceOptions, 'log' | 'bypassGid'>;
}

/** The chosen interceptor and a sentence saying why (for logs and /status). */
export interface InterceptorChoice {
  interceptor: Interceptor;
  reason: string;
}

const PROBE_CHAIN = 'EDGEMESH-PROBE';

/** True when `<binary>-restore` can create (and drop again) a nat chain with a REDIRECT rule. */
async function probeIptables(prefix: CommandPrefix, binary: IptablesBinary): Promise<string | undefined> {
  if (!(await haveCommand(prefix, `${binary}-restore`))) return `${binary}-restore not found`;
  const payload = `*nat\n:${PROBE_CHAIN} - [0:0]\n-A ${PROBE_CHAIN} -p tcp -j REDIRECT --to-ports 1\n-F ${PROBE_CHAIN}\n-X ${PROBE_CHAIN}\nCOMMIT\n`;
  // The nf_tables backend leaves an empty `table ip nat` behind: drop it again if it was not there.
  const natBefore = await runCommand(prefix, 'nft', ['list', 'table', 'ip', 'nat']).catch(() => undefined);
  const r = await runCommand(prefix, `${binary}-restore`, ['--noflush', '-w', '5'], payload);
  if (natBefore && natBefore.code !== 0) {
    const after = await runCommand(prefix, 'nft', ['list', 'table', 'ip', 'nat']);
    if (after.code === 0 && !after.stdout.includes('chain '))
      await runCommand(prefix, 'nft', ['delete', 'table', 'ip', 'nat']);
  }
  return r.code === 0 ? undefined : `${binary}-restore failed: ${r.stderr.trim()}`;
}

/** True when `nft -f` can create (and delete again) a nat table with a redirect rule. */
async function probeNft(prefix: CommandPrefix): Promise<string | undefined> {
  if (!(await haveCommand(prefix, 'nft', '--version'))) return 'nft not found';
  const payload =
    'table ip edgemesh_probe {\n  chain c { type nat hook output priority -100; meta l4proto tcp redirect to :1; }\n}\ndelete table ip edgemesh_probe\n';
  const r = await runCommand(prefix, 'nft', ['-f', '-'], payload);
  return r.code === 0 ? undefined : `nft failed: ${r.stderr.trim()}`;
}

/** Counts `-A` rules a save binary prints (0 when the binary is missing). */
async function ruleCount(prefix: CommandPrefix, saveBinary: string): Promise<number> {
  try {
    const r = await runCommand(prefix, saveBinary, []);
    return r.stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
  } catch {
    return 0;
  }
}

/** Picks the iptables binaries: the explicit backend, else legacy only when legacy already holds rules and nft none. */
async function chooseIptablesBinary(
  prefix: CommandPrefix,
  backend: 'auto' | 'legacy' | 'nft',
): Promise<{ binary: IptablesBinary; why: string }> {
  if (backend === 'legacy') return { binary: 'iptables-legacy', why: 'iptablesBackend: legacy' };
  if (backend === 'nft') return { binary: 'iptables-nft', why: 'iptablesBackend: nft' };
  const [legacy, nft] = await Promise.all([
    ruleCount(prefix, 'iptables-legacy-save'),
    ruleCount(prefix, 'iptables-nft-save'),
  ]);
  // Mixing backends in one netns splits the rules in two worlds; follow the one already in use.
  if (legacy > 0 && nft === 0)
    return { binary: 'iptables-legacy', why: `legacy tables hold ${legacy} rules` };
  if (await haveCommand(prefix, 'iptables-nft-restore'))
    return { binary: 'iptables-nft', why: 'nf_tables backend' };
  return { binary: 'iptables', why: 'the system default iptables' };
}

/**
 * Why eBPF cannot catch all of this node's ClusterIP traffic (undefined = it can). The cgroup hooks
 * act on every process below the cgroup, whatever its network namespace, and sk_lookup acts on one
 * namespace: together they cover a node only when they sit on the root cgroup and the agent runs in
 * the host's namespace (then local processes go through connect4, pods and remote clients through
 * sk_lookup). An agent in a namespace of its own (tests, the demo) would catch other namespaces'
 * connects host-wide, so auto leaves it to iptables/nftables.
 */
export async function ebpfCoverageGap(options: CreateInterceptorOptions): Promise<string | undefined> {
  if (options.commandPrefix && options.commandPrefix.length > 0)
    return 'the rules are for another network namespace (command prefix)';
  if (options.ebpf?.netnsPath) return 'sk_lookup would attach to another network namespace';
  if (options.ebpf?.cgroup)
    return `ebpfCgroup '${options.ebpf.cgroup}' covers only the processes below it, not the whole node`;
  const self = await stat('/proc/self/ns/net').catch(() => undefined);
  if (!self) return 'cannot tell which network namespace the agent runs in';
  const notHost =
    'the agent is not in the host network namespace (cgroup hooks would act on every namespace)';
  // pid 1's namespace is the host's when it can be read (a hostPID agent, a plain host) ...
  const init = await stat('/proc/1/ns/net').catch(() => undefined);
  if (init && init.ino !== self.ino) return notHost;
  // A cgroup namespace of its own makes "the root cgroup" the agent's subtree, not the node's.
  const [cgSelf, cgInit] = await Promise.all([
    stat('/proc/self/ns/cgroup').catch(() => undefined),
    stat('/proc/1/ns/cgroup').catch(() => undefined),
  ]);
  if (cgSelf && cgInit && cgSelf.ino !== cgInit.ino)
    return 'the agent has a cgroup namespace of its own (its root cgroup is not the node root)';
  // ... and a namespace made with `ip netns add` (tests, the demo) is never the host's.
  const named = await readdir('/run/netns').catch(() => [] as string[]);
  for (const name of named) {
    const ns = await stat(`/run/netns/${name}`).catch(() => undefined);
    if (ns && ns.ino === self.ino && ns.dev === self.dev) return `${notHost}: ip netns ${name}`;
  }
  return undefined;
}

/** Builds the interceptor for `options.mode`; auto/ebpf probe and fall back, logging why. */
export async function createInterceptor(options: CreateInterceptorOptions): Promise<InterceptorChoice> {
  const { log, mode } = options;
  const prefix = options.commandPrefix ?? [];
  const rules: RuleOptions & { localVipRoutes?: boolean } = {
    bypassGid: options.bypassGid,
    catchAll: options.catchAll,
    localVipRoutes: options.localVipRoutes,
  };
  const iptables = async (why: string): Promise<InterceptorChoice> => {
    const { binary, why: which } = await chooseIptablesBinary(prefix, options.iptablesBackend);
    return {
      interceptor: new IptablesInterceptor({ ...rules, log, binary, commandPrefix: prefix }),
      reason: `${why}; ${binary} (${which})`,
    };
  };
  const nftables = (why: string): InterceptorChoice => ({
    interceptor: new NftablesInterceptor({ ...rules, log, commandPrefix: prefix }),
    reason: why,
  });
  switch (mode) {
    case 'none':
      return { interceptor: new NoneInterceptor(), reason: '--intercept none: no rules installed' };
    case 'iptables':
      return iptables('--intercept iptables');
    case 'nftables':
      return nftables('--intercept nftables');
    case 'ebpf':
    case 'auto': {
      const why: string[] = [];
      const gap = mode === 'auto' ? await ebpfCoverageGap(options) : undefined;
      if (gap) why.push(`auto: ebpf not chosen: ${gap}`);
      else {
        // Loaded only when needed: the eBPF feature is optional (src/proxier/ebpf).
        const { createEbpfInterceptor } = await import('./ebpf/index.ts');
        const ebpf = await createEbpfInterceptor({
          nodeName: '',
          cgroup: '',
          localEndpointsOnly: false,
          ...options.ebpf,
          log,
          bypassGid: options.bypassGid,
          // The native plane marks its upstream sockets: never redirect them back into the proxy.
          bypassMark: PROXY_MARK,
        });
        if ('interceptor' in ebpf)
          return {
            interceptor: ebpf.interceptor,
            reason:
              mode === 'auto'
                ? `auto: eBPF probes pass and cover the node (root cgroup, host network namespace): ${ebpf.reason}`
                : `--intercept ebpf: ${ebpf.reason}`,
          };
        why.push(`ebpf unavailable: ${ebpf.reason}`);
      }
      try {
        const { binary } = await chooseIptablesBinary(prefix, options.iptablesBackend);
        const failed = await probeIptables(prefix, binary);
        if (!failed) return iptables([...why, 'auto: iptables nat REDIRECT works'].join('; '));
        why.push(failed);
        const nftFailed = await probeNft(prefix);
        if (!nftFailed) return nftables([...why, 'auto: nftables nat redirect works'].join('; '));
        why.push(nftFailed);
      } catch (err) {
        why.push(errorMessage(err));
      }
      return { interceptor: new NoneInterceptor(), reason: `${why.join('; ')}; no interception` };
    }
  }
}
