// Framed (sealedData off) stream lifecycle through a real relay and two agent tunnels on loopback:
// an idle stream is closed after modules.edgeProxy.idleTimeoutMs on both ends (client and pod) while
// a busy one is not; an agent stop keeps the session up for its drain deadline — a stream that ends
// meanwhile completes with its full reply — then resets the streams still running; a relay stop
// does the same for the streams it forwards.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { ep, exchange, localPort, TunnelFixture, table } from '../helpers/tunnel-fixture.ts';

const IDLE_MS = 600;
const DRAIN_MS = 400;
const framed = { sealedData: false };

/** Resolves when `s` closes, with how long it stayed open from `t0`. */
function closed(s: net.Socket, t0: number): Promise<number> {
  return new Promise((resolve) => {
    s.on('error', () => {});
    if (s.destroyed) resolve(performance.now() - t0);
    else s.once('close', () => resolve(performance.now() - t0));
  });
}

/** A client of the tunnel's local port; collects what comes back and whether it ended cleanly. */
async function client(port: number): Promise<{ s: net.Socket; got: () => string; ended: Promise<boolean> }> {
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('error', () => {});
  let got = '';
  s.on('data', (d: Buffer) => {
    got += d.toString();
  });
  const ended = new Promise<boolean>((resolve) => {
    s.once('end', () => resolve(true));
    s.once('close', () => resolve(false));
  });
  await new Promise<void>((r) => s.once('connect', () => r()));
  return { s, got: () => got, ended };
}

describe('framed stream lifecycle (sealedData off, through a relay)', () => {
  let fx: TunnelFixture;
  let a: Awaited<ReturnType<TunnelFixture['agent']>>;
  let b: Awaited<ReturnType<TunnelFixture['agent']>>;
  let echo: Awaited<ReturnType<TunnelFixture['server']>>;
  let port: number;

  beforeAll(async () => {
    fx = new TunnelFixture();
    echo = await fx.server((s) => s.pipe(s));
    const relay = await fx.relay('relay-fl', { sealedData: false });
    const relays = [{ name: 'relay-fl', addr: relay.addr }];
    // Neither agent is reachable directly: every stream goes framed through the relay.
    b = await fx.agent('fl-b', relays, { advertise: ['127.0.0.1:1'], idleTimeoutMs: IDLE_MS, files: framed });
    a = await fx.agent('fl-a', relays, {
      advertise: ['127.0.0.1:1'],
      idleTimeoutMs: IDLE_MS,
      drainTimeoutMs: DRAIN_MS,
      files: framed,
    });
    const snap = table([ep(echo.port, 'fl-b')]);
    await b.t.applyTable(snap);
    port = localPort(await a.t.applyTable(snap));
    await eventually(async () => (await exchange(port, 'probe').catch(() => '')).toString() === 'probe');
  });

  afterAll(async () => {
    await fx?.stopAll();
  });

  it('an idle stream is closed after the idle timeout on both ends; a busy one is not', async () => {
    const podsBefore = echo.conns.size;
    const idle = await client(port);
    const busy = await client(port);
    const ticker = setInterval(() => busy.s.write('tick'), 100);
    try {
      idle.s.write('hi');
      await eventually(async () => echo.conns.size === podsBefore + 2);
      const t0 = performance.now();
      const openFor = await closed(idle.s, t0);
      expect(openFor).toBeGreaterThanOrEqual(IDLE_MS - 150); // counted from 'hi', before t0
      expect(idle.got()).toBe('hi');
      // The pod's end went too: only the busy stream's pod connection is left.
      await eventually(async () => echo.conns.size === podsBefore + 1, 5000);
      await new Promise((r) => setTimeout(r, Math.max(0, 2 * IDLE_MS - openFor)));
      expect(busy.s.destroyed).toBe(false);
      // Both agents time it out; whichever timer fires first resets it (the other sees a reset).
      expect(a.t.status().framed.idleClosed + b.t.status().framed.idleClosed).toBeGreaterThanOrEqual(1);
      expect(a.t.status().sealed.active + a.t.status().sealed.finished).toBe(0); // framed, not sealed
    } finally {
      clearInterval(ticker);
      busy.s.destroy();
    }
    await eventually(async () => a.t.status().framed.active === 0);
  });

  it('stop keeps the session for the drain deadline: a stream ending meanwhile completes, a running one is reset', async () => {
    const running = await client(port);
    const ending = await client(port);
    const ticker = setInterval(() => running.s.write('tick'), 50);
    try {
      ending.s.write('first ');
      await eventually(async () => ending.got() === 'first ');
      await eventually(async () => a.t.status().framed.active === 2);
      const t0 = performance.now();
      const gone = closed(running.s, t0);
      const stopping = a.t.stop();
      // After stop() began: the reply still crosses the tunnel and the stream ends cleanly.
      ending.s.end('last');
      expect(await ending.ended).toBe(true);
      expect(ending.got()).toBe('first last');
      await stopping;
      const stopTook = performance.now() - t0;
      expect(stopTook).toBeGreaterThanOrEqual(DRAIN_MS - 50);
      expect(await gone).toBeLessThan(stopTook + 2000);
      const st = a.t.status().framed;
      expect(st.active).toBe(0);
      expect(st.aborted).toBeGreaterThanOrEqual(1);
    } finally {
      clearInterval(ticker);
    }
  });
});

