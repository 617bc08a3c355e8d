// The immutable name index built from one ServiceTable: every cluster name we are authoritative
// for, with its records. Lookups return pre-encoded answer sections, memoized per name and type.
import net from 'node:net';
import type { ServiceEntry, ServiceTable } from '../controller/types.ts';
import { dashedIp, encodeRecord, encodeSection, type OwnRecord, reverseName } from './records.ts';
import { CLASS_IN, QType, Rcode } from './wire.ts';

/** What the server sends for a name we own: rcode plus encoded answer and authority sections. */
export interface OwnAnswer {
  rcode: number;
  ancount: number;
  an: Buffer;
  nscount: number;
  ns: Buffer;
  /** An ExternalName target outside the zone whose A/AAAA records the server appends (chases). */
  chase?: string;
}

/** Options of the index: the cluster domain and the TTL of every record we serve. */
export interface NameIndexOptions {
  domain: string;
  ttl: number;
}

interface SrvTarget {
  port: number;
  target: string;
}

/** Records of one name; a node without records is an empty non-terminal (NODATA, not NXDOMAIN). */
interface NameNode {
  a: string[];
  aaaa: string[];
  srv: SrvTarget[];
  ptr: string[];
  cname?: string;
  soa: boolean;
  /** Only service names answer to the `<svc>.<ns>` short form. */
  service: boolean;
  /** Encoded answers by qtype (plus COLLAPSED for the search-path form), filled on first use. */
  memo?: Map<number, OwnAnswer>;
}

const COLLAPSED = 0x10000;
const CLASS_ANY = 255;

/** Cluster names of one snapshot; `lookup` says how to answer, or undefined to forward. */
export class NameIndex {
  readonly domain: string;
  readonly generation: number;
  private readonly nodes = new Map<string, NameNode>();
  private readonly dotDomain: string;
  private readonly collapseMarker: string;
  private readonly serviceSuffix: string;
  private readonly soaSection: { bytes: Buffer; count: number };

  constructor(
    table: ServiceTable,
    private readonly options: NameIndexOptions,
  ) {
    this.domain = options.domain.toLowerCase().replace(/\.$/, '');
    this.generation = table.generation;
    this.dotDomain = `.${this.domain}`;
    this.collapseMarker = `.svc.${this.domain}.`;
    this.serviceSuffix = `.svc.${this.domain}`;
    this.soaSection = encodeSection([this.soaRecord(this.domain)]);
    this.node(this.domain).soa = true;
    for (const svc of table.services.values()) this.addService(svc);
  }

  /** The zone's SOA record, encoded (the authority section of NXDOMAIN and NODATA answers). */
  get soaBytes(): Buffer {
    return this.soaSection.bytes;
  }

  /**
   * Every name the index answers without forwarding, for the native answer table: the names
   * inside the zone (including empty non-terminals) and the `<svc>.<ns>` short forms.
   */
  *ownedNames(): IterableIterator<string> {
    for (const [name, node] of this.nodes) {
      if (!this.inZone(name)) continue;
      yield name;
      if (node.service && name.endsWith(this.serviceSuffix)) {
        const short = name.slice(0, -this.serviceSuffix.length);
        if (short.indexOf('.') > 0 && short.indexOf('.', short.indexOf('.') + 1) < 0) yield short;
      }
    }
  }

  /** Number of names (including empty non-terminals), for logs. */
  get size(): number {
    return this.nodes.size;
  }

