// One way to run a benchmark peer or agent: started, awaited until ready, and stopped with its
// whole process tree (also on Ctrl-C through the cleanup registry), so no run leaves processes.
import { startCli } from '../../test/helpers/cli.ts';
import { onCleanup } from './cleanup.ts';
import { delay } from './exec.ts';
import { processTree } from './proc-stats.ts';

/** A supervised process tree. */
export interface Supervised {
  pid: number;
  output(): string;
  stop(): Promise<void>;
}

/** Starts argv, resolves once `ready()` does; stops the tree (SIGTERM, then SIGKILL) on failure. */
export async function superviseTree(argv: string[], ready: () => Promise<void>): Promise<Supervised> {
  const proc = startCli([], { command: argv });
  const pid = proc.child.pid!;
  const kill = (sig: NodeJS.Signals) => {
    for (const p of processTree(pid).reverse()) {
      try {
        process.kill(p, sig);
      } catch {
        // already gone
      }
    }
  };
  const unregister = onCleanup(() => kill('SIGKILL'));
  const exited = new Promise<void>((resolve) => proc.child.once('close', () => resolve()));
  const stop = async () => {
    kill('SIGTERM');
    const timedOut = await Promise.race([exited.then(() => false), delay(3_000).then(() => true)]);
    if (timedOut) kill('SIGKILL');
    // Children of a forking proxy may outlive the parent for a moment; never leave them behind.
    kill('SIGKILL');
    await exited;
    unregister();
  };
  try {
    await Promise.race([
      ready(),
      exited.then(() => {
        throw new Error(`${argv[0]} exited during start-up: ${proc.output().trim().slice(-800)}`);
      }),
    ]);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid, output: proc.output, stop };
}
