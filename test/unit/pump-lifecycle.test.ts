// Pump lifecycle over real loopback sockets, native pump and TS twin alike: an idle chain is reset
// on both app sides after the idle timeout while a busy one is not, an abort mid-transfer resets
// both sides and leaves no fd behind (/proc/self/fd), an abort racing streams that end by
// themselves reports each stream once, live bytes move during a transfer, and PumpSet.drain
// lets short streams finish and aborts the rest at its deadline.
import fs from 'node:fs';
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { PumpSet } from '../../src/tunnel/pump-set.ts';
import {
  mirrorKeys,
  newSealedKeys,
  type PumpBytes,
  type PumpLifecycle,
  sealedPumpCounters,
  sealedPumpMode,
  startSealedPump,
} from '../../src/tunnel/sealed-pump.ts';
import { eventually } from '../helpers/eventually.ts';
import { useSealedPumpMode } from '../helpers/pump-mode.ts';
import { type Collected, collect, tcpPair } from '../helpers/sockets.ts';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

const openFds = () => fs.readdirSync('/proc/self/fd').length;

/** appA <-> [pump A] <-> sealed TCP <-> [pump B] <-> appB, both pumps with `lc`. */
async function chain(lc: PumpLifecycle = {}, set?: PumpSet) {
  const a = await tcpPair();
  const w = await tcpPair();
  const b = await tcpPair();
  cleanups.push(a.close, w.close, b.close);
  // Resets are expected here; collect() records them where a test looks.
  for (const s of [a.client, b.server]) s.on('error', () => {});
  const keys = newSealedKeys();
  const pumpA = set
    ? set.sealed('t', a.server, w.client, keys)
    : startSealedPump(a.server, w.client, keys, lc);
  const pumpB = set
    ? set.sealed('t', b.client, w.server, mirrorKeys(keys))
    : startSealedPump(b.client, w.server, mirrorKeys(keys), lc);
  return { appA: a.client, appB: b.server, pumpA, pumpB };
}

/** Writes `chunk` to `s` whenever it drains, until `s` closes or `stop()`. */
function flood(s: net.Socket, chunk = Buffer.alloc(64 * 1024, 7)): () => void {
  let on = true;
  s.on('error', () => {});
  const go = () => {
    while (on && !s.destroyed && s.write(chunk)) {}
  };
  s.on('drain', go);
  go();
  return () => {
    on = false;
  };
}

const wasReset = (c: Collected) => c.error === 'ECONNRESET' || (!c.ended && c.error !== undefined);