describe('framed streams at the relay (agents without an idle timeout)', () => {
  let fx: TunnelFixture;
  let echo: Awaited<ReturnType<TunnelFixture['server']>>;

  beforeAll(async () => {
    fx = new TunnelFixture();
    echo = await fx.server((s) => s.pipe(s));
  });

  afterAll(async () => {
    await fx?.stopAll();
  });

  /** A relay with the given knobs and two framed agents that only reach each other through it. */
  async function through(name: string, opts: { idleTimeoutMs?: number; drainTimeoutMs?: number }) {
    const relay = await fx.relay(name, { sealedData: false, ...opts });
    const relays = [{ name, addr: relay.addr }];
    const far = await fx.agent(`${name}-b`, relays, { advertise: ['127.0.0.1:1'], files: framed });
    const near = await fx.agent(`${name}-a`, relays, { advertise: ['127.0.0.1:1'], files: framed });
    const snap = table([ep(echo.port, `${name}-b`)]);
    await far.t.applyTable(snap);
    const p = localPort(await near.t.applyTable(snap));
    await eventually(async () => (await exchange(p, 'probe').catch(() => '')).toString() === 'probe');
    return { relay, port: p };
  }

  it('the relay resets an idle framed stream after its idle timeout (both agents), not a busy one', async () => {
    const { relay, port: p } = await through('rfl-idle', { idleTimeoutMs: IDLE_MS });
    const podsBefore = echo.conns.size;
    const idle = await client(p);
    const busy = await client(p);
    const ticker = setInterval(() => busy.s.write('tick'), 100);
    try {
      idle.s.write('hi');
      await eventually(async () => echo.conns.size === podsBefore + 2);
      const t0 = performance.now();
      const openFor = await closed(idle.s, t0);
      expect(openFor).toBeGreaterThanOrEqual(IDLE_MS - 150);
      await eventually(async () => echo.conns.size === podsBefore + 1, 5000);
      await new Promise((r) => setTimeout(r, Math.max(0, 2 * IDLE_MS - openFor)));
      expect(busy.s.destroyed).toBe(false);
      expect(relay.r.status().framed?.idleClosed).toBe(1);
      expect(relay.r.status().framed?.active).toBe(1);
    } finally {
      clearInterval(ticker);
      busy.s.destroy();
    }
  });

  it('a relay stop keeps the sessions for its drain deadline: a stream ending meanwhile completes, a running one is reset', async () => {
    const { relay, port: p } = await through('rfl-stop', { drainTimeoutMs: DRAIN_MS });
    const running = await client(p);
    const ending = await client(p);
    const ticker = setInterval(() => running.s.write('tick'), 50);
    try {
      ending.s.write('first ');
      await eventually(async () => ending.got() === 'first ');
      await eventually(async () => relay.r.status().framed?.active === 2);
      const t0 = performance.now();
      const gone = closed(running.s, t0);
      const stopping = relay.r.stop();
      ending.s.end('last');
      expect(await ending.ended).toBe(true);
      expect(ending.got()).toBe('first last');
      await stopping;
      const stopTook = performance.now() - t0;
      expect(stopTook).toBeGreaterThanOrEqual(DRAIN_MS - 50);
      expect(await gone).toBeLessThan(stopTook + 2000);
      const st = relay.r.status().framed;
      expect(st?.active).toBe(0);
      expect(st?.aborted).toBe(1);
    } finally {
      clearInterval(ticker);
    }
  });
});
