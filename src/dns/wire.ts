// DNS wire format helpers for the hot path: a strict, allocation-light query parser, reply
// headers, error replies, and a bounded record walker that finds TTL fields in upstream answers.
// dns-packet encodes our records (records.ts); this file exists because decoding every query
// into objects with dns-packet costs more than answering a cluster name does.

/** RCODE values (RFC 1035 §4.1.1). */
export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

/** Record type numbers we handle by name. */
export const QType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  ANY: 255,
} as const;

/** Class IN. */
export const CLASS_IN = 1;

/** Largest UDP reply sent to a client that did not advertise an EDNS0 buffer size. */
export const CLASSIC_UDP_LIMIT = 512;
/** Our advertised and maximum EDNS0 UDP payload size (the DNS flag day 2020 value). */
export const EDNS_UDP_LIMIT = 1232;

const HEADER = 12;
const FLAG_QR = 0x8000;
const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;

/** A parsed query: what answering needs, with offsets into the original bytes. */
export interface Query {
  id: number;
  /** Opcode (0 = QUERY). */
  opcode: number;
  rd: boolean;
  /** Lower-case name without the trailing dot ('' for the root); '.' and '\' inside labels escaped. */
  name: string;
  qtype: number;
  qclass: number;
  /** Offset just past the question section (the question bytes are [12, questionEnd)). */
  questionEnd: number;
  /** True when the query carried an OPT record. */
  edns: boolean;
  /** EDNS version (0 when absent). */
  ednsVersion: number;
  /** DNSSEC OK bit. */
  dnssecOk: boolean;
  /** Largest UDP reply the client accepts. */
  udpLimit: number;
}

/** Why a packet could not be parsed, and whether a reply can be formed. */
export interface ParseFailure {
  /** 'drop': no reply possible or wanted (too short, a response); 'reply': answer with `rcode`. */
  action: 'drop' | 'reply';
  rcode: number;
  /** Short machine-friendly reason, used as a metrics label. */
  reason: string;
}

/** Result of parseQuery: a Query or a ParseFailure (checked with `'reason' in r`). */
export type ParseResult = Query | ParseFailure;

const fail = (action: 'drop' | 'reply', rcode: number, reason: string): ParseFailure => ({
  action,
  rcode,
  reason,
});

/** Scratch space for the name being read (names are at most 255 bytes on the wire). */
const scratch = Buffer.allocUnsafe(256);

/**
 * Reads a name at `offset` without following compression pointers (a question name in a query
 * has nothing before it to point at). Returns [name, end] or a reason string. The name is
 * lower-cased byte-wise into a scratch buffer and decoded once: this runs for every query.
 */
function readQuestionName(buf: Buffer, offset: number): [string, number] | string {
  let total = 0;
  let pos = offset;
  let out = 0;
  let special = false;
  for (;;) {
    if (pos >= buf.length) return 'truncated-name';
    const len = buf[pos]!;
    if (len === 0) break;
    if (len >= 0xc0) return 'compressed-question';
    if (len > 63) return 'bad-label';
    const end = pos + 1 + len;
    if (end > buf.length) return 'truncated-name';
    total += len + 1;
    if (total > 254) return 'name-too-long';
    if (out > 0) scratch[out++] = 0x2e;
    for (let i = pos + 1; i < end; i++) {
      let c = buf[i]!;
      if (c >= 0x41 && c <= 0x5a) c |= 0x20;
      else if (c === 0x2e || c === 0x5c) special = true;
      scratch[out++] = c;
    }
    pos = end;
  }
  if (special) return [escapedName(buf, offset), pos + 1];
  return [scratch.toString('latin1', 0, out), pos + 1];
}

/** The slow path for names with '.' or '\\' inside a label: escaped so a label holding a dot can
 * never alias two labels of a cluster name. Only called on names readQuestionName validated. */
function escapedName(buf: Buffer, offset: number): string {
  const labels: string[] = [];
  let pos = offset;
  while (buf[pos]! !== 0) {
    const len = buf[pos]!;
    let label = '';
    for (let i = pos + 1; i <= pos + len; i++) {
      let c = buf[i]!;
      if (c >= 0x41 && c <= 0x5a) c |= 0x20;
      label += c === 0x2e || c === 0x5c ? `\\${String.fromCharCode(c)}` : String.fromCharCode(c);
    }
    labels.push(label);
    pos += len + 1;
  }
  return labels.join('.');
}

