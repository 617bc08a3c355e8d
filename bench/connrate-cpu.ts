// CPU per new connection, A/B interleaved: for each contender, `loadgen connrate` in the node
// namespace while the CPU time of the client, the proxy's process tree and the backend is read
// from /proc before and after. On a shared, loaded machine conn/s swings with the neighbours;
// CPU time per connection (client + proxy + backend, softirq work charged to whoever ran it)
// swings much less, so it is what this compares. Optional --bpf-stats: per-program BPF run time
// per connection (kernel.bpf_stats_enabled on for the run, restored after).
// Usage: node --import tsx bench/connrate-cpu.ts [--rounds N] [--seconds S] [--threads T]
//        [--contenders a,b,...] [--case veth|loopback] [--bpf-stats] [--variant PLANE:SUFFIX:ARGS]...
//        [--workload connrate|rr|bulk] [--count N] [--hogs]
// rr also prints each run's tail (p99.9, max, samples > 200 us, episodes) and the pooled tail per
// contender, and the machine's steal %; --hogs adds the run-queue wait of client, proxy and backend
// and the busiest threads per run.
// A variant is an edgemesh plane (native, native-ebpf) with extra agent flags (ARGS starting with
// --) or edgeProxy config keys (key=value;key=value; UPPER_CASE keys are agent environment
// variables), reported as edgemesh-PLANE-SUFFIX.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { allContenders, type BackendPorts, type Contender, edgemesh } from './lib/contenders.ts';
import { exec, inNs, type Where, waitListening } from './lib/exec.ts';
import { loadgenBinary } from './lib/loadgen.ts';
import { machineTicks, processTree, treeTicks } from './lib/proc-stats.ts';
import { superviseTree } from './lib/supervise.ts';
import { createTopology, type TopologyKind } from './lib/topology.ts';

const BACKEND: BackendPorts = { bulk: 5201, echo: 7000 };
const TICK_US = 1e6 / 100;

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '2' },
    threads: { type: 'string', default: '4' },
    contenders: { type: 'string', default: 'haproxy,haproxy-redirect,edgemesh-native,edgemesh-native-ebpf' },
    case: { type: 'string', default: 'veth' },
    'bpf-stats': { type: 'boolean', default: false },
    // rr: one connection, --count 1 KiB round trips (p50/p99 and CPU per round trip) instead of
    // connrate; bulk: one iperf3 flow for --seconds (Gbit/s; CPU per MB).
    workload: { type: 'string', default: 'connrate' },
    count: { type: 'string', default: '10000' },
    // A/B variants of an edgemesh plane, run interleaved with the contenders:
    // --variant 'native-ebpf:w1:--workers 1' or 'native:spin:key=value;key=value' (edgeProxy keys).
    variant: { type: 'string', multiple: true, default: [] },
    // rr: which threads of the whole machine ran during each run (schedstat run time), to name the
    // CPU hogs behind tail episodes (agent main thread, plane workers, neighbours).
    hogs: { type: 'boolean', default: false },
  },
});

