// Address helpers shared by config, controller, proxier and DNS: parsing and checking only.
import net from 'node:net';

/** An IP address and port, as written `IP:PORT` (IPv6 as `[::1]:53`). */
export interface HostPort {
  host: string;
  port: number;
}

/** True for an integer TCP/UDP port 1..65535. */
export function isPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

/** Parses `IP:PORT` / `[IPv6]:PORT`; undefined when malformed. */
export function parseHostPort(text: string): HostPort | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!m) return undefined;
  const host = m[1]!;
  const port = Number(m[2]);
  if (!net.isIP(host) || !isPort(port)) return undefined;
  return { host, port };
}

/** Formats a HostPort back to text. */
export function formatHostPort(hp: HostPort): string {
  return net.isIPv6(hp.host) ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** An address family as net.isIP() numbers it: 4 (iptables, nft `ip`) or 6 (ip6tables, nft `ip6`). */
export type IpFamily = 4 | 6;

/** The family of an address or CIDR (IPv6 when it has a colon). */
export function familyOf(ipOrCidr: string): IpFamily {
  return ipOrCidr.includes(':') ? 6 : 4;
}

/**
 * An address as the kernel prints it (inet_ntop: IPv6 in RFC 5952 form, lower case, IPv4-mapped
 * as ::ffff:a.b.c.d): what ip6tables-save, nft and the native plane write, so rendered rules,
 * routes, ring points and hand-offs compare equal however a manifest spelled the address.
 */
export function canonicalIp(ip: string): string {
  return net.isIPv6(ip) ? new net.SocketAddress({ address: ip, family: 'ipv6' }).address : ip;
}

/** An IPv4 or IPv6 prefix. */
export interface Cidr {
  address: string;
  prefix: number;
  family: 4 | 6;
}

/** Parses `a.b.c.d/n` or `x::/n`; undefined when malformed. */
export function parseCidr(text: string): Cidr | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  const family = net.isIP(m[1]!);
  const prefix = Number(m[2]);
  if (family === 0) return undefined;
  if (prefix > (family === 4 ? 32 : 128)) return undefined;
  return { address: m[1]!, prefix, family: family as 4 | 6 };
}

/** IPv4 dotted quad to an unsigned 32-bit number. */
export function ipv4ToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

/** Unsigned 32-bit number to IPv4 dotted quad. */
export function intToIpv4(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** True when an IPv4 address lies inside an IPv4 CIDR. */
export function ipv4InCidr(ip: string, cidr: Cidr): boolean {
  if (cidr.family !== 4 || !net.isIPv4(ip)) return false;
  if (cidr.prefix === 0) return true;
  const mask = (0xffffffff << (32 - cidr.prefix)) >>> 0;
  return (ipv4ToInt(ip) & mask) === (ipv4ToInt(cidr.address) & mask);
}
