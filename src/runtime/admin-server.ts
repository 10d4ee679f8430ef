import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { CONTENT_TYPES, type MetricsFormat, negotiateMetricsFormat } from '../observability/openmetrics.ts';
import { FerryError, describeError, wrapError } from '../core/errors.ts';
import { isLoopbackHost } from '../core/loopback.ts';
import { DEFAULT_REFUSAL_LOG_INTERVAL_MS, RefusalLog } from '../mqtt/refusal-log.ts';
import { SocketGate } from '../mqtt/socket-gate.ts';
import { type DeadlineMissed, requestDeadlines } from './admin-deadlines.ts';
import type { ReloadResult } from './reload-plan.ts';
import { PAGE_HEADERS, lazyStatusPage } from './status-page/assets.ts';

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
  /** Metrics in the Prometheus text format, or OpenMetrics when the scraper asks for it (GET /metrics). */
  metrics?(format: MetricsFormat): string;
  /** The status page's chart data after a time (ms since the epoch; GET /api/series?after=). */
  series?(after: number): unknown;
}

/** Where the admin server reports a request it failed to answer (the gateway's logger and counters). */
export interface AdminReporting {
  readonly logger: Logger;
  readonly counters: Counters;
}

/**
 * Sockets one address may hold open on the admin server (a browser opens up to 6, a scraper 1
 * or 2), and all addresses together; a socket past either is closed at once.
 */
const MAX_SOCKETS_PER_ADDRESS = 32;
const MAX_SOCKETS = 256;
/** Time a socket has for each request's head (from its accept for the first), and for a whole request with its body. */
const HEAD_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/**
 * Time a client has to take an answer once it is written to its socket, and one more second for
 * each 1,000 bytes of it: an operator's large answer (the status page's history, /metrics of many
 * bridges) is taken whole over a slow link. Without the token only /healthz, /readyz and refusals
 * are answered, all under 1 KB: a client that reads none of them is still closed after about 30 s.
 */
const ANSWER_TIMEOUT_MS = 30_000;
const ANSWER_MIN_BYTES_PER_S = 1_000;

/** Sent with every answer: a browser must take JSON and metrics for what they are, never as a page or a script. */
const NO_SNIFF = { 'x-content-type-options': 'nosniff' } as const;

/** Answers a request with a JSON body. */
type Send = (code: number, body: unknown, headers?: Record<string, string>) => void;

const PATHS = ['/', '/healthz', '/readyz', '/api/status', '/api/series', '/metrics', 'POST /api/reload'];

/** The `path` label of admin.requests.failed: a closed list, whatever paths callers send. */
const FAILING_PATHS = new Set(['/', '/readyz', '/api/status', '/api/series', '/metrics', '/api/reload']);
const failedPathLabel = (path: string) => (FAILING_PATHS.has(path) ? path : path.startsWith('/ui/') ? '/ui/' : 'other');

/**
 * Without a token, the Host header a request may carry: a loopback name or address, or the
 * configured host, with any port. A web page that rebinds its own name to 127.0.0.1 (DNS
 * rebinding) sends its name, so it cannot read the status or reload. No Host at all is not a
 * browser, and is let through.
 */
function hostCheck(configured: string): (header: string | undefined) => boolean {
  const own = configured.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return (header) => {
    if (header === undefined) return true;
    const name = header
      .toLowerCase()
      .replace(/^(\[[^\]]*\]|[^:]*)(:\d*)?$/, '$1')
      .replace(/^\[(.*)\]$/, '$1');
    return name === own || isLoopbackHost(name);
  };
}

/**
 * GET / (the status page, its files under /ui/), GET /healthz (process alive), GET /readyz
 * (accepting traffic), GET /api/status (JSON), GET /api/series (the page's charts), GET /metrics
 * (Prometheus text format 0.0.4, or OpenMetrics 1.0.0 when the Accept header prefers it), POST /api/reload (apply the changed config: 200 with what changed,
 * 422 with its problems, 409 while the gateway starts or stops).
 *
 * Without a token (on loopback), a request whose Host is neither a loopback name nor the
 * configured host is answered 421: a web page cannot reach it by DNS rebinding.
 *
 * With a token (required off loopback, see the config schema), everything but /healthz and
 * /readyz answers 401 without `Authorization: Bearer <token>`, or HTTP Basic with the token as
 * the password (any user name): the 401 offers Basic beside Bearer, as a browser opening the page
 * can only send Basic, and it sends it on for the page's own requests. POST /api/reload
 * takes only `Content-Type: application/json` (415 otherwise): a form on some web page cannot
 * send that without the browser asking first, so it cannot reload a gateway (no CSRF).
 *
 * `replaceToken` (a reload of a rotated token) applies to requests that arrive from then on:
 * one already let in, the reload's own among them, gets its answer.
 *
 * A socket that has not sent a request's whole head within 10 s (from its accept, or from its
 * last answer), or a whole request within 30 s, or has not taken an answer within 30 s of its
 * writing and a second per KB of it, is closed, and an address holds at most 32 sockets, all
 * addresses 256: idle or slow sockets, which need no token, cannot use up the process's file
 * descriptors and memory that device connections need. Refused sockets are counted
 * (admin.sockets.refused) and logged like failures below.
 *
 * A handler that throws (the buffer found corrupt while it is read) gets its request answered
 * 500, or 503 from /readyz, and the process runs on. Each such failure is counted
 * (admin.requests.failed) and logged once per path a minute, with a line summing up the rest:
 * a scraper asking every few seconds must not fill the log.
 */
