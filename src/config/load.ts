// Loads and validates a YAML config file against the schema, reporting every problem as
// `file:line: key.path: expected ..., got ...` (ConfigError, exit code 2 in the CLI).
import fs from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import { ConfigError } from '../errors.ts';
import { defaultConfig } from './defaults.ts';
import { configSchema, type Schema } from './schema.ts';
import type { EdgemeshConfig } from './types.ts';

/** Reads, validates and merges a config file over the defaults. Throws ConfigError. */
export function loadConfigFile(file: string): EdgemeshConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(file, undefined, '', `cannot read config file (${code ?? String(err)})`);
  }
  return parseConfigText(text, file);
}

/** Validates YAML text as a config (file names the source in messages). Throws ConfigError. */
export function parseConfigText(text: string, file: string): EdgemeshConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = lineCounter.linePos(e.pos[0]).line;
    throw new ConfigError(file, line, '', `invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const config = defaultConfig();
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) return config;
  const lineOf = (node: Node | null | undefined): number | undefined =>
    node?.range ? lineCounter.linePos(node.range[0]).line : undefined;
  const value = validate(doc.contents as Node, configSchema, '', { file, lineOf });
  mergeInto(config as unknown as Record<string, unknown>, value as Record<string, unknown>);
  return config;
}

interface Ctx {
  file: string;
  lineOf: (node: Node | null | undefined) => number | undefined;
}

function describe(node: Node | null): string {
  if (node === null) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return 'null';
    if (typeof v === 'string') return `string ${JSON.stringify(v)}`;
    if (typeof v === 'number') return `number ${v}`;
    if (typeof v === 'boolean') return `boolean ${v}`;
  }
  return 'an unsupported value';
}

function fail(ctx: Ctx, node: Node | null, keyPath: string, expected: string): never {
  throw new ConfigError(ctx.file, ctx.lineOf(node), keyPath, `expected ${expected}, got ${describe(node)}`);
}

/** Validates one node against its schema and returns the plain JS value. */
function validate(node: Node | null, schema: Schema, keyPath: string, ctx: Ctx): unknown {
  switch (schema.kind) {
    case 'object': {
      if (!node || !isMap(node)) return fail(ctx, node, keyPath || '(top level)', 'a mapping');
      const out: Record<string, unknown> = {};
      for (const pair of node.items) {
        const keyNode = pair.key as Node;
        const key = isScalar(keyNode) ? String(keyNode.value) : '';
        const childPath = keyPath ? `${keyPath}.${key}` : key;
        const child = schema.fields[key];
        if (!child) {
          throw new ConfigError(
            ctx.file,
            ctx.lineOf(keyNode),
            childPath,
            `unknown key; expected one of ${Object.keys(schema.fields).join(', ')}`,
          );
        }
        out[key] = validate(pair.value as Node | null, child, childPath, ctx);
      }
      return out;
    }
    case 'map': {
      if (!node || !isMap(node)) return fail(ctx, node, keyPath, 'a mapping');
      const out: Record<string, unknown> = {};
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? String((pair.key as { value: unknown }).value) : '';
        out[key] = validate(pair.value as Node | null, schema.values, `${keyPath}.${key}`, ctx);
      }
      return out;
    }
    case 'array': {
      if (!node || !isSeq(node)) return fail(ctx, node, keyPath, 'a list');
      return node.items.map((item, i) =>
        validate(item as Node | null, schema.items, `${keyPath}[${i}]`, ctx),
      );
    }
    case 'string': {
      if (!node || !isScalar(node) || typeof node.value !== 'string')
        return fail(ctx, node, keyPath, 'a string');
      const problem = schema.check?.(node.value);
      if (problem) return fail(ctx, node, keyPath, problem);
      return node.value;
    }
    case 'int': {
      if (!node || !isScalar(node) || typeof node.value !== 'number' || !Number.isInteger(node.value)) {
        return fail(ctx, node, keyPath, `an integer from ${schema.min} to ${schema.max}`);
      }
      if (node.value < schema.min || node.value > schema.max) {
        return fail(ctx, node, keyPath, `an integer from ${schema.min} to ${schema.max}`);
      }
      return node.value;
    }
    case 'bool': {
      if (!node || !isScalar(node) || typeof node.value !== 'boolean')
        return fail(ctx, node, keyPath, 'true or false');
      return node.value;
    }
    case 'enum': {
      if (!node || !isScalar(node) || typeof node.value !== 'string' || !schema.values.includes(node.value)) {
        return fail(ctx, node, keyPath, `one of ${schema.values.join(', ')}`);
      }
      return node.value;
    }
  }
}

/** Deep-merges plain objects; arrays and scalars replace. */
export function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(source)) {
    const existing = target[key];
    if (
      value !== null &&
      typeof value === 'object' &&
      !Array.isArray(value) &&
      existing !== null &&
      typeof existing === 'object' &&
      !Array.isArray(existing) &&
      key !== 'selector'
    ) {
      mergeInto(existing as Record<string, unknown>, value as Record<string, unknown>);
    } else {
      target[key] = value;
    }
  }
}
