// What sk_lookup needs outside the BPF maps, in the agent's network namespace: a `local` route per
// steered VIP (sk_lookup only runs for packets delivered locally) and the proxy's listening sockets
// in edgemesh_lst_v1 (the program hands SYNs to them). Both are reconciled against the complete
// desired state on every sync and on drift repair; stop() removes the routes it added.
import net from 'node:net';
import { errorMessage } from '../../errors.ts';
import type { NativeBinding } from '../../native/index.ts';
import type { Logger } from '../../util/log.ts';
import { type CommandPrefix, runCommand } from '../run-command.ts';
import { encodeU32, MapName } from './map-layout.ts';

/** Routing protocol number that marks edgemesh's local VIP routes (`ip route show proto 228`). */
export const ROUTE_PROTO = 228;

export interface SkLookupSteeringOptions {
  log: Logger;
  binding: NativeBinding;
  /** Runs `ip`/`ss` in the namespace sk_lookup is attached to ([] = this process's). */
  commandPrefix: CommandPrefix;
}

/** The listening socket on `port` (any address) as `ss -p` shows it: owner pid and fd. */
export function parseSsListener(text: string): { pid: number; fd: number } | undefined {
  const m = /pid=(\d+),fd=(\d+)/.exec(text);
  return m ? { pid: Number(m[1]), fd: Number(m[2]) } : undefined;
}

/**
 * Addresses with a `local` /32 route in `ip -4 route show table local` output: all of them, and
 * those edgemesh added (protocol ROUTE_PROTO).
 */
export function parseLocalRoutes(text: string): { all: Set<string>; ours: Set<string> } {
  const all = new Set<string>();
  const ours = new Set<string>();
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    const ip = words[1]?.replace(/\/32$/, '');
    if (words[0] !== 'local' || !ip || !net.isIPv4(ip)) continue;
    all.add(ip);
    const proto = words.indexOf('proto');
    if (proto > 0 && words[proto + 1] === String(ROUTE_PROTO)) ours.add(ip);
  }
  return { all, ours };
}

/** Keeps VIP routes and proxy listeners in line with what the BPF service map steers. */
export class SkLookupSteering {
  private vips = new Set<string>();
  private ports = new Set<number>();

  constructor(private readonly opts: SkLookupSteeringOptions) {}

  /** Records the desired VIPs and listener ports and reconciles; true when anything had to change. */
  async sync(handle: number, vips: ReadonlySet<string>, ports: ReadonlySet<number>): Promise<boolean> {
    this.vips = new Set(vips);
    this.ports = new Set(ports);
    return this.reconcile(handle);
  }

  /** Re-applies the last desired state (drift repair); true when something was missing or extra. */
  reconcile(handle: number): Promise<boolean> {
    return Promise.all([this.reconcileRoutes(), this.reconcileListeners(handle)]).then(([r, l]) => r || l);
  }

  /** Deletes the routes edgemesh added (other local routes, e.g. addresses on lo, are not ours). */
  async clear(): Promise<void> {
    this.vips = new Set();
    await runCommand(this.opts.commandPrefix, 'ip', [
      '-4',
      'route',
      'flush',
      'table',
      'local',
      'proto',
      String(ROUTE_PROTO),
    ]).catch(() => undefined);
  }

  private async reconcileRoutes(): Promise<boolean> {
    const { commandPrefix: prefix, log } = this.opts;
    // One process per check: the agent forks this on every drift check.
    const shown = await runCommand(prefix, 'ip', ['-4', 'route', 'show', 'table', 'local']);
    const { all: present, ours: mine } = parseLocalRoutes(shown.stdout);
    // A VIP that is already local (an address on lo, someone else's route) needs nothing from us.
    const add = [...this.vips].filter((v) => !present.has(v));
    const del = [...mine].filter((v) => !this.vips.has(v));
    if (add.length === 0 && del.length === 0) return false;
    const batch = [
      ...add.map((v) => `route add local ${v}/32 dev lo table local proto ${ROUTE_PROTO}`),
      ...del.map((v) => `route del local ${v}/32 dev lo table local proto ${ROUTE_PROTO}`),
    ].join('\n');
    const r = await runCommand(prefix, 'ip', ['-force', '-batch', '-'], `${batch}\n`);
    if (r.code !== 0)
      log.warn({ stderr: r.stderr.trim() }, 'sk_lookup: some VIP routes could not be changed');
    log.debug({ added: add.length, removed: del.length }, 'sk_lookup VIP routes synced');
    return true;
  }

  private async reconcileListeners(handle: number): Promise<boolean> {
    const { binding, commandPrefix: prefix, log } = this.opts;
    let changed = false;
    const keys = binding.bpfMapKeys(handle, MapName.listeners);
    for (let off = 0; off + 4 <= keys.length; off += 4) {
      const port = keys.readUInt32LE(off);
      if (!this.ports.has(port)) {
        binding.bpfMapDelete(handle, MapName.listeners, encodeU32(port));
        changed = true;
      }
    }
    for (const port of this.ports) {
      // A listener that closed dropped out of the sockhash by itself; a live one stays.
      if (binding.bpfMapLookup(handle, MapName.listeners, encodeU32(port))) continue;
      const r = await runCommand(prefix, 'ss', ['-Htlnp', 'sport', '=', `:${port}`]);
      const owner = parseSsListener(r.stdout);
      if (!owner) {
        // The data plane may not listen yet: the next sync or repair tries again.
        log.debug({ port }, 'sk_lookup: no listener on the proxy port yet');
        continue;
      }
      try {
        binding.bpfSockmapAdd(handle, MapName.listeners, encodeU32(port), owner.pid, owner.fd);
        changed = true;
      } catch (err) {
        log.warn({ port, err: errorMessage(err) }, 'sk_lookup: cannot add the proxy listener');
      }
    }
    return changed;
  }
}
