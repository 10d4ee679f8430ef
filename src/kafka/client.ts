import type { Consumer, ICustomPartitioner, IHeaders, Kafka, Producer, logCreator } from 'kafkajs';
import type { Logger } from 'pino';
import { type Compression, useCompression } from './codecs.ts';
import { patchKafkajs, sendMessagesReplaced } from './kafkajs-patches.ts';
import { memoizedDefaultPartitioner } from './partitioner.ts';
import { recordRefusalType } from './record-refusals.ts';
import { producerStateLost } from './resend.ts';
import { SOURCE_RECORD, refusedPartitions } from './produce-refusals.ts';
import { forgetIdleTopics } from './topic-metadata.ts';

/** One record for Kafka; headers are strings, as Ferry keeps them. */
export interface KafkaRecord {
  readonly key: string | null;
  readonly value: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
  readonly timestamp: number;
}

/** The records of one batch that go to one topic. */
export interface TopicRecords {
  readonly topic: string;
  readonly records: readonly KafkaRecord[];
}

/** Records of one partition that Kafka refused as a whole for one of them (see record-refusals.ts), with its error. */
export interface RefusedRecords extends TopicRecords {
  readonly error: Error;
}

/**
 * The slice of a Kafka producer that Ferry calls, so that another client can replace
 * kafkajs behind it. `send` writes every topic's records in one request per broker and
 * resolves when the brokers acknowledged all of them but those it resolves with: the records
 * of the partitions Kafka refused for what is in them, not written (every other record was).
 */
export interface KafkaProducer {
  connect(): Promise<void>;
  send(batch: readonly TopicRecords[]): Promise<readonly RefusedRecords[]>;
  disconnect(): Promise<void>;
}

export interface KafkaProducerOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly acks: 'all' | 'leader';
  readonly compression: Compression;
  /** kafkajs' idempotent producer: the broker drops a retried batch it already has. */
  readonly idempotent: boolean;
  /** Produce requests in flight per broker connection; unlimited when absent. */
  readonly maxInFlightRequests?: number | undefined;
  readonly connectionTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly retries: number;
  /** How long a topic not written is remembered, its metadata kept and asked for; TOPIC_IDLE_MS when absent. */
  readonly topicIdleMs?: number;
  readonly logger: Logger;
}

/**
 * How long a producer remembers a topic it has not written (see forgetIdleTopics): written again
 * after that, it costs a metadata request. Longer than the Java producer's 5 minutes because
 * kafkajs asks for every topic it remembers each time a topic is new, not for the new one alone.
 */
export const TOPIC_IDLE_MS = 60 * 60_000;

/**
 * A kafkajs producer. kafkajs (and a compression codec) is loaded on first connect, so a
 * gateway without Kafka bridges does not pay for it at startup.
 */
