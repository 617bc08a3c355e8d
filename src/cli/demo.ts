// `edgemesh demo` (what `npm start` runs): the example workloads as pods and a real agent in
// front of them (see demo/run-demo.ts). Two helpers the printed commands use are subcommands:
// `demo pod` (one built-in workload, run inside a pod namespace) and `demo ws` (a WebSocket client).
import { UsageError } from '../errors.ts';
import { parseHostPort } from '../util/net.ts';
import { type FlagSpecs, helpText, parseFlags } from './args.ts';
import { startWorkload, type WorkloadKind } from './demo/servers.ts';

const demoFlags: FlagSpecs = {
  prefix: {
    type: 'string',
    value: 'NAME',
    help: 'prefix of the network namespaces and devices it creates (default emdemo; root only)',
  },
  intercept: {
    type: 'string',
    value: 'MODE',
    help: "the agent's --intercept (default: the agent's auto; none without root)",
  },
  dataplane: { type: 'string', value: 'MODE', help: "the agent's --dataplane (default auto)" },
  loopback: {
    type: 'boolean',
    help: 'the variant without root (loopback pods, --intercept none), even when root',
  },
  'no-check': { type: 'boolean', help: 'do not try the printed commands once before showing them' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

export const demoHelp = helpText(
  'edgemesh demo [options]',
  'Runs the example workloads (examples/) as pods with built-in servers (hostname over HTTP, TCP echo,\n' +
    'WebSocket echo) and an agent in front of them, prints the services, the path in use and commands to\n' +
    'paste, and removes everything on Ctrl-C. As root: pods and the agent in network namespaces with the\n' +
    'best available interception; otherwise: pods on loopback addresses and --intercept none.\n\n' +
    'Helpers used by the printed commands:\n' +
    '  edgemesh demo ws URL TEXT               send TEXT over a WebSocket, print the first reply\n' +
    '  edgemesh demo pod KIND NAME HOST:PORT   run one workload (hostname | tcp-echo | websocket)',
  demoFlags,
);

export async function demoCommand(argv: string[], out: (s: string) => void): Promise<number> {
  if (argv[0] === 'ws') return wsClient(argv.slice(1), out);
  if (argv[0] === 'pod') return podServer(argv.slice(1), out);
  const flags = parseFlags('demo', argv, demoFlags);
  if (flags.help) {
    out(demoHelp);
    return 0;
  }
  const prefix = (flags.prefix as string | undefined) ?? 'emdemo';
  if (!/^[a-z][a-z0-9]{0,10}$/.test(prefix))
    throw new UsageError(
      `--prefix: expected 1-11 lowercase letters/digits starting with a letter, got '${prefix}'`,
    );
  const { runDemo } = await import('./demo/run-demo.ts');
  return runDemo({
    prefix,
    root: process.getuid?.() === 0 && !flags.loopback,
    intercept: flags.intercept as string | undefined,
    dataplane: flags.dataplane as string | undefined,
    check: !flags['no-check'],
    out,
  });
}

async function wsClient(args: string[], out: (s: string) => void): Promise<number> {
  const [url, text] = args;
  if (!url || text === undefined || !/^wss?:\/\//.test(url))
    throw new UsageError('usage: edgemesh demo ws ws://HOST:PORT TEXT');
  const { WebSocket } = await import('ws');
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { handshakeTimeout: 5000 });
    const timer = setTimeout(() => {
      process.stderr.write(`edgemesh demo ws: no reply from ${url} within 5 s\n`);
      ws.terminate();
      resolve(1);
    }, 5000);
    ws.on('open', () => ws.send(text));
    ws.on('message', (data) => {
      clearTimeout(timer);
      out(`${data.toString()}\n`);
      ws.close();
      resolve(0);
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      process.stderr.write(`edgemesh demo ws: ${url}: ${err.message}\n`);
      resolve(1);
    });
  });
}

async function podServer(args: string[], out: (s: string) => void): Promise<number> {
  const [kind, name, listen] = args;
  const hp = listen ? parseHostPort(listen) : undefined;
  if (!(kind === 'hostname' || kind === 'tcp-echo' || kind === 'websocket') || !name || !hp)
    throw new UsageError('usage: edgemesh demo pod hostname|tcp-echo|websocket NAME HOST:PORT');
  const server = await startWorkload(kind as WorkloadKind, name, hp.host, hp.port);
  out(`${name}: ${kind} listening on ${hp.host}:${server.port}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await server.close();
  return 0;
}
