import type { Logger } from 'pino';
import type { Counters, HistogramSeries } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import type { Envelope } from '../core/envelope.ts';
import { FerryError, wrapError } from '../core/errors.ts';
import type { BufferPolicy, BufferSettings } from './config.ts';
import type { MessageTracing } from '../core/tracing.ts';
import { Signal } from './signal.ts';
import type { BufferStore } from './store.ts';
import { BufferUpkeep } from './upkeep.ts';
import { AbandonedLog } from './abandoned.ts';
import { type Pending, QOS0_NOT_STORED, admit } from './admission.ts';
import { AckGate } from './ack-gate.ts';
import { type Fdatasync, WalSync } from '../sqlite/wal-sync.ts';
import { isCorruption } from '../sqlite/open-checked.ts';
import { reportCorruptBuffer } from './open.ts';
import { steadyNow } from '../core/steady-clock.ts';

/**
 * `refusing`: a bridge under `overflow: refuse` is full. `disk-full` and `write-failed`: the database
 * refused the append (SQLITE_FULL, an I/O error); the messages are held and tried again every second.
 */
export type WriterState = 'ok' | 'disk-full' | 'write-failed' | 'refusing';

const RETRY_HELD_MS = 1000;
/** At most one warning per bridge in this interval for messages larger than its maxBytes; the counter has every one. */
const WARN_TOO_LARGE_MS = 60_000;
const DISK_LOST = new FerryError('STORAGE_FAILED', 'not acknowledged: the disk failed to sync the buffer', { component: 'buffer', retryable: true });

/**
 * Ingress of the durable buffer. Deliveries arriving in one event-loop turn are committed in one
 * transaction (bounded by count and bytes) and acked after that commit, so a device's PUBACK means
 * the message is on disk. Deliveries that cannot be stored now (the bridge is full under `refuse`,
 * or the disk is full) are held unacknowledged and tried again, which keeps them on the devices;
 * their number is bounded by what devices have in flight. A delivery abandoned before it was
 * stored (its connection closed without a PUBACK: the device sends it again) is nacked instead of
 * stored, held or not (issue 16, item 9): stored, it would be there twice.
 */
export class BufferWriter {
  readonly #store: BufferStore;
  readonly #settings: BufferSettings;
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #policies = new Map<string, BufferPolicy>();
  readonly #appended = new Map<string, Signal>();
  #pending: Pending[] = [];
  #pendingBytes = 0;
  #held: Pending[] = [];
  #scheduled = false;
  /** The flush waiting for commitDelayMs to pass, if any. */
  #delayed: NodeJS.Timeout | undefined;
  /** When the last group commit started (performance.now()). */
  #lastFlush = Number.NEGATIVE_INFINITY;
  #heldTimer: NodeJS.Timeout | undefined;
  #state: WriterState = 'ok';
  /** Per bridge, when a message larger than its maxBytes was last logged. */
  readonly #warnedTooLarge = new Map<string, number>();
  /** When the current refusal or storage episode began. */
  #episodeSince = 0;
  readonly #abandoned: AbandonedLog;
  readonly #upkeep: BufferUpkeep;
  readonly #unsubscribe: () => void;
  readonly #commits: HistogramSeries | undefined;
  /** Under `synchronous: full`, what makes each commit durable before its deliveries are acked: it syncs the WAL on the thread pool (WalSync; the connection commits without an fsync). Undefined under `normal`, which acks at the commit. */
  readonly #walSync: WalSync | undefined;
  readonly #gate = new AckGate(); // acks held while the integrity check runs after a start

  constructor(store: BufferStore, settings: BufferSettings, logger: Logger, counters: Counters, options: { /** A failing disk's, in tests. */ fdatasync?: Fdatasync } = {}) {
    this.#store = store;
    this.#settings = settings;
    this.#logger = logger;
    this.#counters = counters;
    this.#commits = counters.histogram?.('buffer.commit_seconds');
    this.#walSync = settings.synchronous === 'full' ? new WalSync(store.path, options) : undefined;
    this.#upkeep = new BufferUpkeep(store, logger, counters, (error) => this.corrupted(error, 'the buffer upkeep'));
    this.#abandoned = new AbandonedLog(logger, counters);
    // Space freed (a sink confirmed, old ones expired, another process purged): held deliveries may fit now.
    this.#unsubscribe = store.onReleased(() => this.#released());
  }

  get state(): WriterState {
    return this.#gate.refusing ? 'write-failed' : this.#state;
  }

  /** Holds the acks of QoS 1 and 2 messages stored from now on until the function returned gives the integrity check's verdict (AckGate). */
  holdAcks(): (passed: boolean) => void {
    return this.#gate.hold();
  }

