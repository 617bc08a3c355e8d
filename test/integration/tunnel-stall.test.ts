// A tunnel session survives its own process stalling (GC pause, starved CPU) for several ping
// intervals: the peer's frames sent meanwhile are still unread in the socket when the liveness
// tick runs first after the stall, so that tick must not declare the peer dead.
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { TunnelFixture } from '../helpers/tunnel-fixture.ts';

describe('tunnel session liveness across an event-loop stall', () => {
  const fx = new TunnelFixture();
  afterAll(() => fx.stopAll());

  it('keeps the relay session when this process was blocked for 10 ping intervals', async () => {
    const relay = await fx.relay('stall-r');
    const a = await fx.agent('stall-a', [{ name: 'stall-r', addr: relay.addr }], { knobs: { pingMs: 100 } });
    await eventually(async () => a.t.status().relays[0]!.connected === true);
    // Blocks agent and relay alike (one process): 1 s = 10 agent ping intervals, < 3 relay intervals.
    const until = Date.now() + 1000;
    while (Date.now() < until) {
      // busy: no timer, no socket read runs
    }
    // The first tick after the stall (which used to close the session) and a few normal ones run;
    // the peer's fresh pings then keep it alive.
    const ticks = await new Promise<number>((resolve) => {
      let n = 0;
      const t = setInterval(() => {
        if (++n === 5) {
          clearInterval(t);
          resolve(n);
        }
      }, 100);
    });
    expect(ticks).toBe(5);
    const lost = [...a.lines, ...relay.lines].filter((l) => l.includes('stopped answering'));
    expect(lost).toEqual([]);
    expect(a.t.status().relays[0]!.connected).toBe(true);
  });
});
