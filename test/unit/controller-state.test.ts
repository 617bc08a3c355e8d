// The persisted snapshot: round trip, atomic replacement (no temp files left), and clear
// EDGEMESH_ERR_STATE errors for unknown versions and garbage.
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ObjectStore } from '../../src/controller/object-store.ts';
import { buildTable } from '../../src/controller/snapshot-builder.ts';
import { loadState, saveState } from '../../src/controller/state-file.ts';
import { EMPTY_TABLE } from '../../src/controller/types.ts';
import { EdgemeshError } from '../../src/errors.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function table() {
  const store = new ObjectStore();
  store.upsert({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'ns1' },
    spec: { clusterIP: '10.96.0.1', ports: [{ name: 'http', port: 80 }] },
  });
  store.upsert({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'tls', namespace: 'ns1' },
    data: { a: 'b' },
  });
  return buildTable(EMPTY_TABLE, store, store.takeChanges(), true, { noProxyLabel: 'noproxy' })!;
}

describe('state file', () => {
  it('round-trips a snapshot atomically with private permissions', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'em-state-'));
    dirs.push(dir);
    const file = path.join(dir, 'nested', 'snapshot.json');
    const t = table();
    await saveState(file, t);
    await saveState(file, t); // replacing an existing file
    expect(readdirSync(path.dirname(file))).toEqual(['snapshot.json']);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const back = (await loadState(file))!;
    expect(back.services.get('ns1/web')).toEqual(t.services.get('ns1/web'));
    expect(back.secrets.get('ns1/tls')?.data).toEqual({ a: 'b' });
    expect(await loadState(path.join(dir, 'absent.json'))).toBeUndefined();
  });

  it('refuses other versions and garbage with EDGEMESH_ERR_STATE naming the file', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'em-state-'));
    dirs.push(dir);
    const cases: [string, RegExp][] = [
      ['{"format":"edgemesh-state","version":99,"services":[]}', /state version 99 is not supported/],
      ['not json', /not valid JSON/],
      ['{"format":"other"}', /not an edgemesh state file/],
      ['{"format":"edgemesh-state","version":1,"services":[{"key":1}]}', /services\[0\] is malformed/],
    ];
    for (const [text, message] of cases) {
      const file = path.join(dir, 'snapshot.json');
      writeFileSync(file, text);
      const err = await loadState(file).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EdgemeshError);
      expect((err as EdgemeshError).code).toBe('EDGEMESH_ERR_STATE');
      expect((err as Error).message).toMatch(message);
      expect((err as Error).message).toContain(file);
    }
  });
});