  /** How to answer `name`/`qtype`, or undefined when the name is not ours (forward it). */
  lookup(name: string, qtype: number, qclass: number): OwnAnswer | undefined {
    if (qclass !== CLASS_IN && qclass !== CLASS_ANY) return undefined;
    const node = this.nodes.get(name);
    if (node) return this.answer(node, qtype, name);
    if (name === this.domain || name.endsWith(this.dotDomain)) {
      return {
        rcode: Rcode.NXDOMAIN,
        ancount: 0,
        an: Buffer.alloc(0),
        nscount: 1,
        ns: this.soaSection.bytes,
      };
    }
    // The seed's short form `<svc>.<ns>`.
    const dot = name.indexOf('.');
    if (dot > 0 && name.indexOf('.', dot + 1) < 0) {
      const canonical = this.nodes.get(`${name}.svc.${this.domain}`);
      if (canonical?.service) return this.answer(canonical, qtype, name);
    }
    // Search-path collapse: `<svc>.<ns>.svc.<domain>.<host search domain>` is the cluster name a
    // resolver walking its search list will ask for next; answering now saves the round trips.
    const marker = name.indexOf(this.collapseMarker);
    if (marker > 0) {
      const canonicalName = name.slice(0, marker + this.collapseMarker.length - 1);
      const canonical = this.nodes.get(canonicalName);
      if (canonical && hasRecords(canonical)) return this.collapsed(canonical, canonicalName, qtype);
    }
    return undefined;
  }

  private answer(node: NameNode, qtype: number, name: string): OwnAnswer {
    node.memo ??= new Map();
    let cached = node.memo.get(qtype);
    if (!cached) {
      const records = this.records(node, qtype, undefined);
      const inZone = name === this.domain || name.endsWith(this.dotDomain) || node.service;
      // Stub resolvers do not follow a CNAME themselves: for an ExternalName service the server
      // resolves the target and appends its addresses, as a recursive server would.
      const chase =
        node.cname && (qtype === QType.A || qtype === QType.AAAA) && !this.inZone(node.cname)
          ? node.cname
          : undefined;
      cached =
        records.length > 0
          ? { rcode: Rcode.NOERROR, ...section(records), nscount: 0, ns: Buffer.alloc(0), chase }
          : {
              rcode: Rcode.NOERROR,
              ancount: 0,
              an: Buffer.alloc(0),
              nscount: inZone ? 1 : 0,
              ns: inZone ? this.soaSection.bytes : Buffer.alloc(0),
            };
      node.memo.set(qtype, cached);
    }
    return cached;
  }

  private inZone(name: string): boolean {
    return name === this.domain || name.endsWith(this.dotDomain);
  }

  private collapsed(node: NameNode, canonicalName: string, qtype: number): OwnAnswer {
    node.memo ??= new Map();
    let cached = node.memo.get(COLLAPSED | qtype);
    if (!cached) {
      const cname: OwnRecord = { type: 'CNAME', ttl: this.options.ttl, data: canonicalName };
      const records =
        qtype === QType.CNAME
          ? []
          : this.records(node, qtype, canonicalName).filter((r) => r.type !== 'CNAME');
      const an = Buffer.concat([encodeRecord(cname), ...records.map(encodeRecord)]);
      cached = { rcode: Rcode.NOERROR, ancount: 1 + records.length, an, nscount: 0, ns: Buffer.alloc(0) };
      node.memo.set(COLLAPSED | qtype, cached);
    }
    return cached;
  }

  /** The records of `node` that answer `qtype`, owned by `owner` (undefined = the question name). */
  private records(node: NameNode, qtype: number, owner: string | undefined): OwnRecord[] {
    const ttl = this.options.ttl;
    const out: OwnRecord[] = [];
    const any = qtype === QType.ANY;
    if (node.cname) {
      // An alias has no other data (RFC 1034 §3.6.2): every type gets the CNAME.
      return [{ type: 'CNAME', owner, ttl, data: node.cname }];
    }
    if (any || qtype === QType.A) for (const ip of node.a) out.push({ type: 'A', owner, ttl, data: ip });
    if (any || qtype === QType.AAAA)
      for (const ip of node.aaaa) out.push({ type: 'AAAA', owner, ttl, data: ip });
    if (any || qtype === QType.SRV)
      for (const s of node.srv)
        out.push({
          type: 'SRV',
          owner,
          ttl,
          data: {
            priority: 0,
            weight: Math.floor(100 / node.srv.length) || 1,
            port: s.port,
            target: s.target,
          },
        });
    if (any || qtype === QType.PTR) for (const p of node.ptr) out.push({ type: 'PTR', owner, ttl, data: p });
    if (node.soa && (any || qtype === QType.SOA)) out.push({ ...this.soaRecord(this.domain), owner });
    return out;
  }

