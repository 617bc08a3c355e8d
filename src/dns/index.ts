// The DNS module's entry point for the agent: builds the server from the resolved config.
import type { Registry } from 'prom-client';
import { dnsListenAddress } from '../config/resolve.ts';
import type { EdgemeshConfig } from '../config/types.ts';
import { EdgemeshError, ErrorCode } from '../errors.ts';
import type { Logger } from '../util/log.ts';
import { parseHostPort } from '../util/net.ts';
import { DnsServer } from './dns-server.ts';

export { DnsServer } from './dns-server.ts';

/**
 * The agent's DNS server: listens on dnsListenAddress(config); when that IP is the bridge IP,
 * the server also creates (and on stop removes) the bridge device carrying it.
 */
export function createDnsServer(config: EdgemeshConfig, log: Logger, registry?: Registry): DnsServer {
  const text = dnsListenAddress(config);
  const listen = parseHostPort(text);
  if (!listen) throw new EdgemeshError(ErrorCode.LISTEN, `dns: invalid listen address ${text}`);
  const dns = config.modules.edgeDNS;
  return new DnsServer({
    listen,
    domain: config.clusterDomain,
    ttl: dns.ttl,
    upstreams: dns.upstreams,
    cacheSize: dns.cacheSize,
    serveStale: dns.serveStale,
    nativeFastPath: dns.nativeFastPath,
    log: log.child({ module: 'dns' }),
    registry,
    bridge:
      listen.host === config.commonConfig.bridgeDeviceIP ? config.commonConfig.bridgeDeviceName : undefined,
  });
}
