// Runs a program to completion and collects its output: the one spawn-and-collect helper shared by
// the demo's command checks and the tests' CLI/netns runners.
import { spawn } from 'node:child_process';

/** Exit code (-1 when killed by a signal or not started) and collected output of one run. */
export interface ProcessResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunProcessOptions {
  /** Written to stdin, which is then closed (stdin is ignored when absent). */
  input?: string;
  /** SIGKILL after this long (default 30 s): a hung child must not hang its caller. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs `argv[0] argv[1..]` and resolves with its exit code and output. Never rejects: a program that
 * cannot be started resolves with code -1 and the spawn error as stderr, so callers have one path.
 */
export function runProcess(argv: readonly string[], options: RunProcessOptions = {}): Promise<ProcessResult> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      env: options.env ? { ...process.env, ...options.env } : process.env,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => {
      stdout += d;
    });
    child.stderr!.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: stderr + err.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    if (child.stdin) {
      // The child may exit without reading its input; EPIPE is not an error of the caller's.
      child.stdin.on('error', () => {});
      child.stdin.end(options.input);
    }
  });
}
