// `edgemesh demo`: runs the example workloads as pods and a real agent in front of them, prints
// the services, the path in use and commands to paste, checks those commands once, and removes
// everything on Ctrl-C/SIGTERM. As root the pods and the agent live in network namespaces; without
// root the pods listen on loopback addresses and the agent runs with --intercept none.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { awaitTermination } from '../../util/lifecycle.ts';
import { type ProcessResult, runProcess } from '../../util/run-process.ts';
import type { AgentStatus } from '../status.ts';
import { formatStatus } from '../status.ts';
import { type DemoPod, demoPods, podManifests } from './pods.ts';
import { startWorkload, type WorkloadServer } from './servers.ts';
import { DemoTopology } from './topology.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The `edgemesh` executable and the examples folder, wherever the command is run from. */
export const demoBinPath = path.resolve(here, '../bin.js');
export const examplesDir = path.resolve(here, '../../../examples');

const DNS_IP = '169.254.96.16';
const CLUSTER_DOMAIN = 'cluster.local';
/** Services the demo waits for (each with endpoints) before it prints the commands. */
const EXPECTED_SERVICES = [
  'edgemesh-test/hostname-svc',
  'edgemesh-test/hostname-lb-svc',
  'edgemesh-test/tcp-echo-service',
  'edgemesh-test/ws-svc',
];

/** Options of one demo run. */
export interface DemoOptions {
  prefix: string;
  root: boolean;
  intercept?: string;
  dataplane?: string;
  /** Run the printed commands once and show whether each worked. */
  check: boolean;
  out: (s: string) => void;
}

/** A command the demo prints, with a substring its output must contain. */
export interface DemoCommand {
  title: string;
  cmd: string;
  expect: string;
}

