import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createEnvelope } from '../../../src/core/envelope.ts';
import { FerryError } from '../../../src/core/errors.ts';
import { MessageFields, TemplateError, compileTemplate, templateFilterProblem } from '../../../src/core/template.ts';
import { interpolate } from '../../../src/config/interpolate.ts';

const filters = ['devices/+/telemetry/#'];
const envelope = createEnvelope({
  topic: 'devices/sensor-1/telemetry/temp/room',
  payload: '{"site":{"id":"s7"},"celsius":21.5,"ok":true}',
  origin: { source: 'mqtt', clientId: 'sensor-1', username: 'u1' },
  key: 'k1',
  headers: { region: 'eu' },
});

test('renders wildcard captures, identity, key, headers and payload fields', () => {
  const t = compileTemplate('iot.${1}.${#}|${topic}|${clientId}/${username}|${key}|${header.region}|${payload.site.id}|${payload.celsius}|${payload.ok}');
  assert.equal(t.render({ envelope, filters }), 'iot.sensor-1.temp/room|devices/sensor-1/telemetry/temp/room|sensor-1/u1|k1|eu|s7|21.5|true');
  assert.equal(t.constant, false);
});

test('${id}, ${timestamp} and the whole ${payload} render as text', () => {
  const t = compileTemplate('${id}|${timestamp}|${payload}');
  assert.equal(t.render({ envelope, filters }), `${envelope.id}|${envelope.timestamp}|{"site":{"id":"s7"},"celsius":21.5,"ok":true}`);
  assert.equal(t.single, undefined);
  assert.deepEqual(compileTemplate('${payload}').single, { kind: 'payload', path: [] });
});

test("MessageFields.raw keeps each field's type; a missing value is undefined", () => {
  const fields = new MessageFields({ envelope, filters });
  const raw = (source: string) => fields.raw(compileTemplate(source).single as never);
  assert.equal(raw('${id}'), envelope.id);
  assert.equal(raw('${timestamp}'), envelope.timestamp);
  assert.equal(raw('${payload}'), envelope.payload);
  assert.equal(raw('${payload.celsius}'), 21.5);
  assert.equal(raw('${payload.ok}'), true);
  assert.deepEqual(raw('${payload.site}'), { id: 's7' });
  assert.equal(raw('${payload.nope.deeper}'), undefined);
  assert.equal(raw('${1}'), 'sensor-1');
  assert.equal(raw('${header.none}'), undefined);
  // One parse per message, however many templates read it.
  assert.equal(compileTemplate('${payload.site.id}-${1}').render(fields), 's7-sensor-1');
  const notJson = new MessageFields({ envelope: createEnvelope({ topic: 'a', payload: 'x', origin: { source: 'mqtt' } }), filters: [] });
  assert.throws(() => notJson.raw({ kind: 'payload', path: ['a'] }), TemplateError);
});

test('a template without fields is constant; $${ is a literal', () => {
  const t = compileTemplate('plain.topic');
  assert.equal(t.constant, true);
  assert.equal(t.render({ envelope, filters }), 'plain.topic');
  assert.equal(compileTemplate('a$${b}').render({ envelope, filters }), 'a${b}');
});

test('captures come from the first filter that matches the topic', () => {
  const t = compileTemplate('${1}');
  assert.equal(t.render({ envelope, filters: ['other/+', 'devices/+/telemetry/+/+'] }), 'sensor-1');
});

test('captures are remembered per list of filters and topic: the same topic under other filters, and past the memory, still renders its own', () => {
  const t = compileTemplate('${1}|${#}');
  const bySite = ['sites/+/#'];
  const byDevice = ['sites/+/devices/+/#'];
  const at = (topic: string) => createEnvelope({ topic, payload: '{}', origin: { source: 'mqtt', qos: 1 } });
  for (let round = 0; round < 2; round++) {
    assert.equal(t.render({ envelope: at('sites/s1/devices/d1/t'), filters: bySite }), 's1|devices/d1/t');
    assert.equal(t.render({ envelope: at('sites/s1/devices/d1/t'), filters: byDevice }), 's1|t');
    assert.equal(t.render({ envelope: at('sites/s2/devices/d9/t'), filters: bySite }), 's2|devices/d9/t');
  }
  // More topics than are remembered: each still gets its own captures.
  for (let i = 0; i < 5000; i++) assert.equal(t.render({ envelope: at(`sites/s${i}/x`), filters: bySite }), `s${i}|x`);
  assert.equal(t.render({ envelope: at('sites/s1/devices/d1/t'), filters: byDevice }), 's1|t');
  // A long topic is matched each time, not remembered.
  const long = `sites/${'x'.repeat(300)}/y`;
  assert.equal(t.render({ envelope: at(long), filters: bySite }), `${'x'.repeat(300)}|y`);
});

test('unknown fields and unclosed braces are config errors naming the field', () => {
  assert.throws(
    () => compileTemplate('x.${nope}'),
    (e: unknown) => e instanceof FerryError && /unknown field \$\{nope\}/.test(e.message),
  );
  assert.throws(() => compileTemplate('x.${1'), /not closed/);
  assert.throws(() => compileTemplate('${payload.}'), /unknown field/);
  assert.throws(() => compileTemplate('${KAFKA_TOPIC}'), /environment variable/);
});

test('templateFilterProblem checks captures against every filter', () => {
  assert.equal(templateFilterProblem(compileTemplate('${1}.${#}'), filters), undefined);
  assert.match(templateFilterProblem(compileTemplate('${2}'), filters) ?? '', /2nd '\+' wildcard, but the filter 'devices\/\+\/telemetry\/#' has 1/);
  assert.match(templateFilterProblem(compileTemplate('${#}'), ['a/+']) ?? '', /ending in '#'/);
  assert.match(templateFilterProblem(compileTemplate('${1}'), ['a/+', 'b']) ?? '', /'b' has none/);
});

