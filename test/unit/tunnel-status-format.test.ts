// `edgemesh status` output for the tunnel's pump fields: a relay's document (its splice pump) is
// printed as a relay (framed splice counts when present), and an agent's tunnel lines show the sealed
// pumps, the framed streams and the UDP flows (tunnel.datagrams).
import { describe, expect, it } from 'vitest';
import { formatRelayStatus, formatStatus } from '../../src/cli/status.ts';

describe('status formatting of pump lifecycle fields', () => {
  it('prints a relay document with its pump mode, active streams, bytes and outcomes', () => {
    const text = formatRelayStatus({
      nodeName: 'relay-1',
      agents: [{ node: 'a1', remote: '10.0.0.2:4000', streams: 0 }],
      pump: {
        mode: 'native splice',
        reason: 'native pump threads, splice through pipes',
        active: 2,
        bytes: 12345,
        finished: 7,
        failed: 1,
        idleClosed: 3,
        aborted: 4,
      },
      framed: { active: 1, idleClosed: 8, aborted: 9 },
    });
    expect(text).toContain('relay:      relay-1');
    expect(text).toContain('pump:       native splice (native pump threads, splice through pipes)');
    expect(text).toContain(
      '2 spliced now, 12345 bytes; ended: 7 finished, 1 failed, 3 idle-closed, 4 aborted',
    );
    expect(text).toContain('agent a1 10.0.0.2:4000');
    expect(text).toContain('framed:     1 spliced now; ended: 8 idle-closed, 9 aborted');
  });

  it('prints a relay document without framed counts (an older relay) without that line', () => {
    const text = formatRelayStatus({
      nodeName: 'relay-0',
      agents: [],
      pump: {
        mode: 'ts',
        reason: 'r',
        active: 0,
        bytes: 0,
        finished: 0,
        failed: 0,
        idleClosed: 0,
        aborted: 0,
      },
    });
    expect(text).toContain('relay:      relay-0');
    expect(text).not.toContain('framed:');
  });

  it("prints the agent's sealed pump line", () => {
    const text = formatStatus({
      nodeName: 'n1',
      generation: 1,
      intercept: { mode: 'iptables' },
      dataplane: { mode: 'native' },
      services: [],
      tunnel: {
        listen: '0.0.0.0:20006',
        relays: [],
        peers: [],
        sealed: { pump: 'native', active: 5, finished: 6, failed: 0, idleClosed: 2, aborted: 1 },
        framed: { active: 3, idleClosed: 4, aborted: 0 },
        datagrams: {
          endpoints: [{ node: 'n2', endpoint: '10.0.1.5:53', local: '127.0.0.1:40001' }],
          flows: { direct: 2, relay: 1, none: 0, in: 4 },
          datagrams: { tx: 100, rx: 90, dropped: 7 },
        },
      },
    });
    expect(text).toContain('sealed pump=native active=5 finished=6 failed=0 idle-closed=2 aborted=1');
    expect(text).toContain('framed active=3 idle-closed=4 aborted=0');
    expect(text).toContain(
      'udp endpoints=1 flows direct=2 relay=1 none=0 in=4 datagrams tx=100 rx=90 dropped=7',
    );
  });
});
