// Issue 16: what attack and fault tests found in the hardened gateway. Each test runs the
// attack against `ferry run` and fails on the code before the fix.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { connectPacket } from '../harness/mqtt-wire.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue16-');

async function counters(gw: RunningFerry): Promise<Record<string, number>> {
  return ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
}

/**
 * Sends a raw MQTT 3.1.1 CONNECT from `localAddress` and resolves with the CONNACK's return
 * code (or 'closed' when the connection ended without one). The socket is left open on success.
 */
function rawConnect(
  gw: RunningFerry,
  clientId: string,
  login: { username: string; password: string },
  localAddress = '127.0.0.1',
): { socket: Socket; connack: Promise<number | 'closed'> } {
  const url = new URL(gw.mqttUrl);
  const socket = createConnection({ host: url.hostname, port: Number(url.port), localAddress });
  socket.on('error', () => {});
  socket.write(connectPacket(clientId, 60, true, login));
  const connack = new Promise<number | 'closed'>((resolve) => {
    let got = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 4 && got[0] === 0x20) resolve(got[3] as number);
    });
    socket.once('close', () => resolve('closed'));
  });
  return { socket, connack };
}

describe('parallel password guesses (issue 16, item 1)', () => {
  const PASSWORD = 'the-right-one';
  let gw: RunningFerry;

  before(async () => {
    const root = tempDir();
    const config = writeGatewayTree(root, '{allowAnonymous: false, maxAuthFailures: 10, maxConnectionsPerAddress: 5000}', {
      'sensor.yaml': `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', PASSWORD)}`,
      'staff.yaml': `name: staff\nclientId: op-*\ncredentials:\n${await credential('op-1', 'op-pass')}`,
    });
    gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  });

  after(async () => {
    gw.child.kill('SIGTERM');
    await gw.exited;
  });

  test('400 CONNECTs at once for one username get no more password checks than the failure limit; past the limit the right password is refused', async () => {
    const burst = Array.from({ length: 400 }, (_, i) => rawConnect(gw, 'sensor-1', { username: 'sensor-1', password: `guess-${i}` }));
    const codes = await Promise.all(burst.map((a) => a.connack));
    for (const { socket } of burst) socket.destroy();
    assert.equal(codes.filter((c) => c === 0).length, 0);
    let c = await counters(gw);
    const checked = () => c['mqtt.connections.refused{reason=bad_credentials}'] ?? 0;
    const blocked = () => c['mqtt.connections.refused{reason=too_many_failures}'] ?? 0;
    // Every check counts as a failure from its start: the tenth blocks the pair, whatever runs in parallel.
    assert.ok(checked() <= 10, JSON.stringify(c));
    // How many of the burst were checked depends on how its CONNECTs arrived (a username gets at
    // most 4 checks at once, the rest are refused without one): guess on, one at a time, until the
    // pair is blocked, which the tenth check must do.
    let guesses = 0;
    while (blocked() === 0 && guesses <= 10) {
      const guess = rawConnect(gw, 'sensor-1', { username: 'sensor-1', password: `late-guess-${guesses++}` });
      assert.notEqual(await guess.connack, 0);
      guess.socket.destroy();
      c = await counters(gw);
    }
    assert.ok(blocked() > 0 && checked() <= 10, `after ${guesses} more guesses: ${JSON.stringify(c)}`);
    // The right password now: refused without a check, and so would it be in the middle of a burst that reached the limit.
    const right = rawConnect(gw, 'sensor-1', { username: 'sensor-1', password: PASSWORD });
    assert.notEqual(await right.connack, 0, 'the right password, after the limit, must not get in');
    right.socket.destroy();
    c = await counters(gw);
    assert.ok(checked() <= 10, JSON.stringify(c));
    const refused = ['bad_credentials', 'too_many_failures', 'too_many_attempts'].reduce((sum, r) => sum + (c[`mqtt.connections.refused{reason=${r}}`] ?? 0), 0);
    assert.equal(refused, 400 + guesses + 1, JSON.stringify(c));
  });

  test("a burst of 600 logins from one address does not hold up another address's login behind it", async () => {
    // Unknown usernames: each costs a full (dummy) password check, and none is blocked by the failure limit.
    const burst = Array.from({ length: 600 }, (_, i) => rawConnect(gw, `sensor-x${i}`, { username: `nobody-${i}`, password: 'x' }));
    const operator = rawConnect(gw, 'op-1', { username: 'op-1', password: 'op-pass' }, '127.0.0.2');
    const order: string[] = [];
    operator.connack.then((code) => order.push(`operator ${code}`));
    const codes = await Promise.all(burst.map((b) => b.connack.then((code) => (order.push(`burst ${code}`), code))));
    assert.equal(await operator.connack, 0);
    for (const { socket } of [...burst, operator]) socket.destroy();
    // Checked ones answer 4 (bad user name or password), the rest 3 (server unavailable, try later) at once.
    assert.ok(
      codes.every((code) => code === 3 || code === 4),
      JSON.stringify(codes),
    );
    // The operator's check takes its turn after at most one check per address ahead of it: most
    // of the burst's checked logins are answered after it (before the fix it came after all of them).
    const at = order.indexOf('operator 0');
    const checkedAfter = order.slice(at + 1).filter((o) => o === 'burst 4').length;
    assert.ok(checkedAfter >= 10, `burst logins checked after the operator's: ${checkedAfter} of ${codes.filter((c) => c === 4).length}`);
    const c = await counters(gw);
    assert.ok((c['mqtt.connections.refused{reason=too_many_attempts}'] ?? 0) > 0, JSON.stringify(c));
  });
});

