// Capability probes for the eBPF interceptor: is the addon built with libbpf, are the BPF objects
// there, is there a cgroup v2 to attach to, and does a real trial load+attach succeed. Every "no"
// comes with the reason the agent logs before falling back to iptables/nftables.
import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../../errors.ts';
import { loadNative, type NativeBinding } from '../../native/index.ts';
import { runCommand } from '../run-command.ts';

/** The BPF objects the interceptor loads, one per hook family (native/bpf/*.bpf.c). */
export const BPF_OBJECTS = [
  'sock_connect4.bpf.o',
  'sockops.bpf.o',
  'sockopt.bpf.o',
  'sk_msg.bpf.o',
  'sk_lookup.bpf.o',
] as const;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Folders that may hold the compiled objects, in order: override, next to the loaded addon, build outputs. */
export function bpfObjectDirs(addonPath?: string): string[] {
  const dirs: string[] = [];
  if (process.env.EDGEMESH_BPF_DIR) dirs.push(path.resolve(process.env.EDGEMESH_BPF_DIR));
  if (addonPath)
    dirs.push(path.join(path.dirname(addonPath), 'bpf'), path.join(path.dirname(addonPath), '../bpf'));
  dirs.push(path.join(repoRoot, 'build/Release/bpf'), path.join(repoRoot, 'build/cmake/bpf'));
  return dirs;
}

/** Full paths of every object from the first folder that has them all, or undefined. */
export function findBpfObjects(addonPath?: string): string[] | undefined {
  for (const dir of bpfObjectDirs(addonPath)) {
    const paths = BPF_OBJECTS.map((o) => path.join(dir, o));
    if (paths.every((p) => existsSync(p))) return paths;
  }
  return undefined;
}

/** Mount point of the cgroup v2 unified hierarchy's root, from /proc/self/mountinfo. */
export async function findCgroup2Root(): Promise<string | undefined> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of info.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const f = left.split(' ');
    // Only a mount of the hierarchy's root ("/") covers every process; a bind of a sub-cgroup would not.
    if (right.split(' ')[0] === 'cgroup2' && f[3] === '/') return f[4];
  }
  return undefined;
}

/** The cgroup v2 root, mounting one at `fallbackDir` when none is mounted (needs root). */
export async function ensureCgroup2Root(fallbackDir: string): Promise<string> {
  const found = await findCgroup2Root();
  if (found) return found;
  await mkdir(fallbackDir, { recursive: true });
  const r = await runCommand([], 'mount', ['-t', 'cgroup2', 'none', fallbackDir]);
  if (r.code !== 0) throw new Error(`mount -t cgroup2 none ${fallbackDir}: ${r.stderr.trim()}`);
  return fallbackDir;
}

/** What the probe found: usable (with what to load), or not (with why). */
export type EbpfProbe =
  | { ok: true; binding: NativeBinding; objects: string[]; cgroupRoot: string }
  | { ok: false; reason: string };

/**
 * Checks every prerequisite and then really loads and attaches the programs to a throwaway child
 * cgroup (with its own pin folder) and removes them again, so "ok" means the kernel accepted them.
 */
export async function probeEbpf(opts: { cgroupFallbackDir: string; pinRoot: string }): Promise<EbpfProbe> {
  const native = loadNative();
  if (!native.binding) return { ok: false, reason: `native addon unavailable: ${native.reason}` };
  const binding = native.binding;
  if (typeof binding.bpfSupport !== 'function') return { ok: false, reason: 'the addon has no eBPF loader' };
  const support = binding.bpfSupport();
  if (support) return { ok: false, reason: support };
  const objects = findBpfObjects(native.path);
  if (!objects)
    return {
      ok: false,
      reason: `BPF objects not built (looked in ${bpfObjectDirs(native.path).join(', ')})`,
    };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (CAP_BPF + CAP_NET_ADMIN)' };
  let cgroupRoot: string;
  try {
    cgroupRoot = await ensureCgroup2Root(opts.cgroupFallbackDir);
  } catch (err) {
    return { ok: false, reason: `no cgroup v2: ${errorMessage(err)}` };
  }
  const trialCgroup = path.join(cgroupRoot, `edgemesh-probe-${process.pid}`);
  const trialPins = path.join(opts.pinRoot, `edgemesh-probe-${process.pid}`);
  try {
    await mkdir(trialCgroup);
    const handle = binding.bpfOpen(objects, trialPins, trialCgroup);
    binding.bpfClose(handle, true);
  } catch (err) {
    return { ok: false, reason: `trial load/attach failed: ${errorMessage(err).split('\n')[0]}` };
  } finally {
    await rmdir(trialCgroup).catch(() => {});
  }
  return { ok: true, binding, objects, cgroupRoot };
}
