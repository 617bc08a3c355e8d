// deploy/Dockerfile cannot be built here (no docker), so this checks what can be checked by
// reading it: every path it COPYs exists and survives the .dockerignore, stages referenced exist,
// what the runtime copies from the build stage is where the agent looks for it, and the image the
// Kubernetes manifests run is the one the Dockerfile documents.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { repoRoot } from '../helpers/cli.ts';

const dockerfile = fs.readFileSync(path.join(repoRoot, 'deploy/Dockerfile'), 'utf8');
const ignore = fs
  .readFileSync(path.join(repoRoot, 'deploy/Dockerfile.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

/** Instructions with continuation lines joined: [keyword, rest]. */
const instructions: Array<[string, string]> = dockerfile
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'))
  .map((l) => {
    const [kw, ...rest] = l.split(/\s+/);
    return [kw!.toUpperCase(), rest.join(' ')];
  });

const stages = instructions
  .filter(([kw]) => kw === 'FROM')
  .map(([, rest]) => /\bAS\s+(\S+)/i.exec(rest)?.[1]);
const copies = instructions
  .filter(([kw]) => kw === 'COPY')
  .map(([, rest]) => {
    const parts = rest.split(/\s+/);
    const from = parts.find((p) => p.startsWith('--from='))?.slice('--from='.length);
    const args = parts.filter((p) => !p.startsWith('--'));
    return { from, sources: args.slice(0, -1), dest: args.at(-1)! };
  });

const ignored = (rel: string) => ignore.some((pat) => rel === pat || rel.startsWith(`${pat}/`));

describe('deploy/Dockerfile', () => {
  it('is multi-stage: a build stage and a runtime stage', () => {
    expect(stages).toEqual(['build', 'runtime']);
    for (const c of copies.filter((c) => c.from)) expect(stages).toContain(c.from);
  });

  it('every path copied from the build context exists and is not dockerignored', () => {
    const local = copies.filter((c) => !c.from).flatMap((c) => c.sources);
    expect(local).toEqual(
      expect.arrayContaining(['package.json', 'package-lock.json', 'binding.gyp', 'native', 'src']),
    );
    for (const src of local) {
      expect(fs.existsSync(path.join(repoRoot, src)), src).toBe(true);
      expect(ignored(src), `${src} is excluded by Dockerfile.dockerignore`).toBe(false);
    }
    // What the addon build reads must be in the context too (binding.gyp names its sources).
    const gyp = fs.readFileSync(path.join(repoRoot, 'binding.gyp'), 'utf8');
    for (const m of gyp.matchAll(/"(native\/[^"]+)"/g))
      expect(fs.existsSync(path.join(repoRoot, m[1]!)), m[1]).toBe(true);
  });

  it('the runtime gets the addon and eBPF objects where the agent loads them, and the CLI entry', () => {
    const fromBuild = copies.filter((c) => c.from === 'build').flatMap((c) => c.sources);
    expect(fromBuild).toEqual(expect.arrayContaining(['/src/node_modules', '/src/build/Release']));
    expect(fs.readFileSync(path.join(repoRoot, 'src/native/index.ts'), 'utf8')).toContain(
      'build/Release/edgemesh_native.node',
    );
    expect(fs.readFileSync(path.join(repoRoot, 'src/proxier/ebpf/probe.ts'), 'utf8')).toContain(
      'build/Release/bpf',
    );
    const entry = instructions.find(([kw]) => kw === 'ENTRYPOINT')![1];
    expect(entry).toContain('/app/src/cli/bin.js');
    expect(fs.existsSync(path.join(repoRoot, 'src/cli/bin.js'))).toBe(true);
  });

  it('the runtime has the tools the agent drives and a non-root default user', () => {
    const runtimeStart = dockerfile.indexOf('AS runtime');
    const runtime = dockerfile.slice(runtimeStart);
    for (const pkg of ['iptables', 'nftables', 'iproute2', 'libbpf1'])
      expect(runtime).toMatch(new RegExp(`\\b${pkg}\\b`));
    const user = instructions.filter(([kw]) => kw === 'USER').at(-1)?.[1];
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^(0|root)\b/);
  });

  it('the Kubernetes manifests run the image the Dockerfile documents, at the package version', () => {
    const tag = /docker build -t (\S+)/.exec(dockerfile)![1]!;
    const version = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')).version;
    expect(tag).toBe(`kubeedge/edgemesh:${version}`);
    for (const f of [
      'deploy/kubernetes/edgemesh/04-daemonset.yaml',
      'deploy/kubernetes/edgemesh-gateway/04-deployment.yaml',
    ]) {
      const obj = parseAllDocuments(fs.readFileSync(path.join(repoRoot, f), 'utf8'))[0]!.toJS();
      expect(obj.spec.template.spec.containers[0].image, f).toBe(tag);
    }
  });
});
