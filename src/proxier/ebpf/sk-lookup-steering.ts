// What sk_lookup needs outside the BPF maps, in the agent's network namespace: a `local` route per
// steered VIP (sk_lookup only runs for packets delivered locally) and the proxy's listening sockets
// in edgemesh_lst_v1 (the program hands SYNs to them). Both are reconciled against the complete
// desired state on every sync and on drift repair; stop() removes the routes it added.
import { errorMessage } from '../../errors.ts';
import type { NativeBinding } from '../../native/index.ts';
import type { Logger } from '../../util/log.ts';
import { type CommandPrefix, runCommand } from '../run-command.ts';
import { VipRoutes } from '../vip-routes.ts';
import { encodeU32, MapName } from './map-layout.ts';

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

/** Keeps VIP routes and proxy listeners in line with what the BPF service map steers. */
export class SkLookupSteering {
  private ports = new Set<number>();
  private readonly routes: VipRoutes;

  constructor(private readonly opts: SkLookupSteeringOptions) {
    this.routes = new VipRoutes({
      log: opts.log,
      commandPrefix: opts.commandPrefix,
      owner: 'sk_lookup',
      // sk_lookup steers IPv4 only; IPv6 VIP routes belong to the IPv6 delegate (ipv6-delegate.ts).
      families: 'ipv4',
      consequence: 'clients outside the cgroup (pods, other hosts) are not steered to the proxy',
    });
  }

  /** Records the desired VIPs and listener ports and reconciles; true when anything had to change. */
  async sync(handle: number, vips: ReadonlySet<string>, ports: ReadonlySet<number>): Promise<boolean> {
    this.ports = new Set(ports);
    const [r, l] = await Promise.all([this.routes.sync(vips), this.reconcileListeners(handle)]);
    return r || l;
  }

  /** Re-applies the last desired state (drift repair); true when something was missing or extra. */
  reconcile(handle: number): Promise<boolean> {
    return Promise.all([this.routes.reconcile(), this.reconcileListeners(handle)]).then(([r, l]) => r || l);
  }

  /** Deletes the routes edgemesh added (other local routes, e.g. addresses on lo, are not ours). */
  clear(): Promise<void> {
    return this.routes.clear();
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
      // IPv4 only (-4): sk_lookup steers IPv4 flows, and the plane's [::] listener on the same port
      // must never be the one put into the sockhash.
      const r = await runCommand(prefix, 'ss', ['-4Htlnp', 'sport', '=', `:${port}`]);
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
