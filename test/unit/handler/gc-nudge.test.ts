// The handler bridges' nudge of the garbage collector (src/handler/gc-nudge.ts): it looks every
// 50 ms while inputs are held, and only every 250 ms while none is, so that an idle gateway is not
// woken 20 times a second per handler bridge. The collector is a counter here: the test is about
// when the nudge asks for a collection, not what one does.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { GcNudge } from '../../../src/handler/gc-nudge.ts';

test('GcNudge: idle, it looks at the held inputs about every 250 ms and collects nothing; held, it collects after idleMs without progress', async () => {
  let held = 0;
  let looks = 0;
  let collections = 0;
  const nudge = new GcNudge({
    held: () => {
      looks += 1;
      return held;
    },
    starved: () => false,
    gc: () => {
      collections += 1;
    },
    idleMs: 100,
  });
  try {
    await sleep(1_000);
    // Every 50 ms would be about 20 looks; every 250 ms about 4 (the first after 50 ms).
    assert.ok(looks >= 2 && looks <= 8, `${looks} looks in 1 s while nothing was held`);
    assert.equal(collections, 0);

    // A handler holds an input, and nothing settles: the next idle look finds it (within 250 ms),
    // and from then on the nudge looks every 50 ms.
    held = 1;
    await sleep(300);
    assert.ok(collections >= 1, 'an input held past idleMs without progress gets a collection');
    const lookedBefore = looks;
    await sleep(500);
    assert.ok(looks - lookedBefore >= 5, `${looks - lookedBefore} looks in 0.5 s while an input was held`);

    // Progress (an input settled) brings the short tick back at once: right after an idle look
    // (the next one 250 ms away), a look within 150 ms is the short tick's.
    held = 0;
    await sleep(300);
    const seen = looks;
    while (looks === seen) await sleep(5);
    const idleLooks = looks;
    nudge.progress();
    await sleep(150);
    assert.ok(looks > idleLooks, 'progress: looked again within 150 ms of an idle look');
  } finally {
    nudge.stop();
  }
  const after = looks;
  await sleep(300);
  assert.equal(looks, after, 'stopped: no more looks');
});
