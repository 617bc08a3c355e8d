// Reads the commands `edgemesh demo` prints (so the demo tests issue exactly what a user pastes).
import type { DemoCommand } from '../../src/cli/demo/run-demo.ts';

/** Runs a shell line like a user would; never rejects (the demo's own --check runner). */
export { run as runShell } from '../../src/cli/demo/run-demo.ts';

/** One printed command: its title, the shell line, and the text its output must contain. */
export type PrintedCommand = DemoCommand;

/** Parses the `# title` / `$ command` / `# expect: text` blocks of the demo's output. */
export function parseDemoCommands(output: string): PrintedCommand[] {
  const out: PrintedCommand[] = [];
  const re = /^ {2}# (.+?)(?: {2}\[.*\])?\n {2}\$ (.+)\n {4}# expect: (.+)$/gm;
  for (const m of output.matchAll(re)) out.push({ title: m[1]!, cmd: m[2]!, expect: m[3]! });
  return out;
}
