// The sealed pump facade over real loopback sockets (spec-sealed): app -> plain -> pump -> sealed
// -> pump -> plain -> app, half-close both ways, and every failure resetting the plain side.
import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import {
  mirrorKeys,
  newSealedKeys,
  registerPumpMetrics,
  type SealedKeys,
  sealedPumpCounters,
  sealedPumpMode,
  startSealedPump,
  startSplicePump,
} from '../../src/tunnel/sealed-pump.ts';
import { SealedEncoder } from '../../src/tunnel/sealed-records.ts';
import { useSealedPumpMode } from '../helpers/pump-mode.ts';
import { collect, tcpPair } from '../helpers/sockets.ts';

function firstData(s: net.Socket): Promise<Buffer> {
  const got = new Promise<Buffer>((resolve) => s.once('data', resolve));
  s.resume();
  return got;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** appA <-> [pump A] <-> sealed TCP <-> [pump B] <-> appB. */
async function chain() {
  const a = await tcpPair();
  const w = await tcpPair();
  const b = await tcpPair();
  cleanups.push(a.close, w.close, b.close);
  const keys = newSealedKeys();
  const pumpA = startSealedPump(a.server, w.client, keys);
  const pumpB = startSealedPump(b.client, w.server, mirrorKeys(keys));
  return { appA: a.client, appB: b.server, pumpA, pumpB };
}

/** One pump whose sealed peer is a raw socket the test writes records to by hand. */
async function single(keys: SealedKeys, opts?: { plainHead?: Buffer; sealedHead?: Buffer }) {
  const b = await tcpPair();
  const w = await tcpPair();
  cleanups.push(b.close, w.close);
  const pump = startSealedPump(b.client, w.server, keys, opts);
  const raw = w.client;
  raw.on('error', () => {});
  return { app: b.server, raw, pump, enc: new SealedEncoder(keys.rxKey, keys.rxIv) };
}

// One suite for both implementations: the native pump (the addon is built in CI) and the TS twin.
describe.each(['ts', 'native'] as const)('sealed pump (%s)', (mode) => {
  useSealedPumpMode(mode);
  it('runs the implementation under test', () => {
    expect(sealedPumpMode().mode).toBe(mode);
  });

  it('carries bytes both ways byte-exact; a half-close crosses and the other way keeps flowing', async () => {
    const { appA, appB, pumpA, pumpB } = await chain();
    appA.allowHalfOpen = true;
    appB.allowHalfOpen = true;
    const up = randomBytes(3 * 1024 * 1024 + 17);
    const down = randomBytes(2 * 1024 * 1024 + 5);
    const gotB = collect(appB);
    const gotA = collect(appA);
    appA.end(up);
    // appB answers only after it has seen appA's FIN: the half-open direction still works.
    appB.on('end', () => appB.end(down));
    const [b, a, ra, rb] = await Promise.all([gotB, gotA, pumpA, pumpB]);
    expect(b.ended).toBe(true);
    expect(a.ended).toBe(true);
    expect(sha(b.data)).toBe(sha(up));
    expect(sha(a.data)).toBe(sha(down));
    expect(ra).toEqual({ plainToSealed: up.length, sealedToPlain: down.length });
    expect(rb).toEqual({ plainToSealed: down.length, sealedToPlain: up.length });
  });

  it('sends the heads first', async () => {
    const keys = newSealedKeys();
    const enc = new SealedEncoder(keys.rxKey, keys.rxIv);
    const { app, raw, pump } = await single(keys, {
      plainHead: Buffer.from('plain-head'),
      sealedHead: Buffer.concat([enc.seal(Buffer.from('sealed-head ')), enc.seal(Buffer.from('more'))]),
    });
    app.allowHalfOpen = true;
    const got = collect(app);
    const rawGot = collect(raw);
    raw.end(enc.end());
    app.end();
    const [a, r, res] = await Promise.all([got, rawGot, pump]);
    expect(a.data.toString()).toBe('sealed-head more');
    expect(a.ended).toBe(true);
    const check = new SealedEncoder(keys.txKey, keys.txIv);
    expect(r.data.equals(Buffer.concat([check.seal(Buffer.from('plain-head')), check.end()]))).toBe(true);
    expect(res).toEqual({ plainToSealed: 10, sealedToPlain: 16 });
  });

  it('resets the plain side on a tampered record and writes nothing after it', async () => {
    const { app, raw, pump, enc } = await single(newSealedKeys());
    const got = collect(app);
    const first = firstData(app);
    raw.write(enc.seal(Buffer.from('good')));
    expect((await first).toString()).toBe('good');
    const bad = enc.seal(Buffer.from('evil'));
    bad[6] = (bad[6] ?? 0) ^ 0x40;
    raw.write(Buffer.concat([bad, enc.seal(Buffer.from('after'))]));
    const [a, res] = await Promise.all([got, pump]);
    expect(a.data.toString()).toBe('good');
    expect(a.ended).toBe(false);
    expect(a.error).toBe('ECONNRESET');
    expect(res.error).toMatch(/authentication/);
    expect(raw.destroyed || raw.readableEnded).toBe(true);
  });

  it('resets the plain side when the sealed stream is cut without an end record', async () => {
    const { app, raw, pump, enc } = await single(newSealedKeys());
    const got = collect(app);
    const first = firstData(app);
    raw.write(enc.seal(Buffer.from('partial')));
    expect((await first).toString()).toBe('partial');
    const rec = enc.seal(Buffer.from('cut short'));
    raw.end(rec.subarray(0, rec.length - 3));
    const [a, res] = await Promise.all([got, pump]);
    expect(a.data.toString()).toBe('partial');
    expect(a.error).toBe('ECONNRESET');
    expect(res.error).toMatch(/EOF/);
  });

  it('counts records, bytes and refusals for metrics', async () => {
    const before = sealedPumpCounters();
    const { app, raw, pump, enc } = await single(newSealedKeys());
    const got = collect(app);
    const good = enc.seal(Buffer.alloc(100));
    const bad = enc.seal(Buffer.from('tampered'));
    bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 1;
    raw.write(Buffer.concat([good, bad]));
    await Promise.all([got, pump]);
    const after = sealedPumpCounters();
    expect(after.sealed_started - before.sealed_started).toBe(1);
    expect(after.failed - before.failed).toBe(1);
    expect(after.auth_failures - before.auth_failures).toBe(1);
    expect(after.records_opened - before.records_opened).toBeGreaterThanOrEqual(1);
    const registry = new Registry();
    registerPumpMetrics(registry);
    registerPumpMetrics(registry); // idempotent
    const text = await registry.metrics();
    expect(text).toContain(
      `edgemesh_tunnel_pump_events_total{counter="auth_failures"} ${after.auth_failures}`,
    );
  });

  it('resets on a header N out of range', async () => {
    const { app, raw, pump } = await single(newSealedKeys());
    const got = collect(app);
    raw.write(Buffer.from([0, 1, 0, 17]));
    const [a, res] = await Promise.all([got, pump]);
    expect(a.data.length).toBe(0);
    expect(a.error).toBe('ECONNRESET');
    expect(res.error).toMatch(/out of range/);
  });

  it('resets on a record after the end record', async () => {
    const { app, raw, pump, enc } = await single(newSealedKeys());
    const got = collect(app);
    const endRec = enc.end();
    const extra = Buffer.from([0, 0, 0, 16, ...Buffer.alloc(16)]);
    raw.write(Buffer.concat([endRec, extra]));
    const [a, res] = await Promise.all([got, pump]);
    expect(a.data.length).toBe(0);
    expect(res.error).toMatch(/after the end/);
  });

  it('turns a reset of one plain side into a reset of the far plain side', async () => {
    const { appA, appB, pumpA, pumpB } = await chain();
    const gotB = collect(appB);
    const first = firstData(appB);
    appA.write('hello');
    expect((await first).toString()).toBe('hello');
    appA.resetAndDestroy();
    const [b, ra, rb] = await Promise.all([gotB, pumpA, pumpB]);
    expect(b.error).toBe('ECONNRESET');
    expect(ra.error).toBeDefined();
    expect(rb.error).toBeDefined();
  });
});

describe.each(['ts', 'native'] as const)('splice pump (%s)', (mode) => {
  useSealedPumpMode(mode);
  it('splices both ways with half-close and heads, counting bytes', async () => {
    const x = await tcpPair();
    const y = await tcpPair();
    cleanups.push(x.close, y.close);
    const appX = x.client;
    const appY = y.server;
    appX.allowHalfOpen = true;
    appY.allowHalfOpen = true;
    const pump = startSplicePump(x.server, y.client, { aHead: Buffer.from('AH'), bHead: Buffer.from('BH') });
    const up = randomBytes(1024 * 1024);
    const gotY = collect(appY);
    const gotX = collect(appX);
    appX.end(up);
    appY.on('end', () => appY.end('reply'));
    const [gy, gx, res] = await Promise.all([gotY, gotX, pump]);
    expect(sha(gy.data)).toBe(sha(Buffer.concat([Buffer.from('AH'), up])));
    expect(gx.data.toString()).toBe('BHreply');
    expect(res).toEqual({ aToB: up.length + 2, bToA: 7 });
  });

  it('resets the other side when one side resets', async () => {
    const x = await tcpPair();
    const y = await tcpPair();
    cleanups.push(x.close, y.close);
    const pump = startSplicePump(x.server, y.client);
    const gotY = collect(y.server);
    const first = firstData(y.server);
    x.client.write('hi');
    expect((await first).toString()).toBe('hi');
    x.client.resetAndDestroy();
    const [gy, res] = await Promise.all([gotY, pump]);
    expect(gy.error).toBe('ECONNRESET');
    expect(res.error).toBeDefined();
  });
});