/** Client run under `sh`, whose `times` builtin reports the children's user+sys seconds. */
async function clientRun(
  ns: Where,
  host: string,
  port: number,
): Promise<{
  conns: number;
  cpuUs: number;
  seconds: number;
  p50?: number;
  p99?: number;
  samples?: number[];
  clientWaitMs?: number;
}> {
  const lg = await loadgenBinary();
  const rrMode = values.workload === 'rr';
  if (values.workload === 'bulk') {
    const r = await exec(
      inNs(ns, ['bash', '-c', `iperf3 -c ${host} -p ${port} -t ${values.seconds} -J; times`]),
      { timeoutMs: 60_000 },
    );
    const out = r.stdout.trim();
    const end = out.lastIndexOf('}');
    const json = JSON.parse(out.slice(0, end + 1)) as {
      end?: { sum_received?: { bytes: number; seconds: number } };
    };
    const sum = json.end?.sum_received;
    if (r.code !== 0 || !sum) throw new Error(`iperf3: ${r.stderr || out.slice(-300)}`);
    const secs = [...out.slice(end).matchAll(/(\d+)m([\d.]+)s/g)]
      .slice(-2)
      .reduce((t, m) => t + Number(m[1]) * 60 + Number(m[2]), 0);
    // "conns" = MB moved, so the per-unit columns read as us per MB.
    return { conns: sum.bytes / 1e6, cpuUs: secs * 1e6, seconds: sum.seconds };
  }
  const script = rrMode
    ? `${lg} rr ${host} ${port} 1024 ${values.count}; times`
    : `${lg} connrate ${host} ${port} ${values.seconds} ${values.threads}; times`;
  const r = await exec(inNs(ns, ['bash', '-c', script]), { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`client: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  const json = JSON.parse(lines.find((l) => l.startsWith('{'))!) as {
    connections?: number;
    count?: number;
    seconds: number;
    samples?: number[];
    clientWaitUs?: number;
  };
  // `times`: line 1 the shell's own, line 2 its children's: "0m1.234s 0m2.345s"
  const secs = [...lines.at(-1)!.matchAll(/(\d+)m([\d.]+)s/g)].reduce(
    (s, m) => s + Number(m[1]) * 60 + Number(m[2]),
    0,
  );
  if (rrMode) {
    const sorted = [...json.samples!].sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor((q / 100) * sorted.length))]!;
    return {
      conns: json.count!,
      cpuUs: secs * 1e6,
      seconds: json.seconds,
      p50: at(50),
      p99: at(99),
      samples: json.samples!,
      clientWaitMs: json.clientWaitUs !== undefined ? +(json.clientWaitUs / 1000).toFixed(1) : undefined,
    };
  }
  return { conns: json.connections!, cpuUs: secs * 1e6, seconds: json.seconds };
}

interface BpfProg {
  name: string;
  runNs: number;
  runs: number;
}
async function bpfProgs(): Promise<Map<number, BpfProg>> {
  const r = await exec(['bpftool', '-j', 'prog', 'show']);
  const out = new Map<number, BpfProg>();
  for (const p of JSON.parse(r.stdout) as Array<{
    id: number;
    name?: string;
    run_time_ns?: number;
    run_cnt?: number;
  }>) {
    if (p.name?.startsWith('edgemesh_'))
      out.set(p.id, { name: p.name, runNs: p.run_time_ns ?? 0, runs: p.run_cnt ?? 0 });
  }
  return out;
}

/**
 * Calls `visit` with the /proc folder of every thread of the given processes; a process or thread
 * that ends meanwhile (its files vanish under us) is skipped.
 */
function eachThread(pids: Iterable<number | string>, visit: (dir: string, id: string) => void): void {
  for (const pid of pids) {
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // gone meanwhile
    }
    for (const tid of tids) {
      try {
        visit(`/proc/${pid}/task/${tid}`, `${pid}/${tid}`);
      } catch {
        // thread gone meanwhile
      }
    }
  }
}

/** Voluntary and involuntary context switches summed over every thread of a process tree. */
function treeSwitches(root: number): { vol: number; invol: number } {
  let vol = 0;
  let invol = 0;
  eachThread(processTree(root), (dir) => {
    const st = readFileSync(`${dir}/status`, 'utf8');
    vol += Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(st)?.[1] ?? 0);
    invol += Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(st)?.[1] ?? 0);
  });
  return { vol, invol };
}

/** Run time (ns, from schedstat) and name of every thread on the machine, keyed pid/tid. */
function threadRunNs(): Map<string, { name: string; ns: number }> {
  const out = new Map<string, { name: string; ns: number }>();
  const pids = readdirSync('/proc').filter((pid) => /^\d+$/.test(pid));
  eachThread(pids, (dir, id) => {
    const ns = Number(readFileSync(`${dir}/schedstat`, 'utf8').split(' ')[0]);
    out.set(id, { name: readFileSync(`${dir}/comm`, 'utf8').trim(), ns });
  });
  return out;
}

/** Run-queue wait (ns, schedstat's second field) summed over every thread of a process tree. */
function treeWaitNs(root: number): number {
  let ns = 0;
  eachThread(processTree(root), (dir) => {
    ns += Number(readFileSync(`${dir}/schedstat`, 'utf8').split(' ')[1]);
  });
  return ns;
}

/** The busiest threads between two threadRunNs() snapshots: "name(pid/tid)=ms", agent threads marked *. */
function topThreads(
  a: Map<string, { name: string; ns: number }>,
  b: Map<string, { name: string; ns: number }>,
  mine: Set<number>,
  n: number,
): string {
  return [...b]
    .map(([k, v]) => ({ k, name: v.name, ms: (v.ns - (a.get(k)?.ns ?? 0)) / 1e6 }))
    .sort((x, y) => y.ms - x.ms)
    .slice(0, n)
    .map((t) => `${mine.has(Number(t.k.split('/')[0])) ? '*' : ''}${t.name}(${t.k})=${t.ms.toFixed(1)}`)
    .join(' ');
}

/**
 * Tail of one or more rr runs (us): p99, p99.9, max, samples above 200 us, and "episodes" — runs of
 * >= 10 slow samples (gaps <= 20 round trips) — with their total wall time. A lone slow sample is a
 * single wake-up hiccup; an episode is the connection slowed for many round trips in a row.
 */
function tailOf(runs: number[][]): {
  p99: number;
  p999: number;
  max: number;
  over200: number;
  episodes: number;
  episodeMs: number;
} {
  const all = runs.flat().sort((x, y) => x - y);
  const at = (q: number) => all[Math.min(all.length - 1, Math.floor((q / 100) * all.length))]!;
  let episodes = 0;
  let episodeUs = 0;
  for (const xs of runs) {
    let start = -1;
    let last = -100;
    let count = 0;
    const close = (end: number) => {
      if (count >= 10) {
        episodes++;
        for (let i = start; i <= end; i++) episodeUs += xs[i]!;
      }
    };
    xs.forEach((v, i) => {
      if (v <= 200) return;
      if (i - last > 20) {
        if (start >= 0) close(last);
        start = i;
        count = 0;
      }
      count++;
      last = i;
    });
    if (start >= 0) close(last);
  }
  return {
    p99: at(99),
    p999: at(99.9),
    max: all.at(-1)!,
    over200: all.filter((v) => v > 200).length,
    episodes,
    episodeMs: +(episodeUs / 1000).toFixed(1),
  };
}

function variantOf(spec: string): Contender {
  const [plane, suffix, ...rest] = spec.split(':');
  const args = rest.join(':');
  if ((plane !== 'native' && plane !== 'native-ebpf') || !suffix)
    throw new Error(`--variant ${spec}: want native|native-ebpf:SUFFIX:ARGS`);
  if (args.startsWith('--'))
    return edgemesh(plane, 'iptables', { suffix, agentArgs: args.split(' ').filter(Boolean) });
  // UPPER_CASE keys are environment variables of the agent (experiment knobs such as
  // EDGEMESH_AFFINITY_ESCAPE=off), set only while this variant's agent starts.
  const pairs = args.split(';').filter(Boolean);
  const isEnv = (kv: string) => /^[A-Z][A-Z0-9_]*=/.test(kv);
  const edgeProxy = pairs
    .filter((kv) => !isEnv(kv))
    .map((kv) => `    ${kv.replace('=', ': ')}\n`)
    .join('');
  const c = edgemesh(plane, 'iptables', { suffix, agentArgs: [], edgeProxy });
  const env = pairs
    .filter(isEnv)
    .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const);
  if (env.length === 0) return c;
  return {
    ...c,
    async start(opts) {
      const saved = env.map(([k]) => [k, process.env[k]] as const);
      for (const [k, v] of env) process.env[k] = v;
      try {
        return await c.start(opts);
      } finally {
        for (const [k, v] of saved) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
    },
  };
}

async function main(): Promise<void> {
  const wanted = values.contenders!.split(',');
  const contenders = [
    ...allContenders().filter((c) => wanted.includes(c.name)),
    ...(values.variant ?? []).map(variantOf),
  ];
  const topo = await createTopology(values.case as TopologyKind);
  const lg = await loadgenBinary();
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'edgemesh-connrate-cpu-'));
  const bulk = await superviseTree(inNs(topo.backendNs, ['iperf3', '-s', '-p', String(BACKEND.bulk)]), () =>
    waitListening(topo.backendNs, BACKEND.bulk),
  );
  const echo = await superviseTree(inNs(topo.backendNs, [lg, 'serve', String(BACKEND.echo)]), () =>
    waitListening(topo.backendNs, BACKEND.echo),
  );
  const statsBefore = readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  if (values['bpf-stats']) writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
  const rows: Array<Record<string, string | number>> = [];
  const samplesOf = new Map<string, number[][]>();
  try {
    const rounds = Number(values.rounds);
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < contenders.length; i++) {
        const c = contenders[(i + round) % contenders.length]!;
        const running = await c.start({ topo, backend: BACKEND, workDir });
        try {
          const ns = running.clientPrefix ?? topo.nodeNs;
          const to = values.workload === 'bulk' ? running.bulk : running.echo;
          await clientRun(ns, to.host, to.port); // warm-up
          const p0 = running.pid ? treeTicks(running.pid) : 0;
          const b0 = treeTicks(echo.pid);
          const bpf0 = await bpfProgs();
          const load0 = os.loadavg()[0]!;
          const m0 = machineTicks();
          const s0 = running.pid ? treeSwitches(running.pid) : { vol: 0, invol: 0 };
          const e0 = treeSwitches(echo.pid);
          const th0 = values.hogs ? threadRunNs() : undefined;
          const w0 = values.hogs && running.pid ? treeWaitNs(running.pid) : 0;
          const we0 = values.hogs ? treeWaitNs(echo.pid) : 0;
          const client = await clientRun(ns, to.host, to.port);
          const th1 = values.hogs ? threadRunNs() : undefined;
          const w1 = values.hogs && running.pid ? treeWaitNs(running.pid) : 0;
          const we1 = values.hogs ? treeWaitNs(echo.pid) : 0;
          const m1 = machineTicks();
          const s1 = running.pid ? treeSwitches(running.pid) : { vol: 0, invol: 0 };
          const e1 = treeSwitches(echo.pid);
          const p1 = running.pid ? treeTicks(running.pid) : 0;
          const b1 = treeTicks(echo.pid);
          const bpf1 = await bpfProgs();
          const n = client.conns;
          const row: Record<string, string | number> = {
            round: round + 1,
            contender: c.name,
            // connrate: connections per second; rr: round trips per second (and their p50/p99, us).
            connPerS: Math.round(n / client.seconds),
            ...(client.p99 !== undefined ? { p50: client.p50!, p99: client.p99 } : {}),
            clientUs: +(client.cpuUs / n).toFixed(1),
            proxyUs: +(((p1 - p0) * TICK_US) / n).toFixed(1),
            backendUs: +(((b1 - b0) * TICK_US) / n).toFixed(1),
            load: +load0.toFixed(1),
            // Whole machine during the run (client start-up included): idle CPU means the rate is
            // bound by latency (wake-ups, hops), not by CPU.
            idlePct: +((100 * (m1.idle - m0.idle)) / (m1.total - m0.total)).toFixed(1),
            softirqPct: +((100 * (m1.softirq - m0.softirq)) / (m1.total - m0.total)).toFixed(1),
            // vCPU time the hypervisor gave to others: everything runs slower with no run-queue wait.
            stealPct: +((100 * (m1.steal - m0.steal)) / (m1.total - m0.total)).toFixed(1),
            // Sleeps (voluntary) and preemptions (involuntary) per connection.
            proxyVcs: +((s1.vol - s0.vol) / n).toFixed(2),
            proxyIcs: +((s1.invol - s0.invol) / n).toFixed(2),
            backendVcs: +((e1.vol - e0.vol) / n).toFixed(2),
          };
          row.totalUs = +(
            (row.clientUs as number) +
            (row.proxyUs as number) +
            (row.backendUs as number)
          ).toFixed(1);
          if (values['bpf-stats']) {
            for (const [id, p] of bpf1) {
              const before = bpf0.get(id);
              const dn = p.runNs - (before?.runNs ?? 0);
              const dr = p.runs - (before?.runs ?? 0);
              if (dr > 0)
                row[`${p.name}`] = `${(dn / n / 1000).toFixed(2)}us/conn ${(dr / n).toFixed(1)}runs`;
            }
          }
          if (client.samples) {
            samplesOf.set(c.name, [...(samplesOf.get(c.name) ?? []), client.samples]);
            const t = tailOf([client.samples]);
            Object.assign(row, {
              p999: t.p999,
              max: t.max,
              over200: t.over200,
              episodes: t.episodes,
              episodeMs: t.episodeMs,
            });
          }
          if (th0 && th1) {
            const mine = new Set(running.pid ? processTree(running.pid) : []);
            // Time the proxy's and the backend's threads spent runnable but waiting for a CPU.
            row.proxyWaitMs = +((w1 - w0) / 1e6).toFixed(1);
            row.backendWaitMs = +((we1 - we0) / 1e6).toFixed(1);
            if (client.clientWaitMs !== undefined) row.clientWaitMs = client.clientWaitMs;
            // Every thread of the proxy's tree that ran (agent main thread, plane workers, ...).
            const own = new Map([...th0].filter(([k]) => mine.has(Number(k.split('/')[0]))));
            const ownAfter = new Map([...th1].filter(([k]) => mine.has(Number(k.split('/')[0]))));
            row.proxyThreads = topThreads(own, ownAfter, mine, 8);
            row.hogs = topThreads(th0, th1, mine, 6);
          }
          rows.push(row);
          console.log(JSON.stringify(row));
        } finally {
          await running.stop();
        }
      }
    }
  } finally {
    if (values['bpf-stats']) writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsBefore);
    await echo.stop();
    await bulk.stop();
    await topo.destroy();
    rmSync(workDir, { recursive: true, force: true });
  }
  // Medians per contender.
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(
    `\ncontender | ${values.workload === 'rr' ? 'rr/s | p50 | p99' : 'conn/s'} | client us | proxy us | backend us | total us per ${values.workload === 'rr' ? 'round trip' : 'connection'} | idle % | proxy vcs/ics (medians; spread min-max of the rate)`,
  );
  for (const c of contenders) {
    const mine = rows.filter((r) => r.contender === c.name);
    const m = (k: string) => med(mine.map((r) => r[k] as number));
    const rates = mine.map((r) => r.connPerS as number);
    const lat = values.workload === 'rr' ? ` | ${m('p50')} | ${m('p99')}` : '';
    console.log(
      `${c.name} | ${m('connPerS')} (${Math.min(...rates)}-${Math.max(...rates)})${lat} | ${m('clientUs')} | ${m('proxyUs')} | ${m('backendUs')} | ${m('totalUs')} | ${m('idlePct')} | ${m('proxyVcs')}/${m('proxyIcs')}`,
    );
  }
  if (samplesOf.size > 0) {
    console.log(
      '\ncontender | pooled rr samples | p99 | p99.9 | max | > 200 us | episodes (>= 10 slow in a row) | their wall ms | runs with an episode',
    );
    for (const c of contenders) {
      const runs = samplesOf.get(c.name) ?? [];
      if (runs.length === 0) continue;
      const t = tailOf(runs);
      const hit = runs.filter((r) => tailOf([r]).episodes > 0).length;
      console.log(
        `${c.name} | ${runs.flat().length} | ${t.p99} | ${t.p999} | ${t.max} | ${t.over200} | ${t.episodes} | ${t.episodeMs} | ${hit}/${runs.length}`,
      );
    }
  }
}

await main();
process.exit(0);
