// The demo's network (root only): a "node" namespace where the agent and clients run, with a
// bridge, and one namespace per pod behind a veth pair on that bridge. Everything is named
// `<prefix>-...` so a crashed run's leftovers are found and removed on the next start, and the
// host's own network namespace is never touched (no rules, routes or devices added there).
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Pod subnet inside the demo namespaces only; the bridge (the "node") is .1. */
export const DEMO_POD_SUBNET = '10.244.180';
/** Route for ClusterIPs in the node namespace: OUTPUT nat only sees destinations that route. */
export const DEMO_SERVICE_CIDR = '10.96.0.0/12';

async function ip(args: string[]): Promise<void> {
  try {
    await execFileP('ip', args);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(' ')}: ${stderr || (err as Error).message}`);
  }
}

/** The demo's namespaces and devices. */
export class DemoTopology {
  readonly nodeNs: string;
  readonly bridge: string;
  readonly nodeIP = `${DEMO_POD_SUBNET}.1`;
  private readonly podNamespaces: string[] = [];
  /** What each namespace's /etc/netns/<ns>/resolv.conf holds (set by createNode). */
  private resolvConf = '';

  constructor(readonly prefix: string) {
    this.nodeNs = `${prefix}-node`;
    this.bridge = `${prefix}-br`;
    if (this.bridge.length > 15 || `${prefix}-v99`.length > 15)
      throw new Error(`--prefix ${prefix}: too long for device names (at most 11 characters)`);
  }

  /** Address of the i-th pod (0-based). */
  podIP(i: number): string {
    return `${DEMO_POD_SUBNET}.${10 + i}`;
  }

  podNs(podName: string): string {
    return `${this.prefix}-${podName}`;
  }

  /** Creates the node namespace: loopback, bridge, service route and resolv.conf for DNS names. */
  async createNode(dnsIP: string, clusterDomain: string): Promise<void> {
    await ip(['netns', 'add', this.nodeNs]);
    await ip(['-n', this.nodeNs, 'link', 'set', 'lo', 'up']);
    await ip(['-n', this.nodeNs, 'link', 'add', this.bridge, 'type', 'bridge']);
    await ip(['-n', this.nodeNs, 'addr', 'add', `${this.nodeIP}/24`, 'dev', this.bridge]);
    await ip(['-n', this.nodeNs, 'link', 'set', this.bridge, 'up']);
    await ip(['-n', this.nodeNs, 'route', 'add', DEMO_SERVICE_CIDR, 'dev', this.bridge]);
    // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf, so clients in
    // the node namespace resolve through the agent's DNS server, like an edge node would.
    this.resolvConf = `nameserver ${dnsIP}\nsearch svc.${clusterDomain} ${clusterDomain}\noptions ndots:2 timeout:1 attempts:2\n`;
    await this.writeResolvConf(this.nodeNs);
  }

  private async writeResolvConf(ns: string): Promise<void> {
    const dir = path.join('/etc/netns', ns);
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'resolv.conf'), this.resolvConf);
  }

  /** Creates pod namespace `podNs(podName)` with eth0 = ip/24 on the bridge, default route via the node. */
  async createPod(podName: string, index: number, podIP: string): Promise<void> {
    const ns = this.podNs(podName);
    const veth = `${this.prefix}-v${index}`;
    await ip(['netns', 'add', ns]);
    this.podNamespaces.push(ns);
    await ip(['-n', this.nodeNs, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await ip(['-n', this.nodeNs, 'link', 'set', veth, 'master', this.bridge, 'up']);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    await ip(['-n', ns, 'addr', 'add', `${podIP}/24`, 'dev', 'eth0']);
    await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    await ip(['-n', ns, 'route', 'add', 'default', 'via', this.nodeIP]);
    // Pods use the agent's DNS too (what kubelet's clusterDNS does); the default route reaches it.
    await this.writeResolvConf(ns);
  }

  /** Removes every namespace with this prefix (also a crashed run's) and their resolv.conf folders. */
  async destroy(): Promise<void> {
    const { stdout } = await execFileP('ip', ['netns', 'list']).catch(() => ({ stdout: '' }));
    const mine = stdout
      .split('\n')
      .map((l) => l.split(' ')[0]!)
      .filter((n) => n.startsWith(`${this.prefix}-`));
    // Pods first: deleting a namespace deletes its veth end, and its peer on the bridge with it.
    mine.sort((a, b) => Number(a === this.nodeNs) - Number(b === this.nodeNs));
    for (const ns of mine) await ip(['netns', 'delete', ns]).catch(() => {});
    const etc = await fs.readdir('/etc/netns').catch(() => [] as string[]);
    for (const ns of etc.filter((n) => n.startsWith(`${this.prefix}-`)))
      await fs.rm(path.join('/etc/netns', ns), { recursive: true, force: true });
  }
}
