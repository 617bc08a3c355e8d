// The agent's HTTP endpoint: Prometheus /metrics, /healthz (process alive), /readyz (first sync
// done) and /status (JSON for `edgemesh status`).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { EdgemeshError, ErrorCode } from '../errors.ts';
import type { Service } from '../util/lifecycle.ts';
import { parseHostPort } from '../util/net.ts';

/** Process-wide metrics registry; modules register their own metrics on it. */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'edgemesh_' });
  return registry;
}

export interface MetricsServerOptions {
  listen: string;
  registry: Registry;
  /** Whether the agent is ready to serve (first snapshot applied). */
  ready: () => boolean;
  /** The JSON document served at /status. */
  status: () => unknown;
}

/** HTTP server for metrics and health; a Service for the agent's lifecycle. */
export class MetricsServer implements Service {
  readonly name = 'metrics';
  private server: http.Server | undefined;

  constructor(private readonly options: MetricsServerOptions) {}

  /** The bound address after start() (port resolved when 0 was asked). */
  address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }

  async start(): Promise<void> {
    const hp = parseHostPort(this.options.listen);
    if (!hp)
      throw new EdgemeshError(ErrorCode.LISTEN, `metrics: invalid listen address ${this.options.listen}`);
    const server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new EdgemeshError(
            ErrorCode.LISTEN,
            `metrics: cannot listen on ${this.options.listen}: ${err.message}`,
            {
              cause: err,
              syscall: err.syscall,
              errno: err.errno,
            },
          ),
        ),
      );
      server.listen(hp.port, hp.host, () => resolve());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    try {
      switch (url.pathname) {
        case '/metrics': {
          const body = await this.options.registry.metrics();
          res.writeHead(200, { 'content-type': this.options.registry.contentType }).end(body);
          return;
        }
        case '/healthz':
          res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
          return;
        case '/readyz': {
          const ready = this.options.ready();
          res
            .writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' })
            .end(ready ? 'ready\n' : 'not ready\n');
          return;
        }
        case '/status':
          res
            .writeHead(200, { 'content-type': 'application/json' })
            .end(`${JSON.stringify(this.options.status())}\n`);
          return;
        default:
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`error: ${(err as Error).message}\n`);
    }
  }
}
