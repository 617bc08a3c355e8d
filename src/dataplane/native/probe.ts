// Whether the native plane can run here: the addon loads, has the plane functions, may mark its
// upstream sockets (CAP_NET_ADMIN) and can bind SO_REUSEPORT listeners. `--dataplane auto` uses it.
import { errorMessage } from '../../errors.ts';
import { loadNative } from '../../native/index.ts';

/** undefined when the native plane can run; otherwise why not (for logs and /status). */
export function probeNativeDataplane(mark: number): string | undefined {
  const loaded = loadNative();
  if (!loaded.binding) return `native addon unavailable: ${loaded.reason}`;
  const native = loaded.binding;
  if (typeof native.planeCreate !== 'function')
    return `native addon at ${loaded.path} has no proxy plane (rebuild it)`;
  if (mark !== 0) {
    const errno = native.probeMark(mark);
    if (errno !== 0)
      return `setsockopt(SO_MARK) not permitted (errno ${errno}): the native plane needs CAP_NET_ADMIN`;
  }
  let id = 0;
  try {
    id = native.planeCreate(mark, 1000, 0, true, 1 << 20, 256 << 10, 1, 1);
    native.planeListen(id, '127.0.0.1', 0, 2);
    return undefined;
  } catch (err) {
    return `native plane probe failed: ${errorMessage(err)}`;
  } finally {
    if (id !== 0) native.planeDestroy(id);
  }
}
