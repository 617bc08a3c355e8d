// The TS encoders write exactly the byte layout of native/bpf/maps.h (whose sizes and offsets
// native/src/bpf/bpf_layout.h static_asserts in C++), and the pure socket-LB renderer decides
// LB vs proxy as documented. The C inline slot picker (native/bpf/lb.h) is compiled on the host and
// must agree with the expectations below.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Endpoint, ServiceEntry, ServiceTable } from '../../src/controller/types.ts';
import {
  Action,
  decodeSvcValue,
  encodeAddr4,
  encodeBackendKey,
  encodeConfig,
  encodeSvcKey,
  encodeSvcValue,
  Layout,
  MapName,
  Policy,
  STAT_NAMES,
  STAT_SLOTS,
  sumPerCpu,
} from '../../src/proxier/ebpf/map-layout.ts';
import { renderSocketLb } from '../../src/proxier/ebpf/render-socket-lb.ts';

const repo = path.resolve(import.meta.dirname, '../..');

describe('eBPF map layout', () => {
  it('names every EM_STAT_* counter of maps.h in slot order', () => {
    // A new counter in maps.h without its name here would never reach edgemesh_ebpf_events.
    const maps = readFileSync(path.join(repo, 'native/bpf/maps.h'), 'utf8');
    const slots = [...maps.matchAll(/^#define EM_STAT_(\w+) (\d+)/gm)].map(
      (m) => [m[1]!, Number(m[2])] as const,
    );
    const count = slots.find(([n]) => n === 'COUNT')?.[1];
    expect(count).toBe(STAT_SLOTS);
    expect(STAT_NAMES).toHaveLength(STAT_SLOTS);
    expect(slots.filter(([n]) => n !== 'COUNT').map(([, i]) => i)).toEqual(STAT_NAMES.map((_, i) => i));
    expect(STAT_NAMES[slots.find(([n]) => n === 'MSG_FALLBACK')![1]]).toBe('msgFallback');
    expect(STAT_NAMES[slots.find(([n]) => n === 'MSG_RESUME')![1]]).toBe('msgResume');
    expect(maps).toContain(`} ${MapName.stats} SEC(".maps");`);
  });

  it('matches the offsets the C++ loader static_asserts', () => {
    // Parse the static_asserts so the TS table and the C++ one cannot drift apart silently.
    const header = readFileSync(path.join(repo, 'native/src/bpf/bpf_layout.h'), 'utf8');
    const sizes = [...header.matchAll(/sizeof\(struct (\w+)\) == (\d+)/g)].map((m) => [m[1], Number(m[2])]);
    const offsets = [...header.matchAll(/offsetof\(struct (\w+), (\w+)\) == (\d+)/g)].map((m) => [
      m[1],
      m[2],
      Number(m[3]),
    ]);
    const tsName: Record<string, keyof typeof Layout> = {
      em_svc_key: 'svcKey',
      em_svc_value: 'svcValue',
      em_be_key: 'backendKey',
      em_addr4: 'addr4',
      em_config: 'config',
    };
    const camel = (s: string) => s.replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
    let checked = 0;
    for (const [struct, size] of sizes) {
      const t = tsName[struct as string];
      if (!t) continue;
      expect(Layout[t].size, `${struct} size`).toBe(size);
      checked++;
    }
    for (const [struct, field, off] of offsets) {
      const t = tsName[struct as string];
      if (!t) continue;
      expect((Layout[t] as Record<string, number>)[camel(field as string)], `${struct}.${field}`).toBe(off);
      checked++;
    }
    expect(checked).toBeGreaterThan(20);
  });

  it('encodes a service key: IPv4 and port in network order, protocol number, zero pad', () => {
    expect(encodeSvcKey('10.96.0.10', 53, 'TCP').toString('hex')).toBe('0a60000a' + '0035' + '06' + '00');
    expect(encodeSvcKey('10.96.0.10', 53, 'UDP')[Layout.svcKey.proto]).toBe(17);
    expect(() => encodeSvcKey('fd00::1', 80, 'TCP')).toThrow(RangeError);
  });

  it('encodes a service value with host-endian id/count and a network-order proxy address', () => {
    const v = encodeSvcValue({
      svcId: 0x01020304,
      count: 3,
      action: Action.proxy,
      policy: Policy.source,
      proxyIp: '127.0.0.1',
      proxyPort: 40001,
    });
    expect(v.length).toBe(16);
    expect(v.readUInt32LE(Layout.svcValue.svcId)).toBe(0x01020304);
    expect(v.readUInt16LE(Layout.svcValue.count)).toBe(3);
    expect(v[Layout.svcValue.action]).toBe(1);
    expect(v[Layout.svcValue.policy]).toBe(2);
    expect(v.subarray(8, 12)).toEqual(Buffer.from([127, 0, 0, 1]));
    expect(v.readUInt16BE(Layout.svcValue.proxyPort)).toBe(40001);
    expect(v.readUInt16LE(Layout.svcValue.pad)).toBe(0);
    expect(decodeSvcValue(v)).toEqual({
      svcId: 0x01020304,
      count: 3,
      action: 1,
      policy: 2,
      proxyIp: '127.0.0.1',
      proxyPort: 40001,
    });
  });

  it('encodes backend keys, addresses, config and sums per-CPU counters', () => {
    expect(encodeBackendKey(7, 2).toString('hex')).toBe('0700000002000000');
    expect(encodeAddr4('192.168.1.2', 8080).toString('hex')).toBe('c0a80102' + '1f90' + '0000');
    const c = encodeConfig({
      agentTgid: 1234,
      bypassMark: 0x100,
      bypassGid: 40001,
      netnsCookie: 2n ** 40n + 3n,
    });
    expect([c.readUInt32LE(0), c.readUInt32LE(4), c.readUInt32LE(8), c.readUInt32LE(12)]).toEqual([
      1234, 0x100, 40001, 0,
    ]);
    expect(c.readBigUInt64LE(16)).toBe(2n ** 40n + 3n);
    const percpu = Buffer.alloc(24);
    percpu.writeBigUInt64LE(5n, 0);
    percpu.writeBigUInt64LE(7n, 16);
    expect(sumPerCpu(percpu)).toBe(12);
  });
});

function ep(ip: string, port: number, extra: Partial<Endpoint> = {}): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false, ...extra };
}

