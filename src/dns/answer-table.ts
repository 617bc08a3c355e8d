// Compiles the native responder's answer table (EMD1, decoded by native/src/dns/dns_table.cc)
// from a NameIndex: for every name the index owns, the exact answer sections the JS server would
// send for A and AAAA (taken from NameIndex.lookup itself, so both paths send the same bytes).
// Everything else — other types, ExternalName chases, search-path collapse — stays with JS.
import type { Fragment, NameIndex, OwnAnswer } from './name-index.ts';
import { CLASS_IN, EDNS_UDP_LIMIT, QType, Rcode } from './wire.ts';

/** Magic of the answer table layout (native/src/dns/dns_table.h). */
export const ANSWER_TABLE_MAGIC = 0x31444d45;
/** Answer flags (native/src/dns/dns_table.h): append the SOA; the search-path collapse answer. */
const FLAG_SOA = 1;
const FLAG_COLLAPSED = 2;
/** Query types answered natively. */
export const NATIVE_QTYPES: readonly number[] = [QType.A, QType.AAAA];

/** Names in DNS wire form (lower-case labels, terminating zero); undefined when not encodable. */
export function wireName(name: string): Buffer | undefined {
  if (name === '') return Buffer.from([0]);
  const labels = name.split('.');
  const parts: number[] = [];
  for (const label of labels) {
    // Escaped names (a '.' or '\' inside a label) never reach the native path (it leaves them to JS).
    if (label.length === 0 || label.length > 63 || label.includes('\\')) return undefined;
    parts.push(label.length);
    for (let i = 0; i < label.length; i++) {
      const c = label.charCodeAt(i);
      if (c > 0xff || (c >= 0x41 && c <= 0x5a)) return undefined;
      parts.push(c);
    }
  }
  parts.push(0);
  return parts.length > 255 ? undefined : Buffer.from(parts);
}

/** One encoded name: its wire bytes plus per-qtype answers. */
function encodeName(index: NameIndex, name: string, soa: Buffer): Buffer | undefined {
  const wire = wireName(name);
  if (!wire) return undefined;
  // [qtype, flags, answer] triples; written into one buffer at the end (big tables: few allocations).
  const picked: Array<[number, number, OwnAnswer]> = [];
  for (const qtype of NATIVE_QTYPES) {
    const own = index.lookup(name, qtype, CLASS_IN);
    // Only plain NOERROR answers (records or NODATA+SOA); chases need the upstream.
    if (!own || own.rcode !== Rcode.NOERROR || own.chase) continue;
    if (own.nscount > 0 && !(own.nscount === 1 && own.ns.equals(soa))) continue;
    if (own.an.length > EDNS_UDP_LIMIT) continue; // never fits a UDP reply: JS sets TC
    picked.push([qtype, own.nscount > 0 ? FLAG_SOA : 0, own]);
  }
  for (const qtype of NATIVE_QTYPES) {
    // `<name>.<host search domain>`: the CNAME-plus-records answer of the search-path collapse.
    const own = index.collapsedAnswer(name, qtype);
    if (own && own.an.length <= EDNS_UDP_LIMIT) picked.push([qtype, FLAG_COLLAPSED, own]);
  }
  let len = 2 + wire.length;
  for (const [, , own] of picked) len += 8 + own.an.length;
  const out = Buffer.allocUnsafe(len);
  out[0] = wire.length;
  wire.copy(out, 1);
  let pos = 1 + wire.length;
  out[pos++] = picked.length;
  for (const [qtype, flags, own] of picked) {
    out.writeUInt16LE(qtype, pos);
    out[pos + 2] = flags;
    out[pos + 3] = 0;
    out.writeUInt16LE(own.ancount, pos + 4);
    out.writeUInt16LE(own.an.length, pos + 6);
    pos += 8;
    pos += own.an.copy(out, pos);
  }
  return out;
}

/**
 * Encodes the answer table for `index` (generation = the index's snapshot generation). Each
 * Service's part is encoded once and kept on its fragment: a snapshot re-encodes only the
 * Services that changed, plus the few names shared between Services.
 */
export function compileAnswerTable(index: NameIndex): Buffer {
  const soa = index.soaBytes;
  const zone = wireName(index.domain) ?? Buffer.alloc(0);
  const parts: Buffer[] = [];
  const seen = new Set<string>();
  let count = 0;
  const add = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const encoded = encodeName(index, name, soa);
    if (encoded) {
      parts.push(encoded);
      count++;
    }
  };
  if (index.collisions) {
    // Merged nodes answer differently from their fragments: encode name by name.
    for (const name of index.ownedNames()) add(name);
  } else {
    for (const fragment of index.fragments()) {
      fragment.encoded ??= encodeFragment(index, fragment, soa);
      parts.push(fragment.encoded.bytes);
      count += fragment.encoded.names.length;
      for (const name of fragment.encoded.names) seen.add(name);
    }
    for (const name of index.sharedZoneNames()) add(name);
  }
  const header = Buffer.alloc(16);
  header.writeUInt32LE(ANSWER_TABLE_MAGIC, 0);
  header.writeUInt32LE(index.generation >>> 0, 4);
  header.writeUInt32LE(count, 8);
  header.writeUInt16LE(zone.length, 12);
  header.writeUInt16LE(soa.length, 14);
  return Buffer.concat([header, zone, soa, ...parts]);
}

/** The names of one fragment (and the short form of its Service) encoded, with their list. */
function encodeFragment(
  index: NameIndex,
  fragment: Fragment,
  soa: Buffer,
): { bytes: Buffer; names: string[] } {
  const names: string[] = [];
  const parts: Buffer[] = [];
  const all = fragment.nodes.map(([name]) => name);
  const short = shortForm(fragment.svcName, index.domain);
  // A short form inside the zone (a Service `cluster` in namespace `local`) is a zone name itself.
  if (short && short !== index.domain && !short.endsWith(`.${index.domain}`)) all.push(short);
  for (const name of all) {
    const encoded = encodeName(index, name, soa);
    if (!encoded) continue;
    parts.push(encoded);
    names.push(name);
  }
  return { bytes: Buffer.concat(parts), names };
}

/** `<svc>.<ns>` of `<svc>.<ns>.svc.<domain>`. */
function shortForm(svcName: string, domain: string): string | undefined {
  const suffix = `.svc.${domain}`;
  return svcName.endsWith(suffix) ? svcName.slice(0, -suffix.length) : undefined;
}

/** A table that answers nothing (no names, no zone): everything goes to the JS server. */
export function emptyAnswerTable(): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32LE(ANSWER_TABLE_MAGIC, 0);
  return header;
}
