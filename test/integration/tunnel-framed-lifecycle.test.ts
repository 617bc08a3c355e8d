import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import {
  closedAfter,
  ep,
  exchange,
  expectIdleClosedBusyLives,
  localPort,
  TunnelFixture,
  table,
  tunnelClient,
} from '../helpers/tunnel-fixture.ts';

const IDLE_MS = 600;
const DRAIN_MS = 400;
const framed = { sealedData: false };

/**
 * The drain scenario: of two streams on `port`, one ends after `stop()` began and still gets its
 * full reply and a clean end; the running one is reset once the drain deadline passed, and
 * `framedStatus()` then counts no stream running. Resolves with that last status.
 */
async function expectStopDrains(
  port: number,
  stop: () => Promise<void>,
  framedStatus: () => { active: number; aborted: number } | undefined,
): Promise<{ active: number; aborted: number } | undefined> {
  const running = await tunnelClient(port);
  const ending = await tunnelClient(port);
  const ticker = setInterval(() => running.s.write('tick'), 50);
  try {
    ending.s.write('first ');
    await eventually(async () => ending.got() === 'first ');
    await eventually(async () => framedStatus()?.active === 2);
    const t0 = performance.now();
    const gone = closedAfter(running.s, t0);
    const stopping = stop();
    // After stop() began: the reply still crosses the tunnel and the stream ends cleanly.
    ending.s.end('last');
    expect(await ending.ended).toBe(true);
    expect(ending.got()).toBe('first last');
    await stopping;
    const stopTook = performance.now() - t0;
    expect(stopTook).toBeGreaterThanOrEqual(DRAIN_MS - 50);
    expect(await gone).toBeLessThan(stopTook + 2000);
    const st = framedStatus();
    expect(st?.active).toBe(0);
    return st;
  } finally {
    clearInterval(ticker);
  }
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
    await expectIdleClosedBusyLives(port, echo, IDLE_MS, () => {
      // Both agents time it out; whichever timer fires first resets it (the other sees a reset).
      expect(a.t.status().framed.idleClosed + b.t.status().framed.idleClosed).toBeGreaterThanOrEqual(1);
      expect(a.t.status().sealed.active + a.t.status().sealed.finished).toBe(0); // framed, not sealed
    });
    await eventually(async () => a.t.status().framed.active === 0);
  });

  it('stop keeps the session for the drain deadline: a stream ending meanwhile completes, a running one is reset', async () => {
    const st = await expectStopDrains(
      port,
      () => a.t.stop(),
      () => a.t.status().framed,
    );
    expect(st?.aborted).toBeGreaterThanOrEqual(1);
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
    await expectIdleClosedBusyLives(p, echo, IDLE_MS, () => {
      expect(relay.r.status().framed?.idleClosed).toBe(1);
      expect(relay.r.status().framed?.active).toBe(1);
    });
  });

  it('a relay stop keeps the sessions for its drain deadline: a stream ending meanwhile completes, a running one is reset', async () => {
    const { relay, port: p } = await through('rfl-stop', { drainTimeoutMs: DRAIN_MS });
    const st = await expectStopDrains(
      p,
      () => relay.r.stop(),
      () => relay.r.status().framed,
    );
    expect(st?.aborted).toBe(1);
  });
});
