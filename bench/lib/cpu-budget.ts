// CPU budget of a transfer, per party: whole-machine CPU from /proc/stat (busy ticks and the
// softirq column) and per-thread ticks of the process trees we started, grouped by role (the
// JS main thread, named native threads, everything else), so a run can say how many CPU-seconds
// each hop costs per GB moved. Tick-sampled (USER_HZ 100): meaningful over seconds, not below.
import { readdirSync, readFileSync } from 'node:fs';
import { processTree } from './proc-stats.ts';

const TICKS_PER_SECOND = 100;

/** Busy and softirq ticks of the whole machine (all CPUs). */
export interface MachineTicks {
  busy: number;
  softirq: number;
}

/** Reads the first `cpu` line of /proc/stat. */
export function machineTicks(): MachineTicks {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  // cpu user nice system idle iowait irq softirq steal guest guest_nice
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return { busy: user + nice + system + irq + softirq + steal, softirq };
}

/** Ticks per role of one process tree: 'main' (the thread whose tid is the pid), then by thread name. */
export function threadTicks(root: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of processTree(root)) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
        const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
        const ticks = Number(f[11]) + Number(f[12]);
        // Unnamed Node threads all read "node": the V8/libuv helpers and piscina workers (the
        // native plane's epoll loops) land in 'other'; named native threads keep their name.
        const role = Number(tid) === pid ? 'main' : comm === 'node' ? 'other' : comm;
        out.set(role, (out.get(role) ?? 0) + ticks);
      } catch {
        // the thread ended between readdir and read
      }
    }
  }
  return out;
}

/** A snapshot to diff against: machine ticks plus each named tree's per-role ticks. */
export interface BudgetSnapshot {
  machine: MachineTicks;
  trees: Map<string, Map<string, number>>;
}

/** Takes a snapshot of the machine and of each `party -> root pid`. */
export function budgetSnapshot(parties: Record<string, number>): BudgetSnapshot {
  const trees = new Map<string, Map<string, number>>();
  for (const [name, pid] of Object.entries(parties)) trees.set(name, threadTicks(pid));
  return { machine: machineTicks(), trees };
}

/**
 * CPU-seconds per GB moved between two snapshots, per `party/role`, plus 'softirq' (machine-wide
 * softirq column) and 'machine' (every busy tick on the machine, other work included).
 */
export function budgetPerGB(
  before: BudgetSnapshot,
  after: BudgetSnapshot,
  bytes: number,
): Map<string, number> {
  const gb = bytes / 1e9;
  const perGB = (ticks: number) => ticks / TICKS_PER_SECOND / gb;
  const out = new Map<string, number>();
  for (const [party, roles] of after.trees) {
    const prev = before.trees.get(party) ?? new Map<string, number>();
    for (const [role, ticks] of roles) {
      const d = ticks - (prev.get(role) ?? 0);
      if (d > 0) out.set(`${party}/${role}`, perGB(d));
    }
  }
  out.set('softirq', perGB(after.machine.softirq - before.machine.softirq));
  out.set('machine', perGB(after.machine.busy - before.machine.busy));
  return out;
}
