// Golden tests of the pure interception renderers. Test IP plan: ClusterIPs 10.96.0.0/24,
// service CIDR 10.96.0.0/12, local redirect ports 21000+, bypass gid 40001.
import { describe, expect, it } from 'vitest';
import type { InterceptTarget } from '../../src/proxier/interceptor.ts';
import {
  chainLines,
  inSync,
  jumpLines,
  optionsForFamily,
  parseSave,
  renderCleanup,
  renderDelta,
  renderFull,
  targetsOfFamily,
  traceConnect,
} from '../../src/proxier/iptables-render.ts';
import * as nft from '../../src/proxier/nftables-render.ts';

const web: InterceptTarget = {
  id: 'ns/web:http',
  clusterIP: '10.96.0.10',
  port: 80,
  protocol: 'TCP',
  toPort: 21000,
};
const dns: InterceptTarget = {
  id: 'ns/dns:udp',
  clusterIP: '10.96.0.53',
  port: 53,
  protocol: 'UDP',
  toPort: 21001,
};
const echo: InterceptTarget = {
  id: 'ns/echo',
  clusterIP: '10.96.0.2',
  port: 2701,
  protocol: 'TCP',
  toPort: 21002,
};
const opts = { bypassGid: 40001 };

describe('iptables renderer', () => {
  it('renders the full state as one restore payload with sorted rules and jumps first', () => {
    const saved = parseSave('');
    expect(renderFull([web, dns, echo], opts, saved)).toBe(
      [
        '*nat',
        ':EDGEMESH - [0:0]',
        '-I PREROUTING 1 -m comment --comment "edgemesh service portals" -j EDGEMESH',
        '-I OUTPUT 1 -m comment --comment "edgemesh service portals" -m owner ! --gid-owner 40001 -j EDGEMESH',
        '-A EDGEMESH -d 10.96.0.10/32 -p tcp -m comment --comment "edgemesh ns/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 21000',
        '-A EDGEMESH -d 10.96.0.2/32 -p tcp -m comment --comment "edgemesh ns/echo" -m tcp --dport 2701 -j REDIRECT --to-ports 21002',
        '-A EDGEMESH -d 10.96.0.53/32 -p udp -m comment --comment "edgemesh ns/dns:udp" -m udp --dport 53 -j REDIRECT --to-ports 21001',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('deletes jumps a previous run left (parsed from iptables-save) before inserting its own', () => {
    const save = [
      '*filter',
      '-A INPUT -j EDGEMESH',
      'COMMIT',
      '*nat',
      ':OUTPUT ACCEPT [0:0]',
      ':EDGEMESH - [0:0]',
      '-A OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH',
      '-A OUTPUT -d 192.0.2.1/32 -j ACCEPT',
      '-A EDGEMESH -d 10.96.0.9/32 -p tcp -m comment --comment "edgemesh old" -m tcp --dport 1 -j REDIRECT --to-ports 2',
      'COMMIT',
    ].join('\n');
    const saved = parseSave(save);
    expect(saved.chainPresent).toBe(true);
    expect(saved.jumps).toEqual(['-A OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH']);
    expect(saved.chainRules).toHaveLength(1);
    const payload = renderFull([], {}, saved);
    expect(payload).toContain('-D OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH\n');
    expect(payload).not.toContain('192.0.2.1');
    expect(renderCleanup(saved)).toBe(
      [
        '*nat',
        ':EDGEMESH - [0:0]',
        '-D OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH',
        '-X EDGEMESH',
        'COMMIT',
        '',
      ].join('\n'),
    );
    expect(renderCleanup(parseSave('*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n'))).toBeUndefined();
  });

  it('renders a one-service change as a delta of only that rule', () => {
    const moved = { ...web, toPort: 21005 };
    expect(renderDelta([web, echo], [moved, echo])).toBe(
      [
        '*nat',
        '-D EDGEMESH -d 10.96.0.10/32 -p tcp -m comment --comment "edgemesh ns/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 21000',
        '-I EDGEMESH 1 -d 10.96.0.10/32 -p tcp -m comment --comment "edgemesh ns/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 21005',
        'COMMIT',
        '',
      ].join('\n'),
    );
    expect(renderDelta([web, echo], [echo, web])).toBeUndefined();
  });

  it('puts the service CIDR catch-all after every ClusterIP rule', () => {
    const lines = chainLines([web], { catchAll: { cidr: '10.96.0.0/12', toPort: 40001 } });
    expect(lines).toHaveLength(3);
    expect(lines[1]).toBe(
      '-A EDGEMESH -d 10.96.0.0/12 -p tcp -m comment --comment "edgemesh service CIDR tcp" -j REDIRECT --to-ports 40001',
    );
  });

  it('traces connections through the rendered rules', () => {
    const lines = chainLines([web, dns, echo], opts);
    expect(traceConnect(lines, '10.96.0.10', 80)).toBe(21000);
    expect(traceConnect(lines, '10.96.0.53', 53, 'UDP')).toBe(21001);
    expect(traceConnect(lines, '10.96.0.53', 53, 'TCP')).toBeUndefined();
    expect(traceConnect(lines, '10.96.0.10', 81)).toBeUndefined();
  });

  it('detects drift: a missing jump or rule, an extra rule, quoting differences do not count', () => {
    const dump = (jumps: string[], rules: string[]) =>
      parseSave(['*nat', ':EDGEMESH - [0:0]', ...jumps, ...rules, 'COMMIT'].join('\n'));
    // iptables-save prints a comment without spaces unquoted.
    const rules = chainLines([echo], opts).map((l) => l.replace('"edgemesh ns/echo"', '"edgemesh ns/echo"'));
    expect(inSync(dump(jumpLines(opts), rules), [echo], opts)).toBe(true);
    expect(inSync(dump(jumpLines(opts).slice(1), rules), [echo], opts)).toBe(false);
    expect(inSync(dump(jumpLines(opts), []), [echo], opts)).toBe(false);
    expect(inSync(dump(jumpLines(opts), [...rules, chainLines([web], {})[0]!]), [echo], opts)).toBe(false);
    const unquoted = rules.map((l) => l.replace(/"/g, ''));
    expect(inSync(dump(jumpLines(opts), unquoted), [echo], opts)).toBe(true);
  });
});

describe('nftables renderer', () => {
  it('renders table ip edgemesh with port maps keyed by daddr . dport, replacing any old table atomically', () => {
    expect(
      nft.renderFull([web, dns, echo], { ...opts, catchAll: { cidr: '10.96.0.0/12', toPort: 40001 } }),
    ).toBe(
      [
        'table ip edgemesh {}',
        'delete table ip edgemesh',
        'table ip edgemesh {',
        '  map services_tcp {',
        '    type ipv4_addr . inet_service : inet_service',
        '    elements = { 10.96.0.10 . 80 : 21000,',
        '      10.96.0.2 . 2701 : 21002 }',
        '  }',
        '  map services_udp {',
        '    type ipv4_addr . inet_service : inet_service',
        '    elements = { 10.96.0.53 . 53 : 21001 }',
        '  }',
        '  chain services {',
        '    meta l4proto tcp redirect to : ip daddr . tcp dport map @services_tcp comment "edgemesh services tcp"',
        '    meta l4proto udp redirect to : ip daddr . udp dport map @services_udp comment "edgemesh services udp"',
        '    ip daddr 10.96.0.0/12 meta l4proto tcp redirect to :40001 comment "edgemesh service CIDR tcp"',
        '    ip daddr 10.96.0.0/12 meta l4proto udp redirect to :40001 comment "edgemesh service CIDR udp"',
        '  }',
        '  chain output {',
        '    type nat hook output priority -100; policy accept;',
        `    meta skgid 40001 return comment "edgemesh bypass: the proxy's own connections"`,
        '    jump services',
        '  }',
        '  chain prerouting {',
        '    type nat hook prerouting priority dstnat; policy accept;',
        '    jump services',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('renders a one-service change as element deletes and adds only', () => {
    expect(nft.renderDelta([web, dns], [{ ...web, toPort: 21009 }, dns])).toBe(
      [
        'delete element ip edgemesh services_tcp { 10.96.0.10 . 80 }',
        'add element ip edgemesh services_tcp { 10.96.0.10 . 80 : 21009 }',
        '',
      ].join('\n'),
    );
    expect(nft.renderDelta([web], [web])).toBeUndefined();
    expect(nft.renderCleanup()).toBe('table ip edgemesh {}\ndelete table ip edgemesh\n');
  });

  it('expects one element per target in the drift shape', () => {
    expect(nft.expectedShape([web, dns, echo], opts)).toEqual({
      chains: { output: 2, prerouting: 1, services: 2 },
      maps: { services_tcp: 2, services_udp: 1 },
    });
  });
});

// IPv6 plan: ClusterIPs fd00:96::/112, service CIDR fd00:96::/108 beside the IPv4 one.
const web6: InterceptTarget = {
  id: 'ns/web:http',
  clusterIP: 'FD00:96:0:0::000A',
  port: 80,
  protocol: 'TCP',
  toPort: 21000,
};
const dns6: InterceptTarget = {
  id: 'ns/dns:udp',
  clusterIP: 'fd00:96::35',
  port: 53,
  protocol: 'UDP',
  toPort: 21001,
};

describe('IPv6 targets', () => {
  it('iptables: one family per rule set, /128 host prefixes in canonical form, catch-all only in its family', () => {
    const mixed = [web, web6, dns6];
    const catchAll = { ...opts, catchAll: { cidr: '10.96.0.0/12', toPort: 40001 } };
    expect(targetsOfFamily(mixed, 4)).toEqual([web]);
    expect(chainLines(targetsOfFamily(mixed, 6), optionsForFamily(catchAll, 6))).toEqual([
      '-A EDGEMESH -d fd00:96::35/128 -p udp -m comment --comment "edgemesh ns/dns:udp" -m udp --dport 53 -j REDIRECT --to-ports 21001',
      '-A EDGEMESH -d fd00:96::a/128 -p tcp -m comment --comment "edgemesh ns/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 21000',
    ]);
    expect(optionsForFamily(catchAll, 4)).toBe(catchAll);
    const lines = chainLines(targetsOfFamily(mixed, 6), opts);
    expect(traceConnect(lines, 'fd00:96::a', 80)).toBe(21000);
    expect(traceConnect(lines, 'fd00:96:0::35', 53, 'UDP')).toBe(21001);
    expect(traceConnect(lines, 'fd00:96::b', 80)).toBeUndefined();
    // What ip6tables-save prints for the installed rules compares equal (drift check).
    const save = [
      '*nat',
      ':EDGEMESH - [0:0]',
      ...jumpLines(opts),
      '-A EDGEMESH -d fd00:96::a/128 -p tcp -m comment --comment "edgemesh ns/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 21000',
      'COMMIT',
    ].join('\n');
    expect(inSync(parseSave(save), [web6], opts)).toBe(true);
    expect(renderDelta([web6], [])).toBe(
      '*nat\n-D EDGEMESH -d fd00:96::a/128 -p tcp -m comment --comment "edgemesh ns/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 21000\nCOMMIT\n',
    );
  });

  it('nftables: a second table ip6 edgemesh (ipv6_addr maps, ip6 daddr) in the same file; deltas name the family', () => {
    const text = nft.renderFull(
      [web, web6, dns6],
      { ...opts, catchAll: { cidr: 'fd00:96::/108', toPort: 40001 } },
      [4, 6],
    );
    const v6 = text.slice(text.indexOf('table ip6 edgemesh {}'));
    expect(text.indexOf('table ip edgemesh {}')).toBe(0);
    expect(text.slice(0, text.indexOf('table ip6'))).not.toContain('fd00');
    expect(text.slice(0, text.indexOf('table ip6'))).not.toContain('service CIDR');
    expect(v6.split('\n').slice(0, 16)).toEqual([
      'table ip6 edgemesh {}',
      'delete table ip6 edgemesh',
      'table ip6 edgemesh {',
      '  map services_tcp {',
      '    type ipv6_addr . inet_service : inet_service',
      '    elements = { fd00:96::a . 80 : 21000 }',
      '  }',
      '  map services_udp {',
      '    type ipv6_addr . inet_service : inet_service',
      '    elements = { fd00:96::35 . 53 : 21001 }',
      '  }',
      '  chain services {',
      '    meta l4proto tcp redirect to : ip6 daddr . tcp dport map @services_tcp comment "edgemesh services tcp"',
      '    meta l4proto udp redirect to : ip6 daddr . udp dport map @services_udp comment "edgemesh services udp"',
      '    ip6 daddr fd00:96::/108 meta l4proto tcp redirect to :40001 comment "edgemesh service CIDR tcp"',
      '    ip6 daddr fd00:96::/108 meta l4proto udp redirect to :40001 comment "edgemesh service CIDR udp"',
    ]);
    // IPv6 unusable: only the ip table, IPv6 targets left out.
    expect(nft.renderFull([web, web6], opts)).not.toContain('ip6');
    expect(nft.renderDelta([web, web6], [web, { ...web6, toPort: 21009 }])).toBe(
      [
        'delete element ip6 edgemesh services_tcp { fd00:96::a . 80 }',
        'add element ip6 edgemesh services_tcp { fd00:96::a . 80 : 21009 }',
        '',
      ].join('\n'),
    );
    expect(nft.renderCleanup([4, 6])).toBe(
      'table ip edgemesh {}\ndelete table ip edgemesh\ntable ip6 edgemesh {}\ndelete table ip6 edgemesh\n',
    );
    expect(nft.expectedShape([web, web6, dns6], opts, 6).maps).toEqual({ services_tcp: 1, services_udp: 1 });
    expect(nft.expectedShape([web, web6, dns6], opts, 4).maps).toEqual({ services_tcp: 1, services_udp: 0 });
  });
});
