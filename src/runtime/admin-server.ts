import { type Server, createServer } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { FerryError, describeError, wrapError } from '../core/errors.ts';
import type { ReloadResult } from './reload-plan.ts';

/** What GET /readyz answers: ready (200) or not (503), and why, with the trouble upstream either way. */
export interface Readiness {
  readonly ready: boolean;
  readonly reason?: string;
  readonly degraded?: readonly unknown[];
}

/** Who may call the admin server: without a token, everyone who can reach it (loopback by default). */
export interface AdminAccess {
  /** Bearer token required for /api/* and /metrics. */
  readonly token?: string;
  /** /metrics without the token. */
  readonly openMetrics?: boolean;
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
 *
 * With a token (required off loopback, see the config schema), /api/* and /metrics answer 401
 * without `Authorization: Bearer <token>`; /healthz and /readyz stay open. POST /api/reload
 * takes only `Content-Type: application/json` (415 otherwise): a form on some web page cannot
 * send that without the browser asking first, so it cannot reload a gateway (no CSRF).
 */
export class AdminServer {
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(host: string, port: number, handlers: AdminHandlers, access: AdminAccess = {}): Promise<AdminServer> {
    const expected = access.token === undefined ? undefined : Buffer.from(`Bearer ${access.token}`);
    const authorized = (header: string | undefined) => {
      if (expected === undefined) return true;
      const given = Buffer.from(header ?? '');
      return given.length === expected.length && timingSafeEqual(given, expected);
    };
    const server = createServer((req, res) => {
      const send = (code: number, body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(code, { 'content-type': 'application/json', ...headers });
        res.end(`${JSON.stringify(body)}\n`);
      };
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      const open = path === '/healthz' || path === '/readyz' || (path === '/metrics' && access.openMetrics === true);
      if (!open && !authorized(req.headers.authorization)) {
        req.resume();
        return send(401, { error: 'send the admin token: Authorization: Bearer <admin.token>' }, { 'www-authenticate': 'Bearer realm="ferry"' });
      }
      if (path === '/api/reload' && handlers.reload !== undefined) {
        if (req.method !== 'POST') return send(405, { error: 'use POST' });
        if (!/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '')) {
          req.resume();
          return send(415, { error: 'send Content-Type: application/json (a plain form post could come from any web page)' });
        }
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
