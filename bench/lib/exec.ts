// Runs the short-lived commands of the benchmark suite (ip, tc, iperf3, the load generator), in
// the caller's namespace or inside a named network namespace, always with a time limit.
import { execFile } from 'node:child_process';
import { onCleanup } from './cleanup.ts';

/** What a finished command printed. */
export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Where a command runs: a network namespace name (`ip netns exec NS`), or a full argv prefix (e.g.
 * one that first joins a cgroup, then the namespace), or undefined for here.
 */
export type Where = string | readonly string[] | undefined;

/** argv wrapped so it runs at `where`. */
export function inNs(where: Where, argv: string[]): string[] {
  if (Array.isArray(where)) return [...where, ...argv];
  return where ? ['ip', 'netns', 'exec', where as string, ...argv] : argv;
}

/** Runs argv to completion (killed after timeoutMs); never rejects on a non-zero exit. */
export function exec(argv: string[], options: { ns?: Where; timeoutMs?: number } = {}): Promise<ExecResult> {
  const full = inNs(options.ns, argv);
  return new Promise((resolve) => {
    // A client still running when the user hits Ctrl-C is killed with everything else.
    let unregister = () => {};
    const child = execFile(
      full[0]!,
      full.slice(1),
      { timeout: options.timeoutMs ?? 30_000, killSignal: 'SIGKILL', maxBuffer: 256 * 1024 * 1024 },
      (err, stdout, stderr) => {
        unregister();
        const code = err ? (typeof err.code === 'number' ? err.code : 124) : 0;
        resolve({
          code,
          stdout: String(stdout),
          stderr: String(stderr) || (err && !stderr ? err.message : ''),
        });
      },
    );
    unregister = onCleanup(() => child.kill('SIGKILL'));
  });
}

/** Runs argv and throws (with its stderr) unless it exits 0. */
export async function execOk(
  argv: string[],
  options: { ns?: Where; timeoutMs?: number } = {},
): Promise<string> {
  const r = await exec(argv, options);
  if (r.code !== 0) {
    throw new Error(
      `${inNs(options.ns, argv).join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return r.stdout;
}

/** True when `name` is an executable on PATH. */
export async function haveCommand(name: string): Promise<boolean> {
  return (await exec(['sh', '-c', `command -v ${name}`], { timeoutMs: 5_000 })).code === 0;
}

/** Resolves after ms milliseconds (only for polling external processes that cannot signal us). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until something listens on TCP `port` inside `ns` (via ss), or throws after timeoutMs. */
export async function waitListening(ns: string | undefined, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await exec(['ss', '-Hltn', `sport = :${port}`], { ns, timeoutMs: 5_000 });
    if (r.code === 0 && r.stdout.trim() !== '') return;
    if (Date.now() > deadline)
      throw new Error(`nothing listens on port ${port} in ${ns ?? 'the host'} after ${timeoutMs} ms`);
    await delay(30);
  }
}
