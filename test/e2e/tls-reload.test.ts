// A certificate renewed on disk (same paths, new content, as an ACME client or an internal CA
// renews it) under `ferry run`: `ferry reload` gives it to the MQTT TLS listener in place.
// Devices connected over TLS stay connected with their session; handshakes after the reload
// get the new certificate. A renewal whose files do not load is refused, naming the file, and
// the listener keeps presenting the certificate it had.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { connectAsync } from 'mqtt';
import { makeCertificates, renewServerCertificate } from '../harness/certs.ts';
import { ferry, startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-e2e-tls-reload-');

const fingerprint = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

/** The fingerprint of the certificate a new TLS handshake with 127.0.0.1:`port` gets, and why `ca` does not verify it, if it does not. */
async function presented(port: number, ca: Buffer): Promise<string> {
  const socket = tlsConnect({ host: '127.0.0.1', port, ca, rejectUnauthorized: false });
  try {
    await once(socket, 'secureConnect');
    const { fingerprint256 } = socket.getPeerCertificate();
    return socket.authorized ? fingerprint256 : `${fingerprint256} (${String(socket.authorizationError)})`;
  } finally {
    socket.destroy();
  }
}

test('a renewed mqtt.tls certificate: `ferry reload` applies it to new connections, keeps connected devices, refuses one that does not load', { timeout: 120_000 }, async (t) => {
  const root = tempDir();
  const certs = join(root, 'certs');
  mkdirSync(certs);
  makeCertificates(certs, []);
  const ca = readFileSync(join(certs, 'ca.crt'));
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback, tls: {port: 0, cert: certs/server.crt, key: certs/server.key}}\nbridges: []\ndevices: []\n');
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', tempDir()]);
  t.after(() => gw.child.kill('SIGKILL'));
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; port: number }[] };
  const port = status.listeners.find((l) => l.protocol === 'mqtts')?.port;
  assert.ok(port !== undefined && port > 0, JSON.stringify(status.listeners));
  const reload = () => ferry(['reload', '--admin', gw.adminUrl]);

  const first = fingerprint(join(certs, 'server.crt'));
  const device = await connectAsync(`mqtts://127.0.0.1:${port}`, { ca, clientId: 'tls-device', clean: false, reconnectPeriod: 0, connectTimeout: 5000 });
  t.after(() => device.endAsync(true));
  let closes = 0;
  device.on('close', () => closes++);
  const deviceCertificate = () => (device.stream as TLSSocket).getPeerCertificate().fingerprint256;
  assert.equal(deviceCertificate(), first);
  assert.equal(await presented(port, ca), first);

  // Renewed on disk: until the reload, new connections still get the certificate loaded at the start.
  renewServerCertificate(certs);
  const second = fingerprint(join(certs, 'server.crt'));
  assert.notEqual(second, first);
  assert.equal(await presented(port, ca), first);

  const renewed = await reload();
  assert.equal(renewed.code, 0, renewed.stderr);
  assert.equal(await presented(port, ca), second);
  assert.match(renewed.stdout, /mqtt\.tls certificate: renewed/);
  assert.doesNotMatch(renewed.stdout, /restart needed/);
  // The device connected before it keeps its connection, its session and the certificate it was given.
  assert.equal(device.connected, true);
  await device.publishAsync('tls/after-renewal', 'still here', { qos: 1 });
  assert.equal(closes, 0);
  assert.equal(deviceCertificate(), first);

  // The key of another certificate: refused, naming the key file; the listener keeps the renewed certificate.
  renewServerCertificate(certs, 'other');
  copyFileSync(join(certs, 'other.key'), join(certs, 'server.key'));
  const mismatched = await reload();
  assert.equal(mismatched.code, 1, mismatched.stdout);
  assert.match(mismatched.stderr, /mqtt\.tls\.key: .*certs\/server\.key: the key does not belong to the certificate .*certs\/server\.crt/);
  assert.match(mismatched.stderr, /reload refused \(1 problem\)/);
  assert.equal(await presented(port, ca), second);

  // A certificate file that is PEM in name only: refused, naming it.
  writeFileSync(join(certs, 'server.crt'), '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
  const garbled = await reload();
  assert.equal(garbled.code, 1, garbled.stdout);
  assert.match(garbled.stderr, /mqtt\.tls\.cert: .*certs\/server\.crt: not a PEM certificate that loads/);
  assert.equal(await presented(port, ca), second);

  // An expired certificate that loads is applied, with a warning: it replaces one about to expire as well.
  renewServerCertificate(certs, 'server', -1);
  const third = fingerprint(join(certs, 'server.crt'));
  const expired = await reload();
  assert.equal(expired.code, 0, expired.stderr);
  assert.match(expired.stdout, /warning: mqtt\.tls\.cert .*certs\/server\.crt expired on /);
  assert.equal(await presented(port, ca), `${third} (CERT_HAS_EXPIRED)`);

  assert.equal(device.connected, true);
  await device.publishAsync('tls/after-refusals', 'still here', { qos: 1 });
  assert.equal(closes, 0);
});

