// The flat native boundary: every function the C++ addon exports (native/src/addon.cc).
// Native failures throw an Error with `syscall` and `errno`; src/native/index.ts maps them to
// EdgemeshError codes.

export interface OriginalDestination {
  address: string;
  port: number;
}

export interface NativeBinding {
  /** Version string of the addon build. */
  version(): string;
  /** Moves up to maxBytes from inFd to outFd with splice(2) through a pipe of pipeSize bytes; blocking. */
  spliceCopy(inFd: number, outFd: number, maxBytes: number, pipeSize: number): number;
  /** getsockopt(SO_ORIGINAL_DST) of an accepted IPv4 socket. */
  originalDst(fd: number): OriginalDestination;
}
