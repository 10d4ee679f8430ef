import './kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import { lastLines, runTool } from './exec.ts';
import { javaMissingHint, requireJava } from './java.ts';
import { kafkaClasspath } from './kafka-classpath.ts';
import { freePorts } from './net.ts';

/** A throwaway KRaft cluster of several nodes, each broker and controller, on loopback. */
export interface KafkaCluster {
  /** Every node's "127.0.0.1:<port>"; node ids are 1, 2, ... in this order. */
  readonly brokers: readonly string[];
  /**
   * Creates `topic` with a partition for each entry of `leaders`, replicated on every node and
   * led by the node the entry names (the first of its replicas). Resolves once the cluster says so.
   */
  createTopic(topic: string, leaders: readonly number[]): Promise<void>;
  /**
   * Moves the leadership of `partition` of `topic` to `nodeId`: its replicas are put in an order
   * that starts with it and the preferred leader is elected. Resolves once the cluster says so.
   */
  moveLeader(topic: string, partition: number, nodeId: number): Promise<void>;
  /** The leader of each partition of `topic`, by partition, as the cluster has it now. */
  leaders(topic: string): Promise<Map<number, number>>;
  /** Stops every node (SIGTERM, SIGKILL after 15 s) and deletes their data. Idempotent. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 90_000;
const JVM_COMMON = ['-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-XX:-UsePerfData', '-Djava.awt.headless=true'];
const LOG4J2 =
  'status = warn\nappender.console.type = Console\nappender.console.name = STDOUT\nappender.console.layout.type = PatternLayout\nappender.console.layout.pattern = [%d{HH:mm:ss,SSS}] %p %m (%c{1})%n\nrootLogger.level = warn\nrootLogger.appenderRef.console.ref = STDOUT\n';

/** Starts `nodes` Kafka nodes (broker and controller each, one quorum of them) on free loopback ports. */
export async function startKafkaCluster(nodes: number): Promise<KafkaCluster> {
  const java = await requireJava();
  const classpath = await kafkaClasspath(() => {});
  const ports = await freePorts(nodes * 2);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-kafka-cluster-'));
  const log4j = `-Dlog4j2.configurationFile=${join(dir, 'log4j2.properties')}`;
  writeFileSync(join(dir, 'log4j2.properties'), LOG4J2);
  const ids = Array.from({ length: nodes }, (_, i) => i + 1);
  const port = (id: number) => ports[(id - 1) * 2] as number;
  const controllerPort = (id: number) => ports[(id - 1) * 2 + 1] as number;
  const voters = ids.map((id) => `${id}@127.0.0.1:${controllerPort(id)}`).join(',');
  const brokers = ids.map((id) => `127.0.0.1:${port(id)}`);
  const clusterId = randomBytes(16).toString('base64url');
  const children = new Map<number, ReturnType<typeof spawn>>();
  const output: string[] = [];
  const killAll = () => {
    for (const child of children.values()) child.kill('SIGKILL');
  };
  process.prependListener('exit', killAll);
  const stop = async () => {
    await Promise.all(
      Array.from(children.values(), async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const closed = new Promise((resolve) => child.once('close', resolve));
        child.kill('SIGTERM');
        const escalate = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await closed;
        clearTimeout(escalate);
      }),
    );
    children.clear();
    process.off('exit', killAll);
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  };
  try {
    await Promise.all(
      ids.map(async (id) => {
        const config = join(dir, `node-${id}.properties`);
        mkdirSync(join(dir, `data-${id}`));
        writeFileSync(config, nodeProperties(id, port(id), controllerPort(id), voters, nodes, join(dir, `data-${id}`)));
        const format = await runTool(
          java,
          ['-Xmx256m', ...JVM_COMMON, log4j, '-cp', classpath, 'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, `--config=${config}`],
          javaMissingHint(java),
        );
        if (format.code !== 0) throw new Error(`Kafka storage format of node ${id} failed (exit ${format.code}):\n${lastLines(format.output, 30)}`);
      }),
    );
    for (const id of ids) {
      const child = spawn(java, ['-Xms256m', '-Xmx512m', ...JVM_COMMON, log4j, '-cp', classpath, 'kafka.Kafka', join(dir, `node-${id}.properties`)], {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      for (const stream of [child.stdout, child.stderr]) stream?.on('data', (chunk: Buffer) => output.push(`[node ${id}] ${chunk.toString()}`));
      children.set(id, child);
    }
    await untilReady(brokers, () => lastLines(output.join(''), 30));
  } catch (error) {
    await stop();
    throw error;
  }
  const admin = () => new Kafka({ clientId: 'ferry-cluster-admin', brokers: [...brokers], logLevel: logLevel.NOTHING }).admin();
  const leaders = async (topic: string) => {
    const client = admin();
    await client.connect();
    try {
      const { topics } = await client.fetchTopicMetadata({ topics: [topic] });
      return new Map((topics[0]?.partitions ?? []).map((p) => [p.partitionId, p.leader]));
    } finally {
      await client.disconnect();
    }
  };
  const replicasLedBy = (nodeId: number) => [nodeId, ...ids.filter((id) => id !== nodeId)];
  return {
    brokers,
    leaders,
    createTopic: async (topic, wanted) => {
      const client = admin();
      await client.connect();
      try {
        await client.createTopics({
          topics: [{ topic, replicaAssignment: wanted.map((nodeId, partition) => ({ partition, replicas: replicasLedBy(nodeId) })) }],
          waitForLeaders: true,
        });
      } finally {
        await client.disconnect();
      }
      assert.deepEqual([...(await leaders(topic))].sort(), [...wanted.entries()]);
    },
    moveLeader: async (topic, partition, nodeId) => {
      const client = admin();
      await client.connect();
      try {
        await client.alterPartitionReassignments({ topics: [{ topic, partitionAssignment: [{ partition, replicas: replicasLedBy(nodeId) }] }] });
        const election = await runTool(
          java,
          [
            '-Xmx256m',
            ...JVM_COMMON,
            log4j,
            '-cp',
            classpath,
            'org.apache.kafka.tools.LeaderElectionCommand',
            '--bootstrap-server',
            brokers.join(','),
            '--election-type',
            'PREFERRED',
            '--topic',
            topic,
            '--partition',
            String(partition),
          ],
          javaMissingHint(java),
        );
        // kafka-tools 4.3.1 (the newest on the classpath) elects, then fails to find Exit, gone from 4.4's clients.
        if (election.code !== 0 && !election.output.includes('Successfully completed leader election'))
          throw new Error(`leader election failed (exit ${election.code}):\n${lastLines(election.output, 30)}`);
      } finally {
        await client.disconnect();
      }
      const deadline = Date.now() + 30_000;
      while ((await leaders(topic)).get(partition) !== nodeId) {
        if (Date.now() > deadline) throw new Error(`partition ${partition} of ${topic} is not led by node ${nodeId} after 30 s`);
        await sleep(200);
      }
    },
    stop,
  };
}

/** Every node answers metadata with all nodes in it. */
async function untilReady(brokers: readonly string[], tail: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const admin = new Kafka({
        clientId: 'ferry-cluster-probe',
        brokers: [...brokers],
        logLevel: logLevel.NOTHING,
        connectionTimeout: 1000,
        requestTimeout: 3000,
        retry: { retries: 0 },
      }).admin();
      await admin.connect();
      try {
        const { brokers: known } = await admin.describeCluster();
        if (known.length === brokers.length) return;
        last = `${known.length} of ${brokers.length} brokers registered`;
      } finally {
        await admin.disconnect();
      }
    } catch (error) {
      last = error instanceof Error ? error.message : String(error);
    }
    await sleep(250);
  }
  throw new Error(`Kafka cluster not ready in ${READY_TIMEOUT_MS / 1000} s (${last}). Output:\n${tail()}`);
}

function nodeProperties(id: number, port: number, controllerPort: number, voters: string, nodes: number, dataDir: string): string {
  return [
    'process.roles=broker,controller',
    `node.id=${id}`,
    `controller.quorum.voters=${voters}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    `offsets.topic.replication.factor=${nodes}`,
    'offsets.topic.num.partitions=1',
    `transaction.state.log.replication.factor=${nodes}`,
    'transaction.state.log.min.isr=1',
    'group.initial.rebalance.delay.ms=0',
    // Leaders move when the test moves them, not back by themselves.
    'auto.leader.rebalance.enable=false',
    'auto.create.topics.enable=false',
    `log.dirs=${dataDir}`,
    '',
  ].join('\n');
}
