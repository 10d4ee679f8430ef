import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import pino from 'pino';
import { Gateway } from '../../src/runtime/gateway.ts';
import { handlerGatewayConfig } from '../harness/handler-gateway.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-stop-while-starting-');

/** Whether something accepts TCP connections on the port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

test('a gateway stopped while it starts waits for the start, then stops what it opened', { timeout: 30_000 }, async () => {
  const gateway = new Gateway(handlerGatewayConfig(tempDir()), pino({ level: 'silent' }), 'test');
  const started = gateway.start();
  const stopped = gateway.stop();
  await started;
  const port = gateway.mqttPort;
  assert.ok(port > 0, 'the start went on to open the listener');
  assert.equal(await stopped, true);
  assert.equal(gateway.status().state, 'stopped');
  assert.equal(await listening(port), false, 'the listener the start opened is closed by the stop');
});

test('a gateway stopped while a start fails stops at once', { timeout: 30_000 }, async () => {
  const root = tempDir();
  const config = handlerGatewayConfig(root);
  // A data directory that is a file: the start fails.
  const gateway = new Gateway({ ...config, dataDirPath: config.file }, pino({ level: 'silent' }), 'test');
  const started = gateway.start();
  const stopped = gateway.stop();
  await assert.rejects(started);
  assert.equal(await stopped, true);
  assert.equal(gateway.status().state, 'stopped');
});
