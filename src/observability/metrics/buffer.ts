import { BRIDGE, type MetricSpec, SINK } from './spec.ts';

/** What an integrity check found. */
const CHECK_RESULT = { meaning: 'what the check found', values: ['ok', 'corrupt', 'failed'] } as const;

/** The durable buffer: what is stored, delivered, retried, dropped and dead-lettered. */
export const bufferMetrics = [
  { name: 'buffer.appended', type: 'counter', unit: 'messages', labels: {}, help: 'Messages committed to the buffer (each is acknowledged to its device after the commit).' },
  {
    name: 'buffer.refused',
    type: 'counter',
    unit: 'messages',
    labels: {},
    help: "Messages held unacknowledged because their bridge's buffer was full under `overflow: refuse`, each counted once, when first refused (held, it is tried again until it fits, then counted in `buffer.appended`). A message its device sends again after its connection closed (`buffer.abandoned`) is counted again.",
  },
  {
    name: 'buffer.dropped',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, reason: { meaning: 'the overflow policy that dropped them', values: ['drop-newest', 'drop-oldest'] } },
    help: "Messages dropped because their bridge's buffer was full: the new one (`drop-newest`) or the oldest ones (`drop-oldest`).",
  },
  {
    name: 'buffer.errors',
    type: 'counter',
    unit: 'errors',
    labels: { reason: { meaning: 'what failed', values: ['disk_full', 'append_failed', 'sync_failed', 'corrupt', 'read_failed', 'upkeep_failed'] } },
    help: "Failed buffer commits; their messages are held unacknowledged and stored once the disk takes them again. `sync_failed`: the WAL's fdatasync failed; its messages are nacked and nothing is acknowledged until the gateway restarts. `corrupt`: an append, a sink's read or the upkeep found the database corrupt (counted once); nothing is stored or acknowledged until a restart, which moves it aside. `read_failed`: a sink's read of the buffer or the move of its cursor failed (a full disk, a lock held too long); it is tried again after a backoff, and a window whose cursor did not move is delivered again. `upkeep_failed`: a step of the buffer's upkeep (expiry, trimming dead letters, recount, giving space back) failed; it is tried at its next turn, and a run of failures is logged once.",
  },
  {
    name: 'buffer.abandoned',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: "QoS 1 and 2 device messages not stored because their device's connection closed before they were (held while the buffer was full, or waiting for the commit): the device never got a PUBACK and sends them again.",
  },
  {
    name: 'buffer.expired',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: "Messages removed undelivered because they spent longer than the bridge's `buffer.maxAgeMs` in the buffer.",
  },
  { name: 'buffer.delivered', type: 'counter', unit: 'messages', labels: { bridge: BRIDGE, sink: SINK }, help: 'Buffered messages a sink confirmed, moving its cursor past them.' },
  {
    name: 'buffer.retries',
    type: 'counter',
    unit: 'attempts',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Failed sink writes that will be tried again after the backoff (`buffer.retryInitialMs` to `buffer.retryMaxMs`).',
  },
  {
    name: 'buffer.dead_letters',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, sink: SINK },
    help: "Messages a sink refused for good (too large, an invalid topic), moved to the bridge's dead letters.",
  },
  {
    name: 'buffer.dead_letters.dropped',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: 'The oldest dead letters deleted to keep a bridge within `buffer.maxDeadLetters`.',
  },
  {
    name: 'buffer.live_first.started',
    type: 'counter',
    unit: 'events',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Times a sink fell a window behind under `replay: live-first` and began taking new messages before its backlog.',
  },
  {
    name: 'buffer.live_first.caught_up',
    type: 'counter',
    unit: 'events',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Times a sink replaying `live-first` delivered its backlog and went back to arrival order.',
  },
  {
    name: 'buffer.recovered_from_corruption',
    type: 'counter',
    unit: 'events',
    labels: {},
    help: 'A corrupt `buffer.db` found at startup, moved aside (`buffer.db.corrupt-<time>`) and replaced by a fresh one.',
  },
  {
    name: 'buffer.integrity_checks',
    type: 'counter',
    unit: 'checks',
    labels: { result: CHECK_RESULT },
    help: 'Integrity checks of a large `buffer.db` run in the background after a start that left them for later (it had been closed cleanly); `corrupt` makes the next start move it aside.',
  },
  {
    name: 'history.integrity_checks',
    type: 'counter',
    unit: 'checks',
    labels: { result: CHECK_RESULT },
    help: 'Checks of a `history.db` that a write found corrupt, run before the next write; `corrupt`: it was moved aside (`history.db.corrupt-<time>`) and an empty one started.',
  },
  {
    name: 'delivery.double_settle',
    type: 'counter',
    unit: 'events',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Deliveries acknowledged or refused a second time, which the first settlement wins (a bug to report).',
  },
] as const satisfies readonly MetricSpec[];
