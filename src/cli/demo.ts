// `edgemesh demo` (what `npm start` runs): the agent on the example manifests. The full demo
// (example pods in network namespaces, printed commands) grows here as the data paths land.
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentCommand } from './agent.ts';

const examplesDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../examples');

export async function demoCommand(argv: string[], out: (s: string) => void): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    out('Usage: edgemesh demo\n\nRuns the agent on the example manifests in examples/ until Ctrl-C.\n');
    return 0;
  }
  const stateDir = path.join(os.tmpdir(), 'edgemesh-demo-state');
  return agentCommand(
    ['--manifests', examplesDir, '--intercept', 'none', '--no-dns', '--state-dir', stateDir, ...argv],
    out,
  );
}
