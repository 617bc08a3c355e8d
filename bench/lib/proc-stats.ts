// CPU and memory of a proxy process tree, read from /proc: forking proxies (socat) and
// master/worker proxies (nginx) are measured as the whole tree under the process we started.
import { readdirSync, readFileSync } from 'node:fs';

// USER_HZ is 100 on every Linux architecture this runs on (the kernel exports times in it).
const TICKS_PER_SECOND = 100;

interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime of the process itself (all its threads). */
  ticks: number;
  /** cutime + cstime: reaped children (socat's finished per-connection forks). */
  childTicks: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces and parentheses; fields start after the last ')'.
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return {
      pid,
      ppid: Number(f[1]),
      ticks: Number(f[11]) + Number(f[12]),
      childTicks: Number(f[13]) + Number(f[14]),
    };
  } catch {
    return undefined;
  }
}

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** The pids of `root` and all its live descendants. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (!st) continue;
    const list = children.get(st.ppid);
    if (list) list.push(st.pid);
    else children.set(st.ppid, [st.pid]);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/**
 * Total CPU ticks consumed so far by the tree under root. A finished child's ticks move into its
 * parent's cutime/cstime when it is reaped, so counting both keeps each tick exactly once.
 */
export function treeTicks(root: number): number {
  let total = 0;
  for (const pid of processTree(root)) {
    const st = readStat(pid);
    if (st) total += st.ticks + st.childTicks;
  }
  return total;
}

/** Resident memory of the whole tree, in MiB. */
export function treeRssMiB(root: number): number {
  let kib = 0;
  for (const pid of processTree(root)) kib += rssKiB(pid);
  return kib / 1024;
}

/** What a sampler measured over one window. */
export interface ProcUsage {
  /** CPU over the window, in percent of one core (200 = two cores busy). */
  cpuPercent: number;
  /** Largest resident set seen during the window, MiB. */
  rssPeakMiB: number;
}

/** Samples one process tree during a measurement window: CPU by tick difference, RSS peak by polling. */
export class ProcessSampler {
  private readonly startTicks: number;
  private readonly startTime = process.hrtime.bigint();
  private peak = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly root: number,
    intervalMs = 250,
  ) {
    this.startTicks = treeTicks(root);
    this.peak = treeRssMiB(root);
    this.timer = setInterval(() => {
      this.peak = Math.max(this.peak, treeRssMiB(root));
    }, intervalMs);
    this.timer.unref();
  }

  /** Ends the window and returns its CPU and RSS peak. */
  stop(): ProcUsage {
    clearInterval(this.timer);
    this.peak = Math.max(this.peak, treeRssMiB(this.root));
    const seconds = Number(process.hrtime.bigint() - this.startTime) / 1e9;
    const ticks = treeTicks(this.root) - this.startTicks;
    return {
      cpuPercent: seconds > 0 ? (ticks / TICKS_PER_SECOND / seconds) * 100 : 0,
      rssPeakMiB: this.peak,
    };
  }
}

/** Whole-machine CPU ticks from /proc/stat: idle (idle + iowait), softirq, steal (the hypervisor's), total. */
export function machineTicks(): { idle: number; softirq: number; steal: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3]! + f[4]!, softirq: f[6]!, steal: f[7]!, total: f.reduce((a, b) => a + b, 0) };
}

/** The hypervisor's share (%) of the machine's CPU time between two machineTicks() readings. */
export function stealPct(
  before: { steal: number; total: number },
  after: { steal: number; total: number },
): number {
  return after.total > before.total ? (100 * (after.steal - before.steal)) / (after.total - before.total) : 0;
}