/** Skips a (possibly compressed) name in a message without following pointers; -1 when malformed. */
export function skipName(buf: Buffer, offset: number): number {
  let pos = offset;
  for (let guard = 0; guard < 128; guard++) {
    if (pos >= buf.length) return -1;
    const len = buf[pos]!;
    if (len === 0) return pos + 1;
    if (len >= 0xc0) return pos + 2 <= buf.length ? pos + 2 : -1;
    if (len > 63) return -1;
    pos += len + 1;
  }
  return -1;
}

/** Parses a query strictly: exactly one question, no compression in it, a well-formed OPT. */
export function parseQuery(buf: Buffer): ParseResult {
  if (buf.length < HEADER) return fail('drop', Rcode.FORMERR, 'short-header');
  const flags = buf.readUInt16BE(2);
  // Never answer a response: two servers answering each other's FORMERRs would loop forever.
  if (flags & FLAG_QR) return fail('drop', Rcode.FORMERR, 'not-a-query');
  const opcode = (flags >> 11) & 0xf;
  if (opcode !== 0) return fail('reply', Rcode.NOTIMP, 'opcode');
  const qdcount = buf.readUInt16BE(4);
  const ancount = buf.readUInt16BE(6);
  const nscount = buf.readUInt16BE(8);
  const arcount = buf.readUInt16BE(10);
  if (qdcount !== 1) return fail('reply', Rcode.FORMERR, 'qdcount');
  if (ancount !== 0 || nscount !== 0 || arcount > 2) return fail('reply', Rcode.FORMERR, 'sections');
  const nameResult = readQuestionName(buf, HEADER);
  if (typeof nameResult === 'string') return fail('reply', Rcode.FORMERR, nameResult);
  const [name, nameEnd] = nameResult;
  if (nameEnd + 4 > buf.length) return fail('reply', Rcode.FORMERR, 'truncated-question');
  const qtype = buf.readUInt16BE(nameEnd);
  const qclass = buf.readUInt16BE(nameEnd + 2);
  const questionEnd = nameEnd + 4;
  const query: Query = {
    id: buf.readUInt16BE(0),
    opcode,
    rd: (flags & FLAG_RD) !== 0,
    name,
    qtype,
    qclass,
    questionEnd,
    edns: false,
    ednsVersion: 0,
    dnssecOk: false,
    udpLimit: CLASSIC_UDP_LIMIT,
  };
  let pos = questionEnd;
  for (let i = 0; i < arcount; i++) {
    const after = skipName(buf, pos);
    if (after < 0 || after + 10 > buf.length) return fail('reply', Rcode.FORMERR, 'truncated-additional');
    const type = buf.readUInt16BE(after);
    const rdlen = buf.readUInt16BE(after + 8);
    if (after + 10 + rdlen > buf.length) return fail('reply', Rcode.FORMERR, 'truncated-additional');
    if (type === QType.OPT) {
      // RFC 6891 §6.1.1: one OPT, owned by the root.
      if (query.edns || after !== pos + 1) return fail('reply', Rcode.FORMERR, 'bad-opt');
      query.edns = true;
      const size = buf.readUInt16BE(after + 2);
      query.udpLimit = Math.min(Math.max(size, CLASSIC_UDP_LIMIT), EDNS_UDP_LIMIT);
      query.ednsVersion = buf[after + 5]!;
      query.dnssecOk = (buf[after + 6]! & 0x80) !== 0;
    }
    pos = after + 10 + rdlen;
  }
  return query;
}

/** True when `r` is a ParseFailure. */
export function isParseFailure(r: ParseResult): r is ParseFailure {
  return (r as ParseFailure).reason !== undefined;
}

/** Our OPT record for replies to EDNS clients (root owner, 1232-byte payload, version 0). */
export function optRecord(dnssecOk: boolean, extendedRcode = 0): Buffer {
  const b = Buffer.alloc(11);
  b.writeUInt16BE(QType.OPT, 1);
  b.writeUInt16BE(EDNS_UDP_LIMIT, 3);
  b[5] = extendedRcode;
  b[7] = dnssecOk ? 0x80 : 0;
  return b;
}

/** Writes a reply header at the start of `out` for `q`. */
export function writeReplyHeader(
  out: Buffer,
  q: Pick<Query, 'id' | 'opcode' | 'rd'>,
  rcode: number,
  authoritative: boolean,
  counts: [number, number, number, number],
  truncated = false,
): void {
  out.writeUInt16BE(q.id, 0);
  let flags = FLAG_QR | FLAG_RA | (q.opcode << 11) | (rcode & 0xf);
  if (q.rd) flags |= FLAG_RD;
  if (authoritative) flags |= FLAG_AA;
  if (truncated) flags |= FLAG_TC;
  out.writeUInt16BE(flags, 2);
  out.writeUInt16BE(counts[0], 4);
  out.writeUInt16BE(counts[1], 6);
  out.writeUInt16BE(counts[2], 8);
  out.writeUInt16BE(counts[3], 10);
}

