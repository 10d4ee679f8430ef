import { type Server, createServer } from 'node:http';
import { once } from 'node:events';
import { FerryError, describeError, wrapError } from '../core/errors.ts';
import type { ReloadResult } from './reload-plan.ts';

/** What GET /readyz answers: ready (200) or not (503), and why, with the trouble upstream either way. */
export interface Readiness {
  readonly ready: boolean;
  readonly reason?: string;
  readonly degraded?: readonly unknown[];
}

export interface AdminHandlers {
  /** Ready once the gateway accepts device traffic; not while starting, draining, or refusing device messages. */
  ready(): Readiness;
  status(): unknown;
  /** Reads the config again and applies it (POST /api/reload). */
  reload?(): Promise<ReloadResult>;
  /** Metrics in the Prometheus text format (GET /metrics). */
  metrics?(): string;
}

const PATHS = ['/healthz', '/readyz', '/api/status', '/metrics', 'POST /api/reload'];

/**
 * GET /healthz (process alive), GET /readyz (accepting traffic), GET /api/status (JSON),
 * GET /metrics (Prometheus text format), POST /api/reload (apply the changed config: 200 with what changed, 422 with its problems,
 * 409 while the gateway starts or stops).
 */
export class AdminServer {
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(host: string, port: number, handlers: AdminHandlers): Promise<AdminServer> {
    const server = createServer((req, res) => {
      const send = (code: number, body: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify(body)}\n`);
      };
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/api/reload' && handlers.reload !== undefined) {
        if (req.method !== 'POST') return send(405, { error: 'use POST' });
        req.resume();
        handlers.reload().then(
          (result) => {
            if (result.ok) send(200, { applied: result.applied, warnings: result.warnings });
            else send(result.notRunning === true ? 409 : 422, { errors: result.errors });
          },
          (error: unknown) => send(500, { error: describeError(error) }),
        );
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { error: 'method not allowed' });
      switch (path) {
        case '/healthz':
          return send(200, { status: 'ok' });
        case '/readyz':
        {
          const { ready, reason, degraded = [] } = handlers.ready();
          const body = { status: ready ? (degraded.length > 0 ? 'degraded' : 'ready') : 'not ready', ...(reason === undefined ? {} : { reason }), degraded };
          return send(ready ? 200 : 503, body);
        }
        case '/api/status':
          return send(200, handlers.status());
        case '/metrics':
          if (handlers.metrics === undefined) break;
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
          res.end(handlers.metrics());
          return;
        default:
      }
      return send(404, { error: 'not found', paths: PATHS });
    });
    try {
      server.listen(port, host);
      await once(server, 'listening');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new FerryError('PORT_IN_USE', `admin port ${port} on ${host} is already in use`, { component: 'admin server', cause: error });
      }
      throw wrapError('LISTEN_FAILED', `admin server cannot listen on ${host}:${port}`, error, { component: 'admin server' });
    }
    return new AdminServer(server);
  }

  get port(): number {
    const address = this.#server.address();
    return typeof address === 'object' && address !== null ? address.port : 0;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((done) => this.#server.close(() => done()));
  }
}