export function createKafkaProducer(options: KafkaProducerOptions): KafkaProducer & { renewProducerId(): Promise<void> } {
  let opened: OpenedKafka | undefined;
  let current: InUse<Producer> | undefined;
  /** Producers replaced while sends were in flight on them: disconnected when the last ends. */
  const retired = new Set<InUse<Producer>>();
  const retire = (producer: InUse<Producer>) => {
    if (producer.sends > 0) retired.add(producer);
    else producer.it.disconnect().catch(() => {});
  };
  /** A new kafkajs producer in place of the current one: a new producer id, its sequence numbers from 0. */
  const renew = async (kafka: OpenedKafka) => {
    const replaced = current;
    const renewed = { it: newProducer(kafka, options), sends: 0 };
    try {
      await renewed.it.connect();
    } catch (cause) {
      await renewed.it.disconnect().catch(() => {});
      throw cause;
    }
    current = renewed;
    if (replaced !== undefined) retire(replaced);
  };
  return {
    renewProducerId: async () => {
      if (opened === undefined || current === undefined) throw new Error('producer is not connected');
      await renew(opened);
    },
    connect: async () => {
      opened ??= await openKafka(options);
      current ??= { it: newProducer(opened, options), sends: 0 };
      await current.it.connect();
    },
    disconnect: async () => {
      await Promise.all([...retired, ...(current === undefined ? [] : [current])].map((p) => p.it.disconnect()));
      retired.clear();
    },
    send: async (batch) => {
      if (opened === undefined || current === undefined) throw new Error('producer is not connected');
      const producer = current;
      producer.sends += 1;
      try {
        const results = await producer.it.sendBatch({
          acks: options.acks === 'all' ? -1 : 1,
          compression: opened.compression,
          topicMessages: batch.map(({ topic, records }) => ({
            topic,
            // kafkajs only reads the headers, and takes a Buffer as it is.
            messages: records.map((r) => ({
              key: r.key,
              value: Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength),
              headers: r.headers as Record<string, string>,
              timestamp: String(r.timestamp),
              [SOURCE_RECORD]: r,
            })),
          })),
        });
        const refused = refusedPartitions<KafkaRecord>(results);
        // kafkajs counted the refused partitions' records in their sequence numbers, which Kafka
        // did not: an idempotent producer's next records for these would be refused as out of order.
        if (refused.length > 0 && options.idempotent && current === producer) await renew(opened);
        return refused;
      } catch (error) {
        // A refusal thrown for a whole request (where kafkajs' own parse answers, see
        // produce-refusals.ts) makes kafkajs take back the sequence numbers of every
        // partition in it, also of those the broker appended: an idempotent
        // producer's next records for these would be refused as out of order (kafkajs retries
        // none of that), and the batch retried for ever. A new producer id numbers from 0 again.
        // So when Kafka says the id's numbers are not its own any more (see producerStateLost).
        if (options.idempotent && current === producer && (recordRefusalType(error) !== undefined || producerStateLost(error))) await renew(opened);
        throw error;
      } finally {
        producer.sends -= 1;
        if (producer.sends === 0 && retired.delete(producer)) producer.it.disconnect().catch(() => {});
      }
    },
  };
}

/** A client and the sends in flight on it. */
interface InUse<T> {
  readonly it: T;
  sends: number;
}

interface OpenedKafka {
  readonly kafka: Kafka;
  readonly compression: number;
  readonly defaultPartitioner: ICustomPartitioner;
}

async function openKafka(options: KafkaProducerOptions): Promise<OpenedKafka> {
  patchKafkajs();
  if (!sendMessagesReplaced()) {
    options.logger.warn(
      "kafkajs was loaded before Ferry's Kafka client: its producers keep kafkajs' own sendMessages, which can acknowledge records not written when a retry follows a partition leader's move (kafkajs issue 1303); import Ferry before anything that loads kafkajs",
    );
  }
  const kafkajs = await import('kafkajs');
  const { logLevel } = kafkajs;
  // CompressionCodecs is not among the names Node finds in kafkajs' CommonJS exports.
  const compression = useCompression(options.compression, { CompressionTypes: kafkajs.CompressionTypes, CompressionCodecs: kafkajs.default.CompressionCodecs });
  const kafka = new kafkajs.Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    connectionTimeout: options.connectionTimeoutMs,
    requestTimeout: options.requestTimeoutMs,
    // Limited on purpose: a batch that fails goes back to the buffer, which retries it for ever
    // with its own backoff, in order (kafkajs' default for an idempotent producer is unlimited).
    retry: { retries: options.retries },
    logLevel: logLevel.WARN,
    logCreator: logTo(options.logger, logLevel),
  });
  // With a topic per device, devices that come and go would grow every metadata request for ever.
  if (!forgetIdleTopics(kafka, options.topicIdleMs ?? TOPIC_IDLE_MS)) {
    options.logger.warn('kafkajs has no cluster factory where Ferry looks for it: its producers remember every topic they wrote');
  }
  return { kafka, compression, defaultPartitioner: kafkajs.Partitioners.DefaultPartitioner };
}

function newProducer({ kafka, defaultPartitioner }: OpenedKafka, options: KafkaProducerOptions): Producer {
  // The default (murmur2) partitioner, named so kafkajs does not warn about its v2 change.
  return kafka.producer({
    allowAutoTopicCreation: true,
    createPartitioner: memoizedDefaultPartitioner(defaultPartitioner),
    idempotent: options.idempotent,
    ...(options.maxInFlightRequests === undefined ? {} : { maxInFlightRequests: options.maxInFlightRequests }),
  });
}

