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

/** Encodes one record; an owner-less record gets the compression pointer to the question name. */
export function encodeRecord(record: OwnRecord): Buffer {
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
