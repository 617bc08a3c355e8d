// The proxier's orchestration (order, serialization, retry of a failed rule sync), the TS plane's
// port allocation, and the interceptor choice for none/ebpf/auto when the tools fail.
import { describe, expect, it } from 'vitest';
import type { ServiceTable, ServiceTableDiff } from '../../src/controller/types.ts';
import { EMPTY_TABLE } from '../../src/controller/types.ts';
import type { Dataplane } from '../../src/dataplane/dataplane.ts';
import { PortAllocator, parsePortRange } from '../../src/dataplane/ts/port-allocator.ts';
import { ErrorCode, hasCode } from '../../src/errors.ts';
import { createInterceptor } from '../../src/proxier/create-interceptor.ts';
import type { Interceptor, InterceptTarget } from '../../src/proxier/interceptor.ts';
import { NoneInterceptor } from '../../src/proxier/none.ts';
import { Proxier } from '../../src/proxier/proxier.ts';
import { silentLogger } from '../../src/util/log.ts';

const noDiff: ServiceTableDiff = { added: [], updated: [], removed: [], istioChanged: false };
const target = (toPort: number): InterceptTarget => ({
  id: 'a/b:http',
  clusterIP: '10.96.0.1',
  port: 80,
  protocol: 'TCP',
  toPort,
});

describe('PortAllocator', () => {
  it('hands out ports next-fit, reuses released ones last and reports exhaustion', () => {
    const a = new PortAllocator(100, 102);
    expect([a.allocate(), a.allocate()]).toEqual([100, 101]);
    a.release(100);
    expect(a.allocate()).toBe(102);
    expect(a.allocate()).toBe(100);
    expect(a.allocate()).toBeUndefined();
    expect(a.size).toBe(3);
  });

  it('rejects malformed ranges with EDGEMESH_ERR_CONFIG', () => {
    expect(parsePortRange('21000-21010')).toEqual({ first: 21000, last: 21010 });
    for (const bad of ['2-1', '0-5', '1-70000', 'x']) {
      let err: unknown;
      try {
        parsePortRange(bad);
      } catch (e) {
        err = e;
      }
      expect(hasCode(err, ErrorCode.CONFIG)).toBe(true);
    }
  });
});

describe('Proxier', () => {
  const events: string[] = [];
  const dataplane = (toPort: () => number): Dataplane => ({
    name: 'dataplane',
    mode: 'ts',
    start: async () => void events.push('dp start'),
    stop: async () => void events.push('dp stop'),
    apply: async (table: ServiceTable) => {
      events.push(`dp apply ${table.generation}`);
      await new Promise((r) => setTimeout(r, 5));
      return [target(toPort())];
    },
    counters: () => ({ connections_total: 3 }),
  });

  it('starts interceptor then data plane, applies serially, stops in reverse', async () => {
    events.length = 0;
    const ic = new NoneInterceptor();
    const interceptor: Interceptor = {
      name: 'interceptor',
      mode: 'none',
      start: async () => void events.push('ic start'),
      stop: async () => void events.push('ic stop'),
      sync: async (t) => {
        events.push(`ic sync ${t[0]?.toPort}`);
        await ic.sync(t);
      },
    };
    let port = 21000;
    const p = new Proxier({
      dataplane: dataplane(() => port++),
      interceptor,
      log: silentLogger,
      resyncPeriodMs: 0,
    });
    await p.start();
    await Promise.all([
      p.apply({ ...EMPTY_TABLE, generation: 1 }, noDiff),
      p.apply({ ...EMPTY_TABLE, generation: 2 }, noDiff),
    ]);
    await p.stop();
    expect(events).toEqual([
      'ic start',
      'dp start',
      'dp apply 1',
      'ic sync 21000',
      'dp apply 2',
      'ic sync 21001',
      'dp stop',
      'ic stop',
    ]);
    expect(p.counters().connections_total).toBe(3);
  });

  it('retries a failed rule sync on the next resync tick', async () => {
    let calls = 0;
    const synced: Array<readonly InterceptTarget[]> = [];
    const interceptor: Interceptor = {
      name: 'interceptor',
      mode: 'iptables',
      start: async () => {},
      stop: async () => {},
      sync: async (t) => {
        calls++;
        if (calls === 1) throw new Error('xtables lock busy');
        synced.push(t);
      },
    };
    const p = new Proxier({
      dataplane: dataplane(() => 21005),
      interceptor,
      log: silentLogger,
      resyncPeriodMs: 20,
    });
    await p.start();
    await expect(p.apply({ ...EMPTY_TABLE, generation: 1 }, noDiff)).rejects.toThrow('xtables lock busy');
    const t0 = Date.now();
    while (synced.length === 0 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 10));
    await p.stop();
    expect(synced[0]).toEqual([target(21005)]);
  });
});

describe('createInterceptor', () => {
  it('none installs nothing', async () => {
    const c = await createInterceptor({ mode: 'none', iptablesBackend: 'auto', log: silentLogger });
    expect(c.interceptor.mode).toBe('none');
  });

  it('auto falls back to none with every reason when no tool works', async () => {
    // `false <tool> ...` runs and fails, like a tool present on a kernel without nat support.
    const c = await createInterceptor({
      mode: 'auto',
      iptablesBackend: 'nft',
      log: silentLogger,
      commandPrefix: ['false'],
    });
    expect(c.interceptor.mode).toBe('none');
    expect(c.reason).toMatch(/iptables-nft-restore failed/);
    expect(c.reason).toMatch(/nft failed/);
  });

  it('explicit modes are taken as asked', async () => {
    const ipt = await createInterceptor({ mode: 'iptables', iptablesBackend: 'legacy', log: silentLogger });
    expect(ipt.interceptor.mode).toBe('iptables');
    expect(ipt.reason).toContain('iptables-legacy');
    const nft = await createInterceptor({ mode: 'nftables', iptablesBackend: 'auto', log: silentLogger });
    expect(nft.interceptor.mode).toBe('nftables');
  });
});
