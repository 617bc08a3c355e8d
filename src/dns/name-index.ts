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

/** The names one Service contributes (all under `<svc>.<ns>.svc.<domain>`), built once per entry. */
export interface Fragment {
  svcName: string;
  /** Nodes of the names under svcName, svcName first. Shared by every index holding the entry. */
  nodes: Array<[string, NameNode]>;
  /** PTR records: [reverse name, target]. */
  ptr: Array<[string, string]>;
  /** The fragment's native answer-table encoding (answer-table.ts), filled on first use. */
  encoded?: { bytes: Buffer; names: string[] };
}

interface SrvTarget {
  port: number;
  target: string;
}

/** Records of one name; a node without records is an empty non-terminal (NODATA, not NXDOMAIN). */
export interface NameNode {
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
  private nodes = new Map<string, NameNode>();
  private readonly dotDomain: string;
  private readonly collapseMarker: string;
  private readonly serviceSuffix: string;
  private readonly soaSection: { bytes: Buffer; count: number };
  /** True when two fragments named the same node (their nodes were merged into copies). */
  collisions = false;
  /** Fragments by Service key, with the entry (by identity) they were built from. */
  private byKey = new Map<string, { entry: ServiceEntry; fragment: Fragment }>();
  /** Services under each `<ns>.svc.<domain>` empty non-terminal. */
  private nsCount = new Map<string, number>();

  /**
   * Builds the index of `table`. With `previous` (the index of the last snapshot, same options)
   * it starts from a copy of that one and rebuilds only the Services whose entry changed identity
   * (the controller keeps unchanged entries identical), so a snapshot costs a map copy plus the
   * changed Services, not the whole table.
   */
  constructor(
    table: ServiceTable,
    private readonly options: NameIndexOptions,
    previous?: NameIndex,
  ) {
    this.domain = options.domain.toLowerCase().replace(/\.$/, '');
    this.generation = table.generation;
    this.dotDomain = `.${this.domain}`;
    this.collapseMarker = `.svc.${this.domain}.`;
    this.serviceSuffix = `.svc.${this.domain}`;
    this.soaSection = encodeSection([this.soaRecord(this.domain)]);
    const reusable =
      previous !== undefined &&
      !previous.collisions &&
      previous.domain === this.domain &&
      previous.options.ttl === options.ttl;
    if (!this.build(table, reusable ? previous : undefined)) {
      // A collision while updating: build from scratch (merging the colliding nodes).
      this.nodes = new Map();
      this.byKey = new Map();
      this.nsCount = new Map();
      this.build(table, undefined);
    }
  }

  /** Fills the index; false when an incremental build met a name collision. */
  private build(table: ServiceTable, previous: NameIndex | undefined): boolean {
    if (previous) {
      this.nodes = new Map(previous.nodes);
      this.byKey = new Map(previous.byKey);
      this.nsCount = new Map(previous.nsCount);
      for (const [key, item] of previous.byKey)
        if (table.services.get(key) !== item.entry) this.removeFragment(key, item.fragment);
    }
    // The apex is this index's own: its SOA record carries this snapshot's serial.
    this.nodes.set(this.domain, { ...emptyNode(), soa: true });
    for (const [key, entry] of table.services) {
      if (this.byKey.has(key)) continue; // unchanged since the previous index
      if (!this.addFragment(key, entry, buildFragment(entry, this.domain), previous !== undefined))
        return false;
    }
    return true;
  }

  /** The fragments of this index (one per Service). */
  *fragments(): IterableIterator<Fragment> {
    for (const item of this.byKey.values()) yield item.fragment;
  }

  /** Names in the zone that belong to no fragment (the apex and empty non-terminals above services). */
  *sharedZoneNames(): IterableIterator<string> {
    yield this.domain;
    if (this.byKey.size > 0) yield `svc.${this.domain}`;
    yield* this.nsCount.keys();
  }

  private addFragment(key: string, entry: ServiceEntry, fragment: Fragment, strict: boolean): boolean {
    for (const [name] of fragment.nodes) {
      if (!this.nodes.has(name)) continue;
      // Two Services naming the same node (not possible with valid Kubernetes names).
      if (strict) return false;
      this.collisions = true;
    }
    this.byKey.set(key, { entry, fragment });
    for (const [name, node] of fragment.nodes) {
      const existing = this.nodes.get(name);
      // Merged into a copy so the shared fragment nodes stay as built.
      this.nodes.set(name, existing === undefined ? node : mergeNodes(existing, node));
    }
    // Empty non-terminals `<ns>.svc.<domain>` and `svc.<domain>` above the service.
    const parent = fragment.svcName.slice(fragment.svcName.indexOf('.') + 1);
    this.node(parent);
    this.nsCount.set(parent, (this.nsCount.get(parent) ?? 0) + 1);
    for (const [rev, target] of fragment.ptr) {
      // Copy on write: PTR nodes may be shared with the previous snapshot's index.
      const old = this.nodes.get(rev);
      if (old?.ptr.includes(target)) continue;
      this.nodes.set(rev, { ...emptyNode(), ptr: [...(old?.ptr ?? []), target] });
    }
    return true;
  }

