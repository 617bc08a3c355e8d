// Loads the native addon once per thread and maps its failures to edgemesh error codes. When the
// addon is missing or broken, callers get `undefined` and a reason, and run on pure-TS paths.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EdgemeshError, ErrorCode, errorMessage } from '../errors.ts';
import type { NativeBinding } from './binding.d.ts';

export type { NativeBinding, NativePumpDone, OriginalDestination, PlaneHandoff } from './binding.d.ts';
export {
  PLANE_COUNTER_NAMES,
  type PlaneCounterName,
  SERVICE_COUNTER_NAMES,
  type ServiceCounterName,
} from './plane-counters.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Where the addon may be found, in order: an explicit override, node-gyp's build, cmake-js's build. */
export function addonCandidates(): string[] {
  const override = process.env.EDGEMESH_NATIVE_ADDON;
  return [
    ...(override ? [path.resolve(override)] : []),
    path.join(repoRoot, 'build/Release/edgemesh_native.node'),
    path.join(repoRoot, 'build/cmake/Release/edgemesh_native.node'),
  ];
}

export interface NativeLoadResult {
  binding: NativeBinding | undefined;
  /** Path that loaded, when it loaded. */
  path?: string;
  /** Why it did not load, when it did not. */
  reason?: string;
}

let cached: NativeLoadResult | undefined;

/** Loads the addon (cached per thread); never throws. */
export function loadNative(): NativeLoadResult {
  if (cached) return cached;
  if (process.env.EDGEMESH_DISABLE_NATIVE === '1') {
    cached = { binding: undefined, reason: 'disabled by EDGEMESH_DISABLE_NATIVE=1' };
    return cached;
  }
  const require = createRequire(import.meta.url);
  const failures: string[] = [];
  for (const candidate of addonCandidates()) {
    try {
      const binding = wrapBinding(require(candidate) as NativeBinding);
      cached = { binding, path: candidate };
      return cached;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      failures.push(
        e.code === 'MODULE_NOT_FOUND' ? `${candidate}: not built` : `${candidate}: ${errorMessage(err)}`,
      );
    }
  }
  cached = { binding: undefined, reason: failures.join('; ') };
  return cached;
}

/** Loads the addon or throws EDGEMESH_ERR_NATIVE_LOAD with the reason. */
export function requireNative(): NativeBinding {
  const r = loadNative();
  if (!r.binding) throw new EdgemeshError(ErrorCode.NATIVE_LOAD, `native addon unavailable: ${r.reason}`);
  return r.binding;
}

/** Converts an error thrown by the addon into an EdgemeshError with a stable code. */
export function mapNativeError(err: unknown): EdgemeshError {
  if (err instanceof EdgemeshError) return err;
  const e = err as Error & { syscall?: string; errno?: number };
  if (e instanceof TypeError && e.message.startsWith('Usage:')) {
    return new EdgemeshError(ErrorCode.NATIVE_USAGE, e.message, { cause: err });
  }
  if (typeof e?.syscall === 'string') {
    return new EdgemeshError(ErrorCode.NATIVE_SYSCALL, e.message, {
      cause: err,
      syscall: e.syscall,
      errno: e.errno,
    });
  }
  return new EdgemeshError(ErrorCode.NATIVE_SYSCALL, errorMessage(err), { cause: err });
}

function wrapBinding(raw: NativeBinding): NativeBinding {
  const wrapped: Record<string, unknown> = {};
  // Addon methods are non-enumerable properties, so list own property names, not entries.
  for (const name of Object.getOwnPropertyNames(raw)) {
    const fn = (raw as unknown as Record<string, unknown>)[name];
    if (typeof fn !== 'function') continue;
    wrapped[name] = (...args: unknown[]) => {
      try {
        return (fn as (...a: unknown[]) => unknown).apply(raw, args);
      } catch (err) {
        throw mapNativeError(err);
      }
    };
  }
  return wrapped as unknown as NativeBinding;
}
