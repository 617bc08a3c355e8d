// Every error edgemesh raises on purpose: one base class with a stable `code` that tests and
// operators match on, the `cause` that led to it, and `syscall`/`errno` when a syscall failed.

/** Stable error codes; a code never changes meaning once released. */
export const ErrorCode = {
  /** Bad command line: unknown flag, missing or malformed value. Exit code 2. */
  USAGE: 'EDGEMESH_ERR_USAGE',
  /** Bad config file: unknown key, wrong type, invalid CIDR/port. Exit code 2. */
  CONFIG: 'EDGEMESH_ERR_CONFIG',
  /** A manifest file could not be parsed or holds an invalid object. */
  MANIFEST: 'EDGEMESH_ERR_MANIFEST',
  /** The persisted state file is unreadable or of an unknown version. */
  STATE: 'EDGEMESH_ERR_STATE',
  /** The Kubernetes API could not be reached or answered with an error. */
  KUBE_API: 'EDGEMESH_ERR_KUBE_API',
  /** The native addon is missing or failed to load. */
  NATIVE_LOAD: 'EDGEMESH_ERR_NATIVE_LOAD',
  /** A native call failed in a syscall (see `syscall` and `errno`). */
  NATIVE_SYSCALL: 'EDGEMESH_ERR_NATIVE_SYSCALL',
  /** A native call was made with bad arguments (a bug on the TS side). */
  NATIVE_USAGE: 'EDGEMESH_ERR_NATIVE_USAGE',
  /** Installing or removing interception rules failed. */
  INTERCEPT: 'EDGEMESH_ERR_INTERCEPT',
  /** Attaching or loading an eBPF program failed. */
  ATTACH: 'EDGEMESH_ERR_ATTACH',
  /** A listener could not be bound (address in use, no permission, no such address). */
  LISTEN: 'EDGEMESH_ERR_LISTEN',
  /** A DNS packet could not be parsed or answered. */
  DNS: 'EDGEMESH_ERR_DNS',
  /** An external command (ip, iptables, nft ...) failed or is missing. */
  COMMAND: 'EDGEMESH_ERR_COMMAND',
  /** No endpoint could serve a connection. */
  NO_ENDPOINT: 'EDGEMESH_ERR_NO_ENDPOINT',
  /** Tunnel or relay authentication or framing failure. */
  TUNNEL: 'EDGEMESH_ERR_TUNNEL',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface EdgemeshErrorOptions {
  cause?: unknown;
  syscall?: string;
  errno?: number;
}

/** Base class of all edgemesh errors; `code` is stable, `message` is for people. */
export class EdgemeshError extends Error {
  readonly code: ErrorCodeValue;
  readonly syscall?: string;
  readonly errno?: number;

  constructor(code: ErrorCodeValue, message: string, options: EdgemeshErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EdgemeshError';
    this.code = code;
    if (options.syscall !== undefined) this.syscall = options.syscall;
    if (options.errno !== undefined) this.errno = options.errno;
  }
}

/** A bad command line; the CLI prints the message and exits 2. */
export class UsageError extends EdgemeshError {
  constructor(message: string) {
    super(ErrorCode.USAGE, message);
    this.name = 'UsageError';
  }
}

/** A bad config file; message is `file:line: key.path: expected ..., got ...`; exit 2. */
export class ConfigError extends EdgemeshError {
  readonly file: string | undefined;
  readonly line: number | undefined;
  readonly keyPath: string;

  constructor(file: string | undefined, line: number | undefined, keyPath: string, detail: string) {
    const where = file ? `${file}${line ? `:${line}` : ''}: ` : '';
    super(ErrorCode.CONFIG, `${where}${keyPath ? `${keyPath}: ` : ''}${detail}`);
    this.name = 'ConfigError';
    this.file = file;
    this.line = line;
    this.keyPath = keyPath;
  }
}

/** True when `err` is an EdgemeshError with the given code. */
export function hasCode(err: unknown, code: ErrorCodeValue): err is EdgemeshError {
  return err instanceof EdgemeshError && err.code === code;
}

/** The message of any thrown value, for logs. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
