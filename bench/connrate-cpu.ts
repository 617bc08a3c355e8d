// CPU per new connection, A/B interleaved: for each contender, `loadgen connrate` in the node
// namespace while the CPU time of the client, the proxy's process tree and the backend is read
// from /proc before and after. On a shared, loaded machine conn/s swings with the neighbours;
// CPU time per connection (client + proxy + backend, softirq work charged to whoever ran it)
// swings much less, so it is what this compares. Optional --bpf-stats: per-program BPF run time
// per connection (kernel.bpf_stats_enabled on for the run, restored after).
// Usage: node --import tsx bench/connrate-cpu.ts [--rounds N] [--seconds S] [--threads T]
//        [--contenders a,b,...] [--case veth|loopback] [--bpf-stats]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { allContenders, type BackendPorts } from './lib/contenders.ts';
import { exec, inNs, type Where, waitListening } from './lib/exec.ts';
import { loadgenBinary } from './lib/loadgen.ts';
import { treeTicks } from './lib/proc-stats.ts';
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
  },
});

/** Client run under `sh`, whose `times` builtin reports the children's user+sys seconds. */
async function clientRun(ns: Where, host: string, port: number): Promise<{ conns: number; cpuUs: number }> {
  const lg = await loadgenBinary();
  const script = `${lg} connrate ${host} ${port} ${values.seconds} ${values.threads}; times`;
  const r = await exec(inNs(ns, ['bash', '-c', script]), { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`client: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  const json = JSON.parse(lines.find((l) => l.startsWith('{'))!) as { connections: number };
  // `times`: line 1 the shell's own, line 2 its children's: "0m1.234s 0m2.345s"
  const secs = [...lines.at(-1)!.matchAll(/(\d+)m([\d.]+)s/g)].reduce(
    (s, m) => s + Number(m[1]) * 60 + Number(m[2]),
    0,
  );
  return { conns: json.connections, cpuUs: secs * 1e6 };
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

async function main(): Promise<void> {
  const wanted = values.contenders!.split(',');
  const contenders = allContenders().filter((c) => wanted.includes(c.name));
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
  try {
    const rounds = Number(values.rounds);
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < contenders.length; i++) {
        const c = contenders[(i + round) % contenders.length]!;
        const running = await c.start({ topo, backend: BACKEND, workDir });
        try {
          const ns = running.clientPrefix ?? topo.nodeNs;
          await clientRun(ns, running.echo.host, running.echo.port); // warm-up
          const p0 = running.pid ? treeTicks(running.pid) : 0;
          const b0 = treeTicks(echo.pid);
          const bpf0 = await bpfProgs();
          const load0 = os.loadavg()[0]!;
          const client = await clientRun(ns, running.echo.host, running.echo.port);
          const p1 = running.pid ? treeTicks(running.pid) : 0;
          const b1 = treeTicks(echo.pid);
          const bpf1 = await bpfProgs();
          const n = client.conns;
          const row: Record<string, string | number> = {
            round: round + 1,
            contender: c.name,
            connPerS: Math.round(n / Number(values.seconds)),
            clientUs: +(client.cpuUs / n).toFixed(1),
            proxyUs: +(((p1 - p0) * TICK_US) / n).toFixed(1),
            backendUs: +(((b1 - b0) * TICK_US) / n).toFixed(1),
            load: +load0.toFixed(1),
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
  console.log('\ncontender | conn/s | client us | proxy us | backend us | total us per connection (medians)');
  for (const c of contenders) {
    const mine = rows.filter((r) => r.contender === c.name);
    const m = (k: string) => med(mine.map((r) => r[k] as number));
    console.log(
      `${c.name} | ${m('connPerS')} | ${m('clientUs')} | ${m('proxyUs')} | ${m('backendUs')} | ${m('totalUs')}`,
    );
  }
}

await main();
process.exit(0);
