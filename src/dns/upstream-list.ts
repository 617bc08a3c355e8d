// The upstream DNS servers: the configured list, or the `nameserver` lines of the host's
// resolv.conf minus our own address (forwarding to ourselves would loop), re-read when the file
// changes (DHCP, NetworkManager and resolvconf rewrite it at any time).
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from '../util/log.ts';
import { type HostPort, parseHostPort } from '../util/net.ts';

/** Options: explicit upstreams win; otherwise `resolvConf` is read and watched. */
export interface UpstreamListOptions {
  /** `IP` or `IP:PORT` entries; empty = use resolvConf. */
  configured: readonly string[];
  resolvConf: string;
  /** Our own listen addresses, never used as upstreams. */
  self: readonly HostPort[];
  log: Logger;
  /** resolv.conf poll interval (ms); polling survives the file being replaced by rename. */
  pollMs?: number;
  /** Called after the list changed. */
  onChange?: (servers: readonly HostPort[]) => void;
}

/** Parses resolv.conf text into nameserver addresses (port 53), in file order. */
export function parseResolvConf(text: string): HostPort[] {
  const out: HostPort[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    // Link-local IPv6 servers carry a zone (`fe80::1%eth0`); dgram wants it in the address.
    const host = m[1]!;
    if (net.isIP(host.split('%')[0]!)) out.push({ host, port: 53 });
  }
  return out;
}

/** Parses one configured upstream (`IP` or `IP:PORT`); undefined when malformed. */
export function parseUpstream(text: string): HostPort | undefined {
  if (net.isIP(text)) return { host: text, port: 53 };
  return parseHostPort(text);
}

/** The current upstream servers, kept in sync with resolv.conf when not configured. */
export class UpstreamList {
  private list: HostPort[] = [];
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private fileIdentity = '';
  private first = true;

  constructor(private readonly options: UpstreamListOptions) {}

  /** The servers in preference order (may be empty: then every forward is SERVFAIL). */
  get servers(): readonly HostPort[] {
    return this.list;
  }

  /** Reads the list once and starts watching resolv.conf if it is the source. */
  start(): void {
    if (this.options.configured.length > 0) {
      this.list = this.options.configured
        .flatMap((s) => parseUpstream(s) ?? [])
        .filter((s) => !this.isSelf(s));
      this.options.log.info({ upstreams: this.list.map(fmt) }, 'dns: configured upstreams');
      return;
    }
    this.reload();
    // Polling the file's identity (inode, mtime, size) survives replacement by rename, which
    // inotify on the path does not; the identity is taken before each read, so a change right
    // after start is not missed.
    this.timer = setInterval(() => this.poll(), this.options.pollMs ?? 2000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private poll(): void {
    if (this.polling) return;
    this.polling = true;
    fs.stat(this.options.resolvConf, (err, st) => {
      this.polling = false;
      if (!this.timer) return;
      if (identity(err ? undefined : st) !== this.fileIdentity) this.reload();
    });
  }

  /** Re-reads resolv.conf now (also called by the watcher). */
  reload(): void {
    let text = '';
    try {
      this.fileIdentity = identity(fs.statSync(this.options.resolvConf, { throwIfNoEntry: false }));
      text = fs.readFileSync(this.options.resolvConf, 'utf8');
    } catch (err) {
      this.options.log.warn(
        { file: this.options.resolvConf, err: (err as Error).message },
        'dns: cannot read resolv.conf; names outside the cluster will get SERVFAIL',
      );
    }
    const parsed = parseResolvConf(text);
    const next = parsed.filter((s) => !this.isSelf(s));
    const changed = next.map(fmt).join(',') !== this.list.map(fmt).join(',');
    if (next.length === 0 && (changed || this.first) && text !== '') {
      this.options.log.warn(
        { file: this.options.resolvConf, skipped: parsed.map(fmt) },
        'dns: no usable upstream in resolv.conf (only our own address, or none); names outside the cluster will get SERVFAIL; set modules.edgeDNS.upstreams',
      );
    }
    this.first = false;
    this.list = next;
    if (changed) {
      this.options.log.info({ file: this.options.resolvConf, upstreams: next.map(fmt) }, 'dns: upstreams');
      this.options.onChange?.(next);
    }
  }

  private isSelf(s: HostPort): boolean {
    return this.options.self.some(
      (own) => own.port === s.port && (own.host === s.host || own.host === '0.0.0.0' || own.host === '::'),
    );
  }
}

function fmt(s: HostPort): string {
  return net.isIPv6(s.host) ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

function identity(st: fs.Stats | undefined): string {
  return st ? `${st.ino}:${st.mtimeMs}:${st.size}` : 'missing';
}
