// Relay + agent tunnels on loopback (real TLS sockets, real relay, real EdgeTunnel instances):
// via relay, direct (relay counters still), refusal of endpoints the far node does not own, wrong
// PSK rejected with a log line on both sides, per-stream flow control, failover between relays,
// and cert mode (CA-signed node certificates).
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceTable } from '../../src/controller/types.ts';
import { clientTlsOptions, loadCredentials } from '../../src/tunnel/credentials.ts';
import { FrameType } from '../../src/tunnel/frames.ts';
import { RelayServer } from '../../src/tunnel/relay-server.ts';
import { dialSession } from '../../src/tunnel/tls-listener.ts';
import { DEFAULT_WINDOW, type TunnelStream } from '../../src/tunnel/tunnel-stream.ts';
import { makeCerts } from '../helpers/certs.ts';
import { eventually } from '../helpers/eventually.ts';
import { freePort } from '../helpers/ports.ts';
import { ep, exchange, memLogger, metric, TunnelFixture, table } from '../helpers/tunnel-fixture.ts';

describe('tunnel over relays (loopback)', () => {
  let fx: TunnelFixture;
  let dir: string;
  let echo: net.Server;
  let echoPort: number;
  const stops = { push: (stop: () => Promise<void>) => fx.onStop(stop) };

  beforeAll(async () => {
    fx = new TunnelFixture();
    dir = fx.dir;
    echo = net.createServer({ allowHalfOpen: true }, (s) => {
      s.pipe(s);
      s.on('error', () => {});
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoPort = (echo.address() as net.AddressInfo).port;
  });

  afterAll(async () => {
    await fx?.stopAll();
    echo?.close();
  });

  const relay = (name: string, psk = 'psk') => fx.relay(name, { psk });
  const agent: TunnelFixture['agent'] = (node, relays, opts) => fx.agent(node, relays, opts);

  it('reaches an endpoint on another node through the relay, and directly when the peer answers', async () => {
    const r1 = await relay('relay-1');
    // b advertises an address nobody answers on: only the relay path exists.
    const b = await agent('node-b', [{ name: 'relay-1', addr: r1.addr }], { advertise: ['127.0.0.1:1'] });
    const a = await agent('node-a', [{ name: 'relay-1', addr: r1.addr }]);
    const snap = table([ep(echoPort, 'node-b')]);
    await b.t.applyTable(snap);
    const rewritten = await a.t.applyTable(snap);
    const remote = rewritten.services.get('default/echo')!.ports[0]!.endpoints[0]!;
    expect(remote.ip).toBe('127.0.0.1');
    expect(remote.port).not.toBe(echoPort);
    expect(remote.nodeName).toBe('node-b');
    await eventually(async () => a.t.pathTo('node-b') === 'relay');
    const payload = Buffer.alloc(3 << 20, 7);
    payload.write('via relay');
    expect((await exchange(remote.port, payload)).equals(payload)).toBe(true);
    expect(await metric(r1.registry, 'edgemesh_relay_streams_total')).toBe(1);
    expect(await metric(r1.registry, 'edgemesh_relay_bytes_total')).toBeGreaterThanOrEqual(
      2 * payload.length,
    );
    expect(a.t.status().peers).toEqual([{ node: 'node-b', path: 'relay' }]);

    // c advertises its real listener: a probes it and goes direct; the relay sees nothing new.
    const c = await agent('node-c', [{ name: 'relay-1', addr: r1.addr }]);
    const snap2 = table([ep(echoPort, 'node-c')], 2);
    await c.t.applyTable(snap2);
    const rw2 = await a.t.applyTable(snap2);
    await eventually(async () => a.t.pathTo('node-c') === 'direct');
    const before = await metric(r1.registry, 'edgemesh_relay_streams_total');
    const port2 = rw2.services.get('default/echo')!.ports[0]!.endpoints[0]!.port;
    expect((await exchange(port2, 'direct hop')).toString()).toBe('direct hop');
    expect(await metric(r1.registry, 'edgemesh_relay_streams_total')).toBe(before);
    expect(await metric(a.registry, 'edgemesh_tunnel_streams_total')).toBe(2);
    const metrics = await a.registry.metrics();
    expect(metrics).toMatch(/edgemesh_tunnel_peer_path\{peer="node-c",path="direct"\} 1/);
  });

  it('re-renders the data plane copy when a peer goes direct (tunnelPath relay → direct)', async () => {
    const r = await relay('relay-rr');
    const dPort = await freePort();
    // d advertises a listener that is not there yet: the first render says relay.
    const d = await agent('node-d', [{ name: 'relay-rr', addr: r.addr }], {
      advertise: [`127.0.0.1:${dPort}`],
    });
    const a = await agent('node-a3', [{ name: 'relay-rr', addr: r.addr }]);
    const seen: Array<string | undefined> = [];
    const inner = {
      name: 'recorder',
      apply: async (t: ServiceTable, diff: { updated: readonly string[] }) => {
        seen.push(t.services.get('default/echo')?.ports[0]?.endpoints[0]?.tunnelPath);
        expect(diff.updated.length + t.generation).toBeGreaterThan(0);
      },
    };
    const consumer = a.t.consumer(inner);
    const snap = table([ep(echoPort, 'node-d')]);
    await d.t.applyTable(snap);
    await consumer.apply(snap, { added: ['default/echo'], updated: [], removed: [], istioChanged: false });
    expect(seen).toEqual(['relay']);
    // Now a forwarder answers on d's advertised address: the re-probe finds it and goes direct.
    const conns: net.Socket[] = [];
    const fwd = net.createServer((c) => {
      const up = net.connect({ host: '127.0.0.1', port: d.port });
      conns.push(c, up);
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
    });
    await new Promise<void>((res) => fwd.listen(dPort, '127.0.0.1', res));
    stops.push(async () => {
      for (const c of conns) c.destroy();
      await new Promise<void>((res) => fwd.close(() => res()));
    });
    await eventually(async () => seen.at(-1) === 'direct', 5000);
    expect(a.t.pathTo('node-d')).toBe('direct');
  });

  it('a malformed frame closes only that tunnel and is counted', async () => {
    const r = await relay('relay-bad-frame');
    const good = await agent('node-good', [{ name: 'relay-bad-frame', addr: r.addr }]);
    await eventually(async () => good.t.status().relays[0]!.connected);
    const creds = await loadCredentials({
      pskFile: path.join(dir, 'psk'),
      caFile: '',
      certFile: '',
      keyFile: '',
    });
    const evil = await dialSession({
      host: '127.0.0.1',
      port: Number(r.addr.split(':')[1]),
      creds,
      hello: { node: 'node-evil', kind: 'agent' },
      log: memLogger().log,
      timeoutMs: 2000,
      clientOptions: clientTlsOptions(creds),
    });
    // A stream toward a node the relay does not know is reset; the relay dials nothing.
    const nowhere = evil.openStream({
      node: 'node-nowhere',
      src: 'node-evil',
      ip: '127.0.0.1',
      port: echoPort,
    });
    const resetErr = await new Promise<Error>((res) => nowhere.once('error', res));
    expect(resetErr.message).toMatch(/node 'node-nowhere' is not connected to this relay/);
    expect(await metric(r.registry, 'edgemesh_relay_streams_rejected_total')).toBe(1);
    const closed = new Promise((res) => evil.once('close', res));
    evil.send(42 as never, 7, Buffer.from('garbage'));
    await closed;
    await eventually(async () => (await metric(r.registry, 'edgemesh_relay_frame_errors_total')) === 1);
    const line = r.lines.find((l) => l.includes('tunnel closed: protocol error')) ?? '';
    expect(line).toMatch(/unknown frame type 42/);
    expect(line).toMatch(/EDGEMESH_ERR_TUNNEL/);
    expect(r.r.status().agents.map((x) => x.node)).toEqual(['node-good']);
    expect(good.t.status().relays[0]!.connected).toBe(true);
  });

  it('with no tunnel path at all, the endpoint itself is tried (flat networks keep working)', async () => {
    const lone = await agent('node-lone', []);
    const rw = await lone.t.applyTable(table([ep(echoPort, 'node-unknown')]));
    const port = rw.services.get('default/echo')!.ports[0]!.endpoints[0]!.port;
    expect(lone.t.pathTo('node-unknown')).toBe('none');
    expect((await exchange(port, 'plain fallback')).toString()).toBe('plain fallback');
    expect(await metric(lone.registry, 'edgemesh_tunnel_no_path_total')).toBe(1);
  });

  it('learned peer addresses survive a restart: a LAN peer is reached with no relay at all', async () => {
    const r = await relay('relay-persist');
    const e = await agent('node-e', [{ name: 'relay-persist', addr: r.addr }]);
    const f = await agent('node-f', [{ name: 'relay-persist', addr: r.addr }]);
    const snap = table([ep(echoPort, 'node-e')]);
    await e.t.applyTable(snap);
    await f.t.applyTable(snap);
    await eventually(async () => f.t.pathTo('node-e') === 'direct');
    await f.t.stop();
    const saved = JSON.parse(fs.readFileSync(path.join(f.stateDir, 'tunnel-peers.json'), 'utf8'));
    expect(saved.peers['node-e']).toEqual([`127.0.0.1:${e.port}`]);
    await r.r.stop();
    // f again, same state dir, no relay configured (the cloud is gone): it probes e directly.
    const f2 = await agent('node-f', [], { stateDir: f.stateDir });
    expect(f2.lines.join('')).toMatch(/peer addresses restored/);
    const rw = await f2.t.applyTable(snap);
    await eventually(async () => f2.t.pathTo('node-e') === 'direct');
    const port = rw.services.get('default/echo')!.ports[0]!.endpoints[0]!.port;
    expect((await exchange(port, 'after restart')).toString()).toBe('after restart');
    expect(await metric(f2.registry, 'edgemesh_tunnel_streams_total')).toBe(1);
  });

  it('the receiving node connects only to its own endpoints', async () => {
    const r = await relay('relay-own');
    const b = await agent('node-b2', [{ name: 'relay-own', addr: r.addr }], { advertise: ['127.0.0.1:1'] });
    const a = await agent('node-a2', [{ name: 'relay-own', addr: r.addr }]);
    // a believes the echo runs on node-b2, but b2's snapshot says it is not b2's endpoint.
    await b.t.applyTable(table([ep(echoPort, 'node-x')]));
    const rw = await a.t.applyTable(table([ep(echoPort, 'node-b2')]));
    await eventually(async () => a.t.pathTo('node-b2') === 'relay');
    const port = rw.services.get('default/echo')!.ports[0]!.endpoints[0]!.port;
    // Nothing passes: the client sees an empty reply (framed) or a reset (sealed: a refused stream
    // resets the client's connection, never a clean end).
    const got = await exchange(port, 'should not pass').then(
      (b) => b.length,
      (err: NodeJS.ErrnoException) => err.code,
    );
    expect([0, 'ECONNRESET']).toContain(got);
    expect(await metric(b.registry, 'edgemesh_tunnel_inbound_streams_total')).toBe(1);
    expect(b.lines.join('')).toMatch(/refused a stream to an endpoint not on this node/);
  });

  it('a wrong PSK is rejected with a clear log line on both sides and nothing is proxied', async () => {
    const r = await relay('relay-psk');
    const bad = await agent('node-bad', [{ name: 'relay-psk', addr: r.addr }], { psk: 'bad-psk' });
    const logs = () => `agent log:\n${bad.lines.join('')}\nrelay log:\n${r.lines.join('')}`;
    await eventually(
      async () =>
        r.lines.join('').includes('pre-shared key mismatch') &&
        /credentials were not accepted/.test(bad.lines.join('')),
      3000,
    ).catch(() => {
      throw new Error(logs());
    });
    expect(r.lines.join('')).toMatch(
      /tunnel peer rejected: authentication failed.*EDGEMESH_ERR_TUNNEL|EDGEMESH_ERR_TUNNEL.*tunnel peer rejected/,
    );
    expect(bad.lines.join('')).toMatch(/EDGEMESH_ERR_TUNNEL/);
    expect(await metric(r.registry, 'edgemesh_relay_auth_failures_total')).toBeGreaterThan(0);
    expect(r.r.status().agents).toEqual([]);
    const all = [...r.lines, ...bad.lines].join('');
    expect(all).not.toContain('correct horse');
    expect(all).not.toContain('wrong horse');
  });

  it('one stalled bulk stream does not block another stream on the same session', async () => {
    const r = await relay('relay-fc');
    // A sink that accepts but never reads: its stream runs out of credit.
    const held: net.Socket[] = [];
    const sink = net.createServer({ pauseOnConnect: true }, (s) => void held.push(s));
    await new Promise<void>((res) => sink.listen(0, '127.0.0.1', res));
    stops.push(async () => {
      for (const s of held) s.destroy();
      await new Promise<void>((res) => sink.close(() => res()));
    });
    const sinkPort = (sink.address() as net.AddressInfo).port;
    const b = await agent('node-fc-b', [{ name: 'relay-fc', addr: r.addr }], { advertise: ['127.0.0.1:1'] });
    const a = await agent('node-fc-a', [{ name: 'relay-fc', addr: r.addr }]);
    const snap = table([ep(echoPort, 'node-fc-b'), ep(sinkPort, 'node-fc-b')]);
    await b.t.applyTable(snap);
    const rw = await a.t.applyTable(snap);
    await eventually(async () => a.t.pathTo('node-fc-b') === 'relay');
    const ports = rw.services.get('default/echo')!.ports[0]!.endpoints;
    const sinkLocal = ports.find((e) =>
      a.t
        .status()
        .endpoints.some((x) => x.endpoint === `127.0.0.1:${sinkPort}` && x.local === `127.0.0.1:${e.port}`),
    )!;
    const bulk = net.connect({ host: '127.0.0.1', port: sinkLocal.port });
    bulk.on('error', () => {});
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024);
    const pump = () => {
      while (written < 128 << 20 && bulk.write(chunk)) written += chunk.length;
    };
    bulk.on('drain', pump);
    bulk.on('connect', pump);
    await new Promise((res) => setTimeout(res, 300));
    const echoLocal = ports.find((e) => e.port !== sinkLocal.port)!;
    const t0 = Date.now();
    expect((await exchange(echoLocal.port, 'still flowing')).toString()).toBe('still flowing');
    expect(Date.now() - t0).toBeLessThan(2000);
    // The stalled stream is bounded, far from the 128 MiB offered: framed by its window plus socket
    // buffers; sealed (its own TCP connections) by the kernel buffers of its four connections.
    expect(written).toBeLessThan(64 << 20);
    bulk.destroy();
  });

  it('the relay splices frames with rewritten ids; a sender overrunning its credit loses only its own tunnel', async () => {
    const r = await relay('relay-splice');
    const creds = await loadCredentials({
      pskFile: path.join(dir, 'psk'),
      caFile: '',
      certFile: '',
      keyFile: '',
    });
    const dial = (node: string) =>
      dialSession({
        host: '127.0.0.1',
        port: Number(r.addr.split(':')[1]),
        creds,
        hello: { node, kind: 'agent' },
        log: memLogger().log,
        timeoutMs: 2000,
        clientOptions: clientTlsOptions(creds),
      });
    const y = await dial('node-y');
    const x = await dial('node-x');
    stops.push(async () => {
      x.close();
      y.close();
    });
    await eventually(async () => r.r.status().agents.length === 2);
    // y accepts and never reads, so it returns no credit.
    const opened = new Promise<TunnelStream>((res) =>
      y.on('open', (st: TunnelStream) => {
        st.on('error', () => {});
        res(st);
      }),
    );
    const first = x.openStream({ node: 'node-y', src: 'node-x', ip: '127.0.0.1', port: echoPort });
    first.on('error', () => {});
    first.write('spliced');
    const inbound = await opened;
    // The relay opened its own stream on y's session (a server-side, even id) and passed the bytes.
    expect(inbound.id % 2).toBe(0);
    expect(((await once(inbound, 'data')) as Buffer[])[0]!.toString()).toBe('spliced');
    // Reading stops here (a 'data' listener leaves the stream flowing).
    inbound.pause();
    expect(r.r.status().agents.find((a) => a.node === 'node-y')!.streams).toBe(1);
    // Raw DATA past the window (the TunnelStream would never send it): the relay, not y, catches it.
    const xClosed = new Promise((res) => x.once('close', res));
    const chunk = Buffer.alloc(64 * 1024);
    // y returned some credit while its buffer filled up to the stream's highWaterMark (< 1 MiB).
    for (let sent = 0; sent <= DEFAULT_WINDOW + (1 << 20); sent += chunk.length)
      x.send(FrameType.DATA, first.id, chunk);
    await xClosed;
    await eventually(async () => (await metric(r.registry, 'edgemesh_relay_frame_errors_total')) === 1);
    expect(r.lines.join('')).toMatch(/exceeded its flow-control window/);
    // y keeps its session; its half of the splice is reset.
    await eventually(async () => inbound.destroyed);
    expect(y.isReady).toBe(true);
    expect(r.r.status().agents.map((a) => a.node)).toEqual(['node-y']);
  });

  it('fails over to the second relay within 2 s when the first dies', async () => {
    const r1 = await relay('relay-fa');
    const r2 = await relay('relay-fb');
    const relays = [
      { name: 'relay-fa', addr: r1.addr },
      { name: 'relay-fb', addr: r2.addr },
    ];
    const b = await agent('node-fo-b', relays, { advertise: ['127.0.0.1:1'] });
    const a = await agent('node-fo-a', relays, { advertise: ['127.0.0.1:1'] });
    const snap = table([ep(echoPort, 'node-fo-b')]);
    await b.t.applyTable(snap);
    const port = (await a.t.applyTable(snap)).services.get('default/echo')!.ports[0]!.endpoints[0]!.port;
    await eventually(
      async () =>
        a.t.status().relays.every((x) => x.connected) && b.t.status().relays.every((x) => x.connected),
    );
    expect((await exchange(port, 'one')).toString()).toBe('one');
    expect(await metric(r1.registry, 'edgemesh_relay_streams_total')).toBe(1);
    await r1.r.stop();
    const t0 = Date.now();
    await eventually(async () => (await exchange(port, 'two')).toString() === 'two', 2000);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await metric(r2.registry, 'edgemesh_relay_streams_total')).toBeGreaterThanOrEqual(1);
  });

  it('cert mode: CA-signed node certificates authenticate; a name mismatch is rejected', async () => {
    const certDir = path.join(dir, 'certs');
    fs.mkdirSync(certDir);
    makeCerts(certDir, 'edge'); // CNs edge-server, edge-client
    const files = (who: string) => ({
      pskFile: '',
      caFile: path.join(certDir, 'ca.crt'),
      certFile: path.join(certDir, `${who}.crt`),
      keyFile: path.join(certDir, `${who}.key`),
    });
    const relayCreds = await loadCredentials(files('server'));
    const mem = memLogger();
    const r = new RelayServer({
      nodeName: 'edge-server',
      host: '127.0.0.1',
      port: 0,
      creds: relayCreds,
      log: mem.log,
    });
    await r.start();
    stops.push(() => r.stop());
    const clientCreds = await loadCredentials(files('client'));
    const dial = (node: string) =>
      dialSession({
        host: '127.0.0.1',
        port: r.address!.port,
        creds: clientCreds,
        hello: { node, kind: 'agent' },
        expectNode: 'edge-server',
        log: mem.log,
        timeoutMs: 2000,
        clientOptions: clientTlsOptions(clientCreds),
      });
    const ok = await dial('edge-client');
    expect(ok.peer?.node).toBe('edge-server');
    await eventually(async () => r.status().agents.some((x) => x.node === 'edge-client'));
    ok.close();
    await expect(dial('edge-impostor')).rejects.toThrow(/not named in its certificate|rejected/);
    expect(mem.lines.join('')).toMatch(/node 'edge-impostor' is not named in its certificate/);
  });
});