test('client certificates over a reload: a CA file written in part is refused; removing the CA while the listener asks for certificates keeps it until a restart', {
  timeout: 120_000,
}, async (t) => {
  const root = tempDir();
  const [certs, other] = [join(root, 'certs'), join(root, 'other-ca')];
  mkdirSync(certs);
  mkdirSync(other);
  makeCertificates(certs, ['device-a']);
  makeCertificates(other, ['device-b']);
  const ca = readFileSync(join(certs, 'ca.crt'));
  const otherCa = readFileSync(join(other, 'ca.crt'));
  // Devices of two CAs, one file of both.
  writeFileSync(join(certs, 'clients-ca.pem'), Buffer.concat([ca, otherCa]));
  const config = join(root, 'gateway.yaml');
  const files = 'cert: certs/server.crt, key: certs/server.key';
  writeFileSync(config, `mqtt: {allowAnonymous: loopback, tls: {port: 0, ${files}, ca: certs/clients-ca.pem, requireClientCert: true}}\nbridges: []\ndevices: []\n`);
  const gw = await startFerry(['--config', config, '--data-dir', tempDir()]);
  t.after(() => gw.child.kill('SIGKILL'));
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; port: number }[] };
  const port = status.listeners.find((l) => l.protocol === 'mqtts')?.port;
  assert.ok(port !== undefined && port > 0, JSON.stringify(status.listeners));
  const reload = () => ferry(['reload', '--admin', gw.adminUrl]);
  /** Connects over TLS with a device's certificate and publishes once. */
  const device = async (dir: string, name: string) => {
    const client = await connectAsync(`mqtts://127.0.0.1:${port}`, {
      ca,
      key: readFileSync(join(dir, `${name}.key`)),
      cert: readFileSync(join(dir, `${name}.crt`)),
      clientId: `${name}-${Math.random().toString(36).slice(2)}`,
      reconnectPeriod: 0,
      connectTimeout: 5000,
    });
    try {
      await client.publishAsync('tls/client-cert', name, { qos: 1 });
    } finally {
      await client.endAsync(true);
    }
  };
  await device(certs, 'device-a');
  await device(other, 'device-b');

  // Read while it is written: the second CA cut off, halfway or within its BEGIN line (before
  // "BEGIN" itself). OpenSSL would load the first alone; the reload is refused.
  for (const cut of [Math.floor(otherCa.length / 2), '-----BEG'.length]) {
    writeFileSync(join(certs, 'clients-ca.pem'), Buffer.concat([ca, otherCa.subarray(0, cut)]));
    const partial = await reload();
    assert.equal(partial.code, 1, `cut after ${cut} bytes of the second CA: ${partial.stdout}`);
    assert.match(partial.stderr, /mqtt\.tls\.ca: .*certs\/clients-ca\.pem: ends inside a PEM block/);
    await device(other, 'device-b');
  }
  writeFileSync(join(certs, 'clients-ca.pem'), Buffer.concat([ca, otherCa]));

  // Client certificates turned off, and the CA with them, along with a renewed certificate:
  // the listener asks for certificates until a restart, so it keeps checking them against its CA.
  renewServerCertificate(certs);
  writeFileSync(config, `mqtt: {allowAnonymous: loopback, tls: {port: 0, ${files}}}\nbridges: []\ndevices: []\n`);
  const removed = await reload();
  assert.equal(removed.code, 0, removed.stderr);
  assert.match(removed.stdout, /mqtt\.tls certificate: renewed/);
  assert.match(removed.stdout, /warning: mqtt\.tls\.ca removed: not applied .*restart needed/);
  assert.match(removed.stdout, /warning: mqtt\.tls\.requireClientCert changed \(true → false\): not applied; restart needed/);
  assert.equal(await presented(port, ca), fingerprint(join(certs, 'server.crt')));
  await device(certs, 'device-a');
  await device(other, 'device-b');

  // A later renewal keeps that CA as well.
  renewServerCertificate(certs);
  const renewed = await reload();
  assert.equal(renewed.code, 0, renewed.stderr);
  assert.equal(await presented(port, ca), fingerprint(join(certs, 'server.crt')));
  await device(certs, 'device-a');
  await device(other, 'device-b');
});
