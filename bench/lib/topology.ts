// The network topologies the suite measures in: namespaces it creates itself (unique names per
// run), registered for cleanup so even Ctrl-C leaves nothing behind.
//
//   loopback  one namespace: client, proxy and backend on the same node (lo, plus a "pod" IP on lo)
//   veth      client + proxy in the node namespace, backend in its own namespace over a veth pair
//   veth-netem  veth with `tc netem` (e.g. "delay 1ms loss 0.1%") on both ends: an edge link
import { execFileSync } from 'node:child_process';
import { onCleanup } from './cleanup.ts';
import { execOk } from './exec.ts';

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
  /** Deletes the namespaces (idempotent). */
  destroy(): void;
}

let counter = 0;

function nsName(suffix: string): string {
  // 'emb' + pid (≤5 digits) + counter + suffix stays far below the 15-character device-name limit
  // that some tools apply to namespace names too.
  return `emb${process.pid % 100000}${counter}${suffix}`;
}

async function addNs(name: string): Promise<() => void> {
  await execOk(['ip', 'netns', 'add', name]);
  const undo = onCleanup(() => execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' }));
  await execOk(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  // Connection-rate runs open tens of thousands of connections: widen the port range and let
  // outgoing connects reuse TIME_WAIT ports (the default 2 allows that on loopback only).
  await execOk(['sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000', 'net.ipv4.tcp_tw_reuse=1'], {
    ns: name,
  });
  return undo;
}

/** Builds one topology; `netem` is the tc netem spec for veth-netem (default "delay 1ms"). */
export async function createTopology(kind: TopologyKind, netem = 'delay 1ms'): Promise<Topology> {
  counter++;
  const undos: Array<() => void> = [];
  const destroy = () => {
    for (const u of undos.splice(0).reverse()) u();
  };
  try {
    const nodeNs = nsName('n');
    undos.push(await addNs(nodeNs));
    // A device routes the service CIDR (no route = connect() fails before netfilter runs). A
    // bridge, because this kind of kernel may lack the dummy driver ("Unknown device type").
    await execOk(['ip', '-n', nodeNs, 'link', 'add', 'emsvc0', 'type', 'bridge']);
    await execOk(['ip', '-n', nodeNs, 'link', 'set', 'emsvc0', 'up']);
    await execOk(['ip', '-n', nodeNs, 'route', 'add', SERVICE_CIDR, 'dev', 'emsvc0']);
    if (kind === 'loopback') {
      // The local "pod" IP lives on lo, so backend traffic stays on the loopback path.
      await execOk(['ip', '-n', nodeNs, 'addr', 'add', '10.244.0.10/32', 'dev', 'lo']);
      return {
        kind,
        nodeNs,
        backendNs: nodeNs,
        backendIP: '10.244.0.10',
        description: 'client, proxy and backend in one network namespace (loopback)',
        destroy,
      };
    }
    const backendNs = nsName('b');
    undos.push(await addNs(backendNs));
    // Created inside the node namespace, so fixed device names never collide across runs.
    await execOk([
      'ip',
      '-n',
      nodeNs,
      'link',
      'add',
      'emv0',
      'type',
      'veth',
      'peer',
      'name',
      'emv1',
      'netns',
      backendNs,
    ]);
    await execOk(['ip', '-n', nodeNs, 'addr', 'add', '10.201.0.1/24', 'dev', 'emv0']);
    await execOk(['ip', '-n', backendNs, 'addr', 'add', '10.201.0.2/24', 'dev', 'emv1']);
    await execOk(['ip', '-n', nodeNs, 'link', 'set', 'emv0', 'up']);
    await execOk(['ip', '-n', backendNs, 'link', 'set', 'emv1', 'up']);
    let description = 'client and proxy in the node namespace, backend in another namespace over a veth pair';
    if (kind === 'veth-netem') {
      const spec = netem.split(/\s+/).filter(Boolean);
      await execOk(['tc', '-n', nodeNs, 'qdisc', 'add', 'dev', 'emv0', 'root', 'netem', ...spec]);
      await execOk(['tc', '-n', backendNs, 'qdisc', 'add', 'dev', 'emv1', 'root', 'netem', ...spec]);
      description += `, tc netem "${netem}" on both ends`;
    }
    return { kind, nodeNs, backendNs, backendIP: '10.201.0.2', description, destroy };
  } catch (err) {
    destroy();
    throw err;
  }
}
