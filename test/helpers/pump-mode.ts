// Selects which sealed-pump implementation (native addon or TS twin) the tests of a block run
// against, through EDGEMESH_SEALED_PUMP, and restores the caller's setting afterwards.
import { afterAll, beforeEach } from 'vitest';

/** Every test of the enclosing block runs with `mode`'s pumps; the previous setting returns after the block. */
export function useSealedPumpMode(mode: 'ts' | 'native'): void {
  const prev = process.env.EDGEMESH_SEALED_PUMP;
  beforeEach(() => {
    if (mode === 'ts') process.env.EDGEMESH_SEALED_PUMP = 'ts';
    else delete process.env.EDGEMESH_SEALED_PUMP;
  });
  afterAll(() => {
    if (prev === undefined) delete process.env.EDGEMESH_SEALED_PUMP;
    else process.env.EDGEMESH_SEALED_PUMP = prev;
  });
}
