// The last good snapshot on disk, so an agent that starts while the API is unreachable still
// serves. Written atomically (temp file, fsync, rename) so a crash mid-write leaves the previous
// file intact; versioned so a future format is refused rather than misread.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { EdgemeshError, ErrorCode } from '../errors.ts';
import { arr, rec, str } from './raw.ts';
import type { KubeObject, ServiceEntry, ServiceTable } from './types.ts';

/** Format marker and version of the state file. */
export const STATE_FORMAT = 'edgemesh-state';
export const STATE_VERSION = 1;
/** The file name under --state-dir. */
export const STATE_FILE_NAME = 'snapshot.json';

interface StateDocument {
  format: typeof STATE_FORMAT;
  version: number;
  savedAt: string;
  services: ServiceEntry[];
  gateways: KubeObject[];
  virtualServices: KubeObject[];
  destinationRules: KubeObject[];
  secrets: KubeObject[];
}

/** Writes `table` to `file` atomically (mode 0600: it may hold Secrets). */
export async function saveState(file: string, table: ServiceTable): Promise<void> {
  const doc: StateDocument = {
    format: STATE_FORMAT,
    version: STATE_VERSION,
    savedAt: new Date().toISOString(),
    services: [...table.services.values()],
    gateways: [...table.gateways.values()],
    virtualServices: [...table.virtualServices.values()],
    destinationRules: [...table.destinationRules.values()],
    secrets: [...table.secrets.values()],
  };
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  const handle = await fs.open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(JSON.stringify(doc));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
}

/** Reads a state file; undefined when it does not exist, EDGEMESH_ERR_STATE when it is unusable. */
export async function loadState(file: string): Promise<ServiceTable | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new EdgemeshError(ErrorCode.STATE, `${file}: cannot read state: ${(err as Error).message}`, {
      cause: err,
    });
  }
  let doc: Record<string, unknown> | undefined;
  try {
    doc = rec(JSON.parse(text));
  } catch (err) {
    throw new EdgemeshError(ErrorCode.STATE, `${file}: not valid JSON (${(err as Error).message})`, {
      cause: err,
    });
  }
  if (!doc || doc.format !== STATE_FORMAT)
    throw new EdgemeshError(ErrorCode.STATE, `${file}: not an edgemesh state file`);
  if (doc.version !== STATE_VERSION)
    throw new EdgemeshError(
      ErrorCode.STATE,
      `${file}: state version ${String(doc.version)} is not supported (expected ${STATE_VERSION})`,
    );
  const services = new Map<string, ServiceEntry>();
  for (const [i, raw] of arr(doc.services).entries()) {
    const s = rec(raw);
    const key = str(s?.key);
    if (!s || !key || !Array.isArray(s.ports) || !Array.isArray(s.clusterIPs))
      throw new EdgemeshError(ErrorCode.STATE, `${file}: services[${i}] is malformed`);
    services.set(key, s as unknown as ServiceEntry);
  }
  const objects = (field: string): Map<string, KubeObject> => {
    const out = new Map<string, KubeObject>();
    for (const [i, raw] of arr(doc[field]).entries()) {
      const o = rec(raw);
      const meta = rec(o?.metadata);
      const name = str(meta?.name);
      if (!o || !name) throw new EdgemeshError(ErrorCode.STATE, `${file}: ${field}[${i}] is malformed`);
      out.set(`${str(meta?.namespace) ?? 'default'}/${name}`, o as unknown as KubeObject);
    }
    return out;
  };
  return Object.freeze({
    generation: 0,
    services,
    gateways: objects('gateways'),
    virtualServices: objects('virtualServices'),
    destinationRules: objects('destinationRules'),
    secrets: objects('secrets'),
  });
}
