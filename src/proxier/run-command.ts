// Runs the external tools the interceptors drive (iptables-restore, nft, ...) with a payload on
// stdin: one process per transaction, never one per rule.
import { spawn } from 'node:child_process';
import { EdgemeshError, ErrorCode } from '../errors.ts';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Prefix put in front of every command, e.g. `['ip', 'netns', 'exec', 'ns1']` in tests. */
export type CommandPrefix = readonly string[];

/** Runs `cmd args` (after `prefix`), feeding `input`; resolves with the exit code (never throws on code != 0). */
export function runCommand(
  prefix: CommandPrefix,
  cmd: string,
  args: readonly string[],
  input?: string,
): Promise<CommandResult> {
  const argv = [...prefix, cmd, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new EdgemeshError(ErrorCode.COMMAND, `${argv[0]}: cannot run: ${e.message}`, {
          cause: e,
          syscall: e.syscall,
          errno: e.errno,
        }),
      ),
    );
    // EPIPE when the tool exits before reading all of stdin is reported through its exit code.
    child.stdin.on('error', () => {});
    child.on('close', (code) =>
      resolve({
        code: code ?? 1,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      }),
    );
    child.stdin.end(input ?? '');
  });
}

/** Like runCommand, but a non-zero exit becomes an EDGEMESH_ERR_INTERCEPT error naming the tool. */
export async function mustRun(
  prefix: CommandPrefix,
  cmd: string,
  args: readonly string[],
  input?: string,
): Promise<string> {
  const r = await runCommand(prefix, cmd, args, input);
  if (r.code !== 0) {
    throw new EdgemeshError(
      ErrorCode.INTERCEPT,
      `${cmd} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return r.stdout;
}

/**
 * True when `cmd versionArg` can be executed (found on PATH). With `exitZero` it must also exit 0:
 * behind a prefix (`ip netns exec`, `env`) a missing tool is a non-zero exit of the prefix command,
 * not a spawn error.
 */
export async function haveCommand(
  prefix: CommandPrefix,
  cmd: string,
  versionArg = '--version',
  exitZero = false,
): Promise<boolean> {
  try {
    const r = await runCommand(prefix, cmd, [versionArg]);
    return !exitZero || r.code === 0;
  } catch {
    return false;
  }
}