/**
 * A reply carrying only the question (when one was parsed) and an rcode: FORMERR, NOTIMP,
 * SERVFAIL, REFUSED, or an empty TC=1 answer telling a UDP client to retry over TCP.
 */
export function errorReply(
  query: Buffer,
  q: Query | undefined,
  rcode: number,
  truncated = false,
  extendedRcode = 0,
): Buffer {
  if (!q) {
    // Only the header of the query is trusted here.
    const out = Buffer.alloc(HEADER);
    const flags = query.length >= 4 ? query.readUInt16BE(2) : 0;
    writeReplyHeader(
      out,
      {
        id: query.length >= 2 ? query.readUInt16BE(0) : 0,
        opcode: (flags >> 11) & 0xf,
        rd: (flags & FLAG_RD) !== 0,
      },
      rcode,
      false,
      [0, 0, 0, 0],
    );
    return out;
  }
  const opt = q.edns ? optRecord(q.dnssecOk, extendedRcode) : undefined;
  const out = Buffer.allocUnsafe(q.questionEnd + (opt ? opt.length : 0));
  writeReplyHeader(out, q, rcode, false, [1, 0, 0, opt ? 1 : 0], truncated);
  query.copy(out, HEADER, HEADER, q.questionEnd);
  if (opt) opt.copy(out, q.questionEnd);
  return out;
}

/** Where the TTL fields of a message's records are (OPT excluded), and the message's shape. */
export interface MessageLayout {
  id: number;
  flags: number;
  rcode: number;
  truncated: boolean;
  qdcount: number;
  ancount: number;
  nscount: number;
  /** Offset just past the question section. */
  questionEnd: number;
  /** Offsets of every TTL field except OPT's. */
  ttlOffsets: number[];
  /** The TTLs at those offsets. */
  ttls: number[];
  /** SOA MINIMUM of the first SOA in the authority section (negative caching), if any. */
  soaMinimum: number | undefined;
  /** TTL of that SOA record. */
  soaTtl: number | undefined;
}

/**
 * Walks a whole message (an upstream answer) without following compression pointers, so
 * pointer loops cannot make it spin. Returns undefined when any record runs past the end.
 */
export function walkMessage(buf: Buffer): MessageLayout | undefined {
  if (buf.length < HEADER) return undefined;
  const flags = buf.readUInt16BE(2);
  const qdcount = buf.readUInt16BE(4);
  const ancount = buf.readUInt16BE(6);
  const nscount = buf.readUInt16BE(8);
  const arcount = buf.readUInt16BE(10);
  let pos = HEADER;
  for (let i = 0; i < qdcount; i++) {
    pos = skipName(buf, pos);
    if (pos < 0 || pos + 4 > buf.length) return undefined;
    pos += 4;
  }
  const layout: MessageLayout = {
    id: buf.readUInt16BE(0),
    flags,
    rcode: flags & 0xf,
    truncated: (flags & FLAG_TC) !== 0,
    qdcount,
    ancount,
    nscount,
    questionEnd: pos,
    ttlOffsets: [],
    ttls: [],
    soaMinimum: undefined,
    soaTtl: undefined,
  };
  const records = ancount + nscount + arcount;
  for (let i = 0; i < records; i++) {
    const after = skipName(buf, pos);
    if (after < 0 || after + 10 > buf.length) return undefined;
    const type = buf.readUInt16BE(after);
    const rdlen = buf.readUInt16BE(after + 8);
    const end = after + 10 + rdlen;
    if (end > buf.length) return undefined;
    if (type !== QType.OPT) {
      layout.ttlOffsets.push(after + 4);
      layout.ttls.push(buf.readUInt32BE(after + 4));
    }
    if (type === QType.SOA && i >= ancount && i < ancount + nscount && layout.soaMinimum === undefined) {
      if (rdlen < 22) return undefined;
      layout.soaMinimum = buf.readUInt32BE(end - 4);
      layout.soaTtl = buf.readUInt32BE(after + 4);
    }
    pos = end;
  }
  return layout;
}

/** Reads the question of a message as [lower-case name, qtype, qclass]; undefined when malformed. */
export function readQuestion(buf: Buffer): [string, number, number] | undefined {
  if (buf.length < HEADER || buf.readUInt16BE(4) < 1) return undefined;
  const r = readQuestionName(buf, HEADER);
  if (typeof r === 'string') return undefined;
  const [name, end] = r;
  if (end + 4 > buf.length) return undefined;
  return [name, buf.readUInt16BE(end), buf.readUInt16BE(end + 2)];
}