// ---------------------------------------------------------------------------------------
// Consumer: reads topics in a consumer group; offsets are committed by the caller only.

/** One record read from Kafka. */
export interface KafkaInboundRecord {
  readonly offset: string;
  readonly key: string | undefined;
  readonly value: Uint8Array;
  /** Header values as UTF-8 text; a repeated header keeps its last value. */
  readonly headers: Readonly<Record<string, string>>;
  readonly timestamp: number;
}

/** What a batch handler may do while it holds a batch. */
export interface KafkaBatchControl {
  /** Marks the records up to `offset` as taken, so the next fetch starts after it. It commits nothing. */
  resolve(offset: string): void;
  /** False once the consumer is stopping or the partition was reassigned: leave the batch. */
  active(): boolean;
  heartbeat(): Promise<void>;
}

export interface KafkaConsumerHandlers {
  /**
   * One fetched batch of one partition. Records not resolved when the returned promise
   * settles are fetched again (after a `resume` if the partition was paused).
   */
  onBatch(topic: string, partition: number, records: readonly KafkaInboundRecord[], control: KafkaBatchControl): Promise<void>;
  /** After every group join: the partitions this member owns now, by topic. */
  onAssignment(assignment: Readonly<Record<string, readonly number[]>>): void;
  /** The client failed; `restarting` tells whether it reconnects by itself. */
  onCrash(error: Error, restarting: boolean): void;
}

/**
 * The slice of a Kafka group consumer that Ferry calls. Nothing is committed automatically:
 * `commit` writes the offsets it is given (the next offset to read, per partition).
 */
export interface KafkaConsumer {
  connect(): Promise<void>;
  /** Subscribes to the topics and starts fetching; resolves once running. */
  run(handlers: KafkaConsumerHandlers): Promise<void>;
  /** Best effort: false when the consumer cannot take it now (kafkajs between a crash and its restart). */
  pause(topic: string, partition: number): boolean;
  /** Best effort: false when the consumer cannot take it now (kafkajs between a crash and its restart). */
  resume(topic: string, partition: number): boolean;
  commit(offsets: readonly { readonly topic: string; readonly partition: number; readonly offset: string }[]): Promise<void>;
  disconnect(): Promise<void>;
}

export interface KafkaConsumerOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly groupId: string;
  readonly topics: readonly string[];
  readonly fromBeginning: boolean;
  readonly sessionTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  readonly maxWaitTimeMs: number;
  readonly connectionTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly logger: Logger;
}

/** A kafkajs group consumer, loaded on first connect like the producer. */
export function createKafkaConsumer(options: KafkaConsumerOptions): KafkaConsumer {
  let consumer: Consumer | undefined;
  const opened = (): Consumer => {
    if (consumer === undefined) throw new Error('consumer is not connected');
    return consumer;
  };
  return {
    connect: async () => {
      consumer ??= await openConsumer(options);
      await consumer.connect();
    },
    disconnect: async () => {
      await consumer?.disconnect();
    },
    run: async (handlers) => {
      const c = opened();
      c.on(c.events.GROUP_JOIN, (event) => handlers.onAssignment(event.payload.memberAssignment));
      c.on(c.events.CRASH, (event) => handlers.onCrash(event.payload.error, event.payload.restart));
      await c.subscribe({ topics: [...options.topics], fromBeginning: options.fromBeginning });
      await c.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
          const records = batch.messages.map(
            (m): KafkaInboundRecord => ({
              offset: m.offset,
              key: m.key === null || m.key === undefined ? undefined : m.key.toString('utf8'),
              value: m.value ?? Buffer.alloc(0),
              headers: headerText(m.headers),
              timestamp: Number(m.timestamp),
            }),
          );
          await handlers.onBatch(batch.topic, batch.partition, records, {
            resolve: (offset) => resolveOffset(offset),
            active: () => isRunning() && !isStale(),
            heartbeat,
          });
        },
      });
    },
    // kafkajs throws ("Consumer group was not initialized") while it restarts after a crash.
    pause: (topic, partition) => bestEffort(() => opened().pause([{ topic, partitions: [partition] }])),
    resume: (topic, partition) => bestEffort(() => opened().resume([{ topic, partitions: [partition] }])),
    commit: async (offsets) => {
      await opened().commitOffsets(offsets.map((o) => ({ topic: o.topic, partition: o.partition, offset: o.offset })));
    },
  };
}