  /** Deliveries held unacknowledged because the buffer cannot take them now. */
  get held(): number {
    return this.#held.length;
  }

  /** The bridges whose messages are held now (full under `refuse`, or the disk). */
  heldBridges(): string[] {
    return [...new Set(this.#held.map((h) => h.bridge))].sort();
  }

  /** The bridge's limits and overflow policy; its upkeep (expiry, dead-letter trimming) follows it. */
  setPolicy(bridge: string, policy: BufferPolicy): void {
    this.#policies.set(bridge, policy);
    this.#upkeep.watch(bridge, policy);
    // Raised limits (a reload) may let held deliveries in.
    queueMicrotask(() => this.#released());
  }

  policy(bridge: string): BufferPolicy | undefined {
    return this.#policies.get(bridge);
  }

  removePolicy(bridge: string): void {
    this.#policies.delete(bridge);
    this.#upkeep.unwatch(bridge);
  }

  /** Readers waiting for the next append to `bridge` (one per reader at most). */
  appendWaiters(bridge: string): number {
    return this.#appended.get(bridge)?.waiting ?? 0;
  }

  /** Resolves at the next commit that appended messages of `bridge`. */
  appended(bridge: string): Promise<void> {
    const signal = this.#appended.get(bridge) ?? new Signal();
    this.#appended.set(bridge, signal);
    return signal.wait();
  }

  /** Set while traces are exported: sampled messages get a span from here to their commit. */
  tracing: MessageTracing | undefined;

  /** Called once the WAL failed a sync or the buffer was found corrupt: nothing is acknowledged again until the process restarts. */
  onRestartNeeded: ((why: string) => void) | undefined;

  enqueue(bridge: string, delivery: Delivery): void {
    const traced = this.tracing?.ingress(bridge, delivery.envelope);
    if (traced === undefined) this.#push({ bridge, delivery, envelope: delivery.envelope });
    else this.#push({ bridge, delivery, envelope: traced.envelope, traced });
  }

  /** Records `envelope` (the message as it arrived) in the bridge's dead letters, refused at ingress by `sink` (the part that refused it, e.g. "transform"), in the group commit of the messages around it, and acks `delivery` after that commit. */
  deadLetter(bridge: string, delivery: Delivery, envelope: Envelope, sink: string, reason: string): void {
    this.#push({ bridge, delivery, envelope, deadLetter: { sink, reason } });
  }

  #push(entry: Pending): void {
    this.#pending.push(entry);
    this.#pendingBytes += entry.envelope.payload.byteLength;
    if (this.#pending.length >= this.#settings.maxBatch || this.#pendingBytes >= this.#settings.maxBatchBytes) {
      this.#flush();
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      // Sooner than commitDelayMs after the last commit, the messages that follow share the next one.
      const wait = this.#settings.commitDelayMs - (performance.now() - this.#lastFlush);
      if (wait > 0) this.#delayed = setTimeout(() => this.#flush(), wait);
      else setImmediate(() => this.#flush());
    }
  }

  /** Space may have been freed: try the held deliveries now. */
  #released(): void {
    if (this.#held.length > 0 && this.#state === 'refusing') this.#retryHeld();
  }

  /** Commits what is pending now; held deliveries stay unacknowledged. */
  flushNow(): void {
    this.#flush();
  }

  close(): void {
    this.#upkeep.close();
    this.#unsubscribe();
    clearTimeout(this.#heldTimer);
    this.#flush();
    // The last commits acked now, before the connections waiting for them close.
    this.#walSync?.flushSync();
    this.#walSync?.close();
    this.#gate.close();
    for (const { delivery } of this.#held.splice(0)) delivery.nack(new Error('gateway stopping: message not stored'));
  }

  #flush(): void {
    this.#scheduled = false;
    clearTimeout(this.#delayed);
    this.#delayed = undefined;
    const batch = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    if (batch.length === 0) return;
    this.#lastFlush = performance.now();
    this.#commit(batch, false);
  }

  /** While anything is held for a bridge (or the disk is full), newer messages are held behind it, so that a device's messages are stored in the order it sent them. */
  #commit(batch: readonly Pending[], retrying: boolean): void {
    const heldBefore = this.#held.length;
    const { accepted, kept, overfull, incoming, refused, firstRefused, abandoned, failed } = admit(batch, {
      held: this.#held,
      retrying,
      storageDown: () => this.#storageDown(),
      policies: this.#policies,
      store: this.#store,
      tooLarge: (entry, maxBytes) => this.#tooLarge(entry, maxBytes),
      droppedNewest: (entry) => {
        const { bridge, envelope } = entry;
        this.#counters.count('buffer.dropped', { bridge, reason: 'drop-newest' });
        this.#logger.warn({ bridge, id: envelope.id, topic: envelope.topic }, 'buffer full: dropped the new message (overflow: drop-newest)');
      },
    });
    if (abandoned !== undefined) this.#abandoned.note(abandoned, this.#held.length);
    if (firstRefused > 0) this.#counters.count('buffer.refused', {}, firstRefused);
    if (failed !== undefined) {
      this.#storageFailed(failed, kept, heldBefore);
      return;
    }
    // The "buffer full" line gives the bridge's usage: after the append, so that it counts this commit.
    if (accepted.length === 0) {
      if (refused > 0) this.#setState('refusing');
      return;
    }

    const started = performance.now();
    try {
      this.#store.append(accepted, () => {
        for (const bridge of overfull) {
          // Inside the transaction, after the insert: usage does not count the new ones yet.
          const policy = this.#policies.get(bridge) as BufferPolicy;
          const usage = this.#store.usage(bridge);
          const add = incoming.get(bridge) as { messages: number; bytes: number };
          const removed = this.#store.dropOldestFreeing(bridge, usage.messages + add.messages - policy.maxMessages, usage.bytes + add.bytes - policy.maxBytes);
          this.#counters.count('buffer.dropped', { bridge, reason: 'drop-oldest' }, removed.messages);
          this.#logger.warn({ bridge, dropped: removed.messages }, 'buffer full: dropped the oldest messages (overflow: drop-oldest)');
        }
      });
    } catch (error) {
      this.#storageFailed(error, kept, heldBefore);
      return;
    }
    this.#committed(accepted, started);
    if (refused > 0) this.#setState('refusing');
    else if (this.#held.length === 0 && this.#state !== 'ok') this.#setState('ok');
  }

  /**
   * A statement of the commit failed (the append, or admit counting a bridge's usage): nothing of it
   * is acknowledged. Held, not nacked: nacking would close the devices' connections while their later
   * messages, already received, could still be stored ahead of these. In the batch's order (what it
   * stored, then what it held would reorder a bridge); QoS 0 ones are not held.
   */
  #storageFailed(error: unknown, kept: readonly Pending[], heldBefore: number): void {
    this.#held.length = heldBefore;
    for (const entry of kept) {
      if (entry.delivery.envelope.origin.qos === 0) {
        entry.traced?.end('dropped');
        entry.delivery.nack(QOS0_NOT_STORED);
      } else this.#held.push(entry);
    }
    if (isCorruption(error)) {
      this.corrupted(error, 'an append');
      return;
    }
    const full = (error as { code?: unknown }).code === 'SQLITE_FULL';
    this.#counters.count('buffer.errors', { reason: full ? 'disk_full' : 'append_failed' });
    const state: WriterState = full ? 'disk-full' : 'write-failed';
    if (this.#state !== state) {
      const err = wrapError('STORAGE_FAILED', 'buffer: append failed', error, { component: 'buffer', retryable: true });
      this.#logger.error(
        { err, held: this.#held.length },
        full ? 'disk full: not acknowledging new messages until space returns' : 'cannot write the buffer: not acknowledging new messages; retrying every second',
      );
    }
    this.#setState(state);
  }

  /**
   * Acks a commit's deliveries (through the gate) and wakes its bridges' readers once it is durable
   * (under `full`, after the WAL's sync), but acks those taken at most once (QoS 0) at the commit:
   * nobody waits for that, and held, a QoS 0 flood stayed in memory as long as a sync took.
   */
  #committed(accepted: readonly Pending[], started: number): void {
    const walSync = this.#walSync;
    const durable: Pending[] = [];
    const bridges = new Set<string>();
    let appended = 0;
    for (const entry of accepted) {
      if (entry.deadLetter === undefined) {
        bridges.add(entry.bridge);
        appended += 1;
      }
      if (entry.delivery.envelope.origin.qos === 0) {
        entry.traced?.end();
        entry.delivery.ack();
      } else if (walSync === undefined) this.#gate.ack(entry);
      else durable.push(entry);
    }
    const stored = () => {
      this.#commits?.record((performance.now() - started) / 1000);
      for (const entry of durable) this.#gate.ack(entry);
      if (appended > 0) this.#counters.count('buffer.appended', {}, appended);
      for (const bridge of bridges) this.#appended.get(bridge)?.notify();
    };
    if (walSync === undefined) stored();
    else walSync.after((error) => (error === undefined ? stored() : this.#syncFailed(durable, error)));
  }

  /**
   * A message larger than its bridge's `maxBytes` could never be stored, and held (`refuse`) it
   * would hold back every later message of the bridge for good: it goes to the dead letters
   * instead (sink `buffer`), counted as `bridge.messages.rejected{reason=too_large}`.
   */
  #tooLarge(entry: Pending, maxBytes: number): Pending {
    const { bridge, envelope } = entry;
    const bytes = envelope.payload.byteLength;
    this.#counters.count('bridge.messages.rejected', { bridge, reason: 'too_large' });
    const now = steadyNow();
    if (now - (this.#warnedTooLarge.get(bridge) ?? Number.NEGATIVE_INFINITY) >= WARN_TOO_LARGE_MS) {
      this.#warnedTooLarge.set(bridge, now);
      this.#logger.warn(
        { bridge, topic: envelope.topic, clientId: envelope.origin.clientId, bytes, maxBytes },
        `buffer: a message of ${bytes} bytes is larger than the bridge's buffer.maxBytes (${maxBytes}): moved to its dead letters`,
      );
    }
    return { ...entry, deadLetter: { sink: 'buffer', reason: `larger than buffer.maxBytes (${bytes} > ${maxBytes} bytes)` } };
  }

  /** SQLITE_CORRUPT met by `foundBy` (an append, a sink's read): as after a failed integrity check, nothing is stored or acknowledged again in this run; marked, the next start moves the buffer aside. Once. */
  corrupted(error: unknown, foundBy: string): void {
    if (this.#gate.refusing) return;
    this.#gate.refuse();
    this.#counters.count('buffer.errors', { reason: 'corrupt' });
    if (reportCorruptBuffer(this.#store.path, error, this.#logger, this.#held.length, foundBy)) this.onRestartNeeded?.(`${foundBy} found the buffer corrupt`);
  }

  /**
   * The WAL's sync failed: the commit may not be on disk, and nothing synced after it can be
   * trusted (WalSync). Its deliveries are nacked (the devices keep their messages and send them
   * again; a copy the buffer did keep is delivered twice, never lost), and no message is acked
   * any more until the gateway restarts and SQLite recovers the buffer from what is on disk.
   */
  #syncFailed(accepted: readonly Pending[], error: Error): void {
    for (const { delivery, traced } of accepted) {
      traced?.end('failed');
      delivery.nack(DISK_LOST);
    }
    this.#counters.count('buffer.errors', { reason: 'sync_failed' });
    if (this.#state !== 'write-failed') {
      const err = wrapError('STORAGE_FAILED', 'buffer: syncing the WAL to disk failed', error, { component: 'buffer', retryable: false });
      this.#logger.error({ err }, 'the disk failed to sync the buffer: not acknowledging any message until the gateway restarts');
      this.#setState('write-failed');
      this.onRestartNeeded?.(`the disk failed to sync the buffer (${error.message})`);
    }
  }

  #storageDown(): boolean {
    return this.#state === 'disk-full' || this.#state === 'write-failed' || this.#walSync?.failure !== undefined || this.#gate.refusing;
  }

  #setState(state: WriterState): void {
    if (state === this.#state) return;
    const now = steadyNow();
    if (state === 'ok') {
      this.#logger.info({ previous: this.#state, refusedForMs: Math.round(now - this.#episodeSince) }, 'buffer accepts messages again');
    } else if (state === 'refusing') {
      // Once per episode: the start of refusing is as much news as its end (issue 16). Entered after
      // a commit that counted each of these bridges (admit, append): their usage is in memory.
      this.#episodeSince = now;
      const bridges = this.heldBridges();
      const limits = bridges.map((b) => {
        const policy = this.#policies.get(b);
        const usage = this.#store.usage(b);
        return policy === undefined ? b : `${b} (${usage.messages}/${policy.maxMessages} messages, ${usage.bytes}/${policy.maxBytes} bytes)`;
      });
      this.#logger.warn(
        { bridges },
        `buffer full: ${limits.join(', ')} under overflow: refuse; new device messages for it are not acknowledged (devices keep them) until its sinks catch up`,
      );
    } else if (this.#state === 'ok') {
      this.#episodeSince = now;
    }
    this.#state = state;
    if (state !== 'ok') this.#retryLater();
  }

  #retryLater(): void {
    this.#heldTimer ??= setTimeout(() => {
      this.#heldTimer = undefined;
      this.#retryHeld();
    }, RETRY_HELD_MS);
  }

  #retryHeld(): void {
    // After a failed sync or integrity check nothing is stored again in this run: the held wait for the close.
    if (this.#walSync?.failure !== undefined || this.#gate.refusing) return;
    const held = this.#held;
    this.#held = [];
    if (held.length > 0) this.#commit(held, true);
    if (this.#held.length === 0) this.#setState('ok');
    else this.#retryLater();
  }
}
