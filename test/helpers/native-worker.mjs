// A piscina worker that loads the native addon in its own thread (proves the addon is
// context-aware) and splices bytes between two socket fds owned by the main thread.
import { register } from 'tsx/esm/api';

register();
const { requireNative } = await import('../../src/native/index.ts');

export default function spliceInWorker({ inFd, outFd, bytes }) {
  const native = requireNative();
  return { version: native.version(), moved: native.spliceCopy(inFd, outFd, bytes, 1 << 20) };
}
