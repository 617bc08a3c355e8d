// THE e2e topology helper: network namespaces acting as a node (agent + clients) and pods
// (backends behind veth pairs on a bridge), commands run with `ip netns exec`, and a teardown
// that removes everything even when a test failed. Addresses exist only inside these namespaces.
import { type ChildProcess, execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { type ProcessResult, runProcess } from '../../src/util/run-process.ts';
import { binPath, type RunningCli, repoRoot, startCli } from './cli.ts';

const execFileP = promisify(execFile);
let counter = 0;

/** A name unique per test file and run: `em<tag><pid % 100000><n>`, at most 15 chars (device-name limit). */
export function uniqueName(tag: string): string {
  const name = `em${tag}${process.pid % 100000}${(counter++).toString(36)}`;
  if (name.length > 15) throw new Error(`netns/device name too long: ${name} (shorten the tag)`);
  return name;
}

/** Exit code (-1 when killed or not started) and output. */
export type ExecResult = ProcessResult;

/** Runs a command on the host (not inside a namespace); rejects on non-zero exit. */
export async function sh(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 << 20 });
  return stdout;
}

/** One network namespace with its children and files, all removed by destroy(). */
export class Netns {
  private readonly children = new Set<ChildProcess>();

  constructor(readonly name: string) {}

  /** `ip netns exec <ns> cmd args`, resolving with exit code and output (never rejects on exit code). */
  exec(
    cmd: string,
    args: string[],
    options: { input?: string; timeoutMs?: number } = {},
  ): Promise<ExecResult> {
    return runProcess(['ip', 'netns', 'exec', this.name, cmd, ...args], {
      input: options.input ?? '',
      timeoutMs: options.timeoutMs ?? 20_000,
    });
  }

