import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { queryObjects } from 'node:v8';
import { z } from 'zod';
import { loadGatewayConfig } from '../../../src/config/load.ts';
import { lazySchema } from '../../../src/core/lazy-schema.ts';
import { garbageCollector } from '../../../src/handler/gc-nudge.ts';
import { componentKinds, findSink } from '../../../src/runtime/registry.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const gc = garbageCollector();
// zod keeps the first object schema a process makes (whatever it is): not one of these tests'.
z.strictObject({}).parse({});

/** A full collection once the current job is over (a WeakRef keeps what it gave out until then). */
async function collect(): Promise<void> {
  for (let i = 0; i < 2; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
}

test('a lazy schema is one instance while something holds it, and a new one once it was let go', async () => {
  let built = 0;
  const schema = lazySchema(() => {
    built += 1;
    return z.strictObject({ keep: z.int().min(1) });
  });
  const weak = (() => {
    const held = schema();
    assert.equal(schema(), held);
    assert.deepEqual(held.parse({ keep: 3 }), { keep: 3 });
    return new WeakRef(held);
  })();
  assert.equal(built, 1);
  await collect();
  assert.equal(weak.deref(), undefined, 'the schema was kept after nothing used it');
  assert.equal(schema().safeParse({ keep: 0 }).success, false);
  assert.equal(built, 2);
});

test("the embedded default's config is checked with schemas that are gone once it is loaded", async () => {
  const config = await loadGatewayConfig(join(ROOT, 'config/gateway.yaml'), { kinds: componentKinds, env: {}, cwd: ROOT });
  assert.ok(config.bridges.length > 0);
  await collect();
  // Every component's schema, the gateway's and the bridges' are zod objects: kept in modules'
  // constants, 99 of them were alive here.
  const live = queryObjects(z.ZodObject, { format: 'count' });
  assert.ok(live < 20, `${live} zod object schemas still alive after the config was loaded`);
  // A component's schema is built again when asked for, e.g. by a reload.
  assert.equal(findSink('history')?.schema.safeParse({ keep: 10 }).success, true);
});