  private removeFragment(key: string, fragment: Fragment): void {
    this.byKey.delete(key);
    for (const [name] of fragment.nodes) this.nodes.delete(name);
    for (const [rev, target] of fragment.ptr) {
      const old = this.nodes.get(rev);
      if (!old) continue;
      const ptr = old.ptr.filter((p) => p !== target);
      if (ptr.length === 0) this.nodes.delete(rev);
      else this.nodes.set(rev, { ...emptyNode(), ptr });
    }
    const parent = fragment.svcName.slice(fragment.svcName.indexOf('.') + 1);
    const left = (this.nsCount.get(parent) ?? 1) - 1;
    if (left > 0) this.nsCount.set(parent, left);
    else {
      this.nsCount.delete(parent);
      this.nodes.delete(parent);
    }
    if (this.byKey.size === 0) this.nodes.delete(`svc.${this.domain}`);
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

  /**
   * What `lookup` answers for `<name>.<a name outside the zone>` (the search-path collapse), when
   * `name` is a cluster name it would collapse into; undefined otherwise.
   */
  collapsedAnswer(name: string, qtype: number): OwnAnswer | undefined {
    if (!name.endsWith(this.collapseMarker.slice(0, -1)) || name.indexOf(this.collapseMarker) >= 0)
      return undefined;
    const node = this.nodes.get(name);
    return node && hasRecords(node) ? this.collapsed(node, name, qtype) : undefined;
  }

  private answer(node: NameNode, qtype: number, name: string): OwnAnswer {
    node.memo ??= new Map();
    let cached = node.memo.get(qtype);
    if (cached && cached.nscount > 0 && cached.ns !== this.soaSection.bytes) {
      // A node shared with the previous snapshot's index: same records, this index's SOA serial.
      cached = { ...cached, ns: this.soaSection.bytes };
      node.memo.set(qtype, cached);
    }
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
      node = emptyNode();
      this.nodes.set(name, node);
      if (name.endsWith(this.dotDomain)) {
        const parent = name.slice(name.indexOf('.') + 1);
        if (parent.length >= this.domain.length) this.node(parent);
      }
    }
    return node;
  }
}

/** Builds the names of one Service (see Fragment). */
function buildFragment(svc: ServiceEntry, domain: string): Fragment {
  const ns = svc.namespace.toLowerCase();
  const svcName = `${svc.name.toLowerCase()}.${ns}.svc.${domain}`;
  const nodes = new Map<string, NameNode>();
  const ptr: Array<[string, string]> = [];
  const dotSvc = `.${svcName}`;
  /** The node for a name under svcName, with its ancestors up to svcName. */
  const nodeOf = (name: string): NameNode => {
    let node = nodes.get(name);
    if (!node) {
      node = emptyNode();
      nodes.set(name, node);
      if (name.endsWith(dotSvc)) nodeOf(name.slice(name.indexOf('.') + 1));
    }
    return node;
  };
  const node = nodeOf(svcName);
  node.service = true;
  const fragment: Fragment = { svcName, nodes: [], ptr };
  if (svc.type === 'ExternalName') {
    if (svc.externalName) node.cname = svc.externalName.toLowerCase().replace(/\.$/, '');
    fragment.nodes = [...nodes];
    return fragment;
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
      addressesOf(nodeOf(endpointName(ip, info.hostname)), ip);
      const rev = reverseName(ip);
      if (info.hostname && rev) ptr.push([rev, endpointName(ip, info.hostname)]);
    }
  } else {
    for (const ip of svc.clusterIPs) {
      if (!net.isIP(ip)) continue;
      addressesOf(node, ip);
      const rev = reverseName(ip);
      if (rev) ptr.push([rev, svcName]);
    }
    // Endpoints with hostnames are named even behind a ClusterIP (pods with hostname+subdomain).
    for (const [ip, info] of ready)
      if (info.hostname) addressesOf(nodeOf(endpointName(ip, info.hostname)), ip);
  }

  for (const port of svc.ports) {
    if (!port.name) continue;
    const srvNode = nodeOf(`_${port.name.toLowerCase()}._${port.protocol.toLowerCase()}.${svcName}`);
    if (svc.headless) {
      for (const ep of port.endpoints)
        if (ep.ready && net.isIP(ep.ip))
          srvNode.srv.push({ port: ep.port, target: endpointName(ep.ip, ready.get(ep.ip)?.hostname) });
    } else {
      srvNode.srv.push({ port: port.port, target: svcName });
    }
  }
  fragment.nodes = [...nodes];
  return fragment;
}

function emptyNode(): NameNode {
  return { a: [], aaaa: [], srv: [], ptr: [], soa: false, service: false };
}

/** A new node holding the records of both (memo dropped). */
function mergeNodes(a: NameNode, b: NameNode): NameNode {
  const m = emptyNode();
  for (const n of [a, b]) {
    for (const ip of n.a) pushUnique(m.a, ip);
    for (const ip of n.aaaa) pushUnique(m.aaaa, ip);
    m.srv.push(...n.srv);
    for (const p of n.ptr) pushUnique(m.ptr, p);
    m.cname ??= n.cname;
    m.soa ||= n.soa;
    m.service ||= n.service;
  }
  return m;
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
