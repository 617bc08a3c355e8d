// A piscina task that turns its worker thread into one native plane worker: it blocks in
// planeRun() (an epoll loop in C++) until the plane is stopped and drained. Plain JS on purpose:
// no TypeScript loader is needed in the thread, and nothing else ever runs on it.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** Runs worker `index` of plane `planeId`; resolves with {ok} or the native error's fields. */
export default function runPlaneWorker({ addonPath, planeId, index }) {
  const addon = require(addonPath);
  try {
    addon.planeRun(planeId, index);
    return { ok: true };
  } catch (err) {
    return { ok: false, message: err.message, syscall: err.syscall, errno: err.errno };
  }
}
