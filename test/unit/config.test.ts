import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseFlags } from '../../src/cli/args.ts';
import { agentFlags } from '../../src/cli/flags.ts';
import { defaultConfig } from '../../src/config/defaults.ts';
import { loadConfigFile, parseConfigText } from '../../src/config/load.ts';
import { dnsListenAddress, resolveConfig } from '../../src/config/resolve.ts';
import { ConfigError, ErrorCode, UsageError } from '../../src/errors.ts';

const F = 'agent.yaml';

describe('config loader: bad configs are reported as file:line: key: expected ..., got ...', () => {
  const cases: Array<[string, string, string]> = [
    ['unknown top-level key', 'nodeName: a\nbogus: 1\n', `${F}:2: bogus: unknown key; expected one of `],
    [
      'unknown nested key',
      'modules:\n  edgeDNS:\n    enable: true\n    lisenPort: 53\n',
      `${F}:4: modules.edgeDNS.lisenPort: unknown key; expected one of enable, listenPort, listen, upstreams, ttl, cacheSize, serveStale, nativeFastPath`,
    ],
    [
      'port out of range',
      'modules:\n  edgeProxy:\n    listenPort: 70000\n',
      `${F}:3: modules.edgeProxy.listenPort: expected an integer from 1 to 65535, got number 70000`,
    ],
    [
      'port as string',
      'modules:\n  edgeProxy:\n    listenPort: "40001"\n',
      `${F}:3: modules.edgeProxy.listenPort: expected an integer from 1 to 65535, got string "40001"`,
    ],
    [
      'invalid CIDR',
      'modules:\n  edgeProxy:\n    subNet: 10.96.0.0/33\n',
      `${F}:3: modules.edgeProxy.subNet: expected a CIDR like 10.96.0.0/12, got string "10.96.0.0/33"`,
    ],
    [
      'boolean expected',
      'modules:\n  edgeDNS:\n    enable: yes please\n',
      `${F}:3: modules.edgeDNS.enable: expected true or false, got string "yes please"`,
    ],
    [
      'enum value',
      'intercept: ipchains\n',
      `${F}:1: intercept: expected one of auto, iptables, nftables, ebpf, none, got string "ipchains"`,
    ],
    [
      'bad listen address',
      'metricsListen: localhost\n',
      `${F}:1: metricsListen: expected IP:PORT like 127.0.0.1:10551, got string "localhost"`,
    ],
    [
      'mapping expected',
      'modules:\n  edgeDNS: true\n',
      `${F}:2: modules.edgeDNS: expected a mapping, got boolean true`,
    ],
    [
      'list expected',
      'manifests: /etc/edgemesh\n',
      `${F}:1: manifests: expected a list, got string "/etc/edgemesh"`,
    ],
    [
      'bad list item',
      'modules:\n  edgeDNS:\n    upstreams:\n      - 8.8.8.8\n      - dns.google\n',
      `${F}:5: modules.edgeDNS.upstreams[1]: expected an upstream DNS server IP or IP:PORT like 8.8.8.8:53, got string "dns.google"`,
    ],
    [
      'bad API URL',
      'kubeAPIConfig:\n  master: 127.0.0.1:10550\n',
      `${F}:2: kubeAPIConfig.master: expected an http:// or https:// URL, got string "127.0.0.1:10550"`,
    ],
    ['YAML syntax error', 'modules:\n  edgeDNS: [1, 2\n', `${F}:`],
    ['duplicate key', 'nodeName: a\nnodeName: b\n', `${F}:2: invalid YAML: Map keys must be unique`],
    ['top level not a mapping', '- a\n- b\n', `${F}:1: (top level): expected a mapping, got a list`],
    [
      'bad bridge IP',
      'commonConfig:\n  bridgeDeviceIP: 169.254.96\n',
      `${F}:2: commonConfig.bridgeDeviceIP: expected an IP address, got string "169.254.96"`,
    ],
  ];
  for (const [name, text, message] of cases) {
    it(name, () => {
      let error: unknown;
      try {
        parseConfigText(text, F);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).code).toBe(ErrorCode.CONFIG);
      expect((error as ConfigError).message.startsWith(message)).toBe(true);
      if (!message.endsWith(':')) {
        // Exact messages, except the unknown-top-level-key case which lists every key.
        if (name !== 'unknown top-level key' && name !== 'duplicate key')
          expect((error as ConfigError).message).toBe(message);
      }
    });
  }

  it('a missing file names the file', () => {
    expect(() => loadConfigFile('/nonexistent/edgemesh.yaml')).toThrow(
      '/nonexistent/edgemesh.yaml: cannot read config file (ENOENT)',
    );
  });
});

