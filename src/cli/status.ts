// `edgemesh status`: prints what a running agent serves, from its /status endpoint.
import type { DnsStatus } from '../dns/dns-server.ts';
import { UsageError } from '../errors.ts';
import type { RelayStatus } from '../tunnel/relay-server.ts';
import { parseHostPort } from '../util/net.ts';
import { type FlagSpecs, helpText, parseFlags } from './args.ts';

const statusFlags: FlagSpecs = {
  'metrics-listen': {
    type: 'string',
    value: 'IP:PORT',
    help: "the agent's metrics listener (default 127.0.0.1:10551)",
  },
  json: { type: 'boolean', help: 'print the raw JSON document' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

export const statusHelp = helpText(
  'edgemesh status [--metrics-listen IP:PORT] [--json]',
  'Prints the services, endpoints, interception mode, data plane and counters of a running agent\n' +
    "(or, given a relay's --metrics-listen, its agents and splice pump).",
  statusFlags,
);

/** Shape of GET /status (fields beyond these are printed by --json only). */
export interface AgentStatus {
  nodeName: string;
  generation: number;
  /** `ipv6`: whether IPv6 ClusterIPs are intercepted and how, or why not (after the proxier started). */
  intercept: { mode: string; reason?: string; ipv6?: { intercepted: boolean; detail: string } };
  dataplane: { mode: string; reason?: string };
  services: Array<{
    key: string;
    clusterIPs: string[];
    ports: Array<{ port: number; protocol: string; endpoints: string[] }>;
  }>;
  counters?: Record<string, number>;
  /** Edge tunnel (modules.edgeTunnel): relay sessions and how each peer node is reached. */
  tunnel?: {
    listen: string;
    relays: Array<{ node: string; address: string; connected: boolean }>;
    peers: Array<{ node: string; path: string; address?: string }>;
    /** Sealed streams: which pump, how many run now, how the ended ones ended. */
    sealed?: {
      pump: string;
      active: number;
      finished: number;
      failed: number;
      idleClosed: number;
      aborted: number;
    };
    /** Framed (not sealed) streams: running now, ended idle or at the stop deadline. */
    framed?: { active: number; idleClosed: number; aborted: number };
    /** UDP across the tunnel: remote endpoints, live flows by path, datagram totals. */
    datagrams?: {
      endpoints: unknown[];
      flows: { direct: number; relay: number; none: number; in: number };
      datagrams: { tx: number; rx: number; dropped: number };
    };
  };
  /** The DNS server: listen address, UDP path (native|js) and its counters; absent when DNS is off. */
  dns?: DnsStatus;
}

export async function statusCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const flags = parseFlags('status', argv, statusFlags);
  if (flags.help) {
    out(statusHelp);
    return 0;
  }
  const listen = (flags['metrics-listen'] as string | undefined) ?? '127.0.0.1:10551';
  const hp = parseHostPort(listen);
  if (!hp) throw new UsageError(`--metrics-listen: expected IP:PORT, got '${listen}'`);
  let status: AgentStatus | RelayStatus;
  try {
    const res = await fetch(`http://${listen}/status`, { signal: AbortSignal.timeout(3000) });
    status = (await res.json()) as AgentStatus;
  } catch (err) {
    process.stderr.write(`edgemesh status: no agent answering on ${listen}: ${(err as Error).message}\n`);
    return 1;
  }
  if (flags.json) {
    out(`${JSON.stringify(status, null, 2)}\n`);
    return 0;
  }
  // A relay's document has no services: it says which agents and which splice pump it has.
  if ('pump' in status && 'agents' in status) out(formatRelayStatus(status as RelayStatus));
  else out(formatStatus(status as AgentStatus));
  return 0;
}

/** Renders a relay's status document (`edgemesh status --metrics-listen <relay's>`). */
export function formatRelayStatus(s: RelayStatus): string {
  const p = s.pump;
  const lines = [
    `relay:      ${s.nodeName}`,
    `pump:       ${p.mode} (${p.reason})`,
    `streams:    ${p.active} spliced now, ${p.bytes} bytes; ended: ${p.finished} finished, ${p.failed} failed, ${p.idleClosed} idle-closed, ${p.aborted} aborted`,
  ];
  const f = s.framed;
  if (f)
    lines.push(
      `framed:     ${f.active} spliced now; ended: ${f.idleClosed} idle-closed, ${f.aborted} aborted`,
    );
  lines.push('');
  for (const a of s.agents) lines.push(`  agent ${a.node} ${a.remote} framed-streams=${a.streams}`);
  return `${lines.join('\n')}\n`;
}

/** Renders the status document as a table for people. */
export function formatStatus(s: AgentStatus): string {
  const lines = [
    `node:       ${s.nodeName}`,
    `generation: ${s.generation}`,
    `intercept:  ${s.intercept.mode}${s.intercept.reason ? ` (${s.intercept.reason})` : ''}`,
    ...(s.intercept.ipv6
      ? [
          `  ipv6:     ${s.intercept.ipv6.intercepted ? 'intercepted' : 'not intercepted'}: ${s.intercept.ipv6.detail}`,
        ]
      : []),
    `dataplane:  ${s.dataplane.mode}${s.dataplane.reason ? ` (${s.dataplane.reason})` : ''}`,
    ...(s.dns
      ? [
          `dns:        ${s.dns.listen} ${s.dns.mode}${s.dns.reason ? ` (${s.dns.reason})` : ''}, ${s.dns.names} names`,
        ]
      : []),
    '',
  ];
  const rows = [['SERVICE', 'CLUSTER-IP', 'PORT', 'ENDPOINTS']];
  for (const svc of s.services) {
    for (const p of svc.ports) {
      rows.push([
        svc.key,
        svc.clusterIPs.join(',') || 'None',
        `${p.port}/${p.protocol}`,
        p.endpoints.join(',') || '<none>',
      ]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows)
    lines.push(
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    );
  if (s.counters && Object.keys(s.counters).length > 0) {
    lines.push('');
    for (const [k, v] of Object.entries(s.counters)) lines.push(`${k}: ${v}`);
  }
  if (s.tunnel) {
    lines.push('', `tunnel:     listening on ${s.tunnel.listen}`);
    const sd = s.tunnel.sealed;
    if (sd)
      lines.push(
        `  sealed pump=${sd.pump} active=${sd.active} finished=${sd.finished} failed=${sd.failed} idle-closed=${sd.idleClosed} aborted=${sd.aborted}`,
      );
    const fr = s.tunnel.framed;
    if (fr) lines.push(`  framed active=${fr.active} idle-closed=${fr.idleClosed} aborted=${fr.aborted}`);
    const dg = s.tunnel.datagrams;
    if (dg) {
      const fl = dg.flows;
      const d = dg.datagrams;
      lines.push(
        `  udp endpoints=${dg.endpoints.length} flows direct=${fl.direct} relay=${fl.relay} none=${fl.none} in=${fl.in} datagrams tx=${d.tx} rx=${d.rx} dropped=${d.dropped}`,
      );
    }
    for (const r of s.tunnel.relays)
      lines.push(`  relay ${r.node} ${r.address || '-'} ${r.connected ? 'connected' : 'down'}`);
    for (const p of s.tunnel.peers)
      lines.push(`  peer ${p.node} path=${p.path}${p.address ? ` via ${p.address}` : ''}`);
  }
  if (s.dns && Object.keys(s.dns.counters).length > 0) {
    lines.push('');
    for (const [k, v] of Object.entries(s.dns.counters)) lines.push(`dns.${k}: ${v}`);
  }
  return `${lines.join('\n')}\n`;
}
