// Resource-record encoding for answers we own (cluster names), done once per snapshot and name
// with dns-packet, so a query costs a header write and a few copies.
import net from 'node:net';
import dnsPacket from 'dns-packet';

/** One record we serve; `owner` undefined means "the question's name" (a pointer to offset 12). */
export type OwnRecord =
  | { type: 'A' | 'AAAA' | 'CNAME' | 'PTR'; owner?: string; ttl: number; data: string }
  | {
      type: 'SRV';
      owner?: string;
      ttl: number;
      data: { priority: number; weight: number; port: number; target: string };
    }
  | {
      type: 'SOA';
      owner?: string;
      ttl: number;
      data: {
        mname: string;
        rname: string;
        serial: number;
        refresh: number;
        retry: number;
        expire: number;
        minimum: number;
      };
    };

/** Pointer to the question name, which always starts right after the 12-byte header. */
const QUESTION_POINTER = Buffer.from([0xc0, 0x0c]);

/**
 * Encodes one record; an owner-less record gets the compression pointer to the question name.
 * A, AAAA, CNAME and PTR (every record of a big cluster's answer table) are written directly in
 * one allocation; SRV and SOA go through dns-packet. Both give the same bytes (tested).
 */
export function encodeRecord(record: OwnRecord): Buffer {
  return encodeRecordDirect(record) ?? encodeRecordWithDnsPacket(record);
}

const TYPE_CODE = { A: 1, AAAA: 28, CNAME: 5, PTR: 12 } as const;

/** The direct encoding, or undefined when this record needs dns-packet (other types, odd data). */
export function encodeRecordDirect(record: OwnRecord): Buffer | undefined {
  let rdata: Buffer | undefined;
  switch (record.type) {
    case 'A':
      rdata = ipv4Bytes(record.data);
      break;
    case 'AAAA':
      rdata = ipv6Bytes(record.data);
      break;
    case 'CNAME':
    case 'PTR':
      rdata = nameBytes(record.data);
      break;
    default:
      return undefined;
  }
  if (!rdata || record.ttl < 0 || record.ttl > 0xffffffff) return undefined;
  const owner = record.owner === undefined ? QUESTION_POINTER : nameBytes(record.owner);
  const out = Buffer.allocUnsafe(owner.length + 10 + rdata.length);
  owner.copy(out, 0);
  let pos = owner.length;
  out.writeUInt16BE(TYPE_CODE[record.type], pos);
  out.writeUInt16BE(1, pos + 2); // class IN
  out.writeUInt32BE(record.ttl, pos + 4);
  out.writeUInt16BE(rdata.length, pos + 8);
  pos += 10;
  rdata.copy(out, pos);
  return out;
}

/** A name in wire form as dns-packet writes it (labels as UTF-8, no compression). */
function nameBytes(name: string): Buffer {
  const n = name.replace(/^\.|\.$/g, '');
  if (n.length === 0) return Buffer.from([0]);
  const labels = n.split('.');
  let len = 1;
  for (const label of labels) len += 1 + Buffer.byteLength(label);
  const out = Buffer.allocUnsafe(len);
  let pos = 0;
  for (const label of labels) {
    const written = out.write(label, pos + 1);
    out[pos] = written;
    pos += written + 1;
  }
  out[pos] = 0;
  return out;
}

function ipv4Bytes(ip: string): Buffer | undefined {
  if (!net.isIPv4(ip)) return undefined;
  return Buffer.from(ip.split('.').map(Number));
}

function ipv6Bytes(ip: string): Buffer | undefined {
  // Embedded IPv4 forms ("::ffff:1.2.3.4") are left to dns-packet.
  if (!net.isIPv6(ip) || ip.includes('.')) return undefined;
  const [head = '', tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  if (groups.length !== 8) return undefined;
  const out = Buffer.allocUnsafe(16);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(Number.parseInt(groups[i]!, 16), i * 2);
  return out;
}

/** The dns-packet encoding (every type). */
export function encodeRecordWithDnsPacket(record: OwnRecord): Buffer {
  const wire = dnsPacket.encode({
    answers: [{ ...record, name: record.owner ?? '.', class: 'IN' } as dnsPacket.Answer],
  });
  const rr = wire.subarray(12);
  // dns-packet wrote the root name (one zero byte); swap it for the pointer.
  return record.owner === undefined ? Buffer.concat([QUESTION_POINTER, rr.subarray(1)]) : Buffer.from(rr);
}

/** Encodes a section: the concatenated records and their count. */
export function encodeSection(records: readonly OwnRecord[]): { bytes: Buffer; count: number } {
  return { bytes: Buffer.concat(records.map(encodeRecord)), count: records.length };
}

/** The reverse-lookup name of an IP (`4.3.2.1.in-addr.arpa`, nibbles + `.ip6.arpa`); '' if invalid. */
export function reverseName(ip: string): string {
  if (net.isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  if (!net.isIPv6(ip) || ip.includes('.')) return '';
  const [head = '', tail = ''] = ip.toLowerCase().split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  if (groups.length !== 8) return '';
  const nibbles = groups.map((g) => g.padStart(4, '0')).join('');
  return `${[...nibbles].reverse().join('.')}.ip6.arpa`;
}

/** The name a headless endpoint without a hostname gets: its IP with '.'/':' turned into '-'. */
export function dashedIp(ip: string): string {
  return ip.toLowerCase().replace(/[.:]/g, '-');
}
