// `npm run bench`: the benchmark suite entry point (bench/README.md). Not built yet.
export async function benchCommand(_argv: string[], _out: (s: string) => void): Promise<number> {
  process.stderr.write('edgemesh bench: the benchmark suite is not available in this build yet\n');
  return 1;
}
