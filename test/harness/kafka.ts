import './kafkajs-patched.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import { lastLines, runTool } from './exec.ts';
import { javaMissingHint, requireJava } from './java.ts';
import { KAFKA_VERSION, kafkaClasspath } from './kafka-classpath.ts';
import { canConnect, freePorts } from './net.ts';

export interface StartKafkaOptions {
  /** Progress lines ("resolving jars...", "ready in 4.1 s"); broker output is not forwarded. */
  log?: (line: string) => void;
  /**
   * A relay in front of the broker: called with the broker's port before it first starts, it
   * returns the port the broker advertises to clients (its metadata), so that every connection
   * after the bootstrap one goes through the relay.
   */
  advertisedPort?: (brokerPort: number) => number | Promise<number>;
}

export interface KafkaHarness {
  /** "127.0.0.1:<port>", the PLAINTEXT listener. */
  bootstrap: string;
  /** SIGTERM, SIGKILL after 15 s, then deletes the data dir. Idempotent. */
  stop(): Promise<void>;
  /**
   * Stops the broker process (SIGTERM, a clean shutdown) and keeps its data dir and ports, so
   * that `start` brings the same broker back with its topics and records: an outage.
   */
  halt(): Promise<void>;
  /**
   * Kills the broker process at once (SIGKILL: no clean shutdown, requests in flight unanswered)
   * and keeps its data dir and ports, so that `start` brings it back with what it had flushed.
   */
  crash(): Promise<void>;
  /** Starts the halted broker again on the same ports and data; resolves when it answers. */
  start(): Promise<void>;
  /** Settles with the exit code (or signal name) when the current broker process ends for any reason. */
  readonly exited: Promise<number | string | null>;
}

const READY_TIMEOUT_MS = 90_000;
const STOP_GRACE_MS = 15_000;
const TAIL_LINES = 30;

// C1-only JIT cuts broker start by ~1 s (~5.1 s -> ~4.1 s measured on 2 cores) at the cost
// of peak throughput; SerialGC and a small heap keep the footprint low on a shared machine.
const JVM_COMMON = ['-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-XX:-UsePerfData', '-Djava.awt.headless=true'];
const JVM_BROKER = ['-Xms256m', '-Xmx512m', ...JVM_COMMON];
const JVM_TOOL = ['-Xmx256m', ...JVM_COMMON];

/** Starts a throwaway single-node KRaft Kafka (broker+controller) on free loopback ports. */
export async function startKafka(opts: StartKafkaOptions = {}): Promise<KafkaHarness> {
  const log = opts.log ?? (() => {});
  const startedAt = performance.now();
  const java = await requireJava();
  const classpath = await kafkaClasspath(log);
  const [port = 0, controllerPort = 0] = await freePorts(2);
  const bootstrap = `127.0.0.1:${port}`;
  const advertised = opts.advertisedPort === undefined ? port : await opts.advertisedPort(port);

  const dir = mkdtempSync(join(tmpdir(), 'ferry-kafka-'));
  const removeDir = () => rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  // Also covers a parent that exits mid-startup or without calling stop().
  process.on('exit', removeDir);
  const cleanUp = () => {
    process.off('exit', removeDir);
    removeDir();
  };
  try {
    const configFile = join(dir, 'server.properties');
    const log4jFile = join(dir, 'log4j2.properties');
    writeFileSync(configFile, serverProperties(port, advertised, controllerPort, join(dir, 'data')));
    writeFileSync(log4jFile, LOG4J2_PROPERTIES);
    const log4j = `-Dlog4j2.configurationFile=${log4jFile}`;

    log(`formatting Kafka ${KAFKA_VERSION} storage in ${dir}...`);
    // `--cluster-id=` form: a base64url id may start with "-", which argparse would read as a flag.
    const format = await runTool(
      java,
      [...JVM_TOOL, log4j, '-cp', classpath, 'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId()}`, `--config=${configFile}`],
      javaMissingHint(java),
    );
    if (format.code !== 0) {
      throw new Error(`Kafka storage format failed (exit ${format.code}):\n${lastLines(format.output, TAIL_LINES)}`);
    }

    const launch = async (): Promise<SupervisedBroker> => {
      log(`starting Kafka ${KAFKA_VERSION} on ${bootstrap} (controller 127.0.0.1:${controllerPort})...`);
      const child = spawn(java, [...JVM_BROKER, log4j, '-cp', classpath, 'kafka.Kafka', configFile], {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const supervised = superviseBroker(child);
      try {
        await waitUntilReady(bootstrap, port, supervised);
      } catch (err) {
        await supervised.stop();
        throw err;
      }
      return supervised;
    };
    let broker: SupervisedBroker | undefined = await launch();
    log(`Kafka ready at ${bootstrap} in ${((performance.now() - startedAt) / 1000).toFixed(1)} s`);
    let stopping: Promise<void> | undefined;
    return {
      bootstrap,
      stop: () =>
        (stopping ??= (async () => {
          await broker?.stop();
          broker = undefined;
          cleanUp();
        })()),
      halt: async () => {
        await broker?.stop();
        broker = undefined;
      },
      crash: async () => {
        await broker?.kill();
        broker = undefined;
      },
      start: async () => {
        if (stopping !== undefined) throw new Error('this Kafka was stopped for good');
        broker ??= await launch();
      },
      get exited() {
        return broker?.exited ?? Promise.resolve(null);
      },
    };
  } catch (err) {
    cleanUp();
    throw err;
  }
}

interface SupervisedBroker {
  stop(): Promise<void>;
  /** SIGKILL; resolves once the process is gone. */
  kill(): Promise<void>;
  exited: Promise<number | string | null>;
  isRunning(): boolean;
  tail(): string;
}

function superviseBroker(child: ChildProcess): SupervisedBroker {
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      lines.push(line);
      if (lines.length > TAIL_LINES) lines.shift();
    });
  }

  let running = true;
  const exited = new Promise<number | string | null>((resolve) => {
    // 'close' rather than 'exit': the error tail must include the JVM's last buffered lines.
    child.once('close', (code, signal) => {
      running = false;
      resolve(code ?? signal);
    });
    child.once('error', (err) => {
      running = false;
      lines.push(`spawn error: ${err.message}`);
      resolve(null);
    });
  });

  // The parent may exit without calling stop() (uncaught error, process.exit): never leak a JVM.
  // Prepended so it runs before startKafka's own 'exit' hook deletes the JVM's data dir.
  const killOnExit = () => child.kill('SIGKILL');
  process.prependListener('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (running) {
        child.kill('SIGTERM');
        const escalate = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        await exited;
        clearTimeout(escalate);
      }
      process.off('exit', killOnExit);
    })());

  const kill = async () => {
    if (running) child.kill('SIGKILL');
    await exited;
    process.off('exit', killOnExit);
  };

  return { stop, kill, exited, isRunning: () => running, tail: () => lines.join('\n') };
}

