// The network topologies the suite measures in, built on the shared e2e helper
// (test/helpers/netns.ts) with unique names per run, and registered for cleanup so even Ctrl-C
// leaves no namespace behind.
//
//   loopback    one namespace: client, proxy and backend on the same node ("pod" IP on lo)
//   veth        client + proxy in the node namespace, backend in a pod namespace behind a veth
//               pair on the node's bridge (the shape a CNI bridge gives an edge node)
//   veth-netem  veth with `tc netem` (e.g. "delay 1ms loss 0.1%") on both veth ends: an edge link
import { execFileSync } from 'node:child_process';
import { createNetns, type Netns, Topology as PodTopology } from '../../test/helpers/netns.ts';
import { onCleanup } from './cleanup.ts';

/** The topology kinds the suite knows. */
export const topologyKinds = ['loopback', 'veth', 'veth-netem'] as const;
export type TopologyKind = (typeof topologyKinds)[number];

/** Service CIDR routed in every node namespace (so OUTPUT nat sees ClusterIP traffic). */
export const SERVICE_CIDR = '10.96.0.0/12';

/** A built topology: where clients/proxies run, where backends run, and the backend ("pod") IP. */
export interface Topology {
  kind: TopologyKind;
  /** Client and proxies (and the edgemesh agent) run here. */
  nodeNs: string;
  /** Backends run here (the node namespace itself for loopback). */
  backendNs: string;
  /** The backend's address as the node sees it: what a Pod's status.podIP would be. */
  backendIP: string;
  /** One line for the report. */
  description: string;
  /** Deletes the namespaces and what runs in them (idempotent, never throws). */
  destroy(): Promise<void>;
}

// Connection-rate runs open tens of thousands of connections: widen the ephemeral range upwards
// (never below 32768: the proxies listen on 1xxxx ports, and an ephemeral port taken there made
// nginx fail with EADDRINUSE) and let outgoing connects reuse TIME_WAIT ports (the default 2
// allows that on loopback only).
async function tune(ns: Netns): Promise<void> {
  await ns.run('sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=32768 65000', 'net.ipv4.tcp_tw_reuse=1');
}

/** Ctrl-C cannot wait for async teardown: delete the namespaces synchronously then. */
function guard(names: string[]): () => void {
  return onCleanup(() => {
    for (const n of names) execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
  });
}

/** Builds one topology; `netem` is the tc netem spec for veth-netem (default "delay 1ms"). */
export async function createTopology(kind: TopologyKind, netem = 'delay 1ms'): Promise<Topology> {
  if (kind === 'loopback') {
    const node = await createNetns('bl');
    const unregister = guard([node.name]);
    const destroy = async () => {
      await node.destroy();
      unregister();
    };
    try {
      await tune(node);
      // A device routes the service CIDR (no route = connect() fails before netfilter runs); a
      // bridge, because this kind of kernel may lack the dummy driver ("Unknown device type").
      await node.run('ip', 'link', 'add', 'emsvc0', 'type', 'bridge');
      await node.run('ip', 'link', 'set', 'emsvc0', 'up');
      await node.run('ip', 'route', 'add', SERVICE_CIDR, 'dev', 'emsvc0');
      // The local "pod" IP lives on lo, so backend traffic stays on the loopback path.
      await node.run('ip', 'addr', 'add', '10.244.0.10/32', 'dev', 'lo');
    } catch (err) {
      await destroy();
      throw err;
    }
    return {
      kind,
      nodeNs: node.name,
      backendNs: node.name,
      backendIP: '10.244.0.10',
      description: 'client, proxy and backend in one network namespace (loopback)',
      destroy,
    };
  }
  const topo = await PodTopology.create({ tag: 'bv', pods: 1, serviceCidr: SERVICE_CIDR });
  const pod = topo.pods[0]!;
  const unregister = guard([topo.node.name, pod.ns.name]);
  const destroy = async () => {
    await topo.destroy();
    unregister();
  };
  let description =
    'client and proxy in the node namespace, backend in a pod namespace (veth pair on a bridge)';
  try {
    await tune(topo.node);
    await tune(pod.ns);
    if (kind === 'veth-netem') {
      const spec = netem.split(/\s+/).filter(Boolean);
      await topo.node.run('tc', 'qdisc', 'add', 'dev', 'veth0', 'root', 'netem', ...spec);
      await pod.ns.run('tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'netem', ...spec);
      description += `, tc netem "${netem}" on both veth ends`;
    }
  } catch (err) {
    await destroy();
    throw err;
  }
  return { kind, nodeNs: topo.node.name, backendNs: pod.ns.name, backendIP: pod.ip, description, destroy };
}
