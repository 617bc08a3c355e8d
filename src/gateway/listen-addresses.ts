// Which local addresses the gateway listens on: modules.edgeGateway.nic (interface names or `*`),
// then includeIP (IPs/CIDRs or `*`), minus excludeIP (IPs/CIDRs). IPv4 only, as EdgeMesh's gateway.
import net from 'node:net';
import os from 'node:os';
import { ipv4InCidr, parseCidr } from '../util/net.ts';

/** The three edgeGateway address knobs (comma-separated lists). */
export interface AddressSelection {
  nic: string;
  includeIP: string;
  excludeIP: string;
}

function items(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** True when `ip` equals an IP item or lies in a CIDR item of `list`. */
function inList(ip: string, list: readonly string[]): boolean {
  return list.some((item) => {
    if (item === '*') return true;
    if (net.isIP(item)) return item === ip;
    const cidr = parseCidr(item);
    return cidr !== undefined && ipv4InCidr(ip, cidr);
  });
}

/** Entries of the three lists that are neither `*`, an IP nor a CIDR (reported, then ignored). */
export function invalidAddressItems(sel: AddressSelection): string[] {
  return [...items(sel.includeIP), ...items(sel.excludeIP)].filter(
    (i) => i !== '*' && !net.isIP(i) && parseCidr(i) === undefined,
  );
}

/** The IPv4 addresses to listen on, sorted, from the host's interfaces (injectable for tests). */
export function selectListenAddresses(
  sel: AddressSelection,
  interfaces: NodeJS.Dict<
    Array<Pick<os.NetworkInterfaceInfo, 'address' | 'family'>>
  > = os.networkInterfaces(),
): string[] {
  const nics = items(sel.nic);
  const include = items(sel.includeIP);
  const exclude = items(sel.excludeIP);
  const out = new Set<string>();
  for (const [name, addrs] of Object.entries(interfaces)) {
    if (nics.length > 0 && !nics.includes('*') && !nics.includes(name)) continue;
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4') continue;
      if (include.length > 0 && !inList(a.address, include)) continue;
      if (inList(a.address, exclude)) continue;
      out.add(a.address);
    }
  }
  return [...out].sort();
}
