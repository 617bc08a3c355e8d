// The e2e/ebpf-client.mjs `transfer` mode seen from a test: the client sends half its bytes, says
// "half" and waits for a "go" line, so a test can restart the agent with the connection in flight.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';

/** A running transfer client: `half` resolves once half is through; `finish()` sends "go" and resolves with its JSON result. */
export interface PausedTransfer {
  child: ChildProcessWithoutNullStreams;
  half: Promise<void>;
  finish(): Promise<unknown>;
}

/** Spawns `argv` (a command line ending in `transfer IP PORT MB`); `half` rejects after 15 s without "half". */
export function startPausedTransfer(argv: string[]): PausedTransfer {
  const [cmd, ...rest] = argv;
  const child = spawn(cmd!, rest);
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  const done = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const half = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "half" from the client: ${out}`)), 15_000);
    child.stdout.on('data', () => {
      if (out.includes('half')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return {
    child,
    half,
    async finish() {
      child.stdin.write('go\n');
      await done;
      return JSON.parse(out.split('\n').find((l) => l.startsWith('{')) ?? '{}');
    },
  };
}
