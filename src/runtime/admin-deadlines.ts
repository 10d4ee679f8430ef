import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { MAX_TIMER_MS } from '../core/timer-limit.ts';

/** Why a socket was closed: no next request in time (as before its first), or an answer not taken in time. */
export type DeadlineMissed = 'connect_timeout' | 'answer_timeout';

export interface RequestDeadlineLimits {
  /** Time from an answer (and its request's body read to the end) to the next request's whole head. */
  readonly nextRequestMs: number;
  /** Time a client has to take an answer once all of it is handed to its socket, */
  readonly answerMs: number;
  /** and one more second per this many bytes of it the socket still holds then. */
  readonly answerMinBytesPerS: number;
}

/**
 * The deadlines of a socket between its requests, which node:http leaves open: its headersTimeout
 * runs from a head's first byte (line breaks before one do not count), and its keep-alive timeout
 * from the last byte received, so a socket sending a line break every few seconds after an answer
 * was held for good; and nothing bounds the time a client takes to read an answer, so one asking
 * for answers it never reads was held for good too. Each socket must send its next request within
 * `nextRequestMs` of its last answer, and take each answer within `answerMs` of its writing (all
 * of it handed to the socket) and a second per `answerMinBytesPerS` bytes of it: a large answer
 * over a slow link is taken whole (a fixed 30 s cut a 500 KB answer at 100 kbit/s short). A slow
 * handler (a reload) is not timed: its socket waits for it.
 *
 * Returns what the server calls with each request, as its listener is called.
 */
export function requestDeadlines(limits: RequestDeadlineLimits, onExpire: (reason: DeadlineMissed, socket: Socket) => void): (req: IncomingMessage, res: ServerResponse) => void {
  /** Per socket: requests read and not yet answered, and the deadline of its next request. */
  const sockets = new WeakMap<Socket, { pending: number; next: NodeJS.Timeout | undefined }>();
  const expire = (reason: DeadlineMissed, socket: Socket, ms: number) => {
    const timer = setTimeout(
      () => {
        if (socket.destroyed) return;
        socket.destroy();
        onExpire(reason, socket);
      },
      Math.min(ms, MAX_TIMER_MS),
    );
    timer.unref();
    return timer;
  };
  return (req, res) => {
    const socket = req.socket;
    let held = sockets.get(socket);
    if (held === undefined) {
      const created: { pending: number; next: NodeJS.Timeout | undefined } = { pending: 0, next: undefined };
      sockets.set(socket, (held = created));
      socket.once('close', () => clearTimeout(created.next));
    }
    const state = held;
    state.pending += 1;
    clearTimeout(state.next);
    state.next = undefined;
    // 'prefinish': the whole answer is handed to the socket; what the socket holds of it then (all
    // of it, but for a small answer the kernel took at once) lengthens its deadline. 'close': the
    // client took it, or the socket closed. Each answer has its own deadline: the next one,
    // pipelined, may be handed to the socket before this one's 'close'.
    let answer: NodeJS.Timeout | undefined;
    res.once('prefinish', () => {
      answer = expire('answer_timeout', socket, limits.answerMs + Math.ceil((socket.writableLength * 1000) / limits.answerMinBytesPerS));
    });
    res.once('close', () => clearTimeout(answer));
    // The next request is due once this one is answered and its body read to the end (an answer
    // may come first: the body has node:http's requestTimeout).
    let left = 2;
    const done = () => {
      left -= 1;
      if (left > 0) return;
      state.pending -= 1;
      // A pipelined request already read waits for its own answer, untimed until that is written.
      if (state.pending === 0 && !socket.destroyed) state.next = expire('connect_timeout', socket, limits.nextRequestMs);
    };
    req.once('close', done);
    res.once('close', done);
  };
}
