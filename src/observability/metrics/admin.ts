import type { MetricSpec } from './spec.ts';

/** The admin HTTP server (admin-server.ts). */
export const adminMetrics = [
  {
    name: 'admin.requests.failed',
    type: 'counter',
    unit: 'requests',
    labels: {
      path: {
        meaning: 'what was asked for (`/ui/` for the status page files, `other` for any other path)',
        values: ['/', '/ui/', '/readyz', '/api/status', '/api/series', '/metrics', '/api/reload', 'other'],
      },
    },
    help: 'Admin requests a handler failed to answer (the buffer unreadable for /metrics or /api/status, a status page file unreadable): answered 500, or 503 from /readyz; logged once per path a minute.',
  },
  {
    name: 'admin.sockets.refused',
    type: 'counter',
    unit: 'sockets',
    labels: {
      reason: {
        meaning: 'the limit the socket was over: 32 sockets open from its address, or 256 in all',
        values: ['per_address', 'total'],
      },
    },
    help: 'Sockets to the admin server closed at their accept, before any request was read, because their address already held 32 or all addresses together 256; logged once per address a minute.',
  },
] as const satisfies readonly MetricSpec[];
