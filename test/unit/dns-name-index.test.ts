// The NameIndex built incrementally from the previous snapshot's index (only Services whose entry
// changed identity are rebuilt) must answer exactly like one built from scratch, after any series
// of adds, removals and changes; and so must the native answer table compiled from it.
import { describe, expect, it } from 'vitest';
import type { ServiceEntry } from '../../src/controller/types.ts';
import { compileAnswerTable } from '../../src/dns/answer-table.ts';
import { NameIndex } from '../../src/dns/name-index.ts';
import { CLASS_IN, QType } from '../../src/dns/wire.ts';
import { svc, table } from '../helpers/dns.ts';
import { xorshiftInt } from '../helpers/rng.ts';

const OPTIONS = { domain: 'cluster.local', ttl: 5 };
const QTYPES = [QType.A, QType.AAAA, QType.SRV, QType.PTR, QType.SOA, QType.CNAME, QType.ANY, 16];

/** A random Service; IPs are unique per (id, version) so PTR lists never depend on table order. */
function randomService(rand: (n: number) => number, id: number, version: number): ServiceEntry {
  const ns = `ns${id % 3}`;
  const ip = (k: number) => `10.${version % 200}.${id % 250}.${k + 1}`;
  switch (rand(4)) {
    case 0:
      return svc(ns, `s${id}`, { type: 'ExternalName', externalName: `t${version}.example.org` });
    case 1:
      return svc(ns, `s${id}`, {
        headless: true,
        ports: [
          {
            name: 'db',
            port: 5432,
            endpoints: Array.from({ length: 1 + rand(3) }, (_, k) => ({
              ip: ip(k),
              port: 5432,
              hostname: rand(2) ? `h${k}` : undefined,
              ready: rand(5) > 0,
            })),
          },
        ],
      });
    default:
      return svc(ns, `s${id}`, {
        clusterIPs: rand(3) === 0 ? [ip(0), `fd00::${id.toString(16)}:${version.toString(16)}`] : [ip(0)],
        ports: [
          {
            name: rand(2) ? 'http' : '',
            port: 80,
            endpoints: [{ ip: ip(1), hostname: rand(4) ? undefined : 'x' }],
          },
        ],
      });
  }
}

/** name → entry bytes of an EMD1 table (order-free view). */
function tableEntries(buf: Buffer): Map<string, string> {
  const count = buf.readUInt32LE(8);
  let pos = 16 + buf.readUInt16LE(12) + buf.readUInt16LE(14);
  const out = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const start = pos;
    const nameLen = buf[pos]!;
    const name = buf.subarray(pos + 1, pos + 1 + nameLen).toString('hex');
    pos += 1 + nameLen;
    const answers = buf[pos++]!;
    for (let a = 0; a < answers; a++) pos += 8 + buf.readUInt16LE(pos + 6);
    out.set(name, buf.subarray(start, pos).toString('hex'));
  }
  expect(pos).toBe(buf.length);
  return out;
}

function answers(index: NameIndex, names: Iterable<string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of names)
    for (const qtype of QTYPES) {
      const a = index.lookup(name, qtype, CLASS_IN);
      out.set(
        `${name}/${qtype}`,
        a
          ? `${a.rcode} ${a.ancount} ${a.an.toString('hex')} ${a.nscount} ${a.ns.toString('hex')} ${a.chase}`
          : '-',
      );
    }
  return out;
}

describe('incremental NameIndex', () => {
  it('answers like a full rebuild after random snapshot changes (and compiles the same table)', () => {
    const seed = Number(process.env.EDGEMESH_FUZZ_SEED ?? Date.now() % 2 ** 31);
    const rand = xorshiftInt(seed);
    const current = new Map<string, ServiceEntry>();
    let previous: NameIndex | undefined;
    const everSeen = new Set<string>();
    for (let step = 1; step <= 40; step++) {
      // Change a few Services: add, replace (new identity) or remove.
      for (let c = 0; c < 1 + rand(6); c++) {
        const id = rand(30);
        const key = `ns${id % 3}/s${id}`;
        if (current.has(key) && rand(3) === 0) current.delete(key);
        else current.set(key, randomService(rand, id, step));
      }
      const t = table([...current.values()], step);
      const incremental = new NameIndex(t, OPTIONS, previous);
      const full = new NameIndex(t, OPTIONS);
      for (const name of full.ownedNames()) everSeen.add(name);
      for (const s of current.values())
        everSeen.add(`${s.name}.${s.namespace}.svc.cluster.local.corp.example`);
      expect(incremental.size, `seed ${seed} step ${step}`).toBe(full.size);
      expect(answers(incremental, everSeen), `seed ${seed} step ${step}`).toEqual(answers(full, everSeen));
      expect(tableEntries(compileAnswerTable(incremental))).toEqual(tableEntries(compileAnswerTable(full)));
      previous = incremental;
    }
  });

  it('keeps unchanged Services and rebuilds only changed ones', () => {
    const a = svc('default', 'a', { clusterIPs: ['10.96.0.1'] });
    const b = svc('default', 'b', { clusterIPs: ['10.96.0.2'] });
    const first = new NameIndex(table([a, b], 1), OPTIONS);
    const fragA = [...first.fragments()].find((f) => f.svcName.startsWith('a.'));
    const b2 = svc('default', 'b', { clusterIPs: ['10.96.0.3'] });
    const second = new NameIndex(table([a, b2], 2), OPTIONS, first);
    expect([...second.fragments()].find((f) => f.svcName.startsWith('a.'))).toBe(fragA);
    expect(second.lookup('b.default.svc.cluster.local', QType.A, CLASS_IN)?.an.subarray(-4)).toEqual(
      Buffer.from([10, 96, 0, 3]),
    );
    // The previous index is untouched (queries in flight keep their answers).
    expect(first.lookup('b.default.svc.cluster.local', QType.A, CLASS_IN)?.an.subarray(-4)).toEqual(
      Buffer.from([10, 96, 0, 2]),
    );
    const third = new NameIndex(table([], 3), OPTIONS, second);
    expect(third.lookup('default.svc.cluster.local', QType.A, CLASS_IN)?.rcode).toBe(3);
    expect(third.size).toBe(1);
  });
});
