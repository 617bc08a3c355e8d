// The `edgemesh` command: dispatches to agent, gateway, relay, status (and demo, bench).
import { EdgemeshError, ErrorCode } from '../errors.ts';
import { agentCommand } from './agent.ts';
import { statusCommand } from './status.ts';

type Command = (argv: string[], out: (s: string) => void) => Promise<number>;

const commands: Record<string, { summary: string; run: () => Promise<Command> }> = {
  agent: { summary: 'run the node agent (DNS, interception, proxy)', run: async () => agentCommand },
  gateway: {
    summary: 'run the ingress gateway (Istio Gateway + VirtualService)',
    run: async () => (await import('./gateway.ts')).gatewayCommand,
  },
  relay: {
    summary: 'run the cloud relay for cross-LAN traffic',
    run: async () => (await import('./relay.ts')).relayCommand,
  },
  status: { summary: 'show what a running agent serves', run: async () => statusCommand },
  demo: {
    summary: 'run the example services and an agent in front of them (npm start)',
    run: async () => (await import('./demo.ts')).demoCommand,
  },
  bench: {
    summary: 'run the benchmark suite (npm run bench)',
    run: async () => (await import('../../bench/run.ts')).benchCommand,
  },
};

/** Top-level help text. */
export function mainHelp(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `Usage: edgemesh <command> [options]\n\nCommands:\n${rows.join('\n')}\n\nRun 'edgemesh <command> --help' for the options of a command.\n`;
}

/** Runs the CLI; returns the process exit code (2 for bad usage or bad config). */
export async function main(
  argv: string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out(mainHelp());
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`edgemesh: unknown command '${name}'\n\n${mainHelp()}`);
    return 2;
  }
  try {
    return await (await command.run())(rest, out);
  } catch (err) {
    if (err instanceof EdgemeshError && (err.code === ErrorCode.USAGE || err.code === ErrorCode.CONFIG)) {
      process.stderr.write(`edgemesh ${name}: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(
      `edgemesh ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return 1;
  }
}
