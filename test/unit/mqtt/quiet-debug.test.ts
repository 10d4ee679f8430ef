import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

// Each case runs in a Node process of its own: what it checks is how modules load.
const quietDebug = fileURLToPath(new URL('../../../src/mqtt/quiet-debug.ts', import.meta.url));

/** Loads mqtt-packet (through quiet-debug first, or not), parses a PUBLISH; returns stderr, where `debug` writes. */
function parseIn(options: { readonly quiet: boolean; readonly debugEnv?: string; readonly enableLater?: string }): { stderr: string; stdout: string } {
  const script = `
    import { createRequire } from 'node:module';
    const require = createRequire(${JSON.stringify(quietDebug)});
    const createDebug = require('debug');
    ${options.quiet ? `(await import(${JSON.stringify(quietDebug)})).loadQuietMqttPacket();` : ''}
    console.log(require('debug') === createDebug ? 'debug restored' : 'debug replaced');
    ${options.enableLater === undefined ? '' : `createDebug.enable(${JSON.stringify(options.enableLater)});`}
    const mqtt = require('mqtt-packet');
    const parser = mqtt.parser({ protocolVersion: 4 });
    let parsed = 0;
    parser.on('packet', () => { parsed += 1; });
    parser.parse(mqtt.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos: 1, messageId: 7 }));
    console.log('parsed ' + parsed);
  `;
  const env = { ...process.env };
  delete env.DEBUG;
  if (options.debugEnv !== undefined) env.DEBUG = options.debugEnv;
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env });
  assert.equal(result.status, 0, result.stderr);
  return { stderr: result.stderr, stdout: result.stdout };
}

test("mqtt-packet's loggers that are off when it loads do nothing, even when turned on later", () => {
  const quiet = parseIn({ quiet: true, enableLater: 'mqtt-packet:*' });
  assert.match(quiet.stdout, /debug restored/);
  assert.match(quiet.stdout, /parsed 1/);
  assert.doesNotMatch(quiet.stderr, /mqtt-packet:parser/);
  // Without it, the same late enable makes them write: the check above can fail.
  const plain = parseIn({ quiet: false, enableLater: 'mqtt-packet:*' });
  assert.match(plain.stderr, /mqtt-packet:parser/);
});

test('a namespace DEBUG turns on at start keeps its real logger', () => {
  const { stderr, stdout } = parseIn({ quiet: true, debugEnv: 'mqtt-packet:parser' });
  assert.match(stdout, /parsed 1/);
  assert.match(stderr, /mqtt-packet:parser/);
});