describe('saved sessions belong to the login that made them (issue 16, items 2 and 3)', () => {
  const PASSWORDS = { 'sensor-1': 'one-pass', 'sensor-3': 'three-pass', 'op-1': 'op-pass', tech: 'tech-pass' };
  let gw: RunningFerry;
  let root: string;
  let sensorProfile: (commands: boolean) => Promise<string>;
  const clients: MqttClient[] = [];

  before(async () => {
    root = tempDir();
    sensorProfile = async (commands: boolean) =>
      `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', PASSWORDS['sensor-1'])}${await credential('sensor-3', PASSWORDS['sensor-3'])}` +
      `acl: {publish: ["devices/%c/#"], subscribe: [${commands ? '"devices/%c/commands/#", ' : ''}"devices/%c/config/#"]}\n`;
    const config = writeGatewayTree(root, '{allowAnonymous: true, anonymousAcl: {publish: ["public/#"], subscribe: ["public/#", "devices/#"]}}', {
      'sensor.yaml': await sensorProfile(true),
      'staff.yaml':
        `name: staff\ncredentials:\n${await credential('op-1', PASSWORDS['op-1'], ', clientId: "op-*"')}${await credential('tech', PASSWORDS.tech, ', clientId: "*"')}` +
        'acl: {publish: ["devices/#"], subscribe: ["devices/#"]}\n',
    });
    gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    gw.child.kill('SIGTERM');
    await gw.exited;
  });

  /**
   * Connects, with a listener on the client from the start: messages queued in a session may
   * arrive in the same read as the CONNACK, before an awaited connect returns.
   */
  async function connect(clientId: string, username: keyof typeof PASSWORDS | undefined, extra: IClientOptions = {}): Promise<MqttClient & { box: Inbox }> {
    const client = mqtt.connect(gw.mqttUrl, {
      clientId,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      clean: false,
      ...(username === undefined ? {} : { username, password: PASSWORDS[username] }),
      ...extra,
    });
    clients.push(client);
    const box = inbox(client);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
      client.once('close', () => reject(new Error('closed before CONNACK')));
    });
    return Object.assign(client, { box });
  }

  async function refusal(clientId: string, username?: keyof typeof PASSWORDS, extra: IClientOptions = {}): Promise<string> {
    try {
      const client = await connect(clientId, username, extra);
      await client.endAsync(true);
    } catch (error) {
      return (error as Error).message;
    }
    return 'connected';
  }

  interface Inbox {
    readonly seen: string[];
    /** Resolves once a message on `topic` arrived; rejects after 10 s without one. */
    arrival(topic: string): Promise<void>;
  }

  function inbox(client: MqttClient): Inbox {
    const seen: string[] = [];
    const waiting = new Map<string, () => void>();
    client.on('message', (topic, payload) => {
      seen.push(`${topic} ${payload.toString()}`);
      waiting.get(topic)?.();
    });
    return {
      seen,
      arrival: (topic) =>
        seen.some((s) => s.startsWith(`${topic} `))
          ? Promise.resolve()
          : new Promise<void>((resolve, reject) => {
              const timer = setTimeout(() => reject(new Error(`nothing arrived on ${topic} within 10 s; seen: ${JSON.stringify(seen)}`)), 10_000);
              waiting.set(topic, () => {
                clearTimeout(timer);
                resolve();
              });
            }),
    };
  }

  async function publish(topic: string, payload: string): Promise<void> {
    const op = await connect('op-pub', 'op-1', { clean: true });
    await op.publishAsync(topic, payload, { qos: 1 });
    await op.endAsync();
  }

  test("an anonymous client cannot take an offline device's or operator's session; the device still gets its command", async () => {
    const sensor = await connect('sensor-1', 'sensor-1');
    await sensor.subscribeAsync('devices/sensor-1/commands/#', { qos: 1 });
    await sensor.endAsync();
    const op = await connect('op-1', 'op-1');
    await op.subscribeAsync('devices/#', { qos: 1 });
    await op.endAsync();
    await publish('devices/sensor-1/commands/unlock', 'open');

    assert.match(await refusal('sensor-1', undefined), /Identifier rejected/);
    assert.match(await refusal('op-1', undefined), /Identifier rejected/);
    // Not even a clean session: that would discard the device's queued command.
    assert.match(await refusal('sensor-1', undefined, { clean: true }), /Identifier rejected/);

    const back = await connect('sensor-1', 'sensor-1');
    assert.equal(back.connected, true);
    const box = back.box;
    await box.arrival('devices/sensor-1/commands/unlock');
    assert.deepEqual(box.seen, ['devices/sensor-1/commands/unlock open']);
    await back.endAsync();
    assert.equal((await counters(gw))['mqtt.connections.refused{reason=session_of_another_login}'], 3);
  });

  test("another login allowed the client id starts clean: the saved session's subscriptions and queued messages are not its", async () => {
    const sensor = await connect('sensor-1', 'sensor-1');
    await sensor.subscribeAsync('devices/sensor-1/commands/#', { qos: 1 });
    await sensor.endAsync();
    await publish('devices/sensor-1/commands/reboot', 'now');

    const tech = await connect('sensor-1', 'tech');
    const box = tech.box;
    // A marker the tech subscribes to itself: anything queued in the old session would come first.
    await tech.subscribeAsync('devices/tech/marker', { qos: 1 });
    await publish('devices/sensor-1/commands/reboot', 'again');
    await publish('devices/tech/marker', 'm');
    await box.arrival('devices/tech/marker');
    assert.deepEqual(box.seen, ['devices/tech/marker m']);
    await tech.endAsync();
    assert.equal((await counters(gw))['mqtt.sessions.discarded{reason=owner_changed}'], 1);
  });

  test('narrowing an ACL by reload drops the saved subscription it no longer allows: nothing queued or new arrives there', async () => {
    const sensor = await connect('sensor-3', 'sensor-3');
    await sensor.subscribeAsync(['devices/sensor-3/commands/#', 'devices/sensor-3/config/#'], { qos: 1 });
    await sensor.endAsync();

    writeFileSync(join(root, 'devices/sensor.yaml'), await sensorProfile(false));
    const reload = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(reload.status, 200, await reload.text());
    await publish('devices/sensor-3/commands/unlock', 'queued');

    const back = await connect('sensor-3', 'sensor-3');
    const box = back.box;
    await publish('devices/sensor-3/commands/unlock', 'live');
    await publish('devices/sensor-3/config/marker', 'm');
    await box.arrival('devices/sensor-3/config/marker');
    assert.deepEqual(box.seen, ['devices/sensor-3/config/marker m']);
    await back.endAsync();
    const c = await counters(gw);
    assert.equal(c['mqtt.sessions.subscriptions_dropped{reason=acl}'], 1);
  });
});
