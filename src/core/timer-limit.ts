/**
 * The longest delay setTimeout takes: Node fires a timer set for longer after 1 ms (with a
 * TimeoutOverflowWarning). A setting that becomes a timer is refused past it, rather than a
 * command's 30-day expiry expiring it at once.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The error of a setting past MAX_TIMER_MS. */
export const MAX_TIMER_MESSAGE = `at most ${MAX_TIMER_MS} ms (24.8 days): a longer timer would fire at once`;