function svc(
  name: string,
  over: Partial<ServiceEntry> & { app?: 'tcp' | 'http'; eps?: Endpoint[] },
): ServiceEntry {
  return {
    namespace: 'ns',
    name,
    key: `ns/${name}`,
    clusterIPs: ['10.96.0.1'],
    headless: false,
    type: 'ClusterIP',
    ports: [
      {
        name: over.app ?? 'tcp',
        port: 80,
        protocol: 'TCP',
        appProtocol: over.app ?? 'tcp',
        targetPort: 8080,
        endpoints: over.eps ?? [ep('10.244.0.2', 8080)],
      },
    ],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
    ...over,
  };
}

function tableOf(...services: ServiceEntry[]): ServiceTable {
  return {
    generation: 1,
    services: new Map(services.map((s) => [s.key, s])),
    gateways: new Map(),
    virtualServices: new Map(),
    destinationRules: new Map(),
    secrets: new Map(),
  };
}

describe('renderSocketLb', () => {
  const opts = { nodeName: 'n1', localEndpointsOnly: false };
  const target = (ip: string) => ({
    id: ip,
    clusterIP: ip,
    port: 80,
    protocol: 'TCP' as const,
    toPort: 40001,
  });

  it('gives L4 services socket-LB and L7 services the proxy', () => {
    const out = renderSocketLb(
      tableOf(svc('a', { clusterIPs: ['10.96.0.1'] }), svc('b', { clusterIPs: ['10.96.0.2'], app: 'http' })),
      [target('10.96.0.1'), target('10.96.0.2')],
      opts,
    );
    expect(out.map((e) => [e.clusterIP, e.action, e.backends.length, e.proxyPort])).toEqual([
      // The LB entry keeps the proxy port: sk_lookup sends clients outside the cgroup there.
      ['10.96.0.1', Action.lb, 1, 40001],
      ['10.96.0.2', Action.proxy, 0, 40001],
    ]);
  });

  it('socketLb: false sends every intercepted TCP service to the proxy, L4 included', () => {
    const out = renderSocketLb(
      tableOf(svc('a', { clusterIPs: ['10.96.0.1'] }), svc('b', { clusterIPs: ['10.96.0.2'], app: 'http' })),
      [target('10.96.0.2'), target('10.96.0.1')],
      { ...opts, socketLb: false },
    );
    expect(out.map((e) => [e.clusterIP, e.action, e.backends.length, e.proxyPort])).toEqual([
      ['10.96.0.1', Action.proxy, 0, 40001],
      ['10.96.0.2', Action.proxy, 0, 40001],
    ]);
    // A service the proxier does not hand to the proxy is not touched at all (no socket-LB either).
    expect(
      renderSocketLb(tableOf(svc('a', { clusterIPs: ['10.96.0.1'] })), [], { ...opts, socketLb: false }),
    ).toEqual([]);
  });

  it('falls back to the proxy when an endpoint is not directly reachable or is IPv6', () => {
    const remote = svc('r', { eps: [ep('10.244.1.2', 8080, { nodeName: 'n2' })] });
    expect(
      renderSocketLb(tableOf(remote), [target('10.96.0.1')], { ...opts, localEndpointsOnly: true })[0]!
        .action,
    ).toBe(Action.proxy);
    expect(renderSocketLb(tableOf(remote), [target('10.96.0.1')], opts)[0]!.action).toBe(Action.lb);
    const v6 = svc('v6', { eps: [ep('10.244.0.2', 8080), ep('fd00::2', 8080)] });
    expect(renderSocketLb(tableOf(v6), [target('10.96.0.1')], opts)[0]!.action).toBe(Action.proxy);
  });

  it('maps policies: RANDOM, source affinity, and header hashing (L7: proxy)', () => {
    const withPolicy = (loadBalancer: object, affinity: 'None' | 'ClientIP' = 'None') => {
      const s = svc('p', { sessionAffinity: { type: affinity, timeoutSeconds: 10800 } });
      const port = { ...s.ports[0]!, trafficPolicy: { loadBalancer } };
      return renderSocketLb(tableOf({ ...s, ports: [port] }), [target('10.96.0.1')], opts)[0]!;
    };
    expect(withPolicy({ simple: 'RANDOM' }).policy).toBe(Policy.random);
    expect(withPolicy({}, 'ClientIP').policy).toBe(Policy.source);
    expect(withPolicy({ consistentHash: { useSourceIp: true } }).policy).toBe(Policy.source);
    expect(withPolicy({ simple: 'LEAST_CONN' }).policy).toBe(Policy.roundRobin);
    expect(withPolicy({ consistentHash: { httpHeaderName: 'x-user' } }).action).toBe(Action.proxy);
  });

  it('skips unproxied and headless services and services without usable endpoints', () => {
    const out = renderSocketLb(
      tableOf(
        svc('off', { clusterIPs: ['10.96.0.3'], proxied: false }),
        svc('none', {
          clusterIPs: ['10.96.0.4'],
          eps: [ep('10.244.0.9', 80, { ready: false, serving: false })],
        }),
      ),
      [],
      opts,
    );
    expect(out).toEqual([]);
  });
});

