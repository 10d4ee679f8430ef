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
] as const satisfies readonly MetricSpec[];