/** Runs the demo until SIGINT/SIGTERM; resolves with the exit code. */
export async function runDemo(opts: DemoOptions): Promise<number> {
  const demo = new Demo(opts);
  const termination = awaitTermination();
  const signal: Promise<string> = termination.signal;
  try {
    const starting = demo.start();
    const started = await Promise.race([starting.then(() => 'started'), signal]);
    if (started !== 'started') {
      // Ctrl-C during start-up: let start() stop at its next step, then clean up what it made.
      demo.abort();
      await starting.catch(() => {});
      return 0;
    }
    const how = await Promise.race([signal, demo.agentExited.then(() => 'agent-exit')]);
    if (how === 'agent-exit') {
      opts.out(`\nthe agent exited unexpectedly; its log:\n${demo.agentLogTail()}\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    opts.out(`edgemesh demo: ${(err as Error).message}\n`);
    const tail = demo.agentLogTail();
    if (tail) opts.out(`agent log (last lines):\n${tail}\n`);
    return 1;
  } finally {
    opts.out('\nstopping: agent, pods, namespaces ...\n');
    await demo.stop();
    opts.out('demo stopped; everything it created is removed.\n');
    termination.dispose();
  }
}

class Demo {
  private readonly tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgemesh-demo-'));
  private readonly topology?: DemoTopology;
  private readonly children = new Set<ChildProcess>();
  private readonly servers: WorkloadServer[] = [];
  private agent?: ChildProcess;
  private metricsListen = '127.0.0.1:10551';
  /** Loopback variant only: a free proxy port, so a real agent on this host does not collide. */
  private proxyPort?: number;
  private aborted = false;
  private resolveExit: () => void = () => {};
  /** Resolves if the agent process exits on its own. */
  readonly agentExited = new Promise<void>((resolve) => {
    this.resolveExit = resolve;
  });

  constructor(private readonly opts: DemoOptions) {
    if (opts.root) this.topology = new DemoTopology(opts.prefix);
  }

  private get agentLog(): string {
    return path.join(this.tmp, 'agent.log');
  }

  agentLogTail(lines = 20): string {
    try {
      return fs.readFileSync(this.agentLog, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** Makes start() stop at its next step (a signal arrived while starting). */
  abort(): void {
    this.aborted = true;
  }

  private step(): void {
    if (this.aborted) throw new Error('interrupted');
  }

  /** The agent's warning and error messages so far (pino JSON lines, level >= 40), at most 8. */
  private agentWarnings(): string[] {
    let text = '';
    try {
      text = fs.readFileSync(this.agentLog, 'utf8');
    } catch {
      return [];
    }
    const out: string[] = [];
    for (const line of text.split('\n')) {
      try {
        const rec = JSON.parse(line) as { level?: number; msg?: string; reason?: string };
        if ((rec.level ?? 0) >= 40 && rec.msg) out.push(rec.reason ? `${rec.msg} (${rec.reason})` : rec.msg);
      } catch {
        // Not a log record (e.g. a native library's own output).
      }
    }
    return out.slice(0, 8);
  }

  async start(): Promise<void> {
    const { out } = this.opts;
    const topo = this.topology;
    const pods = demoPods(topo ? (i) => topo.podIP(i) : (i) => `127.0.180.${10 + i}`);
    if (topo) {
      await topo.destroy(); // leftovers of a run that was killed
      await topo.createNode(DNS_IP, CLUSTER_DOMAIN);
      for (const [i, p] of pods.entries()) {
        this.step();
        await topo.createPod(p.name, i, p.ip);
      }
      this.step();
      await Promise.all(pods.map((p) => this.startPodProcess(p, topo.podNs(p.name))));
    } else {
      for (const p of pods) this.servers.push(await startWorkload(p.kind, p.name, p.ip, p.port));
      this.metricsListen = `127.0.0.1:${await freePortOr(10551)}`;
      this.proxyPort = await freePortOr(40001);
    }
    const podsDir = path.join(this.tmp, 'pods');
    fs.mkdirSync(podsDir);
    const nodeName = topo ? topo.nodeNs : os.hostname();
    fs.writeFileSync(
      path.join(podsDir, 'pods.yaml'),
      podManifests(pods, nodeName, topo ? topo.nodeIP : '127.0.0.1'),
    );

    this.step();
    this.startAgent(podsDir, nodeName);
    const status = await this.waitForServices();
    this.printSummary(status, pods);
    const commands = this.commands(status, pods);
    out('\nTry it (paste into another terminal):\n');
    for (const c of commands) {
      this.step();
      let verdict = '';
      if (this.opts.check) {
        const problem = await checkCommand(c);
        verdict = problem === undefined ? '  [works]' : `  [does not work yet: ${problem}]`;
      }
      out(`\n  # ${c.title}${verdict}\n  $ ${c.cmd}\n    # expect: ${c.expect}\n`);
    }
    out('\nPress Ctrl-C to stop; everything the demo created is removed.\n');
  }

  private startPodProcess(p: DemoPod, ns: string): Promise<void> {
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        demoBinPath,
        'demo',
        'pod',
        p.kind,
        p.name,
        `0.0.0.0:${p.port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.children.add(child);
    child.on('close', () => this.children.delete(child));
    let output = '';
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`pod ${p.name} did not start within 60 s:\n${output}`)),
        60_000,
      );
      const onData = (d: Buffer) => {
        output += d;
        if (output.includes('listening')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.on('close', () => {
        clearTimeout(timer);
        reject(new Error(`pod ${p.name} exited:\n${output}`));
      });
    });
  }

  private startAgent(podsDir: string, nodeName: string): void {
    const args = [
      demoBinPath,
      'agent',
      '--manifests',
      examplesDir,
      '--manifests',
      podsDir,
      '--state-dir',
      path.join(this.tmp, 'state'),
      '--node-name',
      nodeName,
      '--metrics-listen',
      this.metricsListen,
    ];
    if (this.topology) {
      if (this.opts.intercept) args.push('--intercept', this.opts.intercept);
    } else args.push('--intercept', 'none', '--no-dns', '--proxy-port', String(this.proxyPort));
    if (this.opts.dataplane) args.push('--dataplane', this.opts.dataplane);
    const log = fs.openSync(this.agentLog, 'a');
    const argv = this.topology
      ? ['ip', 'netns', 'exec', this.topology.nodeNs, process.execPath, ...args]
      : [process.execPath, ...args];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    this.agent = child;
    child.on('close', () => this.resolveExit());
  }

  /** Polls /status until every example service has endpoints (or 60 s pass). */
  private async waitForServices(): Promise<AgentStatus | undefined> {
    const deadline = Date.now() + 60_000;
    let last: AgentStatus | undefined;
    let exited = false;
    void this.agentExited.then(() => {
      exited = true;
    });
    while (Date.now() < deadline && !exited) {
      this.step();
      last = (await this.fetchStatus()) ?? last;
      const ready = EXPECTED_SERVICES.every((key) =>
        last?.services.some((s) => s.key === key && s.ports.every((p) => p.endpoints.length > 0)),
      );
      if (ready) return last;
      await new Promise((r) => setTimeout(r, 250));
    }
    if (exited) throw new Error('the agent exited during start-up');
    this.opts.out(
      `warning: after 60 s the agent does not serve all example services with endpoints (log: ${this.agentLog})\n`,
    );
    return last;
  }

  private async fetchStatus(): Promise<AgentStatus | undefined> {
    const url = `http://${this.metricsListen}/status`;
    try {
      if (!this.topology) {
        const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
        return res.ok ? ((await res.json()) as AgentStatus) : undefined;
      }
      // The agent's listener is on the node namespace's loopback: ask from inside it.
      const r = await run(`ip netns exec ${this.topology.nodeNs} curl -sf --max-time 2 ${url}`, 4000);
      return r.code === 0 ? (JSON.parse(r.stdout) as AgentStatus) : undefined;
    } catch {
      return undefined;
    }
  }

  private printSummary(status: AgentStatus | undefined, pods: DemoPod[]): void {
    const { out } = this.opts;
    const topo = this.topology;
    out('\nedgemesh demo\n=============\n');
    if (topo)
      out(
        `The agent runs in network namespace ${topo.nodeNs} (an edge node, bridge ${topo.bridge} ${topo.nodeIP}/24);\n` +
          `each pod runs in its own namespace (${topo.podNs('<pod>')}) with a built-in server.\n`,
      );
    else
      out(
        'Not root: the pods are built-in servers on loopback addresses and the agent runs with\n' +
          '--intercept none, so ClusterIP traffic is NOT intercepted (run as root for the full demo).\n',
      );
    out(`agent log: ${this.agentLog}\n`);
    const warnings = this.agentWarnings();
    if (warnings.length > 0) out(`agent warnings:\n${warnings.map((w) => `  ${w}\n`).join('')}`);
    out('\npods:\n');
    for (const p of pods) out(`  ${p.name.padEnd(20)} ${p.ip}:${p.port}  (${p.kind})\n`);
    if (status) {
      out(`\nservices and path in use (edgemesh status):\n`);
      // Counters are all zero at this point; `edgemesh status` shows them later.
      out(formatStatus({ ...status, counters: undefined }).replace(/^/gm, '  '));
    }
  }

  /** The commands to paste, built from the services the agent serves. */
  private commands(status: AgentStatus | undefined, pods: DemoPod[]): DemoCommand[] {
    const clusterIP = (name: string) =>
      status?.services.find((s) => s.key === `edgemesh-test/${name}`)?.clusterIPs[0] ?? '<none>';
    const pod = (name: string) => pods.find((p) => p.name === name)!;
    const bin = `node ${demoBinPath}`;
    const topo = this.topology;
    if (!topo) {
      const h = pod('hostname-lb-edge-0');
      const t = pod('tcp-echo-edge-0');
      const w = pod('websocket-edge-0');
      return [
        { title: 'a hostname pod, directly', cmd: `curl -s ${h.ip}:${h.port}`, expect: h.name },
        {
          title: 'the TCP echo pod, directly',
          cmd: `echo 'hello edgemesh' | socat -t 2 - TCP:${t.ip}:${t.port}`,
          expect: 'hello edgemesh',
        },
        {
          title: 'the WebSocket echo pod, directly',
          cmd: `${bin} demo ws ws://${w.ip}:${w.port} 'hello websocket'`,
          expect: 'hello websocket',
        },
        {
          title: 'what the agent serves',
          cmd: `${bin} status --metrics-listen ${this.metricsListen}`,
          expect: 'edgemesh-test/hostname-lb-svc',
        },
      ];
    }
    const inNode = `ip netns exec ${topo.nodeNs}`;
    const inPod = `ip netns exec ${topo.podNs('websocket-edge-0')}`;
    const lb = pod('hostname-lb-edge-1');
    return [
      {
        title: 'HTTP by name (the agent resolves it)',
        cmd: `${inNode} curl -s --max-time 5 hostname-svc.edgemesh-test:12345`,
        expect: 'hostname-edge-0',
      },
      {
        title: 'load balancing by name: repeat it, the answering pod changes (DestinationRule RANDOM)',
        cmd: `${inNode} curl -s --max-time 5 hostname-lb-svc.edgemesh-test:12345`,
        expect: 'hostname-lb-edge-',
      },
      {
        title: 'TCP echo by name',
        cmd: `echo 'hello edgemesh' | ${inNode} socat -t 2 - TCP:tcp-echo-service.edgemesh-test:2701`,
        expect: 'hello edgemesh',
      },
      {
        title: 'WebSocket echo by name',
        cmd: `${inNode} ${bin} demo ws ws://ws-svc.edgemesh-test:12348 'hello websocket'`,
        expect: 'hello websocket',
      },
      {
        title: 'HTTP by ClusterIP',
        cmd: `${inNode} curl -s --max-time 5 ${clusterIP('hostname-lb-svc')}:12345`,
        expect: 'hostname-lb-edge-',
      },
      {
        title: 'TCP echo by ClusterIP',
        cmd: `echo 'hello edgemesh' | ${inNode} socat -t 2 - TCP:${clusterIP('tcp-echo-service')}:2701`,
        expect: 'hello edgemesh',
      },
      {
        title:
          'from another pod (traffic enters the node over veth: PREROUTING redirect, or sk_lookup with ebpf)',
        cmd: `${inPod} curl -s --max-time 5 ${clusterIP('hostname-svc')}:12345`,
        expect: 'hostname-edge-0',
      },
      {
        title: 'from another pod by name (pods use the agent as their DNS server)',
        cmd: `${inPod} curl -s --max-time 5 hostname-svc.edgemesh-test:12345`,
        expect: 'hostname-edge-0',
      },
      {
        title: 'a pod directly (no proxy)',
        cmd: `${inNode} curl -s --max-time 5 ${lb.ip}:${lb.port}`,
        expect: lb.name,
      },
      {
        title: 'what the agent serves',
        cmd: `${inNode} ${bin} status`,
        expect: 'edgemesh-test/hostname-lb-svc',
      },
    ];
  }

  async stop(): Promise<void> {
    const agent = this.agent;
    if (agent && agent.exitCode === null && agent.signalCode === null) {
      // SIGTERM lets the agent remove exactly the rules it installed before the namespace goes.
      agent.kill('SIGTERM');
      const timer = setTimeout(() => agent.kill('SIGKILL'), 10_000);
      await this.agentExited;
      clearTimeout(timer);
    }
    for (const c of this.children) c.kill('SIGTERM');
    await Promise.all(
      [...this.children].map(
        (c) =>
          new Promise<void>((resolve) => (c.exitCode !== null ? resolve() : c.on('close', () => resolve()))),
      ),
    );
    await Promise.all(this.servers.map((s) => s.close()));
    await this.topology?.destroy();
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** Runs a shell command line; resolves with its exit code and output (never rejects). */
export function run(cmd: string, timeoutMs = 10_000): Promise<ProcessResult> {
  return runProcess(['sh', '-c', cmd], { timeoutMs });
}

/** Runs a printed command once; undefined when it works, else a short reason. */
async function checkCommand(c: DemoCommand): Promise<string | undefined> {
  const r = await run(c.cmd, 8000);
  if (r.code === 0 && r.stdout.includes(c.expect)) return undefined;
  const detail = (r.stderr.trim() || r.stdout.trim()).split('\n')[0]?.slice(0, 120);
  return `exit ${r.code}${detail ? `, ${detail}` : ''}`;
}

async function freePortOr(preferred: number): Promise<number> {
  const tryListen = (port: number) =>
    new Promise<number | undefined>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(undefined));
      s.listen(port, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
  return (await tryListen(preferred)) ?? (await tryListen(0))!;
}
