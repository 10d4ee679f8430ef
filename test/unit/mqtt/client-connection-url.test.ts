import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { connectionFields, describeUrl } from '../../../src/mqtt/client-connection.ts';

// Regression: a broker URL that WHATWG URL cannot parse as written (a password with an
// unencoded `#`, `?` or `/`, a port above 65535) passed validation; mqtt.js then read it as
// another host and describeUrl logged it raw, password included.

const schema = z.strictObject(connectionFields());

function urlErrors(url: string): string[] {
  const result = schema.safeParse({ url, clientId: 'ferry-test' });
  return result.success ? [] : result.error.issues.map((issue) => issue.message);
}

test('broker URLs that do not parse as they read are refused, without repeating the password', () => {
  for (const url of [
    'mqtt://ferry:S3cret#PW@127.0.0.1:1883',
    'mqtt://ferry:S3cret?PW@127.0.0.1:1883',
    'mqtt://ferry:S3cret/PW@127.0.0.1:1883',
    'mqtt://ferry:123#PW@127.0.0.1:1883',
    'mqtt://ferry:123/PW@127.0.0.1:1883',
    'mqtt://broker.example.com:65536',
    'mqtts://broker.example.com:0',
  ]) {
    const errors = urlErrors(url);
    assert.equal(errors.length, 1, `${url}: ${errors.join('; ')}`);
    assert.match(errors[0] as string, /percent-encode special characters .*`password:` setting/, url);
    assert.doesNotMatch(errors[0] as string, /PW|S3cret/, url);
  }
});

test('broker URLs that parse are accepted', () => {
  for (const url of [
    'mqtt://broker.example.com:1883',
    'mqtts://broker:8883',
    'mqtt://127.0.0.1',
    'wss://broker.example.com:443/mqtt',
    'ws://broker:8080/mqtt?x=1',
    'mqtt://ferry:S3cret%23PW@127.0.0.1:1883',
    'mqtt://[::1]:1883',
  ]) {
    assert.deepEqual(urlErrors(url), [], url);
  }
});

test('describeUrl never returns credentials, even of a URL that does not parse', () => {
  assert.equal(describeUrl('mqtt://ferry:S3cret%23PW@127.0.0.1:1883'), 'mqtt://127.0.0.1:1883');
  assert.equal(describeUrl('wss://ferry:pw@broker:8443/mqtt'), 'wss://broker:8443/mqtt');
  assert.equal(describeUrl('mqtt://broker:1883'), 'mqtt://broker:1883');
  for (const url of [
    'mqtt://ferry:S3cret#PW@127.0.0.1:1883',
    'mqtt://ferry:S3cret/PW@127.0.0.1:1883',
    'mqtt://ferry:123#PW@127.0.0.1:1883',
    'mqtt://ferry:S3cret@127.0.0.1:99999',
  ]) {
    const described = describeUrl(url);
    assert.doesNotMatch(described, /S3cret|PW|ferry/, `${url} -> ${described}`);
    assert.match(described, /^mqtt:\/\/\*\*\*@127\.0\.0\.1/, `${url} -> ${described}`);
  }
});
