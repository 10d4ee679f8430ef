import { describeError } from '../core/errors.ts';

/** How long connecting to the admin server may take (the DNS lookup included). */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Why the admin server gave no answer: one line, its cause named (ECONNREFUSED, ENOTFOUND, a
 * timeout). `connected`: the request may have reached the gateway (the connection was made).
 */
export class AdminUnreachable extends Error {
  readonly connected: boolean;

  constructor(message: string, connected: boolean) {
    super(message);
    this.connected = connected;
  }
}

/**
 * POSTs `body` to `url` with node:http(s) rather than fetch: fetch refuses the ports of its
 * "bad port" list (9, 6000, 6667, ...) with a bare "fetch failed", and loads undici. Resolves with
 * the answer; rejects with an AdminUnreachable naming the cause when there is none: not connected
 * within CONNECT_TIMEOUT_MS, or connected but not answered within `answerTimeoutMs`.
 */
export function postJson(url: URL, headers: Record<string, string>, body: string, answerTimeoutMs: number): Promise<{ status: number; text: string }> {
  // node:http(s) as CommonJS modules: their ES facades load undici (see src/runtime/admin-server.ts).
  const request: typeof import('node:http').request = url.protocol === 'https:' ? process.getBuiltinModule('node:https').request : process.getBuiltinModule('node:http').request;
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let connected = false;
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error instanceof AdminUnreachable ? error : new AdminUnreachable(causeOf(error), connected));
      req.destroy();
    };
    const req = request(url, { method: 'POST', agent: false, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text });
      });
      res.on('error', fail);
      res.on('close', () => {
        if (!res.complete) fail(new AdminUnreachable('the connection closed before the whole answer came', true));
      });
    });
    timer = setTimeout(() => fail(new AdminUnreachable(`no connection within ${CONNECT_TIMEOUT_MS / 1000} s (timeout)`, false)), CONNECT_TIMEOUT_MS);
    req.on('socket', (socket) => {
      socket.once('connect', () => {
        connected = true;
        clearTimeout(timer);
        const within = answerTimeoutMs < 1000 ? `${answerTimeoutMs} ms` : `${Math.round(answerTimeoutMs / 1000)} s`;
        timer = setTimeout(() => fail(new AdminUnreachable(`no answer within ${within} (timeout)`, true)), answerTimeoutMs);
      });
    });
    req.on('error', fail);
    req.end(body);
  });
}

const CAUSES: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused (ECONNREFUSED): nothing listens on that port',
  ENOTFOUND: 'host not found (ENOTFOUND: no DNS name or hosts entry)',
  EAI_AGAIN: 'DNS lookup failed (EAI_AGAIN: no DNS server answered)',
  ETIMEDOUT: 'no connection (ETIMEDOUT: timeout)',
  EHOSTUNREACH: 'host unreachable (EHOSTUNREACH)',
  ENETUNREACH: 'network unreachable (ENETUNREACH)',
  ECONNRESET: 'the connection was reset (ECONNRESET)',
};

function causeOf(error: Error): string {
  // Connecting to a name with several addresses fails with an AggregateError of each attempt's.
  const first = error instanceof AggregateError ? (error.errors[0] as Error | undefined) : undefined;
  const code = (error as { code?: unknown }).code ?? (first as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? (CAUSES[code] ?? describeError(error)) : describeError(error);
}
