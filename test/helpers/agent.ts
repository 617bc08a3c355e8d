// The argument list the single-node agent e2e tests start `edgemesh agent` with: config and
// manifests from a test directory, DNS off, state kept in that directory, node name node-a.
import path from 'node:path';

/** `--config dir/agent.yaml --manifests dir/manifests --intercept .. --dataplane .. --no-dns --state-dir dir/state --node-name node-a`. */
export function agentArgs(dir: string, intercept: string, dataplane: string): string[] {
  return [
    '--config',
    path.join(dir, 'agent.yaml'),
    '--manifests',
    path.join(dir, 'manifests'),
    '--intercept',
    intercept,
    '--dataplane',
    dataplane,
    '--no-dns',
    '--state-dir',
    path.join(dir, 'state'),
    '--node-name',
    'node-a',
  ];
}
