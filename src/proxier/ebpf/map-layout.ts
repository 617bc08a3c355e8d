// Byte-exact encoders for the BPF map structs of native/bpf/maps.h. The offsets below are the
// contract: native/src/bpf/bpf_layout.h static_asserts the same numbers in C++, and
// test/unit/ebpf-layout.test.ts checks what these encoders write, so drift fails CI on both sides.
import net from 'node:net';

/** Versioned map names (maps.h); a layout change bumps the suffix. */
export const MapName = {
  svc: 'edgemesh_svc_v1',
  backend: 'edgemesh_be_v1',
  roundRobin: 'edgemesh_rr_v1',
  cookie: 'edgemesh_ck_v1',
  tuple: 'edgemesh_tup_v1',
  config: 'edgemesh_cfg_v2',
  stats: 'edgemesh_st_v3',
  listeners: 'edgemesh_lst_v1',
} as const;

/** Byte offsets and sizes of every struct field, as maps.h lays them out. */
export const Layout = {
  svcKey: { size: 8, ip4: 0, port: 4, proto: 6, pad: 7 },
  svcValue: { size: 16, svcId: 0, count: 4, action: 6, policy: 7, proxyIp4: 8, proxyPort: 12, pad: 14 },
  backendKey: { size: 8, svcId: 0, slot: 4 },
  addr4: { size: 8, ip4: 0, port: 4, pad: 6 },
  config: { size: 24, agentTgid: 0, bypassMark: 4, bypassGid: 8, flags: 12, netnsCookie: 16 },
} as const;

/** EM_ACTION_* */
export const Action = { lb: 0, proxy: 1 } as const;
/** EM_POLICY_* */
export const Policy = { roundRobin: 0, random: 1, source: 2 } as const;
/** EM_MAX_BACKENDS: more endpoints than this go through the proxy. */
export const MAX_BACKENDS = 1024;
/** EM_STAT_* index -> counter name (edgemesh_st_v3). */
export const STAT_NAMES = [
  'lbConnect',
  'proxyConnect',
  'noBackend',
  'bypass',
  'peername',
  'originalDst',
  'sockmapAdd',
  'msgRedirect',
  'skLookup',
  'skLookupMiss',
  'otherNetns',
  'msgFallback',
  'msgResume',
] as const;
/** EM_CFG_* bits of em_config.flags. */
export const ConfigFlag = { sockmap: 1 } as const;
export const STAT_SLOTS = 13;

export type ActionValue = (typeof Action)[keyof typeof Action];
export type PolicyValue = (typeof Policy)[keyof typeof Policy];

/** Writes a dotted-quad IPv4 address as 4 bytes in network order at `offset`. */
function writeIp4(buf: Buffer, offset: number, ip: string): void {
  if (net.isIPv4(ip) === false) throw new RangeError(`not an IPv4 address: ${ip}`);
  const parts = ip.split('.').map(Number);
  for (let i = 0; i < 4; i++) buf[offset + i] = parts[i]!;
}

/** Reads 4 network-order bytes at `offset` as a dotted quad. */
export function readIp4(buf: Buffer, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/** struct em_svc_key: service IPv4 + port (network order) + L4 protocol number. */
export function encodeSvcKey(ip: string, port: number, proto: 'TCP' | 'UDP'): Buffer {
  const b = Buffer.alloc(Layout.svcKey.size);
  writeIp4(b, Layout.svcKey.ip4, ip);
  b.writeUInt16BE(port, Layout.svcKey.port);
  b.writeUInt8(proto === 'TCP' ? 6 : 17, Layout.svcKey.proto);
  return b;
}

/** The fields of struct em_svc_value. */
export interface SvcValue {
  svcId: number;
  count: number;
  action: ActionValue;
  policy: PolicyValue;
  /** EM_ACTION_PROXY only. */
  proxyIp?: string;
  /** connect4's target for EM_ACTION_PROXY; sk_lookup's listener port for any action (0 = none). */
  proxyPort?: number;
}

/** struct em_svc_value (host-endian ids/counts, network-order proxy address). */
export function encodeSvcValue(v: SvcValue): Buffer {
  const b = Buffer.alloc(Layout.svcValue.size);
  b.writeUInt32LE(v.svcId, Layout.svcValue.svcId);
  b.writeUInt16LE(v.count, Layout.svcValue.count);
  b.writeUInt8(v.action, Layout.svcValue.action);
  b.writeUInt8(v.policy, Layout.svcValue.policy);
  writeIp4(b, Layout.svcValue.proxyIp4, v.proxyIp ?? '0.0.0.0');
  b.writeUInt16BE(v.proxyPort ?? 0, Layout.svcValue.proxyPort);
  return b;
}

/** Reads back struct em_svc_value (for adopting ids from pinned maps after a restart). */
export function decodeSvcValue(b: Buffer): SvcValue {
  return {
    svcId: b.readUInt32LE(Layout.svcValue.svcId),
    count: b.readUInt16LE(Layout.svcValue.count),
    action: b.readUInt8(Layout.svcValue.action) as ActionValue,
    policy: b.readUInt8(Layout.svcValue.policy) as PolicyValue,
    proxyIp: readIp4(b, Layout.svcValue.proxyIp4),
    proxyPort: b.readUInt16BE(Layout.svcValue.proxyPort),
  };
}

/** struct em_be_key: (svc_id, slot), host-endian. */
export function encodeBackendKey(svcId: number, slot: number): Buffer {
  const b = Buffer.alloc(Layout.backendKey.size);
  b.writeUInt32LE(svcId, Layout.backendKey.svcId);
  b.writeUInt32LE(slot, Layout.backendKey.slot);
  return b;
}

/** struct em_addr4: IPv4 + port, both network order. */
export function encodeAddr4(ip: string, port: number): Buffer {
  const b = Buffer.alloc(Layout.addr4.size);
  writeIp4(b, Layout.addr4.ip4, ip);
  b.writeUInt16BE(port, Layout.addr4.port);
  return b;
}

/** A u32 map key (edgemesh_rr_v1, edgemesh_cfg_v2, edgemesh_st_v3, edgemesh_lst_v1), host-endian. */
export function encodeU32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v, 0);
  return b;
}

/** struct em_config. */
export function encodeConfig(c: {
  agentTgid: number;
  bypassMark: number;
  bypassGid: number;
  flags?: number;
  /** The agent's netns cookie: proxy rewrites only for sockets there (0n = any). */
  netnsCookie?: bigint;
}): Buffer {
  const b = Buffer.alloc(Layout.config.size);
  b.writeUInt32LE(c.flags ?? 0, Layout.config.flags);
  b.writeUInt32LE(c.agentTgid, Layout.config.agentTgid);
  b.writeUInt32LE(c.bypassMark, Layout.config.bypassMark);
  b.writeUInt32LE(c.bypassGid, Layout.config.bypassGid);
  b.writeBigUInt64LE(c.netnsCookie ?? 0n, Layout.config.netnsCookie);
  return b;
}

/** Sums one per-CPU u64 counter (values are 8 bytes per possible CPU). */
export function sumPerCpu(b: Buffer): number {
  let total = 0n;
  for (let off = 0; off + 8 <= b.length; off += 8) total += b.readBigUInt64LE(off);
  return Number(total);
}