export class AdminServer {
  readonly #server: Server;
  readonly #failures: RefusalLog | undefined;
  readonly #token: AdminToken;

  private constructor(server: Server, failures: RefusalLog | undefined, token: AdminToken) {
    this.#server = server;
    this.#failures = failures;
    this.#token = token;
  }

  static async start(host: string, port: number, handlers: AdminHandlers, access: AdminAccess = {}, reporting?: AdminReporting): Promise<AdminServer> {
    // The broker's limiter of repeated lines, keyed here by path: the first failure in full, the rest summed up a minute later.
    const failures = reporting === undefined ? undefined : new RefusalLog({ logger: reporting.logger, intervalMs: DEFAULT_REFUSAL_LOG_INTERVAL_MS });
    /** A request the handlers failed to answer: `status` undefined when its answer had begun (the connection is cut). */
    const failed = (req: IncomingMessage, path: string, status: number | undefined, error: unknown) => {
      const label = failedPathLabel(path);
      reporting?.counters.count('admin.requests.failed', { path: label });
      failures?.refused({
        who: { path: label },
        reason: 'handler_failed',
        message: status === undefined ? 'admin request failed after its answer began, connection cut' : `admin request failed, answered ${status}`,
        detail: { method: req.method, err: error },
      });
    };
    const token = new AdminToken(access.token);
    const ownHost = hostCheck(host);
    const hostAllowed = (header: string | undefined) => token.required || ownHost(header);
    const page = lazyStatusPage();
    const answer = (req: IncomingMessage, res: ServerResponse, path: string, send: Send) => {
      if (!hostAllowed(req.headers.host)) {
        req.resume();
        return send(421, {
          error: 'this admin server answers only to a loopback Host (localhost, 127.0.0.1, [::1]) or its own address; set admin.token to call it by another name',
        });
      }
      const open = path === '/healthz' || path === '/readyz' || (path === '/metrics' && access.openMetrics === true);
      if (!open && !token.passes(req.headers.authorization)) {
        req.resume();
        // Two challenges: Bearer for programs, Basic for a browser, which then asks for a user name and
        // password and sends them on with the page's own requests (same realm everywhere).
        res.setHeader('www-authenticate', ['Bearer realm="ferry"', 'Basic realm="ferry admin: any user name, admin.token as the password", charset="UTF-8"']);
        return send(401, { error: 'send the admin token: Authorization: Bearer <admin.token> (or Basic, with the token as the password)' });
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
          (error: unknown) => {
            failed(req, path, 500, error);
            send(500, { error: describeError(error) });
          },
        );
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { error: 'method not allowed' });
      const asset = page(path);
      if (asset !== undefined) {
        res.writeHead(200, { 'content-type': asset.type, ...PAGE_HEADERS });
        res.end(asset.body);
        return;
      }
      switch (path) {
        case '/healthz':
          return send(200, { status: 'ok' });
        case '/readyz': {
          const { ready, reason, degraded = [] } = handlers.ready();
          const body = { status: ready ? (degraded.length > 0 ? 'degraded' : 'ready') : 'not ready', ...(reason === undefined ? {} : { reason }), degraded };
          return send(ready ? 200 : 503, body);
        }
        case '/api/status':
          return send(200, handlers.status());
        case '/api/series': {
          if (handlers.series === undefined) break;
          const after = Number(new URLSearchParams((req.url ?? '').split('?')[1] ?? '').get('after') ?? 0);
          return send(200, handlers.series(Number.isFinite(after) ? after : 0));
        }
        case '/metrics': {
          if (handlers.metrics === undefined) break;
          // Rendered before the head is written, so that a failure can still be answered 500.
          const format = negotiateMetricsFormat(req.headers.accept);
          const text = handlers.metrics(format);
          res.writeHead(200, { 'content-type': CONTENT_TYPES[format], vary: 'Accept', ...NO_SNIFF });
          res.end(text);
          return;
        }
        default:
      }
      return send(404, { error: 'not found', paths: PATHS });
    };
    // Sockets need no token to be held open: the gate bounds their number per address and the
    // time to their first request's head; node:http bounds a head once begun and whole requests;
    // `deadlines` the time from an answer to the next request and the time to take an answer.
    const refused = (limit: 'per_address' | 'total', address: string) => {
      if (limit === 'per_address') reporting?.counters.count('admin.sockets.refused', { reason: 'per_address' });
      else reporting?.counters.count('admin.sockets.refused', { reason: 'total' });
      failures?.refused({ who: { address }, reason: limit, message: 'admin socket refused: too many open' });
    };
    const closed = (reason: DeadlineMissed, address: string) =>
      failures?.refused({
        who: { address },
        reason,
        message: reason === 'connect_timeout' ? 'admin socket closed: no request within 10 s' : 'admin socket closed: answer not taken within 30 s and 1 s per KB',
      });
    const gate = new SocketGate({
      maxPerAddress: MAX_SOCKETS_PER_ADDRESS,
      connectTimeoutMs: HEAD_TIMEOUT_MS,
      onRefuse: (reason, address) => (reason === 'too_many_sockets' ? refused('per_address', address) : closed(reason, address)),
    });
    const deadlines = requestDeadlines({ nextRequestMs: HEAD_TIMEOUT_MS, answerMs: ANSWER_TIMEOUT_MS, answerMinBytesPerS: ANSWER_MIN_BYTES_PER_S }, (reason, socket) =>
      closed(reason, socket.remoteAddress ?? 'unknown'),
    );
    const limits = { headersTimeout: HEAD_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: 1_000 };
    // node:http as a CommonJS module: its ES facade loads undici (~50 ms of every start; see
    // src/mqtt/listeners.ts).
    const server = process.getBuiltinModule('node:http').createServer(limits, (req, res) => {
      gate.connected(req.socket);
      deadlines(req, res);
      const send: Send = (code, body, headers = {}) => {
        res.writeHead(code, { 'content-type': 'application/json', ...NO_SNIFF, ...headers });
        res.end(`${JSON.stringify(body)}\n`);
      };
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      // What a handler throws (a statement on a corrupt buffer, a page file that cannot be read)
      // is this request's answer: thrown out of a request listener it would end the process,
      // without the drain and exit code the gateway gives a corrupt buffer.
      try {
        answer(req, res, path, send);
      } catch (error) {
        req.resume();
        failed(req, path, res.headersSent ? undefined : path === '/readyz' ? 503 : 500, error);
        if (res.headersSent) {
          res.destroy();
          return;
        }
        res.removeHeader('www-authenticate');
        if (path === '/readyz') send(503, { status: 'not ready', reason: `readiness cannot be read: ${describeError(error)}`, degraded: [] });
        else send(500, { error: describeError(error) });
      }
    });
    server.maxConnections = MAX_SOCKETS;
    server.on('connection', (socket: Socket) => gate.accept(socket, socket.remoteAddress ?? 'unknown', 'http'));
    server.on('drop', (data?: { remoteAddress?: string }) => refused('total', data?.remoteAddress ?? 'unknown'));
    try {
      server.listen(port, host);
      await once(server, 'listening');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new FerryError('PORT_IN_USE', `admin port ${port} on ${host} is already in use`, { component: 'admin server', cause: error });
      }
      throw wrapError('LISTEN_FAILED', `admin server cannot listen on ${host}:${port}`, error, { component: 'admin server' });
    }
    return new AdminServer(server, failures, token);
  }

  /** The token callers must send from now on; undefined lets everyone who can reach the server call it (on loopback only: the config schema and reload-plan.ts see to it). */
  replaceToken(token: string | undefined): void {
    this.#token.replace(token);
  }

  get port(): number {
    const address = this.#server.address();
    return typeof address === 'object' && address !== null ? address.port : 0;
  }

  async close(): Promise<void> {
    this.#failures?.close();
    this.#server.closeAllConnections();
    await new Promise<void>((done) => this.#server.close(() => done()));
  }
}

/**
 * The admin token, replaced in place by a reload. `passes` tells whether an Authorization header
 * carries it: `Bearer <token>`, or `Basic` with the token as the password, compared in constant
 * time. Without a token, everyone passes.
 */
class AdminToken {
  #expected: Buffer | undefined;

  constructor(token: string | undefined) {
    this.replace(token);
  }

  get required(): boolean {
    return this.#expected !== undefined;
  }

  replace(token: string | undefined): void {
    this.#expected = token === undefined ? undefined : Buffer.from(token);
  }

  passes(header: string | undefined): boolean {
    const expected = this.#expected;
    if (expected === undefined) return true;
    const same = (given: string) => {
      const bytes = Buffer.from(given);
      return bytes.length === expected.length && timingSafeEqual(bytes, expected);
    };
    const [scheme = '', value = ''] = (header ?? '').trim().split(/\s+/, 2);
    if (/^bearer$/i.test(scheme)) return same(value);
    if (!/^basic$/i.test(scheme)) return false;
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 && same(decoded.slice(colon + 1));
  }
}
