// A TCP port whose connects hang (for connect-timeout tests): a listener that never accepts, with
// its accept queue filled, so the kernel drops further SYNs. Node always accepts, so python3
// (a build dependency already) holds the socket.
import { type ChildProcess, spawn } from 'node:child_process';

const SCRIPT = `
import socket, sys, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
port = s.getsockname()[1]
fill = []
for i in range(3):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(('127.0.0.1', port))
    except BlockingIOError: pass
    fill.append(c)
time.sleep(0.1)
print(port, flush=True)
sys.stdin.read()
`;

/** A 127.0.0.1 port where connect() hangs until the caller's timeout; close() releases it. */
export async function stalledListener(): Promise<{ port: number; close(): void }> {
  const child: ChildProcess = spawn('python3', ['-c', SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
  });
  return {
    port,
    close: () => {
      child.kill('SIGKILL');
    },
  };
}