test('a field without a value throws a TemplateError at render time', () => {
  const bare = createEnvelope({ topic: 'x/y', payload: 'not json', origin: { source: 'mqtt' } });
  for (const source of ['${clientId}', '${key}', '${header.h}', '${payload.a}', '${1}']) {
    assert.throws(() => compileTemplate(source).render({ envelope: bare, filters: ['x/z'] }), TemplateError, source);
  }
  assert.throws(() => compileTemplate('${payload.site}').render({ envelope, filters }), /not a string, number or boolean/);
});

test('environment interpolation leaves lower-case and numeric fields for templates', () => {
  assert.deepEqual(interpolate('${ENV}.${1}.${topic}.${clientId}', { ENV: 'prod' }), { value: 'prod.${1}.${topic}.${clientId}', missing: [] });
});

test('rendered as an MQTT topic, a value from the message stays one topic level: refused, or escaped (issue 16, item 4)', () => {
  const steering = createEnvelope({
    topic: 'devices/sensor-1/telemetry/display',
    payload: JSON.stringify({ display: 'sensor-2/commands/unlock', wild: 'a+#', line: 'x\ny', c1: 'a\u009bb', pct: '50%', fine: 'sensor-2' }),
    origin: { source: 'mqtt', clientId: 'sensor-1' },
    headers: { site: 'north/../../evil/\nx' },
  });
  const input = { envelope: steering, filters: ['devices/+/telemetry/#'] };
  const refused = (source: string) => assert.throws(() => compileTemplate(source).renderTopic(input, 'refuse'), TemplateError, source);
  assert.equal(compileTemplate('devices/${payload.fine}/display').renderTopic(input, 'refuse'), 'devices/sensor-2/display');
  assert.throws(
    () => compileTemplate('devices/${payload.display}/display').renderTopic(input, 'refuse'),
    /\$\{payload\.display\} is "sensor-2\/commands\/unlock", which has '\/' \(it would add topic levels\)/,
  );
  refused('devices/${payload.wild}');
  refused('devices/${payload.line}');
  refused('devices/${payload.c1}');
  assert.throws(() => compileTemplate('sites/${header.site}').renderTopic(input, 'refuse'), /\$\{header\.site\} is "north\/\.\.\/\.\.\/evil\/\\nx"/);
  // `%` is fine when refusing; escaping encodes it too, so that escaped values can be decoded.
  assert.equal(compileTemplate('p/${payload.pct}').renderTopic(input, 'refuse'), 'p/50%');
  const escaped = (source: string) => compileTemplate(source).renderTopic(input, 'escape');
  assert.equal(escaped('devices/${payload.display}/display'), 'devices/sensor-2%2Fcommands%2Funlock/display');
  assert.equal(escaped('sites/${header.site}'), 'sites/north%2F..%2F..%2Fevil%2F%0Ax');
  assert.equal(escaped('w/${payload.wild}/${payload.c1}/${payload.pct}'), 'w/a%2B%23/a%C2%9Bb/50%25');
  assert.equal(decodeURIComponent('sensor-2%2Fcommands%2Funlock'), 'sensor-2/commands/unlock');
  // ${topic} and ${#} span levels: their '/' stays.
  assert.equal(compileTemplate('up/${topic}').renderTopic(input, 'refuse'), 'up/devices/sensor-1/telemetry/display');
  assert.equal(compileTemplate('up/${1}/${#}').renderTopic(input, 'escape'), 'up/sensor-1/display');
  // render() is unchanged: Kafka topics, keys and headers have their own rules.
  assert.equal(compileTemplate('${payload.display}').render(input), 'sensor-2/commands/unlock');
});

test('rendered as an MQTT topic, an empty value from the message is refused, escaped or not: `up//data` addresses nothing', () => {
  const input = { envelope: createEnvelope({ topic: 'a/b', payload: '{"to":""}', key: '', origin: { source: 'kafka' } }), filters: [] };
  for (const unsafe of ['refuse', 'escape'] as const) {
    assert.throws(() => compileTemplate('up/${key}/data').renderTopic(input, unsafe), /template 'up\/\$\{key\}\/data': \$\{key\} is empty/);
    assert.throws(() => compileTemplate('up/${payload.to}').renderTopic(input, unsafe), /\$\{payload\.to\} is empty/);
  }
  // Text that is empty stays as written: it is the config's, not the message's.
  assert.equal(compileTemplate('up//${topic}').renderTopic(input, 'refuse'), 'up//a/b');
  assert.equal(compileTemplate('up/${key}').render(input), 'up/');
});

test('a payload number a double cannot hold renders as the device wrote it, in text and as a raw field', () => {
  const big = createEnvelope({ topic: 'a', payload: '{"serial":18446744073709551615,"ns":1733000000123456789,"small":21.5}', origin: { source: 'mqtt' } });
  assert.equal(compileTemplate('${payload.serial}/${payload.ns}/${payload.small}').render({ envelope: big, filters: [] }), '18446744073709551615/1733000000123456789/21.5');
  const fields = new MessageFields({ envelope: big, filters: [] });
  assert.equal(JSON.stringify(fields.raw(compileTemplate('${payload.serial}').single as never)), '18446744073709551615');
  assert.equal(fields.raw(compileTemplate('${payload.small}').single as never), 21.5);
});
