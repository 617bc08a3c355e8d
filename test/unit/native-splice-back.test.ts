// splice-back.ts on real loopback sockets with a stand-in binding: bytes JS has already read are
// passed along with the fds, and when the plane refuses (or throws) the pair stays in the JS tunnel
// with nothing lost or reordered.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createSpliceBack } from '../../src/dataplane/ts/splice-back.ts';
import type { NativeBinding } from '../../src/native/index.ts';
import { setTunnelOffload, tunnel } from '../../src/protocols/tcp.ts';

/** A connected pair: `[outside, inside]` (inside is the accepted, allowHalfOpen end JS proxies). */
async function pair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const outside = net.connect({
    port: (server.address() as net.AddressInfo).port,
    host: '127.0.0.1',
    allowHalfOpen: true,
  });
  await new Promise((r) => outside.once('connect', r));
  const inside = await accepted;
  server.close();
  return [outside, inside];
}

function collect(s: net.Socket, until: number): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= until) resolve(got);
    });
  });
}

const waitFor = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
};

describe('splice-back offload', () => {
  const open: net.Socket[] = [];
  afterEach(() => {
    setTunnelOffload(undefined);
    for (const s of open.splice(0)) s.destroy();
  });

  for (const refusal of ['returns false', 'throws'] as const) {
    it(`plane ${refusal}: bytes already read go first, then the JS tunnel carries on`, async () => {
      const [client, proxyClient] = await pair();
      const [backend, proxyUpstream] = await pair();
      open.push(client, proxyClient, backend, proxyUpstream);
      // Read into JS buffers before the tunnel starts (paused sockets still fill their buffer).
      client.write('early-up|');
      backend.write('early-down|');
      await waitFor(() => proxyClient.readableLength > 0 && proxyUpstream.readableLength > 0);
      const calls: Array<{ up?: string; down?: string; fds: number[] }> = [];
      const fallbacks: string[] = [];
      const binding = {
        planeSplicePair(_id: number, c: number, u: number, up?: Buffer, down?: Buffer) {
          calls.push({ up: up?.toString(), down: down?.toString(), fds: [c, u] });
          if (refusal === 'throws') throw new Error('no native plane with id 7');
          return false;
        },
      } as unknown as NativeBinding;
      setTunnelOffload(
        createSpliceBack(binding, 7, { handedBack: () => {}, fallback: (why) => fallbacks.push(why) }),
      );
      const atBackend = collect(backend, 'early-up|later-up'.length);
      const atClient = collect(client, 'early-down|later-down'.length);
      tunnel(proxyClient, proxyUpstream);
      await waitFor(() => calls.length > 0);
      expect(calls).toHaveLength(1);
      expect(calls[0]!.up).toBe('early-up|');
      expect(calls[0]!.down).toBe('early-down|');
      expect(calls[0]!.fds.every((fd) => fd > 2)).toBe(true);
      expect(fallbacks).toHaveLength(1);
      client.write('later-up');
      backend.write('later-down');
      expect(await atBackend).toBe('early-up|later-up');
      expect(await atClient).toBe('early-down|later-down');
    });
  }

  it('accepted: the JS sockets close without the peers seeing EOF, onClose runs once', async () => {
    const [client, proxyClient] = await pair();
    const [backend, proxyUpstream] = await pair();
    open.push(client, proxyClient, backend, proxyUpstream);
    let handedBack = 0;
    // Stand-in for a plane that took the pair (the real one, with dup(), is in the e2e tests).
    const binding = { planeSplicePair: () => true } as unknown as NativeBinding;
    setTunnelOffload(createSpliceBack(binding, 7, { handedBack: () => handedBack++, fallback: () => {} }));
    let closed = 0;
    tunnel(proxyClient, proxyUpstream, () => closed++);
    await waitFor(() => proxyClient.destroyed && proxyUpstream.destroyed);
    expect(handedBack).toBe(1);
    expect(closed).toBe(1);
    // JS itself ended nothing (no FIN written): with the plane's dup the peers see no close at all.
    expect(proxyClient.writableEnded).toBe(false);
    expect(proxyUpstream.writableEnded).toBe(false);
  });
});
