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

/**
 * A named node's agent in the multi-node (tunnel) e2e tests: `--config dir/<yaml> --manifests
 * dir/manifests --no-dns --node-name <node> --state-dir dir/state-<state>` (state defaults to the
 * node name; give another when two agents claim the same name).
 */
export function nodeAgentArgs(dir: string, node: string, yaml: string, state = node): string[] {
  return [
    '--config',
    path.join(dir, yaml),
    '--manifests',
    path.join(dir, 'manifests'),
    '--no-dns',
    '--node-name',
    node,
    '--state-dir',
    path.join(dir, `state-${state}`),
  ];
}
