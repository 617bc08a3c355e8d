// Ordered start and reverse-order stop of the agent's modules, so shutdown leaves nothing behind.
import type { Logger } from './log.ts';

/** A module the agent runs: started in order, stopped in reverse order. */
export interface Service {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Runs services in order; on stop (or a failed start) stops the started ones in reverse. */
export class Lifecycle {
  private readonly started: Service[] = [];
  private stopping: Promise<void> | undefined;

  constructor(private readonly log: Logger) {}

  /** Starts a service and remembers it for stop(); rethrows its start error. */
  async start(service: Service): Promise<void> {
    await service.start();
    this.started.push(service);
    this.log.debug({ module: service.name }, 'started');
  }

  /** Stops every started service in reverse order; one failure does not stop the others. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      while (this.started.length > 0) {
        const service = this.started.pop()!;
        try {
          await service.stop();
          this.log.debug({ module: service.name }, 'stopped');
        } catch (err) {
          this.log.error({ module: service.name, err }, 'stop failed');
        }
      }
    })();
    return this.stopping;
  }
}

/** The first SIGINT/SIGTERM from now on, and `dispose()` to stop listening for it. */
export interface TerminationSignal {
  signal: Promise<NodeJS.Signals>;
  dispose(): void;
}

/** Starts listening for SIGINT/SIGTERM (the long-running commands' one shutdown trigger). */
export function awaitTermination(): TerminationSignal {
  let signalled: (sig: NodeJS.Signals) => void = () => {};
  const signal = new Promise<NodeJS.Signals>((resolve) => {
    signalled = resolve;
  });
  const onSignal = (sig: NodeJS.Signals) => signalled(sig);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
