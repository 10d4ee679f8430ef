import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { locateKey } from '../../../src/config/bridge-module.ts';
import { createDelivery } from '../../../src/core/delivery.ts';
import { createEnvelope } from '../../../src/core/envelope.ts';
import { FerryError } from '../../../src/core/errors.ts';
import { garbageCollector } from '../../../src/handler/gc-nudge.ts';
import { InputTracker, type Ticket, noteRouted } from '../../../src/handler/input-tracker.ts';
import { type MessageContext, createMessage, createTools, culpritOf, isOutput, ticketOf } from '../../../src/handler/message.ts';
import type { Message } from '../../../src/index.ts';

function setup(filters = ['devices/+/telemetry/#']) {
  const settled: string[] = [];
  const rejected: Ticket[] = [];
  const released: number[] = [];
  const tracker = new InputTracker({
    onSettle: (ticket, outcome) => settled.push(`${ticket.delivery.envelope.id}:${outcome}`),
    onRelease: (count) => released.push(count),
  });
  const context: MessageContext = {
    bridge: 'b',
    filters,
    tools: createTools('b', ['out', 'alerts']),
    reject: (ticket, error) => (rejected.push(ticket), tracker.reject(ticket, error)),
    done: (ticket) => tracker.done(ticket),
    keep: (ticket, message) => tracker.keep(ticket, message),
  };
  const unwatched = (topic: string, payload: string, clientId = 'dev-1'): Message => {
    const envelope = createEnvelope({ topic, payload, origin: { source: 'mqtt', clientId }, headers: { trace: 't1' } });
    const delivery = createDelivery(envelope, { onAck: () => {}, onNack: () => {} });
    return createMessage(tracker.track(delivery), context);
  };
  /** A message handed to a pipeline that built nothing from it in the same step: the collector watches it. */
  const message = (topic: string, payload: string, clientId = 'dev-1'): Message => {
    const handed = unwatched(topic, payload, clientId);
    tracker.watch(ticketOf(handed) as Ticket, handed);
    return handed;
  };
  return { tracker, context, message, unwatched, settled, rejected, released };
}

test('a message shows its envelope, the wildcard captures of its filter, its text and its JSON (parsed once)', () => {
  const { message } = setup(['sites/+/+/alarms', 'devices/+/telemetry/#']);
  const m = message('devices/s-1/telemetry/climate/room-2', '{"celsius":21.5}');
  assert.equal(m.topic, 'devices/s-1/telemetry/climate/room-2');
  assert.equal(m.clientId, 'dev-1');
  assert.deepEqual(m.captures, ['s-1']);
  assert.equal(m.rest, 'climate/room-2');
  assert.equal(m.text(), '{"celsius":21.5}');
  assert.deepEqual(m.json(), { celsius: 21.5 });
  assert.equal(m.json(), m.json());
  assert.deepEqual(message('sites/north/7/alarms', '{}').captures, ['north', '7']);
  assert.deepEqual(message('other/topic', '{}').captures, []);
});

test('json() of a payload that is not JSON throws an error that names the message, and Ferry knows which message it was', () => {
  const { message } = setup();
  const m = message('devices/s-1/telemetry/x', 'not json');
  let thrown: unknown;
  try {
    m.json();
  } catch (error) {
    thrown = error;
  }
  assert.ok(thrown instanceof FerryError);
  assert.equal(thrown.code, 'MESSAGE_REJECTED');
  assert.equal(thrown.retryable, false);
  assert.match(thrown.message, new RegExp(`the payload of message ${m.id} on 'devices/s-1/telemetry/x' is not JSON`));
  assert.equal(culpritOf(new Error('wrapped', { cause: thrown })), ticketOf(m));
  assert.equal(culpritOf(new Error('other')), undefined);
});

