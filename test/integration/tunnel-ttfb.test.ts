// Time to first byte of sealed streams, asserted by order of events (never by timing): a
// SEALED_OPEN leaves on the TLS socket before openSealed() returns (not at the end of the tick,
// behind whatever the opener does next), and taking a pooled data connection the far end picked
// does not refill the pool until the stream asks for it (no DATA_POOL, connects or hellos on the
// event loop between the stream's pod connect and its completion).
import net from 'node:net';
import type tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientTlsOptions } from '../../src/tunnel/credentials.ts';
import { DATA_HELLO_BYTES, newToken } from '../../src/tunnel/data-hello.ts';
import { ClientDataPool } from '../../src/tunnel/data-pool.ts';
import { type DataPoolAnnouncement, decodeDataPool, FrameType } from '../../src/tunnel/frames.ts';
import { SealedControl } from '../../src/tunnel/sealed-control.ts';
import { mirrorKeys, newSealedKeys } from '../../src/tunnel/sealed-pump.ts';
import { SEALED_CAP, type Session } from '../../src/tunnel/session.ts';
import { dialSession } from '../../src/tunnel/tls-listener.ts';
import { eventually } from '../helpers/eventually.ts';
import { memLogger, TunnelFixture } from '../helpers/tunnel-fixture.ts';

/** Resolves after the event loop has gone through its check phase (where refills used to run). */
const nextTurn = () => new Promise<void>((r) => setImmediate(() => setImmediate(r)));

describe('sealed stream set-up order (time to first byte)', () => {
  let fx: TunnelFixture;

  beforeAll(() => {
    fx = new TunnelFixture();
  });

  afterAll(async () => {
    await fx?.stopAll();
  });

  it('SEALED_OPEN is on the TLS socket before openSealed returns', async () => {
    const r = await fx.relay('relay-ttfb');
    const creds = await fx.creds();
    const x = await dialSession({
      host: '127.0.0.1',
      port: r.r.address!.port,
      creds,
      hello: { node: 'node-ttfb-x', kind: 'agent', caps: [SEALED_CAP] },
      log: memLogger().log,
      timeoutMs: 2000,
      clientOptions: clientTlsOptions(creds),
    });
    fx.onStop(async () => x.close());
    // The session's TLS socket (private): what it was handed so far is all the peer can get.
    const socket = (x as unknown as { o: { socket: tls.TLSSocket } }).o.socket;
    await eventually(async () => r.r.status().agents.length === 1);
    const before = socket.bytesWritten;
    const keys = newSealedKeys();
    x.openSealed(
      {
        target: { node: 'node-nobody', src: 'node-ttfb-x', ip: '127.0.0.1', port: 1 },
        token: newToken(),
        keys: mirrorKeys(keys),
      },
      (id) => new SealedControl(x, id, () => {}),
    );
    // Synchronously, in the same tick: before the fix it sat in the session's batch until nextTick.
    expect(socket.bytesWritten).toBeGreaterThan(before);
  });

  it('a pooled connection the far end picked is replaced only when the stream calls refill()', async () => {
    // A data listener that takes hellos and keeps the connections (what the relay's port does).
    const conns = new Set<net.Socket>();
    let hellos = 0;
    const srv = net.createServer((s) => {
      conns.add(s);
      s.on('error', () => {});
      let got = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= DATA_HELLO_BYTES && got - d.length < DATA_HELLO_BYTES) hellos++;
      });
    });
    await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
    fx.onStop(async () => {
      for (const c of conns) c.destroy();
      await new Promise<void>((res) => srv.close(() => res()));
    });
    const sent: DataPoolAnnouncement[] = [];
    // Only what the pool uses of its session: readiness and DATA_POOL frames.
    const session = {
      isReady: true,
      peer: { node: 'relay' },
      send: (type: number, _id: number, payload: Buffer) => {
        if (type === FrameType.DATA_POOL) sent.push(decodeDataPool(payload));
      },
    } as unknown as Session;
    const pool = new ClientDataPool(
      session,
      '127.0.0.1',
      (srv.address() as net.AddressInfo).port,
      memLogger().log,
      2000,
      1,
    );
    fx.onStop(async () => pool.close());
    pool.fill();
    expect(sent.map((a) => a.picker).sort()).toEqual(['client', 'server']);
    await eventually(async () => hellos === 2);
    const serverPick = sent.find((a) => a.picker === 'server')!.tokens[0]!;
    // The hello reached the listener; the pool files the socket once the write callback ran.
    let taken: net.Socket | undefined;
    await eventually(async () => {
      taken = pool.take(serverPick);
      return taken !== undefined;
    });
    fx.onStop(async () => {
      taken?.destroy();
    });
    await nextTurn();
    // Taking it sent nothing and dialed nothing: the stream's pod connect has the loop to itself.
    expect(sent).toHaveLength(2);
    expect(hellos).toBe(2);
    pool.refill();
    await eventually(async () => sent.length === 3 && hellos === 3);
    expect(sent[2]!.picker).toBe('server');
    // A second take of the same token finds nothing (single use).
    expect(pool.take(serverPick)).toBeUndefined();
  });
});