async function waitUntilReady(bootstrap: string, port: number, broker: SupervisedBroker): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError = 'port not open yet';
  while (Date.now() < deadline) {
    if (!broker.isRunning()) {
      const code = await broker.exited;
      throw new Error(`Kafka exited (${code}) before it was ready. Last ${TAIL_LINES} lines of broker output:\n${broker.tail()}`);
    }
    if (await canConnect({ host: '127.0.0.1', port }, 1000)) {
      try {
        await probe(bootstrap);
        return;
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err);
      }
    }
    await sleep(250);
  }
  throw new Error(
    `Kafka did not answer on ${bootstrap} within ${READY_TIMEOUT_MS / 1000} s (last error: ${lastError}). ` + `Last ${TAIL_LINES} lines of broker output:\n${broker.tail()}`,
  );
}

/**
 * Ready = metadata answers and the group coordinator serves groups. A fresh broker creates and
 * loads __consumer_offsets on first use; without this warm-up the first consumer in a test races
 * it and kafkajs reports COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR as a consumer crash.
 */
async function probe(bootstrap: string): Promise<void> {
  const admin = new Kafka({
    clientId: 'ferry-harness-probe',
    brokers: [bootstrap],
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1000,
    requestTimeout: 3000,
    // kafkajs needs at least one retry to re-discover the coordinator ("No brokers in the broker pool" otherwise).
    retry: { retries: 2, initialRetryTime: 100 },
  }).admin();
  try {
    await admin.connect();
    await admin.listTopics();
    await admin.describeGroups(['ferry-harness-probe']); // throws on a group-level error code
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** Kafka cluster ids are 16 random bytes as unpadded base64url (22 chars). */
function clusterId(): string {
  return randomBytes(16).toString('base64url');
}

function serverProperties(port: number, advertisedPort: number, controllerPort: number, dataDir: string): string {
  return [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${advertisedPort}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'offsets.topic.replication.factor=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
    'group.initial.rebalance.delay.ms=0',
    'num.partitions=1',
    // One offsets partition: the readiness probe's group lookup then proves every group is servable.
    'offsets.topic.num.partitions=1',
    'auto.create.topics.enable=true',
    `log.dirs=${dataDir}`,
    '',
  ].join('\n');
}

// Broker INFO logging minus the multi-hundred-line config dumps; it only feeds the error tail.
const LOG4J2_PROPERTIES = `status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{HH:mm:ss,SSS}] %p %m (%c{1})%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = STDOUT
logger.config.name = org.apache.kafka.common.config
logger.config.level = warn
logger.kafkaconfig.name = kafka.server.KafkaConfig
logger.kafkaconfig.level = warn
`;
