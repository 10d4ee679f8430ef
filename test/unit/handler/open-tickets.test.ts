// The handler's open inputs (InputTracker's `open`, `oldest()` and `tickets()`, kept in an
// InFlight, src/core/in-flight.ts, as the handler's buffer reader keeps its messages): checked
// against a plain model while thousands of tickets settle in and out of order, some held for
// long, which makes the array trim its front and drop settled tickets from its middle.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createDelivery } from '../../../src/core/delivery.ts';
import { createEnvelope } from '../../../src/core/envelope.ts';
import { InputTracker, type Ticket } from '../../../src/handler/input-tracker.ts';

test('open inputs stay in the order they were handed, without the settled ones, whatever the order they settle in', () => {
  const acked: string[] = [];
  const nacked: string[] = [];
  const tracker = new InputTracker({
    onSettle: (ticket, outcome) => (outcome === 'acked' ? acked : nacked).push(ticket.delivery.envelope.id),
    onRelease: () => {},
  });
  const model: Ticket[] = [];
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const check = (step: number) => {
    assert.equal(tracker.open, model.length, `step ${step}: open`);
    assert.equal(tracker.oldest(), model[0], `step ${step}: oldest`);
    assert.deepEqual([...tracker.tickets()], model, `step ${step}: tickets`);
  };
  const settle = (ticket: Ticket, how: 'confirm' | 'reject' | 'done') => {
    if (how === 'confirm') {
      tracker.holdOne(ticket);
      tracker.confirmOne(ticket);
    } else if (how === 'reject') tracker.reject(ticket, new Error('refused'));
    else tracker.ack(ticket);
    model.splice(model.indexOf(ticket), 1);
  };
  for (let step = 0; step < 20_000; step++) {
    const envelope = createEnvelope({ topic: 't', payload: String(step), origin: { source: 'test' } });
    const ticket = tracker.track(createDelivery(envelope, { onAck: () => {}, onNack: () => {} }));
    model.push(ticket);
    // Most settle soon, nearly in order; every 500th is held for 3,000 steps (a window, a cache).
    const r = random();
    if (model.length > 1 && r < 0.85) {
      const held = model.filter(
        (t) => Number(t.delivery.envelope.payload.toString()) % 500 === 0 && Number(envelope.payload.toString()) - Number(t.delivery.envelope.payload.toString()) < 3_000,
      );
      const candidates = model.filter((t) => !held.includes(t));
      const pick = candidates[Math.floor(random() * Math.min(candidates.length, 8))];
      if (pick !== undefined) settle(pick, r < 0.8 ? 'confirm' : r < 0.83 ? 'reject' : 'done');
    }
    if (r > 0.97) for (const t of model.slice(0, 3)) if (Number(envelope.payload.toString()) - Number(t.delivery.envelope.payload.toString()) >= 3_000) settle(t, 'confirm');
    if (step % 97 === 0) check(step);
  }
  check(20_000);
  for (const ticket of [...model]) settle(ticket, 'confirm');
  check(20_001);
  assert.equal(acked.length + nacked.length, 20_000);
  assert.equal(new Set([...acked, ...nacked]).size, 20_000, 'each input settled once');
});
