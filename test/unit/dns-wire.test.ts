// The hot-path wire parser and the upstream-answer walker, against dns-packet as the reference.
import dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { errorReply, isParseFailure, parseQuery, type Query, walkMessage } from '../../src/dns/wire.ts';
import { query } from '../helpers/dns.ts';

describe('parseQuery', () => {
  it('reads id, lower-cased name, type, class and EDNS0 fields', () => {
    const msg = dnsPacket.encode({
      type: 'query',
      id: 4242,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: 'AAAA', name: 'Web.Default.SVC.cluster.local' }],
      additionals: [
        { type: 'OPT', name: '.', udpPayloadSize: 4096, flags: dnsPacket.DNSSEC_OK } as dnsPacket.Answer,
      ],
    });
    const q = parseQuery(msg) as Query;
    expect(isParseFailure(q)).toBe(false);
    expect(q).toMatchObject({
      id: 4242,
      rd: true,
      name: 'web.default.svc.cluster.local',
      qtype: 28,
      qclass: 1,
      edns: true,
      dnssecOk: true,
      // Capped to our own EDNS limit.
      udpLimit: 1232,
    });
    expect(q.questionEnd).toBe(12 + 'Web.Default.SVC.cluster.local'.length + 2 + 4);
  });

  it('escapes dots inside labels so they cannot alias cluster names', () => {
    // One label "web.default" followed by "svc": must not read as web.default.svc.
    const msg = Buffer.concat([
      query('x').subarray(0, 12),
      Buffer.from([11, ...Buffer.from('web.default'), 3, ...Buffer.from('svc'), 0, 0, 1, 0, 1]),
    ]);
    const q = parseQuery(msg) as Query;
    expect(q.name).toBe('web\\.default.svc');
  });

  it.each([
    ['short header', Buffer.alloc(5), 'drop', 'short-header'],
    [
      'a response',
      (() => {
        const b = query('a');
        b[2]! |= 0x80;
        return b;
      })(),
      'drop',
      'not-a-query',
    ],
    [
      'qdcount 0',
      (() => {
        const b = query('a');
        b.writeUInt16BE(0, 4);
        return b;
      })(),
      'reply',
      'qdcount',
    ],
    [
      'compression in question',
      Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]),
      'reply',
      'compressed-question',
    ],
    ['truncated name', query('abcdef').subarray(0, 15), 'reply', 'truncated-name'],
    ['missing type/class', query('a').subarray(0, 15), 'reply', 'truncated-question'],
    [
      'label > 63',
      Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 64, 0, 0, 1, 0, 1]),
      'reply',
      'bad-label',
    ],
  ])('rejects %s', (_what, msg, action, reason) => {
    const r = parseQuery(msg);
    expect(isParseFailure(r)).toBe(true);
    expect(r).toMatchObject({ action, reason });
  });

  it('rejects names longer than 255 bytes', () => {
    const labels = Array.from({ length: 5 }, () => [63, ...Buffer.alloc(63, 0x61)]).flat();
    const msg = Buffer.concat([query('a').subarray(0, 12), Buffer.from([...labels, 0, 0, 1, 0, 1])]);
    expect(parseQuery(msg)).toMatchObject({ reason: 'name-too-long' });
  });

  it('FORMERR replies carry the id and decode as responses', () => {
    const bad = query('a', 'A', 777);
    bad.writeUInt16BE(3, 4);
    const reply = dnsPacket.decode(errorReply(bad, undefined, 1));
    expect(reply.id).toBe(777);
    expect(reply.type).toBe('response');
    expect((reply as unknown as { rcode: string }).rcode).toBe('FORMERR');
  });
});

describe('walkMessage', () => {
  it('finds every TTL (not OPT) and the SOA minimum of a negative answer', () => {
    const msg = dnsPacket.encode({
      type: 'response',
      id: 1,
      flags: 3,
      questions: [{ type: 'A', name: 'x.example' }],
      authorities: [
        {
          type: 'SOA',
          name: 'example',
          ttl: 300,
          data: { mname: 'ns', rname: 'h', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 60 },
        },
      ],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer],
    });
    const layout = walkMessage(msg)!;
    expect(layout.rcode).toBe(3);
    expect(layout.ttls).toEqual([300]);
    expect(layout.soaMinimum).toBe(60);
    expect(msg.readUInt32BE(layout.ttlOffsets[0]!)).toBe(300);
  });

  it('returns undefined for records running past the end, and never follows pointer loops', () => {
    const msg = dnsPacket.encode({
      type: 'response',
      id: 1,
      questions: [{ type: 'A', name: 'x.example' }],
      answers: [{ type: 'A', name: 'x.example', ttl: 5, data: '192.0.2.1' }],
    });
    expect(walkMessage(msg.subarray(0, msg.length - 2))).toBeUndefined();
    const loop = Buffer.from(msg);
    // Point the answer's owner name at itself.
    const at = 12 + 'x.example'.length + 2 + 4;
    loop.writeUInt16BE(0xc000 | at, at);
    expect(() => walkMessage(loop)).not.toThrow();
  });
});
