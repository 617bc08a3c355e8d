// Drift for the eBPF repair tests: detach the cgroup's connect4 link the way an admin with bpftool
// would (the link object and its pin survive; only the attachment goes).
import { sh } from './netns.ts';

/** Detaches the edgemesh_connect4 link attached to `cgroup`; throws when there is none. */
export async function detachConnect4Link(cgroup: string): Promise<void> {
  const progs = JSON.parse(await sh('bpftool', ['-j', 'cgroup', 'show', cgroup])) as {
    id: number;
    name: string;
  }[];
  const prog = progs.find((p) => p.name === 'edgemesh_connect4');
  const links = JSON.parse(await sh('bpftool', ['-j', 'link', 'show'])) as { id: number; prog_id: number }[];
  const link = links.find((l) => l.prog_id === prog?.id);
  if (!link) throw new Error(`no connect4 link to detach in ${JSON.stringify(progs)}`);
  await sh('bpftool', ['link', 'detach', 'id', String(link.id)]);
}
