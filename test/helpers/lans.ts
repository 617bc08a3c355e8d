// THE cross-LAN topology (tunnel e2e and bench): a cloud namespace and LANs behind NAT gateways.
//   cloud      holds 172.16.1.1/32 on lo (the "public" address relays listen on) and one uplink
//              per LAN (172.16.N.1/30); it does not forward, so LANs cannot reach each other
//   gw<N>      gateway of LAN N: uplink 172.16.N.2/30, bridge 10.N.0.1/24, MASQUERADE outwards
//   nodes      10.N.0.(2+i)/24 on LAN N's bridge, default route via the gateway
// routeLans() turns on plain routing between the LANs through the cloud (the bench's "limit" path).
import { createNetns, type Netns } from './netns.ts';

/** The cloud's public address. */
export const CLOUD_IP = '172.16.1.1';

/** A built LAN topology; destroy() removes every namespace (never throws). */
export interface Lans {
  cloud: Netns;
  /** Nodes by LAN number (1-based) then index: lans[1][0] is 10.1.0.2. */
  nodes: Record<number, Netns[]>;
  /** Node address: 10.N.0.(2+i). */
  ip(lan: number, index: number): string;
  /** Lets LANs reach each other through the cloud with plain routing (no tunnel). */
  routeLans(): Promise<void>;
  destroy(): Promise<void>;
}

/** Builds the cloud plus one LAN per entry of `nodesPerLan` (LAN numbers 1, 2, ...). */
export async function createLans(tag: string, nodesPerLan: number[]): Promise<Lans> {
  const all: Netns[] = [];
  const destroy = () => Promise.all(all.map((ns) => ns.destroy())).then(() => undefined);
  const mk = async (t: string) => {
    const ns = await createNetns(`${tag}${t}`);
    all.push(ns);
    return ns;
  };
  try {
    const cloud = await mk('c');
    await cloud.run('ip', 'addr', 'add', `${CLOUD_IP}/32`, 'dev', 'lo');
    const nodes: Record<number, Netns[]> = {};
    for (const [idx, count] of nodesPerLan.entries()) {
      const n = idx + 1;
      const gw = await mk(`g${n}`);
      // The cloud-side device name must be unique only inside the cloud namespace.
      const up = `up${n}`;
      await cloud.run('ip', 'link', 'add', up, 'type', 'veth', 'peer', 'name', 'up0', 'netns', gw.name);
      await cloud.run('ip', 'addr', 'add', `172.16.${n}.1/30`, 'dev', up);
      await cloud.run('ip', 'link', 'set', up, 'up');
      await gw.run('ip', 'addr', 'add', `172.16.${n}.2/30`, 'dev', 'up0');
      await gw.run('ip', 'link', 'set', 'up0', 'up');
      await gw.run('ip', 'route', 'add', 'default', 'via', `172.16.${n}.1`);
      await gw.run('ip', 'link', 'add', 'br0', 'type', 'bridge');
      await gw.run('ip', 'addr', 'add', `10.${n}.0.1/24`, 'dev', 'br0');
      await gw.run('ip', 'link', 'set', 'br0', 'up');
      await gw.run('sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
      await gw.run('iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'up0', '-j', 'MASQUERADE');
      nodes[n] = [];
      for (let i = 0; i < count; i++) {
        const node = await mk(`${n}${i}`);
        await gw.run(
          'ip',
          'link',
          'add',
          `v${i}`,
          'type',
          'veth',
          'peer',
          'name',
          'eth0',
          'netns',
          node.name,
        );
        await gw.run('ip', 'link', 'set', `v${i}`, 'master', 'br0');
        await gw.run('ip', 'link', 'set', `v${i}`, 'up');
        await node.run('ip', 'addr', 'add', `10.${n}.0.${2 + i}/24`, 'dev', 'eth0');
        await node.run('ip', 'link', 'set', 'eth0', 'up');
        await node.run('ip', 'route', 'add', 'default', 'via', `10.${n}.0.1`);
        nodes[n].push(node);
      }
    }
    return {
      cloud,
      nodes,
      ip: (lan, index) => `10.${lan}.0.${2 + index}`,
      async routeLans() {
        for (let n = 1; n <= nodesPerLan.length; n++)
          await cloud.run('ip', 'route', 'replace', `10.${n}.0.0/24`, 'via', `172.16.${n}.2`);
        await cloud.run('sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
      },
      destroy,
    };
  } catch (err) {
    await destroy();
    throw err;
  }
}