function headerText(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    const last = Array.isArray(value) ? value.at(-1) : value;
    if (last !== undefined) out[name] = last.toString();
  }
  return out;
}

async function openConsumer(options: KafkaConsumerOptions): Promise<Consumer> {
  // The producer's encoding fixes apply to the whole kafkajs module: patch it before any load.
  patchKafkajs();
  const { Kafka, logLevel } = await import('kafkajs');
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    connectionTimeout: options.connectionTimeoutMs,
    requestTimeout: options.requestTimeoutMs,
    logLevel: logLevel.WARN,
    logCreator: logTo(options.logger, logLevel),
  });
  return kafka.consumer({
    groupId: options.groupId,
    sessionTimeout: options.sessionTimeoutMs,
    heartbeatInterval: options.heartbeatIntervalMs,
    // Also how long kafkajs sleeps when every partition is paused: a resume waits for it.
    maxWaitTimeInMs: options.maxWaitTimeMs,
    // Like the producer: a topic named in a bridge is created on first use when the cluster allows it.
    allowAutoTopicCreation: true,
  });
}

/**
 * What kafkajs says, routinely, while a broker is unreachable, restarting or moving leaders:
 * Ferry reports the outage itself once (a sink down or stalled, a consumer retrying), so these
 * go to debug instead of filling the log at error level twice a second per bridge (issue 16).
 */
const OUTAGE =
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|Connection (error|timeout|closed)|Failed to connect|timed out|does not host this topic-partition|no leader for this topic-partition|Not (the )?(coordinator|leader)|group is rebalancing|rebalance in progress|NumberOfRetriesExceeded|Restarting the consumer|Response (Metadata|Produce|Fetch)|disconnected|Closed connection/i;

/**
 * Routine for the way Ferry uses kafkajs, not trouble:
 * - "Limiting retries for the idempotent producer may invalidate EoS guarantees", said for every
 *   idempotent producer: a sink's producer retries only `retries` times on purpose (see
 *   openKafka), since a failed batch goes back to the buffer, which retries it for ever; with
 *   `idempotent` the sink keeps the producer id and sends that batch again first, as it went
 *   (resend.ts), so Kafka still drops a copy it has. What kafkajs warns of is handled there.
 * - "The coordinator is loading" (COORDINATOR_LOAD_IN_PROGRESS), answered to InitProducerId or a
 *   group's requests for a while after a broker restart: kafkajs retries it; if it lasts, the
 *   connect fails and Ferry reports the sink down or the consumer retrying.
 */
const BY_DESIGN = /Limiting retries for the idempotent producer|coordinator is loading/i;

/**
 * kafkajs' log lines into pino (it logs WARN and up): routine connection trouble at debug,
 * the rest as warnings. Errors are Ferry's to log, once, where they are handled.
 */
export function logTo(logger: Pick<Logger, 'warn' | 'debug'>, levels: typeof import('kafkajs').logLevel): logCreator {
  return () =>
    ({ namespace, level, log }) => {
      const { message, ...extra } = log;
      const line = { kafkajs: namespace, kafkajsLevel: level <= levels.ERROR ? 'error' : 'warn', ...extra };
      const text = `${String(message)} ${typeof extra['error'] === 'string' ? extra['error'] : ''}`;
      if (OUTAGE.test(text) || BY_DESIGN.test(text)) logger.debug(line, message);
      else logger.warn(line, message);
    };
}

function bestEffort(action: () => void): boolean {
  try {
    action();
    return true;
  } catch {
    return false;
  }
}
