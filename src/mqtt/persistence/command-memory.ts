import type Database from 'better-sqlite3';
import type { GroupCommit } from './group-commit.ts';
import { reportedRead } from './reported-reads.ts';
import { steadyNow } from '../../core/steady-clock.ts';

/** A copy of a command that a session holds from before: how it was numbered, and its packet id once it was sent. */
export interface HeldCopy {
  readonly clientId: string;
  readonly brokerId: string | null;
  readonly brokerCounter: number | null;
  readonly messageId: number | null;
  /** When the copy expires (epoch ms; the expiry of the command it was queued for); null: never. */
  readonly expiresAt: number | null;
}

/**
 * A client's answer to a command: the QoS it was delivered at (null: kept by a version that did
 * not keep it), and the client's refusal, if it refused it (null: it took it, or a version that
 * did not keep refusals kept the answer).
 */
export interface Answer {
  readonly clientId: string;
  readonly qos: 0 | 1 | null;
  /** The PUBACK reason code in hex (`0x87`), or `packet_too_large`: as `commands.refused` labels it. */
  readonly refusal: string | null;
}

/** An answer as it is kept now: with its QoS. */
export type KeptAnswer = Answer & { readonly qos: 0 | 1 };

/**
 * What the embedded broker remembers of the commands it published (CommandTracker), so that one
 * its source delivers again (Kafka reads what it had not committed again after a restart) is
 * not sent to its device a second time. A command is known by its key: its message id and topic.
 */
export interface CommandRecords {
  /** The client that answered the command (acked it, or refused it for good) within its expiry; undefined if none did. */
  answeredBy(key: string, now: number): Answer | undefined;
  /**
   * The copies of the command that sessions still hold (queued, or sent and waiting for their
   * PUBACK), but those past their expiry: the broker sends no expired copy, so the command is
   * published again for those sessions.
   */
  held(key: string, now: number): HeldCopy[];
  /** The message the broker queues with this number is the command `key`: its copies are kept with the key. */
  expect(brokerId: string, brokerCounter: number, key: string): void;
  forget(brokerCounter: number): void;
  /** A client answered the command (took it at its QoS, or refused it): remembered until `expiresAt`. */
  answered(key: string, expiresAt: number, answer: KeptAnswer): void;
}

/** CommandRecords in broker.db (tables of COMMANDS_SCHEMA). */
export class CommandMemory implements CommandRecords {
  readonly #commit: GroupCommit;
  readonly #onFailure: ((error: Error) => void) | undefined;
  readonly #expected = new Map<number, { readonly brokerId: string; readonly key: string }>();
  readonly #answeredBy: Database.Statement<[string, number], Answer>;
  readonly #held: Database.Statement<[string, number], HeldCopy>;
  readonly #answer: Database.Statement<[string, string, number, number, string | null]>;
  readonly #answerNow: Database.Statement<[string, string, number]>;
  readonly #expired: Database.Statement<[number]>;

  /** `onFailure`: told of a read that failed, as the state's other reads are (writes go through `commit`). */
  constructor(db: Database.Database, commit: GroupCommit, onFailure?: (error: Error) => void) {
    this.#commit = commit;
    this.#onFailure = onFailure;
    this.#answeredBy = db.prepare<[string, number], Answer>('SELECT client_id AS clientId, qos, refusal FROM commands_answered WHERE command_key = ? AND expires_at > ?');
    // A copy replaced by another packet (a copy numbered by another broker) is sent as numbered there.
    this.#held = db.prepare<[string, number], HeldCopy>(
      `SELECT q.client_id AS clientId, q.message_id AS messageId, q.expires_at AS expiresAt,
         CASE WHEN q.meta IS NULL THEN m.broker_id ELSE q.own_broker_id END AS brokerId,
         CASE WHEN q.meta IS NULL THEN m.broker_counter ELSE q.own_broker_counter END AS brokerCounter
       FROM queue q JOIN queued_messages m ON m.id = q.seq WHERE q.command_key = ? AND (q.expires_at IS NULL OR q.expires_at > ?)`,
    );
    // The command's own outcome (CommandTracker) is its answer, over the PUBACK its copy's removal
    // from a session's queue kept first (answerNow): that PUBACK may have been a refusal.
    this.#answer = db.prepare(
      `INSERT INTO commands_answered (command_key, client_id, expires_at, qos, refusal) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (command_key) DO UPDATE SET client_id = excluded.client_id, qos = excluded.qos, refusal = excluded.refusal`,
    );
    this.#answerNow = db.prepare('INSERT OR IGNORE INTO commands_answered (command_key, client_id, expires_at, qos) VALUES (?, ?, ?, 1)');
    this.#expired = db.prepare('DELETE FROM commands_answered WHERE expires_at <= ?');
  }

  answeredBy(key: string, now: number): Answer | undefined {
    return reportedRead(this.#onFailure, () => this.#answeredBy.get(key, now));
  }

  held(key: string, now: number): HeldCopy[] {
    return reportedRead(this.#onFailure, () => this.#held.all(key, now));
  }

  expect(brokerId: string, brokerCounter: number, key: string): void {
    this.#expected.set(brokerCounter, { brokerId, key });
  }

  forget(brokerCounter: number): void {
    this.#expected.delete(brokerCounter);
  }

  /** The key of the command a message queued now is; null for any other message. */
  keyOf(brokerId: string | undefined, brokerCounter: number | undefined): string | null {
    if (brokerCounter === undefined || this.#expected.size === 0) return null;
    const expected = this.#expected.get(brokerCounter);
    return expected !== undefined && expected.brokerId === brokerId ? expected.key : null;
  }

  /** Not waited for: an answer lost to a crash lets the command be sent once more, as QoS 1 allows. */
  answered(key: string, expiresAt: number, { clientId, qos, refusal }: KeptAnswer): void {
    this.#commit.eager(() => this.#answer.run(key, clientId, expiresAt, qos, refusal));
  }

  /**
   * Inside the caller's transaction (a PUBACK's removal of the copy from its session's queue:
   * delivered at QoS 1). Its reason code is not known here: a refusal is kept by `answered`, once
   * the command's outcome is (it takes every client that could acknowledge it refusing it).
   */
  answeredNow(key: string, clientId: string, expiresAt: number): void {
    this.#answerNow.run(key, clientId, expiresAt);
  }

  /** Forgets the answers of commands past their expiry; returns how many. */
  expire(now = steadyNow()): number {
    return this.#commit.eager(() => this.#expired.run(now).changes);
  }
}
