// Assembles the proxier for the agent: data plane (native/ts) + interceptor (iptables/nftables/
// none), the bypass gid that keeps the agent's own connections out of the rules, and the
// mode + reason lines /status shows.
import type { Registry } from 'prom-client';
import type { EdgemeshConfig } from '../config/types.ts';
import { createDataplane } from '../dataplane/create-dataplane.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../util/log.ts';
import { createInterceptor } from './create-interceptor.ts';
import type { Ipv6Interception } from './interceptor.ts';
import { Proxier } from './proxier.ts';

/** The assembled proxier and what /status reports about it. */
export interface ProxierAssembly {
  proxier: Proxier;
  /** `ipv6` is read when /status is served: the interceptor knows it once started. */
  intercept: { mode: string; reason: string; readonly ipv6?: Ipv6Interception };
  dataplane: { mode: string; reason: string };
}

/**
 * Switches the process's effective gid to `gid`, so every socket the agent opens from now on
 * (upstream connections of every data plane thread, DNS forwarding, API watches) matches the
 * rules' owner/skgid bypass and is never redirected back into the proxy.
 */
export function useBypassGid(gid: number, log: Logger): boolean {
  if (typeof process.setegid !== 'function') return false;
  try {
    process.setegid(gid);
    return true;
  } catch (err) {
    log.warn(
      { gid, err: errorMessage(err) },
      'cannot switch to the bypass gid; upstream connections may loop',
    );
    return false;
  }
}

/** Builds data plane, interceptor and proxier from the config (nothing started yet). */
export async function createProxier(options: {
  config: EdgemeshConfig;
  log: Logger;
  registry?: Registry;
}): Promise<ProxierAssembly> {
  const { config, log } = options;
  const proxy = config.modules.edgeProxy;
  const dp = await createDataplane(options);
  log.info({ mode: dp.dataplane.mode, reason: dp.reason }, 'data plane chosen');
  // A whole-CIDR redirect only helps a plane that reads SO_ORIGINAL_DST (native): the TS plane
  // has one listener per service port and could not tell the destinations apart.
  const catchAll =
    proxy.subNet && dp.dataplane.mode === 'native'
      ? { cidr: proxy.subNet, toPort: proxy.listenPort }
      : undefined;
  const ic = await createInterceptor({
    mode: config.intercept,
    iptablesBackend: proxy.iptablesBackend,
    bypassGid: proxy.bypassGid,
    catchAll,
    localVipRoutes: proxy.localVipRoutes,
    log,
    ebpf: {
      nodeName: config.nodeName,
      cgroup: proxy.ebpfCgroup,
      pinDir: proxy.ebpfPinDir,
      sockmap: proxy.ebpfSockmap,
      socketLb: proxy.ebpfSocketLb,
      localEndpointsOnly: config.modules.edgeTunnel.enable,
      registry: options.registry,
    },
  });
  log.info({ mode: ic.interceptor.mode, reason: ic.reason }, 'interception chosen');
  let dpReason = dp.reason;
  if (dp.native) {
    // The sk_msg shortcut puts the plane's accepted and upstream sockets into the sockhash when
    // their peers are local sockets in the cgroup; splice() never sees bytes redirected into them.
    const sockmap = ic.interceptor.mode === 'ebpf' && proxy.ebpfSockmap;
    if (sockmap) dp.native.setForwardMode('readwrite');
    dpReason += sockmap
      ? '; forward read/write: the eBPF sk_msg shortcut (ebpfSockmap) is on, splice() would not see its bytes'
      : '; forward splice';
    log.info({ forward: dp.native.forwardMode }, 'native plane forward mode chosen');
  }
  if (ic.interceptor.mode !== 'none') useBypassGid(proxy.bypassGid, log);
  const proxier = new Proxier({
    dataplane: dp.dataplane,
    interceptor: ic.interceptor,
    log,
    resyncPeriodMs: proxy.resyncPeriodMs,
  });
  const interceptor = ic.interceptor;
  return {
    proxier,
    intercept: {
      mode: interceptor.mode,
      reason: ic.reason,
      // A getter: JSON.stringify of /status reads the state start() found, not this moment's.
      get ipv6() {
        return interceptor.ipv6 && { ...interceptor.ipv6 };
      },
    },
    dataplane: { mode: dp.dataplane.mode, reason: dpReason },
  };
}
