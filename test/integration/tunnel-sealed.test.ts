// Sealed tunnel streams on loopback (real relay, real agent tunnels, real sockets): 64 MiB echoed
// byte-exact direct (both session roles) and through the relay, half-close, a reset mid-stream
// reaching the client as a reset, data hellos with a bad proof / unknown / reused token refused with
// a log line (and a bad proof not burning the token), and the fallback to framed streams whenever
// one end (agent or relay) has sealedData off.
import crypto from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientTlsOptions } from '../../src/tunnel/credentials.ts';
import { DATA_HELLO_BYTES, dialData, encodeDataHello, newToken } from '../../src/tunnel/data-hello.ts';
import type { SealedOpen } from '../../src/tunnel/frames.ts';
import { SealedControl } from '../../src/tunnel/sealed-control.ts';
import { mirrorKeys, newSealedKeys, sealedPumpMode } from '../../src/tunnel/sealed-pump.ts';
import { SEALED_CAP } from '../../src/tunnel/session.ts';
import { dialSession } from '../../src/tunnel/tls-listener.ts';
import { eventually } from '../helpers/eventually.ts';
import {
  ep,
  exchange,
  localPort,
  memLogger,
  metric,
  TunnelFixture,
  table,
} from '../helpers/tunnel-fixture.ts';

const MiB = 1 << 20;

/** Resolves when `s` closes: 'reset' if it saw ECONNRESET, 'end' on a clean close. */
function closedHow(s: net.Socket): Promise<'reset' | 'end'> {
  return new Promise((resolve) => {
    let how: 'reset' | 'end' = 'end';
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET') how = 'reset';
    });
    s.once('close', () => resolve(how));
    s.resume();
  });
}