describe.each(['ts', 'native'] as const)('pump lifecycle (%s)', (mode) => {
  useSealedPumpMode(mode);

  it('runs the implementation under test', () => {
    expect(sealedPumpMode().mode).toBe(mode);
  });

  it('idle timeout: an idle chain is reset on both app sides, a busy one keeps going', async () => {
    const before = sealedPumpCounters();
    const t0 = performance.now();
    const idle = await chain({ idleTimeoutMs: 500 });
    const busy = await chain({ idleTimeoutMs: 500 });
    const [gotA, gotB] = [collect(idle.appA), collect(idle.appB)];
    const busyB = collect(busy.appB);
    // A byte every 50 ms for 1200 ms (over two timeouts) keeps the busy chain alive.
    const ticker = setInterval(() => busy.appA.write('x'), 50);
    cleanups.push(() => clearInterval(ticker));
    const [a, b, ra, rb] = await Promise.all([gotA, gotB, idle.pumpA, idle.pumpB]);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(480);
    // Both app sides were closed by the pumps (collect resolved), at least one of them with a reset.
    expect(wasReset(a) || wasReset(b)).toBe(true);
    // Each end times out by itself; the one that does so second may see the first one's reset.
    const idled = [ra, rb].filter((r) => r.cause === 'idle');
    expect(idled.length).toBeGreaterThanOrEqual(1);
    expect(idled[0]!.error).toMatch(/idle for 500 ms/);
    expect(ra.error && rb.error).toBeTruthy();
    await new Promise((r) => setTimeout(r, Math.max(0, 1200 - took)));
    expect(busy.appB.destroyed).toBe(false);
    clearInterval(ticker);
    busy.appA.end();
    busy.appB.end();
    const [rba, rbb, bb] = await Promise.all([busy.pumpA, busy.pumpB, busyB]);
    expect(rba.error).toBeUndefined();
    expect(rbb.cause).toBeUndefined();
    expect(bb.data.length).toBeGreaterThanOrEqual(10);
    expect(bb.ended).toBe(true);
    const after = sealedPumpCounters();
    expect(after.idle_closes - before.idle_closes).toBe(idled.length);
    expect(after.failed - before.failed).toBe(2 - idled.length);
  });

  it('abort mid-transfer resets both app sides and frees every fd; live bytes move before it', async () => {
    const fds = openFds();
    const ac = new AbortController();
    const lives: Array<() => PumpBytes> = [];
    const c = await chain({ signal: ac.signal, onLive: (l) => lives.push(l) });
    const [gotA, gotB] = [collect(c.appA), collect(c.appB)];
    const stop = flood(c.appA);
    cleanups.push(stop);
    await eventually(async () => lives.length === 2 && (lives[0]?.().aToB ?? 0) > 1 << 20);
    // Live, not at the end: a second reading moves further while the stream runs.
    const first = lives[0]!().aToB;
    await eventually(async () => lives[0]!().aToB > first);
    expect(lives[1]!().bToA).toBeGreaterThan(0);
    ac.abort();
    const [a, b, ra, rb] = await Promise.all([gotA, gotB, c.pumpA, c.pumpB]);
    stop();
    // Both got the abort; one may see the other's reset first.
    expect([ra.cause, rb.cause]).toContain('aborted');
    expect(ra.error && rb.error).toBeTruthy();
    expect(a.ended).toBe(false);
    // Both app sides closed (collect resolved); the writer's side saw the cut.
    expect(b.data.length).toBeGreaterThan(0);
    expect(ra.plainToSealed).toBeGreaterThan(first);
    for (const f of cleanups.splice(0)) f();
    await eventually(async () => openFds() <= fds);
  });

  it('an abort racing streams that end by themselves resolves each once', async () => {
    const before = sealedPumpCounters();
    const ac = new AbortController();
    const chains = await Promise.all(Array.from({ length: 12 }, () => chain({ signal: ac.signal })));
    for (const c of chains) {
      c.appA.on('error', () => {});
      c.appB.on('error', () => {});
      c.appA.resume();
      c.appB.resume();
      c.appA.end('bye');
      c.appB.end();
    }
    ac.abort();
    const results = await Promise.all(chains.flatMap((c) => [c.pumpA, c.pumpB]));
    expect(results).toHaveLength(24);
    const after = sealedPumpCounters();
    const ended = (k: 'finished' | 'failed' | 'aborted' | 'idle_closes') => after[k] - before[k];
    expect(ended('finished') + ended('failed') + ended('aborted') + ended('idle_closes')).toBe(24);
    expect(after.sealed_started - before.sealed_started).toBe(24);
  });

  it('PumpSet: live bytes per key, drain lets short streams finish and aborts the rest at the deadline', async () => {
    const set = new PumpSet(0);
    const quick = await chain({}, set);
    const slow = await chain({}, set);
    expect(set.active).toBe(4);
    const stop = flood(slow.appA);
    cleanups.push(stop);
    slow.appB.resume();
    await eventually(async () => (set.bytes().get('t')?.aToB ?? 0) > 1 << 20);
    quick.appA.on('error', () => {});
    quick.appB.on('error', () => {});
    quick.appB.resume();
    quick.appA.resume();
    const t0 = performance.now();
    const draining = set.drain(1500);
    quick.appA.end('done');
    quick.appB.on('end', () => quick.appB.end());
    // The quick stream finishes cleanly inside the deadline; the flooded one runs until it.
    const [qa, qb] = await Promise.all([quick.pumpA, quick.pumpB]);
    expect(qa.error ?? qb.error).toBeUndefined();
    expect(slow.appB.destroyed).toBe(false);
    const d = await draining;
    stop();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1450);
    expect(d).toEqual({ drained: 2, aborted: 2 });
    expect(set.active).toBe(0);
    expect(set.outcomes.finished).toBe(2);
    expect(set.outcomes.aborted + set.outcomes.failed).toBe(2);
    expect(set.outcomes.aborted).toBeGreaterThanOrEqual(1);
    const total = set.bytes().get('t')!;
    expect(total.aToB).toBeGreaterThan(1 << 20);
  });
});

// The TS twin's idle check runs on this event loop (the native pump's runs on its own thread,
// which a JS stall does not hold up, so it has nothing to catch up on).
describe('pump lifecycle (ts): event-loop stall', () => {
  useSealedPumpMode('ts');

  it('idle timeout: bytes that arrived while this process stalled count as activity', async () => {
    const c = await chain({ idleTimeoutMs: 300 });
    const [gotA, gotB] = [collect(c.appA), collect(c.appB)];
    let settled = false;
    void Promise.all([c.pumpA, c.pumpB]).then(() => {
      settled = true;
    });
    // Both app sides send (into the kernel, unread by the pumps), then the event loop blocks for
    // two idle timeouts, like a GC pause or a starved CPU.
    c.appA.write('x');
    c.appB.write('y');
    const until = performance.now() + 700;
    while (performance.now() < until) {
      // busy: no timer, no socket read runs
    }
    // The pumps' late idle checks run first; the bytes reach the far sides well within a timeout.
    await eventually(async () => c.appA.bytesRead > 0 && c.appB.bytesRead > 0 && !settled, 250);
    c.appA.end();
    c.appB.end();
    const [a, b, ra, rb] = await Promise.all([gotA, gotB, c.pumpA, c.pumpB]);
    expect([ra.cause, rb.cause]).toEqual([undefined, undefined]);
    expect([ra.error, rb.error]).toEqual([undefined, undefined]);
    expect(b.data.toString()).toBe('x');
    expect(a.data.toString()).toBe('y');
  });
});
