// Root-only tests run wherever they can: always in CI (which runs as root) and for root users.
// They are skipped only for a non-root developer outside CI, and that skip is announced.

/** True when the process runs as root. */
export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** True when running under CI (CI=true). */
export const isCI = process.env.CI === 'true' || process.env.CI === '1';

/**
 * Whether root-only tests must be skipped here. In CI without root this throws: a CI that cannot
 * run them must fail loudly rather than pass without testing.
 */
export function skipUnlessRoot(what: string): boolean {
  if (isRoot) return false;
  if (isCI) throw new Error(`${what} needs root, and CI must run it: run CI as root`);
  console.warn(`SKIPPED (not root, not CI): ${what} needs root; run the suite as root to include it`);
  return true;
}
