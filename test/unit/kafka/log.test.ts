import assert from 'node:assert/strict';
import { test } from 'node:test';
import { logLevel } from 'kafkajs';
import { logTo } from '../../../src/kafka/client.ts';

test("kafkajs' routine outage messages go to debug, never error; anything else is a warning (issue 16, item 11)", () => {
  const seen: [string, string][] = [];
  const logger = { warn: (_: object, m: string) => void seen.push(['warn', m]), debug: (_: object, m: string) => void seen.push(['debug', m]) };
  const log = logTo(logger as never, logLevel)(logLevel.WARN);
  const entry = (level: logLevel, message: string, error?: string) =>
    log({ namespace: 'Connection', level, label: 'ERROR', log: { timestamp: '', message, ...(error === undefined ? {} : { error }) } });
  entry(logLevel.ERROR, 'Connection error: connect ECONNREFUSED 127.0.0.1:9092');
  entry(logLevel.ERROR, 'Response Metadata(key: 3, version: 6)', 'This server does not host this topic-partition');
  entry(logLevel.ERROR, 'Crash: KafkaJSNumberOfRetriesExceeded');
  entry(logLevel.ERROR, 'SASL PLAIN authentication failed');
  assert.deepEqual(seen, [
    ['debug', 'Connection error: connect ECONNREFUSED 127.0.0.1:9092'],
    ['debug', 'Response Metadata(key: 3, version: 6)'],
    ['debug', 'Crash: KafkaJSNumberOfRetriesExceeded'],
    ['warn', 'SASL PLAIN authentication failed'],
  ]);
});

test("kafkajs' warnings about what Ferry does on purpose go to debug: limited retries of an idempotent producer, a coordinator loading after a restart", () => {
  const seen: [string, string][] = [];
  const logger = { warn: (_: object, m: string) => void seen.push(['warn', m]), debug: (_: object, m: string) => void seen.push(['debug', m]) };
  const log = logTo(logger as never, logLevel)(logLevel.WARN);
  const entry = (namespace: string, level: logLevel, message: string, error?: string) =>
    log({ namespace, level, label: 'WARN', log: { timestamp: '', message, ...(error === undefined ? {} : { error }) } });
  // As kafkajs logs them: a new idempotent producer whose retries are limited, and after a broker restart.
  entry('Producer', logLevel.WARN, 'Limiting retries for the idempotent producer may invalidate EoS guarantees');
  entry('Connection', logLevel.ERROR, 'Response InitProducerId(key: 22, version: 1)', "The coordinator is loading and hence can't process requests for this group");
  // Another answer to the same request is no routine.
  entry('Connection', logLevel.ERROR, 'Response InitProducerId(key: 22, version: 1)', 'Cluster authorization failed');
  assert.deepEqual(seen, [
    ['debug', 'Limiting retries for the idempotent producer may invalidate EoS guarantees'],
    ['debug', 'Response InitProducerId(key: 22, version: 1)'],
    ['warn', 'Response InitProducerId(key: 22, version: 1)'],
  ]);
});