describe('native/bpf/lb.h em_pick_slot (compiled on the host)', () => {
  it('round robin, random and source affinity pick slots in range; no backend is an error', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'em-lb-'));
    try {
      const src = path.join(dir, 't.c');
      writeFileSync(
        src,
        `#include <stdio.h>
#define __always_inline inline __attribute__((always_inline))
#include "lb.h"
int main(void) {
  for (unsigned rr = 0; rr < 6; rr++) printf("%d ", em_pick_slot(EM_POLICY_ROUND_ROBIN, 3, rr, 0, 0));
  printf("| %d %d ", em_pick_slot(EM_POLICY_RANDOM, 4, 0, 4000000001u, 0), em_pick_slot(EM_POLICY_ROUND_ROBIN, 0, 1, 1, 1));
  printf("| %d %d", em_pick_slot(EM_POLICY_SOURCE, 5, 0, 0, 42), em_pick_slot(EM_POLICY_SOURCE, 5, 9, 9, 42));
  struct em_config cfg = { .agent_tgid = 10, .bypass_mark = 0x100, .bypass_gid = 0, .flags = 0 };
  printf(" | %d %d %d\\n", em_is_bypassed(&cfg, 10, 0, 0), em_is_bypassed(&cfg, 11, 0, 0x1ff), em_is_bypassed(&cfg, 11, 0, 0x10));
  return 0;
}
`,
      );
      const exe = path.join(dir, 't');
      execFileSync('cc', ['-O2', '-I', path.join(repo, 'native/bpf'), src, '-o', exe]);
      const [rr, rnd, src1] = execFileSync(exe, { encoding: 'utf8' }).trim().split(' | ');
      expect(rr).toBe('0 1 2 0 1 2');
      expect(rnd).toBe(`${4000000001 % 4} -22`);
      const [s1, s2] = src1!.split(' ');
      expect(s1).toBe(s2); // same client namespace, same slot, whatever rr/random say
      expect(Number(s1)).toBeLessThan(5);
      expect(execFileSync(exe, { encoding: 'utf8' }).trim().split(' | ')[3]).toBe('1 1 0');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