test('an output passed on unchanged keeps the message; a changed one gets a new id and its own fields', () => {
  const { message, context } = setup();
  const m = message('devices/s-1/telemetry/x', '{"celsius":30}');
  const same = m.to('out');
  assert.deepEqual(
    [same.sink, same.id, same.topic, Buffer.from(same.payload).toString(), same.timestamp, same.clientId, same.headers],
    ['out', m.id, m.topic, '{"celsius":30}', m.timestamp, 'dev-1', { trace: 't1' }],
  );
  assert.deepEqual(same.from, [m]);
  // A copy of an output with a field changed is an output too; a look-alike is not.
  assert.equal(isOutput({ ...same, topic: 'elsewhere' }), true);
  assert.equal(isOutput({ sink: 'out', from: [m], id: m.id, topic: m.topic, payload: m.payload }), false);

  const enriched = context.tools.to('alerts', m, { json: { celsius: 30, site: 'north' }, key: 's-1', topic: 'alerts/s-1' });
  assert.notEqual(enriched.id, m.id);
  assert.match(enriched.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(Buffer.from(enriched.payload).toString(), '{"celsius":30,"site":"north"}');
  assert.deepEqual([enriched.key, enriched.topic], ['s-1', 'alerts/s-1']);
  assert.equal(context.tools.to('alerts', m, { json: 1, id: m.id }).id, m.id);
});

test('an aggregate needs a payload; it is about a device only when all its messages are', () => {
  const { message, context } = setup();
  const a = message('devices/s-1/telemetry/x', '1', 'dev-1');
  const b = message('devices/s-1/telemetry/x', '2', 'dev-1');
  const c = message('devices/s-2/telemetry/x', '3', 'dev-2');
  assert.throws(() => context.tools.to('out', [a, b]), /built from 2 messages needs a payload or json/);
  assert.equal(context.tools.to('out', [a, b], { payload: 'sum=3' }).clientId, 'dev-1');
  assert.equal(context.tools.to('out', [a, c], { payload: 'sum=4' }).clientId, undefined);
  assert.equal(context.tools.to('out', [a, b, c], { payload: 'sum=6' }).clientId, undefined);
  assert.equal(context.tools.to('out', [c, a, b], { payload: 'sum=6' }).clientId, undefined);
  assert.throws(() => context.tools.to('out', [], { payload: 'tick' }), /built from no message needs a topic/);
  assert.equal(context.tools.to('out', [], { payload: 'tick', topic: 'ticks' }).from.length, 0);
  assert.throws(
    () => context.tools.to('nowhere' as 'out', a),
    (error: unknown) =>
      error instanceof FerryError &&
      error.code === 'CONFIG_INVALID' &&
      /tools.to\('nowhere', \.\.\.\) names no sink of the bridge; its sinks \(the keys of `to`\) are: out, alerts/.test(error.message),
  );
  assert.throws(() => context.tools.to('out', a, { payload: 'x', json: 1 }), /has both payload and json/);
});

test("an output the handler builds wrongly is the bridge code's fault (CONFIG_INVALID), not Ferry's (INTERNAL)", () => {
  const { message, context } = setup();
  const a = message('devices/s-1/telemetry/x', '1', 'dev-1');
  const b = message('devices/s-1/telemetry/x', '2', 'dev-1');
  const bridgeCodeFault = (pattern: RegExp) => (error: unknown) =>
    error instanceof FerryError && error.code === 'CONFIG_INVALID' && error.bridge === 'b' && pattern.test(error.message);
  assert.throws(() => context.tools.to('out', a, { payload: 'x', json: 1 }), bridgeCodeFault(/has both payload and json/));
  assert.throws(() => context.tools.to('out', [a, b]), bridgeCodeFault(/built from 2 messages needs a payload or json/));
  assert.throws(() => context.tools.to('out', [], { payload: 'tick' }), bridgeCodeFault(/built from no message needs a topic/));
});

test('the ack rule: acked once released and every output confirmed; nacked at the first failure; settled once', () => {
  const { tracker, message, settled } = setup();
  const m = message('devices/s-1/telemetry/x', '1');
  const ticket = ticketOf(m) as Ticket;
  tracker.hold([ticket]);
  tracker.hold([ticket]);
  tracker.confirm([ticket]);
  tracker.releaseAll();
  assert.deepEqual(settled, [], 'one output not confirmed yet');
  tracker.confirm([ticket]);
  assert.deepEqual(settled, [`${m.id}:acked`]);
  assert.equal(tracker.open, 0);

  const n = message('devices/s-1/telemetry/x', '2');
  const other = ticketOf(n) as Ticket;
  tracker.hold([other]);
  tracker.fail([other], new Error('sink down'));
  tracker.confirm([other]);
  tracker.releaseAll();
  assert.deepEqual(settled.slice(1), [`${n.id}:nacked`]);
});

test('message.reject settles the message as a permanent failure', () => {
  const { message, rejected, settled } = setup();
  const m = message('devices/s-1/telemetry/x', '1');
  m.reject('negative reading');
  assert.equal(rejected[0], ticketOf(m));
  assert.deepEqual(settled, [`${m.id}:nacked`]);
});

test('a key path of a TypeScript definition is found in its text', () => {
  const text = [
    "import { defineBridge } from 'ferry';",
    'const from = 1;',
    'export default defineBridge<Reading>({',
    "  name: 'x',",
    "  from: { mqtt: { topics: ['a/#'] } },",
    '  to: {',
    "    'alerts': { kafka: { topic: 'bad topic' } },",
    '  },',
    '  handle(messages) {',
    '    return messages;',
    '  },',
    '});',
  ].join('\n');
  assert.deepEqual(locateKey(text, ['from', 'mqtt', 'topics', 0]), { line: 5, column: 19 });
  assert.deepEqual(locateKey(text, ['to', 'alerts', 'kafka', 'topic']), { line: 7, column: 26 });
  assert.deepEqual(locateKey(text, ['handle']), { line: 9, column: 3 });
  assert.deepEqual(locateKey(text, ['buffer', 'windowSize']), { line: 0, column: 0 });
});

test('reachability: a message nothing holds is found by the garbage collector and acked; one still held is not', async () => {
  const { tracker, message, settled } = setup();
  const kept = message('devices/s-1/telemetry/x', 'kept');
  const droppedId = ((): string => message('devices/s-1/telemetry/x', 'dropped').id)();
  assert.equal(tracker.held, 2);
  for (let i = 0; i < 3 && settled.length === 0; i++) {
    garbageCollector()();
    await sleep(20);
  }
  assert.deepEqual(settled, [`${droppedId}:acked`]);
  assert.equal(tracker.held, 1);
  assert.equal(kept.text(), 'kept');
});

test('the collector watches only a message nothing else settles: not one an output was built from as it was handed (until the handler keeps it), nor one it is done with', async () => {
  const { tracker, unwatched, settled, released } = setup();
  const collect = async () => {
    for (let i = 0; i < 3; i++) {
      garbageCollector()();
      await sleep(20);
    }
  };
  // Handed, and an output built from each in the same step (a map to a sink); the second is kept too.
  const [mappedTicket, keptTicket] = ((): [Ticket, Ticket] => {
    const mapped = unwatched('devices/s-1/telemetry/x', 'mapped');
    const kept = unwatched('devices/s-1/telemetry/x', 'kept');
    const tickets: [Ticket, Ticket] = [ticketOf(mapped) as Ticket, ticketOf(kept) as Ticket];
    tracker.hold(tickets);
    tracker.watch(tickets[0], mapped);
    tracker.watch(tickets[1], kept);
    kept.keep();
    return tickets;
  })();
  // Handed and done with in the same step (what a Ferry-aware filter does with what it drops).
  const finishedId = ((): string => {
    const finished = unwatched('devices/s-1/telemetry/x', 'finished');
    finished.done();
    tracker.watch(ticketOf(finished) as Ticket, finished);
    return finished.id;
  })();
  await collect();
  // Only the kept one was registered with the collector; neither of the two settles before its output.
  assert.deepEqual(released, [1]);
  assert.deepEqual(settled, [`${finishedId}:acked`]);
  settled.length = 0;
  tracker.confirm([mappedTicket, keptTicket]);
  assert.deepEqual(settled, [`${mappedTicket.delivery.envelope.id}:acked`, `${keptTicket.delivery.envelope.id}:acked`]);
});

test('settlement without the collector (issue 18): a confirmed output settles its message, keep() holds it until done(), done() settles at the end of the turn', async () => {
  const { tracker, message, settled } = setup();
  const mapped = message('devices/s-1/telemetry/x', '1');
  const mappedTicket = ticketOf(mapped) as Ticket;
  tracker.hold([mappedTicket]);
  tracker.confirm([mappedTicket]);
  assert.deepEqual(settled, [`${mapped.id}:acked`], 'still referenced here, yet settled by its confirmed output');

  const cached = message('devices/s-1/telemetry/x', '2').keep();
  const cachedTicket = ticketOf(cached) as Ticket;
  tracker.hold([cachedTicket]);
  tracker.confirm([cachedTicket]);
  assert.equal(settled.length, 1, 'kept: its confirmed output does not settle it');
  cached.done();
  assert.equal(settled.length, 1, 'done() waits for the end of the turn');
  await Promise.resolve();
  assert.deepEqual(settled.slice(1), [`${cached.id}:acked`]);

  const last = message('devices/s-1/telemetry/x', '3');
  const lastTicket = ticketOf(last) as Ticket;
  last.done();
  // An output built in the same step as done() is waited for.
  tracker.hold([lastTicket]);
  await Promise.resolve();
  assert.equal(settled.length, 2);
  tracker.confirm([lastTicket]);
  assert.deepEqual(settled.slice(2), [`${last.id}:acked`]);
});

test('a restarted pipeline skips, per sink, the outputs earlier runs sent from a message alone', () => {
  const { tracker, message } = setup();
  const ticket = ticketOf(message('devices/s-1/telemetry/x', '1')) as Ticket;
  for (const sink of ['out', 'alerts', 'out']) noteRouted(ticket, sink);
  tracker.retrack(ticket);
  assert.deepEqual(
    [...(ticket.skip ?? [])],
    [
      ['out', 2],
      ['alerts', 1],
    ],
  );
  noteRouted(ticket, 'alerts');
  tracker.retrack(ticket);
  assert.deepEqual(Object.fromEntries(ticket.skip ?? []), { out: 2, alerts: 2 });
});

test('filterMessages settles what it drops at once', async () => {
  const { message, settled } = setup();
  const { from, lastValueFrom, toArray } = await import('rxjs');
  const { filterMessages } = await import('../../../src/index.ts');
  const inputs = ['1', '2', '3'].map((p) => message('devices/s-1/telemetry/x', p));
  const kept = await lastValueFrom(
    from(inputs).pipe(
      filterMessages((m) => m.text() !== '2'),
      toArray(),
    ),
  );
  await Promise.resolve();
  assert.deepEqual(
    kept.map((m) => m.text()),
    ['1', '3'],
  );
  assert.deepEqual(settled, [`${inputs[1]?.id}:acked`]);
});