describe(`sealed tunnel streams (pump: ${sealedPumpMode().mode})`, () => {
  let fx: TunnelFixture;
  let echoPort: number;
  let payload: Buffer;

  beforeAll(async () => {
    fx = new TunnelFixture();
    echoPort = (await fx.server((s) => s.pipe(s))).port;
    payload = crypto.randomBytes(64 * MiB);
  });

  afterAll(async () => {
    await fx?.stopAll();
  });

  it('direct: 64 MiB echoed byte-exact both ways, whichever end dialed the session', async () => {
    // c answers on its listener; a advertises nothing reachable, so the only session is a → c.
    // The relay only tells a where c answers (PEERS); the stream itself goes direct.
    const r = await fx.relay('relay-d');
    const relays = [{ name: 'relay-d', addr: r.addr }];
    const c = await fx.agent('node-c', relays);
    const a = await fx.agent('node-a', relays, { advertise: ['127.0.0.1:1'] });
    const toC = table([ep(echoPort, 'node-c')]);
    await c.t.applyTable(toC);
    const port = localPort(await a.t.applyTable(toC));
    await eventually(async () => a.t.pathTo('node-c') === 'direct');
    // a opens over the session it dialed: a dials the data connection.
    expect((await exchange(port, payload)).equals(payload)).toBe(true);
    expect(
      await metric(a.registry, 'edgemesh_tunnel_sealed_streams_total', { path: 'direct', side: 'out' }),
    ).toBe(1);
    expect(
      await metric(c.registry, 'edgemesh_tunnel_sealed_streams_total', { path: 'direct', side: 'in' }),
    ).toBe(1);

    // c opens toward a over the session a dialed (c is its server): a dials the data connection.
    const toA = table([ep(echoPort, 'node-a')], 2);
    await a.t.applyTable(toA);
    const back = localPort(await c.t.applyTable(toA));
    await eventually(async () => c.t.pathTo('node-a') === 'direct');
    const small = payload.subarray(0, 4 * MiB);
    expect((await exchange(back, small)).equals(small)).toBe(true);
    expect(await metric(c.registry, 'edgemesh_tunnel_sealed_streams_total', { side: 'out' })).toBe(1);
    await eventually(
      async () =>
        (await metric(a.registry, 'edgemesh_tunnel_sealed_bytes_total', {
          path: 'direct',
          direction: 'tx',
        })) >=
        payload.length + small.length,
    );
  });

  it('relay: 64 MiB echoed byte-exact, half-close, relay counters; a reset mid-stream resets the client', async () => {
    const r = await fx.relay('relay-s');
    const relays = [{ name: 'relay-s', addr: r.addr }];
    const b = await fx.agent('node-rb', relays, { advertise: ['127.0.0.1:1'] });
    const a = await fx.agent('node-ra', relays, { advertise: ['127.0.0.1:1'] });
    // Replies only after the client's FIN: the reverse direction stays open after a half-close.
    const { port: afterFin } = await fx.server((s) => {
      let n = 0;
      s.on('data', (d: Buffer) => {
        n += d.length;
      });
      s.on('end', () => s.end(`got ${n}`));
    });
    // Sends 2 MiB and then aborts with a reset.
    const { port: aborter } = await fx.server((s) => {
      s.write(Buffer.alloc(2 * MiB, 1), () => setTimeout(() => s.resetAndDestroy(), 50));
    });
    const base = table([ep(echoPort, 'node-rb')]);
    const svc = base.services.get('default/echo')!;
    const p0 = svc.ports[0]!;
    const snap = {
      ...base,
      services: new Map([
        [
          svc.key,
          {
            ...svc,
            ports: [
              p0,
              { ...p0, name: 'fin', port: 8, endpoints: [ep(afterFin, 'node-rb')] },
              { ...p0, name: 'rst', port: 9, endpoints: [ep(aborter, 'node-rb')] },
            ],
          },
        ],
      ]),
    };
    await b.t.applyTable(snap);
    const rw = await a.t.applyTable(snap);
    const [echoLocal, finLocal, rstLocal] = rw.services
      .get('default/echo')!
      .ports.map((p) => p.endpoints[0]!.port);
    await eventually(async () => a.t.pathTo('node-rb') === 'relay' && b.t.status().relays[0]!.connected);
    // PEERS must have told a that b takes sealed streams before the first stream opens.
    await eventually(async () => {
      await exchange(echoLocal!, 'probe');
      return (await metric(a.registry, 'edgemesh_tunnel_sealed_streams_total', { path: 'relay' })) > 0;
    });
    // A whole short stream (hello, record, end record, FIN) can reach the relay before its partner:
    // the waiting data connection must not answer that FIN early.
    for (let i = 0; i < 3; i++)
      expect((await exchange(echoLocal!, `short ${i}`)).toString()).toBe(`short ${i}`);
    const streamsBefore = await metric(r.registry, 'edgemesh_relay_streams_total');
    const sealedIn = () =>
      metric(b.registry, 'edgemesh_tunnel_sealed_streams_total', { path: 'relay', side: 'in' });
    const sealedInBefore = await sealedIn();
    expect((await exchange(echoLocal!, payload)).equals(payload)).toBe(true);
    expect(await metric(r.registry, 'edgemesh_relay_streams_total')).toBe(streamsBefore + 1);
    await eventually(
      async () => (await metric(r.registry, 'edgemesh_relay_bytes_total')) >= 2 * payload.length,
    );
    // The pump counters are exposed live on the same registry.
    expect(
      await metric(r.registry, 'edgemesh_tunnel_pump_events_total', { counter: 'splice_started' }),
    ).toBeGreaterThan(0);
    expect(await sealedIn()).toBe(sealedInBefore + 1);
    // Once the pools are filled, both agents take pre-dialled data connections (no connect on the
    // way to the first byte).
    await eventually(async () => {
      await exchange(echoLocal!, 'pooled');
      return (
        (await metric(a.registry, 'edgemesh_tunnel_sealed_pooled_total', { side: 'out' })) > 0 &&
        (await metric(b.registry, 'edgemesh_tunnel_sealed_pooled_total', { side: 'in' })) > 0
      );
    });

    expect((await exchange(finLocal!, Buffer.alloc(MiB, 2))).toString()).toBe(`got ${MiB}`);

    const victim = net.connect({ host: '127.0.0.1', port: rstLocal! });
    let got = 0;
    victim.on('data', (d: Buffer) => {
      got += d.length;
    });
    expect(await closedHow(victim)).toBe('reset');
    expect(got).toBeLessThanOrEqual(2 * MiB);
    // Nothing is left behind on the relay or the agents' sessions.
    await eventually(async () => r.r.status().agents.every((x) => x.streams === 0));
  });

  it('data hellos: a bad proof, an unknown or a reused token are refused with a log line; a bad proof does not burn the token', async () => {
    const r = await fx.relay('relay-tok', { dataTimeoutMs: 3000 });
    const relayPort = r.r.address!.port;
    const creds = await fx.creds();
    const dial = (node: string) =>
      dialSession({
        host: '127.0.0.1',
        port: relayPort,
        creds,
        hello: { node, kind: 'agent', caps: [SEALED_CAP] },
        log: memLogger().log,
        timeoutMs: 2000,
        clientOptions: clientTlsOptions(creds),
      });
    const x = await dial('node-tx');
    const y = await dial('node-ty');
    fx.onStop(async () => {
      x.close();
      y.close();
    });
    const opened = new Promise<SealedOpen>((res) => {
      y.sealedOpener = (id, open) => {
        res(open);
        return new SealedControl(y, id, () => {});
      };
    });
    await eventually(async () => r.r.status().agents.length === 2);
    const xKeys = newSealedKeys();
    const xToken = newToken();
    x.openSealed(
      {
        target: { node: 'node-ty', src: 'node-tx', ip: '127.0.0.1', port: echoPort },
        token: xToken,
        keys: mirrorKeys(xKeys),
      },
      (id) => new SealedControl(x, id, () => {}),
    );
    const open = await opened;
    expect(open.target.src).toBe('node-tx');
    // The relay handed y the keys x made (seen from y's side) and a token of its own.
    expect(open.keys.rxKey.equals(xKeys.txKey)).toBe(true);
    expect(open.token.equals(xToken)).toBe(false);

    const raw = async (hello: Buffer): Promise<'reset' | 'end'> => {
      const s = net.connect({ host: '127.0.0.1', port: relayPort });
      s.write(hello);
      return closedHow(s);
    };
    const lines = () => r.lines.filter((l) => l.includes('data connection rejected')).join('');
    await raw(encodeDataHello(open.token, crypto.randomBytes(32)));
    await eventually(async () => /bad proof/.test(lines()));
    await raw(encodeDataHello(newToken(), open.keys.txKey));
    await eventually(async () => /unknown or expired token/.test(lines()));
    expect(lines()).toMatch(/EDGEMESH_ERR_TUNNEL/);
    await raw(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    await eventually(async () => r.lines.join('').includes('neither TLS nor a data hello'));

    // The real dialers still get through (the bad proof used nothing up) and are spliced as-is.
    const dx = await dialData('127.0.0.1', relayPort, xToken, xKeys.txKey, 2000);
    const dy = await dialData('127.0.0.1', relayPort, open.token, open.keys.txKey, 2000);
    dy.resume();
    dx.write('opaque bytes, not decrypted by the relay');
    const seen = await new Promise<string>((res) => dy.once('data', (d: Buffer) => res(d.toString())));
    expect(seen).toBe('opaque bytes, not decrypted by the relay');
    // A token works once.
    const before = lines().length;
    await raw(encodeDataHello(open.token, open.keys.txKey));
    await eventually(async () => lines().length > before);
    expect(lines().slice(before)).toMatch(/unknown or expired token/);
    dx.destroy();
    dy.destroy();
    expect(DATA_HELLO_BYTES).toBe(53);
  });

  it('falls back to framed streams when the peer, the far agent or the relay has sealedData off', async () => {
    const on = await fx.relay('relay-on');
    const off = await fx.relay('relay-off', { sealedData: false });
    const plainB = await fx.agent('node-fb', [{ name: 'relay-on', addr: on.addr }], {
      advertise: ['127.0.0.1:1'],
      files: { sealedData: false },
    });
    const sealedD = await fx.agent('node-fd', [{ name: 'relay-off', addr: off.addr }], {
      advertise: ['127.0.0.1:1'],
    });
    const plainC = await fx.agent('node-fc', [{ name: 'relay-on', addr: on.addr }], {
      files: { sealedData: false },
    });
    const a = await fx.agent(
      'node-fa',
      [
        { name: 'relay-on', addr: on.addr },
        { name: 'relay-off', addr: off.addr },
      ],
      { advertise: ['127.0.0.1:1'] },
    );
    const cases = [
      { node: 'node-fb', agent: plainB, path: 'relay' },
      { node: 'node-fd', agent: sealedD, path: 'relay' },
      { node: 'node-fc', agent: plainC, path: 'direct' },
    ];
    for (const [i, c] of cases.entries()) {
      const snap = table([ep(echoPort, c.node)], 10 + i);
      await c.agent.t.applyTable(snap);
      const port = localPort(await a.t.applyTable(snap));
      await eventually(
        async () => a.t.pathTo(c.node) === c.path && c.agent.t.status().relays.every((x) => x.connected),
      );
      const data = payload.subarray(0, MiB);
      expect((await exchange(port, data)).equals(data), c.node).toBe(true);
    }
    expect(await metric(a.registry, 'edgemesh_tunnel_streams_total')).toBe(3);
    expect(await metric(a.registry, 'edgemesh_tunnel_sealed_streams_total')).toBe(0);
    // The direct case (node-fc) never touched a relay.
    expect(await metric(on.registry, 'edgemesh_relay_streams_total')).toBe(1);
    expect(await metric(off.registry, 'edgemesh_relay_streams_total')).toBe(1);
  });
});
