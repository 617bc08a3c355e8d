// Everything the suite creates (namespaces, processes) is registered here and undone on normal
// exit, on an error and on Ctrl-C, so an interrupted run leaves no namespaces or proxies behind.

type Undo = () => void;

const undos = new Map<number, Undo>();
let nextId = 1;
let installed = false;

/** Registers a synchronous undo action; returns a function that runs it now and unregisters it. */
export function onCleanup(undo: Undo): () => void {
  installHandlers();
  const id = nextId++;
  undos.set(id, undo);
  return () => {
    const u = undos.get(id);
    undos.delete(id);
    if (u) safely(u);
  };
}

/** Runs every registered undo action, newest first. */
export function cleanupAll(): void {
  const pending = [...undos.entries()].reverse();
  undos.clear();
  for (const [, u] of pending) safely(u);
}

function safely(u: Undo): void {
  try {
    u();
  } catch {
    // Best effort: one failed undo (say, a namespace already gone) must not stop the others.
  }
}

function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nedgemesh bench: ${sig}, cleaning up\n`);
      cleanupAll();
      process.exit(130);
    });
  }
}