  private soaRecord(zone: string): OwnRecord {
    const ttl = this.options.ttl;
    return {
      type: 'SOA',
      owner: zone,
      ttl,
      data: {
        mname: `ns.dns.${zone}`,
        rname: `hostmaster.${zone}`,
        serial: this.generation >>> 0,
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: ttl,
      },
    };
  }

  /** The node for `name`, created with its ancestors inside the zone (empty non-terminals). */
  private node(name: string): NameNode {
    let node = this.nodes.get(name);
    if (!node) {
      node = { a: [], aaaa: [], srv: [], ptr: [], soa: false, service: false };
      this.nodes.set(name, node);
      if (name.endsWith(this.dotDomain)) {
        const parent = name.slice(name.indexOf('.') + 1);
        if (parent.length >= this.domain.length) this.node(parent);
      }
    }
    return node;
  }

  private addService(svc: ServiceEntry): void {
    const ns = svc.namespace.toLowerCase();
    const svcName = `${svc.name.toLowerCase()}.${ns}.svc.${this.domain}`;
    const node = this.node(svcName);
    node.service = true;
    if (svc.type === 'ExternalName') {
      if (svc.externalName) node.cname = svc.externalName.toLowerCase().replace(/\.$/, '');
      return;
    }
    // Endpoint IPs that may be published: ready ones (a DNS name must not lead to a dead pod).
    const ready = new Map<string, { hostname?: string }>();
    for (const port of svc.ports)
      for (const ep of port.endpoints)
        if (ep.ready && net.isIP(ep.ip)) ready.set(ep.ip, { hostname: ep.hostname });

    const addressesOf = (target: NameNode, ip: string) => {
      if (net.isIPv4(ip)) pushUnique(target.a, ip);
      else pushUnique(target.aaaa, ip);
    };
    const endpointName = (ip: string, hostname?: string) =>
      `${hostname ? hostname.toLowerCase() : dashedIp(ip)}.${svcName}`;

    if (svc.headless) {
      for (const [ip, info] of ready) {
        addressesOf(node, ip);
        // `<hostname>.<svc>...` (and the dashed-IP name CoreDNS uses for SRV targets).
        const epNode = this.node(endpointName(ip, info.hostname));
        addressesOf(epNode, ip);
        const rev = reverseName(ip);
        if (info.hostname && rev) pushUnique(this.node(rev).ptr, endpointName(ip, info.hostname));
      }
    } else {
      for (const ip of svc.clusterIPs) {
        if (!net.isIP(ip)) continue;
        addressesOf(node, ip);
        const rev = reverseName(ip);
        if (rev) pushUnique(this.node(rev).ptr, svcName);
      }
      // Endpoints with hostnames are named even behind a ClusterIP (pods with hostname+subdomain).
      for (const [ip, info] of ready)
        if (info.hostname) addressesOf(this.node(endpointName(ip, info.hostname)), ip);
    }

    for (const port of svc.ports) {
      if (!port.name) continue;
      const srvNode = this.node(`_${port.name.toLowerCase()}._${port.protocol.toLowerCase()}.${svcName}`);
      if (svc.headless) {
        for (const ep of port.endpoints)
          if (ep.ready && net.isIP(ep.ip))
            srvNode.srv.push({ port: ep.port, target: endpointName(ep.ip, ready.get(ep.ip)?.hostname) });
      } else {
        srvNode.srv.push({ port: port.port, target: svcName });
      }
    }
  }
}

function hasRecords(node: NameNode): boolean {
  return node.a.length + node.aaaa.length + node.srv.length + node.ptr.length > 0 || node.cname !== undefined;
}

function section(records: OwnRecord[]): { ancount: number; an: Buffer } {
  const s = encodeSection(records);
  return { ancount: s.count, an: s.bytes };
}

function pushUnique(list: string[], value: string): void {
  if (!list.includes(value)) list.push(value);
}
