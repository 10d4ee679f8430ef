export interface Counts {
  readonly sent: number;
  readonly acked: number;
  readonly failed: number;
}

/**
 * Progress on stderr: one line redrawn in place 4 times a second in a terminal, a plain line
 * every 5 s otherwise (logs, CI). The rate is the acknowledged rate since the previous line.
 */
export function startProgress(counts: Counts, stream: NodeJS.WriteStream = process.stderr): { stop(): void } {
  const tty = stream.isTTY === true;
  let last = { at: performance.now(), acked: 0 };
  const line = () => {
    const now = performance.now();
    const rate = ((counts.acked - last.acked) * 1000) / Math.max(now - last.at, 1);
    last = { at: now, acked: counts.acked };
    return `sent ${counts.sent}  acked ${counts.acked}  errors ${counts.failed}  ${Math.round(rate)} msgs/s`;
  };
  const timer = setInterval(() => stream.write(tty ? `\r\x1b[K${line()}` : `${line()}\n`), tty ? 250 : 5000);
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      if (tty) stream.write('\r\x1b[K');
    },
  };
}
