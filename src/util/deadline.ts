// Waiting for a set of running things to end, but not forever: the shared first half of every
// "drain, then abort what is left" stop (tunnel pumps, framed joins, relay splices).

/** Resolves true when every promise in `pending` settled within `deadlineMs`, false when the deadline came first. */
export async function endedWithin(
  pending: readonly Promise<unknown>[],
  deadlineMs: number,
): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.allSettled(pending).then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), deadlineMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