  /** Like exec but rejects with the output when the command fails. */
  async run(cmd: string, ...args: string[]): Promise<string> {
    const r = await this.exec(cmd, args);
    if (r.code !== 0)
      throw new Error(`[${this.name}] ${cmd} ${args.join(' ')} → ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  /** Starts a long-running process inside the namespace (killed by destroy()). */
  spawn(cmd: string, args: string[]): RunningCli {
    const running = startCli(args, { command: ['ip', 'netns', 'exec', this.name, cmd] });
    this.children.add(running.child);
    running.child.on('close', () => this.children.delete(running.child));
    return running;
  }

  /** Starts test/helpers/backend-server.mjs here and waits until it listens. */
  async backend(name: string, listeners: string[]): Promise<RunningCli> {
    const script = path.join(repoRoot, 'test/helpers/backend-server.mjs');
    const running = this.spawn(process.execPath, [script, '--name', name, ...listeners]);
    await running.waitFor(/ready/, 10_000);
    return running;
  }

  /**
   * Starts test/helpers/orig-dst-server.py here (IPv6-only TCP/UDP listeners on `::`, `--tcp
   * PORT:TEXT` answers "TEXT ORIGDST") and waits until it listens.
   */
  async backend6(listeners: string[]): Promise<RunningCli> {
    const script = path.join(repoRoot, 'test/helpers/orig-dst-server.py');
    const running = this.spawn('python3', [script, ...listeners]);
    await running.waitFor(/ready/, 10_000);
    return running;
  }

  /** Adds IPv6 `addr/len` to `dev` without duplicate address detection (usable at once, not tentative). */
  async addr6(addr: string, dev: string): Promise<void> {
    await this.run('ip', '-6', 'addr', 'add', addr, 'dev', dev, 'nodad');
  }

  /** Starts the real `edgemesh agent` here (SIGKILLed by destroy() if the test did not stop it). */
  agent(args: string[]): RunningCli {
    return this.spawn(process.execPath, [binPath, 'agent', ...args]);
  }

  /** Writes /etc/netns/<ns>/resolv.conf, which `ip netns exec` bind-mounts over /etc/resolv.conf. */
  writeResolvConf(nameserver: string, search: string[] = []): void {
    const dir = `/etc/netns/${this.name}`;
    fs.mkdirSync(dir, { recursive: true });
    const lines = [`nameserver ${nameserver}`];
    if (search.length > 0) lines.push(`search ${search.join(' ')}`);
    fs.writeFileSync(path.join(dir, 'resolv.conf'), `${lines.join('\n')}\n`);
  }

  /** `curl -s` from inside the namespace; resolves with the body ('' and the code on failure). */
  async curl(url: string, maxTimeS = 3): Promise<ExecResult> {
    return this.exec('curl', ['-s', '--max-time', String(maxTimeS), url]);
  }

  /** Sends `data` to a TCP ip:port with socat (half-closing after it) and returns what came back. */
  async tcp(ip: string, port: number, data: string): Promise<ExecResult> {
    return this.exec('socat', ['-t', '2', '-T', '3', '-', `TCP:${ip}:${port}`], { input: data });
  }

  /** Kills what runs here and deletes the namespace and its /etc/netns folder. Never throws. */
  async destroy(): Promise<void> {
    const exits = [...this.children].map(
      (c) =>
        new Promise<void>((resolve) =>
          c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('close', () => resolve()),
        ),
    );
    for (const c of this.children) c.kill('SIGKILL');
    await Promise.all(exits);
    await sh('ip', ['netns', 'del', this.name]).catch(() => {});
    fs.rmSync(`/etc/netns/${this.name}`, { recursive: true, force: true });
  }
}

/** Creates a namespace with loopback up. */
export async function createNetns(tag: string): Promise<Netns> {
  const ns = new Netns(uniqueName(tag));
  await sh('ip', ['netns', 'add', ns.name]);
  await ns.run('ip', 'link', 'set', 'lo', 'up');
  return ns;
}

/** A pod: its namespace and its address on the node's bridge. */
export interface Pod {
  name: string;
  ns: Netns;
  ip: string;
}

/** Options of a node + pods topology. */
export interface TopologyOptions {
  /** Short tag (≤ 4 chars) used in names. */
  tag: string;
  /** Number of pod namespaces. */
  pods: number;
  /** Service CIDR routed to the bridge in the node ns (OUTPUT nat only sees routable VIPs). */
  serviceCidr?: string;
}

/** Node namespace with bridge 10.244.0.1/24 and pods 10.244.0.(10+i) behind veth pairs. */
export class Topology {
  readonly bridgeIp = '10.244.0.1';
  private readonly all: Netns[] = [];

  private constructor(
    readonly node: Netns,
    readonly pods: Pod[],
  ) {
    this.all = [node, ...pods.map((p) => p.ns)];
  }

  /** Builds the topology; on any failure, tears down what was built and rethrows. */
  static async create(options: TopologyOptions): Promise<Topology> {
    const made: Netns[] = [];
    try {
      const node = await createNetns(`${options.tag}n`);
      made.push(node);
      await node.run('ip', 'link', 'add', 'br0', 'type', 'bridge');
      await node.run('ip', 'addr', 'add', '10.244.0.1/24', 'dev', 'br0');
      await node.run('ip', 'link', 'set', 'br0', 'up');
      await node.run('ip', 'route', 'add', options.serviceCidr ?? '10.96.0.0/12', 'dev', 'br0');
      // Pods reach ClusterIPs through the node: their PREROUTING redirect needs forwarding on.
      await node.run('sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
      const pods: Pod[] = [];
      for (let i = 0; i < options.pods; i++) {
        const ns = await createNetns(`${options.tag}p`);
        made.push(ns);
        const ip = `10.244.0.${10 + i}`;
        const hostSide = `veth${i}`;
        await node.run(
          'ip',
          'link',
          'add',
          hostSide,
          'type',
          'veth',
          'peer',
          'name',
          'eth0',
          'netns',
          ns.name,
        );
        await node.run('ip', 'link', 'set', hostSide, 'master', 'br0');
        await node.run('ip', 'link', 'set', hostSide, 'up');
        await ns.run('ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0');
        await ns.run('ip', 'link', 'set', 'eth0', 'up');
        await ns.run('ip', 'route', 'add', 'default', 'via', '10.244.0.1');
        pods.push({ name: `pod-${i}`, ns, ip });
      }
      return new Topology(node, pods);
    } catch (err) {
      await Promise.all(made.map((ns) => ns.destroy()));
      throw err;
    }
  }

  /** Tears down every namespace (and what runs in it). Never throws. */
  async destroy(): Promise<void> {
    await Promise.all(this.all.map((ns) => ns.destroy()));
  }
}
