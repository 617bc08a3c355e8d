// Piscina worker entry: a worker thread does not inherit the tsx loader, so register it here and
// then load the TypeScript worker.
import { register } from 'tsx/esm/api';

register();
const { default: runListenerWorker } = await import('./listener-worker.ts');

export default runListenerWorker;
