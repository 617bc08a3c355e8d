// A cgroup v2 the eBPF e2e tests create below the host's unified root, named after the test's node
// namespace (unique per run), with the argv prefix that runs a command inside it and that namespace.
import fs from 'node:fs';
import path from 'node:path';
import { sh } from './netns.ts';

/** Creates (or reuses) `<unified cgroup2 root>/<name>` and returns its path. */
export async function createTestCgroup(name: string): Promise<string> {
  const root = (
    await sh('sh', ['-c', 'awk \'$9 == "cgroup2" && $4 == "/" { print $5; exit }\' /proc/self/mountinfo'])
  ).trim();
  if (root === '') throw new Error('no cgroup2 mount with root / in /proc/self/mountinfo');
  const cgroup = path.join(root, name);
  fs.mkdirSync(cgroup, { recursive: true });
  return cgroup;
}

/**
 * argv prefix: join `cgroup` on the host side (where its folder is visible), then exec the rest of the
 * argv in network namespace `ns` (`ip netns exec` hides the host's cgroup mounts, so the order matters).
 */
export function inCgroupAndNs(cgroup: string, ns: string): string[] {
  return ['sh', '-c', `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${ns} "$@"`, 'sh'];
}

/** Removes a test cgroup once its processes are gone; a cgroup still in use is left (and said nothing). */
export async function removeTestCgroup(cgroup: string): Promise<void> {
  if (cgroup) await sh('sh', ['-c', `rmdir ${cgroup} 2>/dev/null || true`]);
}