describe('config loader: good configs', () => {
  it('an empty file gives the defaults', () => {
    expect(parseConfigText('', F)).toEqual(defaultConfig());
  });

  it('reads an EdgeMesh-style agent config and keeps defaults for the rest', () => {
    const config = parseConfigText(
      [
        'apiVersion: agent.edgemesh.config.kubeedge.io/v1alpha1',
        'kind: EdgeMeshAgent',
        'kubeAPIConfig:',
        '  master: http://127.0.0.1:10550',
        'modules:',
        '  edgeDNS:',
        '    enable: true',
        '    listenPort: 5353',
        '  edgeProxy:',
        '    enable: true',
        '    subNet: 10.96.0.0/12',
        '  edgeGateway:',
        '    selector:',
        '      app: gw',
        '  edgeTunnel:',
        '    relayNodes:',
        '      - nodeName: cloud-1',
        '        advertiseAddress: [1.2.3.4]',
      ].join('\n'),
      F,
    );
    expect(config.kubeAPIConfig.master).toBe('http://127.0.0.1:10550');
    expect(config.modules.edgeDNS.listenPort).toBe(5353);
    expect(config.modules.edgeProxy.subNet).toBe('10.96.0.0/12');
    expect(config.modules.edgeProxy.listenPort).toBe(40001);
    expect(config.modules.edgeGateway.selector).toEqual({ app: 'gw' });
    expect(config.modules.edgeTunnel.relayNodes).toEqual([
      { nodeName: 'cloud-1', advertiseAddress: ['1.2.3.4'] },
    ]);
    expect(dnsListenAddress(config)).toBe('169.254.96.16:5353');
  });

  it('flags override the file, the file overrides defaults', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgemesh-config-'));
    const file = path.join(dir, 'c.yaml');
    fs.writeFileSync(
      file,
      'intercept: nftables\ndataplane: ts\nmodules:\n  edgeProxy:\n    listenPort: 41000\n',
    );
    const flags = parseFlags(
      'agent',
      ['--config', file, '--intercept', 'iptables', '--dns-listen', '127.0.0.1:5300'],
      agentFlags,
    );
    const config = resolveConfig(flags);
    expect(config.intercept).toBe('iptables');
    expect(config.dataplane).toBe('ts');
    expect(config.modules.edgeProxy.listenPort).toBe(41000);
    expect(dnsListenAddress(config)).toBe('127.0.0.1:5300');
    fs.rmSync(dir, { recursive: true });
  });

  it('bad flag values are usage errors naming the flag', () => {
    const bad: Array<[string[], string]> = [
      [['--proxy-port', '0'], "--proxy-port: expected an integer from 1 to 65535, got '0'"],
      [['--dataplane', 'fast'], "--dataplane: expected one of auto, native, ts, got 'fast'"],
      [['--dns-listen', '53'], "--dns-listen: expected IP:PORT like 127.0.0.1:53, got '53'"],
      [['--kube-api', 'ftp://x'], "--kube-api: expected an http:// or https:// URL, got 'ftp://x'"],
      [['--workers', 'many'], "--workers: expected an integer from 0 to 256, got 'many'"],
    ];
    for (const [argv, message] of bad) {
      let error: unknown;
      try {
        resolveConfig(parseFlags('agent', argv, agentFlags));
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(UsageError);
      expect((error as UsageError).message).toBe(message);
    }
  });
});
