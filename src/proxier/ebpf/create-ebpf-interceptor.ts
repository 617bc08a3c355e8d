// `--intercept ebpf`: probe, then build the EbpfInterceptor, or say why not (the caller falls back
// to iptables/nftables with that reason in the log and /status).
import type { Registry } from 'prom-client';
import type { Logger } from '../../util/log.ts';
import type { CommandPrefix } from '../run-command.ts';
import {
  DEFAULT_CGROUP_FALLBACK,
  DEFAULT_PIN_DIR,
  EbpfInterceptor,
  resolveCgroupPath,
} from './ebpf-interceptor.ts';
import { probeEbpf } from './probe.ts';

export interface EbpfChoiceOptions {
  log: Logger;
  nodeName: string;
  /** Configured cgroup ('' = unified root; relative = below it; absolute = as is). */
  cgroup: string;
  pinDir?: string;
  /** sk_msg socket-to-socket forwarding between local sockets, socket-LB and proxied (opt-in). */
  sockmap?: boolean;
  /** False: every TCP service through the proxy (no socket-LB); default true. */
  socketLb?: boolean;
  bypassGid?: number;
  /** Sockets with this SO_MARK are never redirected (the native plane's PROXY_MARK). */
  bypassMark?: number;
  /** Network namespace sk_lookup attaches to ('' = this process's). */
  netnsPath?: string;
  /** Runs `ip`/`ss` in that namespace ([] = this process's). */
  commandPrefix?: CommandPrefix;
  /** True when endpoints on other nodes may be in other LANs (the tunnel is enabled). */
  localEndpointsOnly: boolean;
  registry?: Registry;
}

/** The interceptor when every probe passed, else the reason it cannot run here. */
export async function createEbpfInterceptor(
  opts: EbpfChoiceOptions,
): Promise<{ interceptor: EbpfInterceptor; reason: string } | { reason: string }> {
  const pinDir = opts.pinDir || DEFAULT_PIN_DIR;
  const probe = await probeEbpf({ cgroupFallbackDir: DEFAULT_CGROUP_FALLBACK, pinRoot: dirnameOf(pinDir) });
  if (!probe.ok) return { reason: probe.reason };
  const cgroupPath = resolveCgroupPath(probe.cgroupRoot, opts.cgroup);
  const interceptor = new EbpfInterceptor({
    log: opts.log,
    binding: probe.binding,
    objects: probe.objects,
    cgroupPath,
    pinDir,
    nodeName: opts.nodeName,
    localEndpointsOnly: opts.localEndpointsOnly,
    bypassGid: opts.bypassGid,
    bypassMark: opts.bypassMark,
    netnsPath: opts.netnsPath,
    commandPrefix: opts.commandPrefix,
    registry: opts.registry,
    sockmap: opts.sockmap,
    socketLb: opts.socketLb,
  });
  return {
    interceptor,
    reason: `cgroup/connect4 ${opts.socketLb === false ? 'to the proxy (socket-LB off)' : 'socket-LB'} + getsockopt SO_ORIGINAL_DST on ${cgroupPath}, sk_lookup on the network namespace, pins in ${pinDir}`,
  };
}

function dirnameOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}
