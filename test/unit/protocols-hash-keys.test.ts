// Where consistent-hash keys come from in HTTP requests and raw upgrade heads: header (case-
// insensitive), cookie (exact name among several), query parameter, and nothing for source-IP.
import type http from 'node:http';
import { describe, expect, it } from 'vitest';
import type { Balancer, HashSource } from '../../src/lb/index.ts';
import { cookieValue, hashKeyFromHead, hashKeyOf } from '../../src/protocols/index.ts';

function req(url: string, headers: Record<string, string | string[]>): http.IncomingMessage {
  return { url, headers } as unknown as http.IncomingMessage;
}

const balancerWith = (hashSource: HashSource | undefined): Balancer => ({
  kind: 'RING_HASH',
  hashSource,
  pick: () => undefined,
});

describe('hashKeyOf (parsed requests)', () => {
  const r = req('/items?user=alice&x=1', { 'user-agent': 'curl/8', cookie: 'a=1; sticky=abc; sticky2=zzz' });
  it('reads a header, a cookie by exact name, and a query parameter', () => {
    expect(hashKeyOf(r, { kind: 'header', name: 'user-agent' })).toBe('curl/8');
    expect(hashKeyOf(r, { kind: 'cookie', name: 'sticky' })).toBe('abc');
    expect(hashKeyOf(r, { kind: 'query', name: 'user' })).toBe('alice');
  });
  it('gives undefined when the key is absent or the source is the client IP', () => {
    expect(hashKeyOf(r, { kind: 'header', name: 'x-user' })).toBeUndefined();
    expect(hashKeyOf(r, { kind: 'cookie', name: 'nope' })).toBeUndefined();
    expect(hashKeyOf(req('/items', {}), { kind: 'query', name: 'user' })).toBeUndefined();
    expect(hashKeyOf(r, { kind: 'sourceIp' })).toBeUndefined();
    expect(hashKeyOf(r, undefined)).toBeUndefined();
  });
  it('cookieValue tolerates spacing and values containing "="', () => {
    expect(cookieValue(' a = 1 ;b=x=y', 'b')).toBe('x=y');
    expect(cookieValue(undefined, 'b')).toBeUndefined();
  });
});

describe('hashKeyFromHead (raw upgrade request heads)', () => {
  const head = Buffer.from(
    'GET /chat?room=42 HTTP/1.1\r\nHost: ws\r\nX-User: Bob\r\nCookie: s=1; sid=q\r\nUpgrade: websocket\r\n\r\n',
  );
  it('finds header, cookie and query keys', () => {
    expect(hashKeyFromHead(head, balancerWith({ kind: 'header', name: 'x-user' }))).toBe('Bob');
    expect(hashKeyFromHead(head, balancerWith({ kind: 'cookie', name: 'sid' }))).toBe('q');
    expect(hashKeyFromHead(head, balancerWith({ kind: 'query', name: 'room' }))).toBe('42');
  });
  it('gives undefined for an incomplete head or no hash policy', () => {
    expect(
      hashKeyFromHead(head.subarray(0, 30), balancerWith({ kind: 'header', name: 'x-user' })),
    ).toBeUndefined();
    expect(hashKeyFromHead(head, balancerWith(undefined))).toBeUndefined();
  });
});
