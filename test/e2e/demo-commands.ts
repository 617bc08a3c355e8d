// Reads the commands `edgemesh demo` prints (so the demo tests issue exactly what a user pastes).
import { spawn } from 'node:child_process';

/** One printed command: its title, the shell line, and the text its output must contain. */
export interface PrintedCommand {
  title: string;
  cmd: string;
  expect: string;
}

/** Parses the `# title` / `$ command` / `# expect: text` blocks of the demo's output. */
export function parseDemoCommands(output: string): PrintedCommand[] {
  const out: PrintedCommand[] = [];
  const re = /^ {2}# (.+?)(?: {2}\[.*\])?\n {2}\$ (.+)\n {4}# expect: (.+)$/gm;
  for (const m of output.matchAll(re)) out.push({ title: m[1]!, cmd: m[2]!, expect: m[3]! });
  return out;
}

/** Runs a shell line like a user would; never rejects. */
export function runShell(
  cmd: string,
  timeoutMs = 10_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}
