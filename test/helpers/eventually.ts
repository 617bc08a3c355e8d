// Polling for conditions that become true asynchronously (a watch delivering, a port opening).

/** Polls `check` every 50 ms until it resolves true; throws after `ms` (bounded, never hangs). */
export async function eventually(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('condition not met in time');
}
