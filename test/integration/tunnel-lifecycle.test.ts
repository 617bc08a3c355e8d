// Sealed stream lifecycle through a real relay and two agent tunnels on loopback, with the native
// pump and the TS twin: an idle stream is closed after modules.edgeProxy.idleTimeoutMs on both ends
// (client and pod) while a busy one is not; the agent's and the relay's byte counters move while a
// stream runs (scraped mid-stream), the relay's /status names its pump and counts the stream; an
// agent stop and a relay stop each wait for their drain deadline, then reset the streams still running.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import {
  closedAfter,
  ep,
  exchange,
  expectIdleClosedBusyLives,
  localPort,
  metric,
  TunnelFixture,
  table,
} from '../helpers/tunnel-fixture.ts';

const IDLE_MS = 600;

/** A client of the tunnel's local port that reads and discards what comes back. */
async function client(port: number): Promise<net.Socket> {
  const c = net.connect({ host: '127.0.0.1', port });
  c.on('error', () => {});
  await new Promise<void>((r) => c.once('connect', () => r()));
  c.resume();
  return c;
}

describe.each(['native', 'ts'] as const)('sealed stream lifecycle (pump: %s)', (mode) => {
  let fx: TunnelFixture;
  let relay: Awaited<ReturnType<TunnelFixture['relay']>>;
  let a: Awaited<ReturnType<TunnelFixture['agent']>>;
  let b: Awaited<ReturnType<TunnelFixture['agent']>>;
  let echo: Awaited<ReturnType<TunnelFixture['server']>>;
  let port: number;
  const prev = process.env.EDGEMESH_SEALED_PUMP;

  beforeAll(async () => {
    if (mode === 'ts') process.env.EDGEMESH_SEALED_PUMP = 'ts';
    else delete process.env.EDGEMESH_SEALED_PUMP;
    fx = new TunnelFixture();
    echo = await fx.server((s) => s.pipe(s));
    relay = await fx.relay('relay-lc');
    const relays = [{ name: 'relay-lc', addr: relay.addr }];
    // Neither agent is reachable directly: every stream goes sealed through the relay.
    b = await fx.agent('lc-b', relays, { advertise: ['127.0.0.1:1'], idleTimeoutMs: IDLE_MS });
    a = await fx.agent('lc-a', relays, {
      advertise: ['127.0.0.1:1'],
      idleTimeoutMs: IDLE_MS,
      drainTimeoutMs: 400,
    });
    const snap = table([ep(echo.port, 'lc-b')]);
    await b.t.applyTable(snap);
    port = localPort(await a.t.applyTable(snap));
    await eventually(async () => {
      await exchange(port, 'probe');
      return (await metric(a.registry, 'edgemesh_tunnel_sealed_streams_total', { path: 'relay' })) > 0;
    });
  });

  afterAll(async () => {
    await fx?.stopAll();
    if (prev === undefined) delete process.env.EDGEMESH_SEALED_PUMP;
    else process.env.EDGEMESH_SEALED_PUMP = prev;
  });

  it('an idle stream is closed after the idle timeout on both ends; a busy one is not', async () => {
    await expectIdleClosedBusyLives(port, echo, IDLE_MS, async () => {
      // Both agents time the stream out; whichever timer fires first closes it (the other end then
      // sees a reset, not an idle), so the idle close is counted on a or on b.
      expect(a.t.status().sealed.idleClosed + b.t.status().sealed.idleClosed).toBeGreaterThanOrEqual(1);
      expect(
        await metric(a.registry, 'edgemesh_tunnel_pump_events_total', { counter: 'idle_closes' }),
      ).toBeGreaterThanOrEqual(1);
    });
  });

  it('byte counters move mid-stream (agent and relay scrapes); relay /status names its pump and counts the stream', async () => {
    const tx = () =>
      metric(a.registry, 'edgemesh_tunnel_sealed_bytes_total', { path: 'relay', direction: 'tx' });
    const relayed = () => metric(relay.registry, 'edgemesh_relay_bytes_total');
    const tx0 = await tx();
    const relayed0 = await relayed();
    const c = await client(port);
    const chunk = Buffer.alloc(64 * 1024, 3);
    const timer = setInterval(() => c.write(chunk), 5);
    try {
      await eventually(async () => (await tx()) > tx0 + (1 << 20));
      const mid = await tx();
      await eventually(async () => (await tx()) > mid);
      await eventually(async () => (await relayed()) > relayed0 + (1 << 20));
      expect(c.destroyed).toBe(false); // still running: these are live counts, not end-of-stream ones
      const st = relay.r.status();
      expect(st.pump.mode).toBe(mode === 'native' ? 'native splice' : 'ts');
      expect(st.pump.active).toBeGreaterThanOrEqual(1);
      expect(st.pump.bytes).toBeGreaterThan(1 << 20);
      expect(a.t.status().sealed.active).toBeGreaterThanOrEqual(1);
    } finally {
      clearInterval(timer);
      c.destroy();
    }
    await eventually(async () => relay.r.status().pump.active === 0);
  });

  it('stop waits for the drain deadline, then resets the streams still running', async () => {
    const c = await client(port);
    const ticker = setInterval(() => c.write('tick'), 50);
    try {
      await eventually(async () => a.t.status().sealed.active >= 1);
      const t0 = performance.now();
      const gone = closedAfter(c, t0);
      await a.t.stop();
      const stopTook = performance.now() - t0;
      expect(stopTook).toBeGreaterThanOrEqual(350);
      expect(await gone).toBeLessThan(stopTook + 2000);
      expect(a.t.status().sealed.active).toBe(0);
      expect(a.t.status().sealed.aborted + a.t.status().sealed.failed).toBeGreaterThanOrEqual(1);
      await eventually(async () => relay.r.status().pump.active === 0);
    } finally {
      clearInterval(ticker);
    }
  });

  it('a relay stop waits for its drain deadline, then resets the spliced streams', async () => {
    const r2 = await fx.relay('relay-lc2', { drainTimeoutMs: 400 });
    const relays = [{ name: 'relay-lc2', addr: r2.addr }];
    const d = await fx.agent('lc-d', relays, { advertise: ['127.0.0.1:1'] });
    const c = await fx.agent('lc-c', relays, { advertise: ['127.0.0.1:1'] });
    const snap = table([ep(echo.port, 'lc-d')], 2);
    await d.t.applyTable(snap);
    const p = localPort(await c.t.applyTable(snap));
    await eventually(async () => {
      await exchange(p, 'probe');
      return r2.r.status().pump.finished > 0;
    });
    const cl = await client(p);
    const ticker = setInterval(() => cl.write('tick'), 50);
    try {
      await eventually(async () => r2.r.status().pump.active === 1);
      const t0 = performance.now();
      const gone = closedAfter(cl, t0);
      await r2.r.stop();
      const stopTook = performance.now() - t0;
      expect(stopTook).toBeGreaterThanOrEqual(350);
      expect(await gone).toBeLessThan(stopTook + 2000);
      const st = r2.r.status().pump;
      expect(st.active).toBe(0);
      expect(st.aborted + st.failed).toBeGreaterThanOrEqual(1);
    } finally {
      clearInterval(ticker);
    }
  });
});
