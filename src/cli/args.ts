// Command-line parsing on node:util parseArgs: strict (unknown flags are errors), every flag
// documented in the command's help text, values checked with a message naming the flag.
import { parseArgs } from 'node:util';
import { UsageError } from '../errors.ts';

/** One flag of a command: its parseArgs type, value name and help line. */
export interface FlagSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  /** Placeholder shown in help, e.g. FILE. */
  value?: string;
  help: string;
}

export type FlagSpecs = Record<string, FlagSpec>;

/** Parsed flags: strings (or string arrays for `multiple`) and booleans. */
export type ParsedFlags = Record<string, string | boolean | string[] | undefined>;

/** Parses argv against specs; throws UsageError naming the flag on unknown or malformed input. */
export function parseFlags(_command: string, argv: string[], specs: FlagSpecs): ParsedFlags {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = {
      type: spec.type,
      ...(spec.multiple ? { multiple: true } : {}),
      ...(spec.short ? { short: spec.short } : {}),
    };
  }
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
    if (positionals.length > 0) {
      throw new UsageError(`unexpected argument '${positionals[0]}'`);
    }
    return values as ParsedFlags;
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const message = (err as Error).message;
    throw new UsageError(message.replace(/\. To specify.*$/s, ''));
  }
}

/** Renders the help text of a command from its specs. */
export function helpText(usage: string, summary: string, specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const left = `  ${spec.short ? `-${spec.short}, ` : ''}--${name}${spec.value ? ` ${spec.value}` : ''}`;
    return `${left.padEnd(34)} ${spec.help}`;
  });
  return `Usage: ${usage}\n\n${summary}\n\nOptions:\n${rows.join('\n')}\n`;
}

/** Reads an integer flag within a range, or throws UsageError naming the flag. */
export function intFlag(flags: ParsedFlags, name: string, min: number, max: number): number | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  const text = String(raw);
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) {
    throw new UsageError(`--${name}: expected an integer from ${min} to ${max}, got '${text}'`);
  }
  return n;
}

/** Reads a flag restricted to a set of values, or throws UsageError naming the flag. */
export function enumFlag<T extends string>(
  flags: ParsedFlags,
  name: string,
  values: readonly T[],
): T | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  if (!values.includes(raw as T)) {
    throw new UsageError(`--${name}: expected one of ${values.join(', ')}, got '${String(raw)}'`);
  }
  return raw as T;
}
