// Record encoding: the direct encoder (A, AAAA, CNAME, PTR) writes exactly the bytes dns-packet
// writes, with and without owner names, for random addresses and names.
import { describe, expect, it } from 'vitest';
import {
  encodeRecord,
  encodeRecordDirect,
  encodeRecordWithDnsPacket,
  type OwnRecord,
} from '../../src/dns/records.ts';
import { xorshiftInt } from '../helpers/rng.ts';

describe('encodeRecord', () => {
  it('direct and dns-packet encodings agree byte for byte', () => {
    const seed = Number(process.env.EDGEMESH_FUZZ_SEED ?? Date.now() % 2 ** 31);
    const rand = xorshiftInt(seed);
    const label = () =>
      Array.from({ length: 1 + rand(12) }, () => 'abcdefghijklmnopqrstuvwxyz0123456789-'[rand(37)]).join('');
    const name = () => Array.from({ length: 1 + rand(5) }, label).join('.') + (rand(4) === 0 ? '.' : '');
    const v6 = () => {
      const groups = Array.from({ length: 8 }, () => (rand(3) === 0 ? '0' : rand(65536).toString(16)));
      const s = groups.join(':');
      return rand(2) ? s.replace(/(^|:)0(:0)+(:|$)/, '::') : s;
    };
    let direct = 0;
    for (let i = 0; i < 3000; i++) {
      const owner = rand(2) ? undefined : name();
      const ttl = rand(4) === 0 ? 0 : rand(86400);
      const kind = rand(4);
      const record: OwnRecord =
        kind === 0
          ? { type: 'A', owner, ttl, data: `${rand(256)}.${rand(256)}.${rand(256)}.${rand(256)}` }
          : kind === 1
            ? { type: 'AAAA', owner, ttl, data: v6() }
            : { type: kind === 2 ? 'CNAME' : 'PTR', owner, ttl, data: name() };
      const fast = encodeRecordDirect(record);
      if (fast) direct++;
      expect(fast?.toString('hex') ?? 'slow', `seed ${seed} ${JSON.stringify(record)}`).toBe(
        fast ? encodeRecordWithDnsPacket(record).toString('hex') : 'slow',
      );
    }
    expect(direct).toBeGreaterThan(2900);
  });

  it('falls back to dns-packet for SRV and embedded-IPv4 AAAA', () => {
    const srv: OwnRecord = {
      type: 'SRV',
      ttl: 5,
      data: { priority: 0, weight: 100, port: 80, target: 'a.b' },
    };
    expect(encodeRecordDirect(srv)).toBeUndefined();
    expect(encodeRecord(srv)).toEqual(encodeRecordWithDnsPacket(srv));
    const mapped: OwnRecord = { type: 'AAAA', ttl: 5, data: '::ffff:1.2.3.4' };
    expect(encodeRecordDirect(mapped)).toBeUndefined();
    expect(encodeRecord(mapped)).toEqual(encodeRecordWithDnsPacket(mapped));
  });
});
