// UDP across the tunnel with real relays and agent tunnels on loopback: datagrams of every size up
// to UDP's maximum come back byte-exact through the relay and directly (relay counters still), a
// node refuses flows to UDP endpoints it does not own, idle flows end on both agents and a new
// datagram opens a new flow, a full flow table and a backed-up session (at the relay and at an
// agent) drop (and count) instead of queueing, flows end with their session, an old peer without
// dgram-v1 is never sent datagram frames, and the relay forwards flows only to registered agents
// (a malformed datagram frame closes only the sender's session); a burst faster than an endpoint socket
// takes is dropped (reason=endpoint) while the flow keeps serving.
import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceTable } from '../../src/controller/types.ts';
import { clientTlsOptions } from '../../src/tunnel/credentials.ts';
import { FrameType } from '../../src/tunnel/frames.ts';
import { DGRAM_CAP, type StreamSink } from '../../src/tunnel/session.ts';
import { dialSession } from '../../src/tunnel/tls-listener.ts';
import { eventually } from '../helpers/eventually.ts';
import { ep, memLogger, metric, TunnelFixture, table } from '../helpers/tunnel-fixture.ts';

/** A client socket that keeps its address (one flow) across sends. */
async function udpClient() {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const replies: Buffer[] = [];
  const waiters: Array<() => void> = [];
  s.on('message', (m) => {
    replies.push(m);
    waiters.shift()?.();
  });
  return {
    /** Sends `payload` to 127.0.0.1:port and waits up to `ms` for one reply (undefined if none). */
    async ask(port: number, payload: Buffer, ms = 2000): Promise<Buffer | undefined> {
      replies.length = 0;
      const got = new Promise<void>((r) => waiters.push(r));
      s.send(payload, port, '127.0.0.1');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([got, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
      clearTimeout(timer);
      waiters.length = 0;
      return replies.shift();
    },
    /** Waits up to `ms` for a reply to what was sent already (one that came late to ask()). */
    async late(ms: number): Promise<Buffer | undefined> {
      if (replies.length === 0) {
        const got = new Promise<void>((r) => waiters.push(r));
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([got, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
        clearTimeout(timer);
        waiters.length = 0;
      }
      return replies.shift();
    },
    close: () => s.close(),
  };
}

const udpPort = (t: ServiceTable) => t.services.get('default/echo')!.ports[0]!.endpoints[0]!.port;

describe('UDP services across the tunnel (loopback)', () => {
  let fx: TunnelFixture;
  let echo: dgram.Socket;
  let echoPort: number;
  const clients: Array<{ close(): void }> = [];
  const client = async () => {
    const c = await udpClient();
    clients.push(c);
    return c;
  };
  /**
   * A client whose flow `agent` carries on `path`. Until the relay's PEERS arrive a flow has no
   * tunnel route and goes to the endpoint itself (which loopback reaches too), so fresh clients
   * are tried until one's flow was opened on that path.
   */
  const clientOn = async (
    agent: { registry: Parameters<typeof metric>[0] },
    port: number,
    path: 'relay' | 'direct',
  ) => {
    let found: Awaited<ReturnType<typeof udpClient>> | undefined;
    await eventually(async () => {
      const before = await metric(agent.registry, 'edgemesh_tunnel_datagram_flows_total', { path });
      const c = await client();
      let reply = await c.ask(port, Buffer.from('warm'), 300);
      // A timed-out ask may have run before the agent read the datagram: let this turn's reads run.
      if (!reply) await new Promise((r) => setImmediate(r));
      const opened =
        (await metric(agent.registry, 'edgemesh_tunnel_datagram_flows_total', { path })) > before;
      // This client's flow is on the path but its reply is slow (loaded machine): wait for it
      // rather than open a second flow, which the tests count.
      if (opened && !reply) reply = await c.late(5000);
      if (reply && opened) found = c;
      return found !== undefined;
    });
    return found!;
  };

  beforeAll(async () => {
    fx = new TunnelFixture();
    echo = dgram.createSocket('udp4');
    echo.on('message', (m, r) => echo.send(m, r.port, r.address));
    await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
    echoPort = echo.address().port;
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await fx?.stopAll();
    echo?.close();
  });

  it('echoes datagrams byte-exact through the relay and directly; the far node serves only its own endpoints', async () => {
    const r1 = await fx.relay('relay-1');
    const relays = [{ name: 'relay-1', addr: r1.addr }];
    // b advertises an address nobody answers on: only the relay path exists.
    const b = await fx.agent('node-b', relays, { advertise: ['127.0.0.1:1'] });
    const a = await fx.agent('node-a', relays);
    const snap = table([ep(echoPort, 'node-b')], 1, 'UDP');
    await b.t.applyTable(snap);
    const rewritten = await a.t.applyTable(snap);
    const remote = rewritten.services.get('default/echo')!.ports[0]!.endpoints[0]!;
    expect(remote).toMatchObject({ ip: '127.0.0.1', nodeName: 'node-b', tunnelPath: 'relay' });
    expect(remote.port).not.toBe(echoPort);
    await eventually(async () => a.t.pathTo('node-b') === 'relay');
    const c = await clientOn(a, remote.port, 'relay');

    const sizes = [1, 512, 1472, 9000, 60_000, 65_507];
    for (const n of sizes) {
      const payload = Buffer.alloc(n);
      for (let i = 0; i < n; i++) payload[i] = (i * 31 + n) & 0xff;
      const reply = await c.ask(remote.port, payload);
      expect(reply?.equals(payload), `datagram of ${n} bytes`).toBe(true);
    }
    expect(await metric(r1.registry, 'edgemesh_relay_datagram_flows_total')).toBe(1);
    expect(await metric(r1.registry, 'edgemesh_relay_datagrams_total')).toBeGreaterThanOrEqual(
      2 * sizes.length,
    );
    expect(await metric(r1.registry, 'edgemesh_relay_streams_total')).toBe(0);
    expect(await metric(a.registry, 'edgemesh_tunnel_datagram_flows_total', { path: 'relay' })).toBe(1);
    expect(await metric(b.registry, 'edgemesh_tunnel_datagram_flows_total', { path: 'in' })).toBe(1);
    expect(
      await metric(a.registry, 'edgemesh_tunnel_datagrams_total', { direction: 'tx' }),
    ).toBeGreaterThanOrEqual(sizes.length);
    expect(
      await metric(b.registry, 'edgemesh_tunnel_datagrams_total', { direction: 'rx' }),
    ).toBeGreaterThanOrEqual(sizes.length);
    const st = a.t.status().datagrams;
    expect(st.flows).toMatchObject({ relay: 1, direct: 0, none: 0 });
    expect(st.endpoints).toEqual([
      { node: 'node-b', endpoint: `127.0.0.1:${echoPort}`, local: `127.0.0.1:${remote.port}` },
    ]);
    expect(st.datagrams.dropped).toBe(0);

    // c answers on its advertised listener: a goes direct, the relay forwards nothing more.
    const nodeC = await fx.agent('node-c', relays);
    const snap2 = table([ep(echoPort, 'node-c')], 2, 'UDP');
    await nodeC.t.applyTable(snap2);
    const rw2 = await a.t.applyTable(snap2);
    await eventually(async () => a.t.pathTo('node-c') === 'direct');
    const relayed = await metric(r1.registry, 'edgemesh_relay_datagrams_total');
    const payload = Buffer.alloc(30_000, 0x5a);
    expect((await c.ask(udpPort(rw2), payload))?.equals(payload)).toBe(true);
    expect(await metric(r1.registry, 'edgemesh_relay_datagrams_total')).toBe(relayed);
    expect(await metric(a.registry, 'edgemesh_tunnel_datagram_flows_total', { path: 'direct' })).toBe(1);

    // c no longer owns the endpoint: a's flow is refused (RESET) and nothing comes back.
    await nodeC.t.applyTable(table([], 3, 'UDP'));
    const fresh = await client();
    expect(await fresh.ask(udpPort(rw2), Buffer.from('not yours'), 500)).toBeUndefined();
    expect(nodeC.lines.join('')).toMatch(/refused a datagram flow to an endpoint not on this node/);
    await eventually(async () => a.t.status().datagrams.flows.direct === 1);
  });

  it('idle flows end on both agents, a new datagram opens a new flow, and flows end with their session', async () => {
    const r1 = await fx.relay('relay-idle');
    const relays = [{ name: 'relay-idle', addr: r1.addr }];
    const knobs = { datagramIdleMs: 300 };
    const b = await fx.agent('idle-b', relays, { advertise: ['127.0.0.1:1'], knobs });
    const a = await fx.agent('idle-a', relays, { knobs });
    const snap = table([ep(echoPort, 'idle-b')], 1, 'UDP');
    await b.t.applyTable(snap);
    const port = udpPort(await a.t.applyTable(snap));
    const c = await clientOn(a, port, 'relay');
    const opened = await metric(a.registry, 'edgemesh_tunnel_datagram_flows_total', { path: 'relay' });
    expect(a.t.status().datagrams.flows.relay).toBe(1);
    expect(b.t.status().datagrams.flows.in).toBe(1);
    await eventually(
      async () => a.t.status().datagrams.flows.relay === 0 && b.t.status().datagrams.flows.in === 0,
      3000,
    );
    expect((await c.ask(port, Buffer.from('again')))?.toString()).toBe('again');
    expect(await metric(a.registry, 'edgemesh_tunnel_datagram_flows_total', { path: 'relay' })).toBe(
      opened + 1,
    );
    expect(await metric(r1.registry, 'edgemesh_relay_datagram_flows_total')).toBe(opened + 1);
    // The relay goes away: the flow ends with the session on both agents (not at idle expiry).
    await r1.r.stop();
    await eventually(
      async () => a.t.status().datagrams.flows.relay === 0 && b.t.status().datagrams.flows.in === 0,
      250,
    );
  });

  it('a full flow table drops new clients (counted) and keeps serving the flows it has', async () => {
    const r1 = await fx.relay('relay-drop');
    const relays = [{ name: 'relay-drop', addr: r1.addr }];
    const b = await fx.agent('drop-b', relays);
    const a = await fx.agent('drop-a', relays, { knobs: { datagramMaxFlows: 1 } });
    const snap = table([ep(echoPort, 'drop-b')], 1, 'UDP');
    await b.t.applyTable(snap);
    const port = udpPort(await a.t.applyTable(snap));
    // Direct: the session's HELLO already says dgram-v1, so the first flow is a tunnel flow (a
    // flow opened before a relay's PEERS would take the only slot on the no-path route).
    await eventually(async () => a.t.pathTo('drop-b') === 'direct');
    const first = await client();
    expect((await first.ask(port, Buffer.from('one'), 5000))?.toString()).toBe('one');
    expect(a.t.status().datagrams.flows).toMatchObject({ direct: 1, none: 0 });
    const second = await client();
    expect(await second.ask(port, Buffer.from('two'), 300)).toBeUndefined();
    expect(await second.ask(port, Buffer.from('two'), 300)).toBeUndefined();
    expect(await metric(a.registry, 'edgemesh_tunnel_datagram_drops_total', { reason: 'flows' })).toBe(2);
    expect(a.t.status().datagrams.datagrams.dropped).toBe(2);
    expect((await first.ask(port, Buffer.from('still one')))?.toString()).toBe('still one');
  });

  it('the relay forwards flows only to registered agents; malformed datagram frames close only that session', async () => {
    const r = await fx.relay('relay-bad');
    const good = await fx.agent('dg-good', [{ name: 'relay-bad', addr: r.addr }]);
    await good.t.applyTable(table([ep(echoPort, 'dg-good')], 1, 'UDP'));
    await eventually(async () => good.t.status().relays[0]!.connected);
    const creds = await fx.creds();
    const evil = await dialSession({
      host: '127.0.0.1',
      port: Number(r.addr.split(':')[1]),
      creds,
      hello: { node: 'dg-evil', kind: 'agent', caps: [DGRAM_CAP] },
      log: memLogger().log,
      timeoutMs: 2000,
      clientOptions: clientTlsOptions(creds),
    });
    /** Opens a datagram flow from `evil`; resolves with the RESET reason it gets back. */
    const flowReset = (node: string, port: number) =>
      new Promise<string>((resolve) => {
        const sink: StreamSink = {
          onData() {},
          onWindow() {},
          onClose() {},
          onDatagram() {},
          onReset: resolve,
        };
        evil.openSink({ node, src: 'spoofed', ip: '127.0.0.1', port }, () => sink, FrameType.DGRAM_OPEN);
      });
    // A node the relay does not know: reset at the relay, which dials nothing.
    expect(await flowReset('dg-nowhere', echoPort)).toMatch(
      /node 'dg-nowhere' is not connected to this relay/,
    );
    expect(await metric(r.registry, 'edgemesh_relay_datagram_flows_total')).toBe(0);
    // A registered node refuses an endpoint it does not own (its RESET comes back through the relay).
    expect(await flowReset('dg-good', echoPort + 1)).toMatch(/is not a UDP endpoint of node 'dg-good'/);
    // The relay named the authenticated source, not the spoofed one.
    expect(good.lines.join('')).toMatch(/"from":"dg-evil"/);
    // A DGRAM on a byte stream is malformed: only evil's session closes.
    const stream = evil.openStream({ node: 'dg-good', src: 'dg-evil', ip: '127.0.0.1', port: echoPort });
    stream.on('error', () => {});
    const closed = new Promise((res) => evil.once('close', res));
    evil.send(FrameType.DGRAM, stream.id, Buffer.from('not a datagram flow'));
    await closed;
    await eventually(async () => (await metric(r.registry, 'edgemesh_relay_frame_errors_total')) === 1);
    expect(r.lines.find((l) => l.includes('tunnel closed: protocol error')) ?? '').toMatch(
      /DGRAM on byte stream/,
    );
    expect(r.r.status().agents.map((x) => x.node)).toEqual(['dg-good']);
    expect(good.t.status().relays[0]!.connected).toBe(true);
  });

  it('a relay whose receiving agent is backed up drops datagrams (counted) instead of queueing them', async () => {
    const r = await fx.relay('relay-full');
    const a = await fx.agent('full-a', [{ name: 'relay-full', addr: r.addr }]);
    const creds = await fx.creds();
    // A receiving agent that takes flows, then stops reading its session (long keepalive: it must
    // not give up on the relay for not hearing from it).
    const slow = await dialSession({
      host: '127.0.0.1',
      port: Number(r.addr.split(':')[1]),
      creds,
      hello: { node: 'full-slow', kind: 'agent', caps: [DGRAM_CAP] },
      log: memLogger().log,
      timeoutMs: 2000,
      pingMs: 60_000,
      clientOptions: clientTlsOptions(creds),
    });
    fx.onStop(async () => slow.close());
    let received = 0;
    slow.datagramOpener = () => ({
      onData() {},
      onWindow() {},
      onClose() {},
      onReset() {},
      onDatagram: () => void received++,
    });
    // Nobody listens at the endpoint: a datagram that arrives did so through the tunnel.
    const port = udpPort(await a.t.applyTable(table([ep(1, 'full-slow')], 1, 'UDP')));
    const sender = dgram.createSocket('udp4');
    clients.push(sender);
    await new Promise<void>((res) => sender.bind(0, '127.0.0.1', res));
    let flowClient: dgram.Socket | undefined;
    await eventually(async () => {
      // A fresh client per try: a flow opened before the relay announced full-slow has no route.
      const c = dgram.createSocket('udp4');
      clients.push(c);
      c.send('hello', port, '127.0.0.1');
      await new Promise((res) => setTimeout(res, 100));
      if (received > 0) flowClient = c;
      return flowClient !== undefined;
    });
    // The slow agent stops reading: the relay's TLS socket to it fills up (test reaches into the
    // session for its socket; pausing it is the only way to stall a real peer in-process).
    (slow as unknown as { o: { socket: { pause(): void } } }).o.socket.pause();
    const big = Buffer.alloc(60_000, 0x33);
    const drops = () => metric(r.registry, 'edgemesh_relay_datagram_drops_total');
    for (let i = 0; i < 3000 && (i % 25 !== 0 || (await drops()) === 0); i++) {
      flowClient!.send(big, port, '127.0.0.1');
      await new Promise((res) => setImmediate(res));
    }
    expect(await drops()).toBeGreaterThan(0);
    // The relay kept forwarding up to its bound: more than the bound was sent, the rest dropped.
    expect(await metric(r.registry, 'edgemesh_relay_datagrams_total')).toBeGreaterThan((1 << 20) / 60_000);
    expect(a.t.status().datagrams.flows.relay).toBeGreaterThanOrEqual(1);
  });

  it('an old peer (no dgram-v1) is never sent datagram frames: its flows go to the endpoint itself', async () => {
    const r = await fx.relay('relay-old');
    const a = await fx.agent('old-a', [{ name: 'relay-old', addr: r.addr }]);
    const creds = await fx.creds();
    // An agent of an earlier version: it announces no capabilities, and any frame it does not know
    // would close its session.
    const old = await dialSession({
      host: '127.0.0.1',
      port: Number(r.addr.split(':')[1]),
      creds,
      hello: { node: 'old-b', kind: 'agent' },
      log: memLogger().log,
      timeoutMs: 2000,
      clientOptions: clientTlsOptions(creds),
    });
    fx.onStop(async () => old.close());
    const port = udpPort(await a.t.applyTable(table([ep(echoPort, 'old-b')], 1, 'UDP')));
    await eventually(async () => a.t.pathTo('old-b') === 'relay');
    // Loopback reaches the endpoint itself, so the echo answers on the no-tunnel path.
    const c = await client();
    expect((await c.ask(port, Buffer.from('as before')))?.toString()).toBe('as before');
    expect(a.t.status().datagrams.flows).toMatchObject({ none: 1, relay: 0, direct: 0 });
    expect(await metric(r.registry, 'edgemesh_relay_datagram_flows_total')).toBe(0);
    expect(old.isReady).toBe(true);
  });

  it('an agent whose peer stops reading drops the replies (counted) instead of queueing them', async () => {
    const b = await fx.agent('bk-b', []);
    await b.t.applyTable(table([ep(echoPort, 'bk-b')], 1, 'UDP'));
    const creds = await fx.creds();
    // A direct peer that opens a flow to b's echo endpoint, sends, and never reads the replies.
    const peer = await dialSession({
      host: '127.0.0.1',
      port: b.port,
      creds,
      hello: { node: 'bk-peer', kind: 'agent', caps: [DGRAM_CAP] },
      expectNode: 'bk-b',
      log: memLogger().log,
      timeoutMs: 2000,
      pingMs: 60_000,
      clientOptions: clientTlsOptions(creds),
    });
    fx.onStop(async () => peer.close());
    let id = 0;
    peer.openSink(
      { node: 'bk-b', src: 'bk-peer', ip: '127.0.0.1', port: echoPort },
      (n) => {
        id = n;
        return { onData() {}, onWindow() {}, onClose() {}, onReset() {}, onDatagram() {} };
      },
      FrameType.DGRAM_OPEN,
    );
    (peer as unknown as { o: { socket: { pause(): void } } }).o.socket.pause();
    const big = Buffer.alloc(60_000, 0x44);
    const drops = () => metric(b.registry, 'edgemesh_tunnel_datagram_drops_total', { reason: 'backlog' });
    for (let i = 0; i < 3000 && (i % 25 !== 0 || (await drops()) === 0); i++) {
      peer.send(FrameType.DGRAM, id, big);
      await new Promise((res) => setImmediate(res));
    }
    expect(await drops()).toBeGreaterThan(0);
    // Replies went out up to the bound before the drops began.
    expect(await metric(b.registry, 'edgemesh_tunnel_datagrams_total', { direction: 'tx' })).toBeGreaterThan(
      (1 << 20) / 60_000,
    );
    expect(b.t.status().datagrams.flows.in).toBe(1);
  });

  it('a burst faster than the endpoint socket takes is dropped (reason=endpoint), and the flow keeps serving', async () => {
    // A UDP endpoint that counts what reaches it and answers nothing.
    const sink = dgram.createSocket('udp4');
    let received = 0;
    sink.on('message', () => received++);
    await new Promise<void>((r) => sink.bind(0, '127.0.0.1', r));
    fx.onStop(async () => {
      sink.close();
    });
    const sinkPort = sink.address().port;
    const b = await fx.agent('epq-b', []);
    await b.t.applyTable(table([ep(sinkPort, 'epq-b')], 1, 'UDP'));
    const creds = await fx.creds();
    const peer = await dialSession({
      host: '127.0.0.1',
      port: b.port,
      creds,
      hello: { node: 'epq-peer', kind: 'agent', caps: [DGRAM_CAP] },
      expectNode: 'epq-b',
      log: memLogger().log,
      timeoutMs: 2000,
      clientOptions: clientTlsOptions(creds),
    });
    fx.onStop(async () => peer.close());
    let id = 0;
    peer.openSink(
      { node: 'epq-b', src: 'epq-peer', ip: '127.0.0.1', port: sinkPort },
      (n) => {
        id = n;
        return { onData() {}, onWindow() {}, onClose() {}, onReset() {}, onDatagram() {} };
      },
      FrameType.DGRAM_OPEN,
    );
    // Hundreds of small DGRAMs in one go arrive in a few TLS reads: b hands them to the endpoint
    // socket in one turn, past its queue bound (64), so the rest are dropped and counted.
    const drops = () => metric(b.registry, 'edgemesh_tunnel_datagram_drops_total', { reason: 'endpoint' });
    const small = Buffer.alloc(32, 0x45);
    for (let burst = 0; burst < 10 && (await drops()) === 0; burst++) {
      for (let i = 0; i < 400; i++) peer.send(FrameType.DGRAM, id, small);
      await eventually(
        async () =>
          (await metric(b.registry, 'edgemesh_tunnel_datagrams_total', { direction: 'rx' })) >=
          400 * (burst + 1),
      );
    }
    const dropped = await drops();
    expect(dropped).toBeGreaterThan(0);
    expect(b.t.status().datagrams.datagrams.dropped).toBeGreaterThanOrEqual(dropped);
    // What was not dropped reached the endpoint; the flow is still up and carries the next one.
    await eventually(async () => received > 0);
    const before = received;
    peer.send(FrameType.DGRAM, id, Buffer.from('after the burst'));
    await eventually(async () => received > before);
    expect(b.t.status().datagrams.flows.in).toBe(1);
    expect(await metric(b.registry, 'edgemesh_tunnel_datagram_drops_total', { reason: 'backlog' })).toBe(0);
  });
});
