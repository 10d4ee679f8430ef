// aedes routes every publish through mqemitter, which (as patched, patches/mqemitter+7.1.0.patch)
// keeps the listeners each topic matched until the listeners change. Each change must be seen
// by the next message: a listener added, one removed (mqemitter removes on the next turn),
// all of a topic's removed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import MQEmitter from 'mqemitter';

/** mqemitter's types leave out removeAllListeners. */
type Emitter = ReturnType<typeof MQEmitter> & { removeAllListeners(topic: string): void };

/** Emits one message on `topic`; resolves with the names of the listeners that got it. */
function emit(mq: Emitter, topic: string, got: string[]): Promise<string[]> {
  got.length = 0;
  return new Promise((resolve, reject) => mq.emit({ topic }, (error?: unknown) => (error ? reject(error) : resolve([...got].sort()))));
}

test('the listeners a topic matches follow every change', async () => {
  const mq = MQEmitter() as Emitter;
  const got: string[] = [];
  const listener = (name: string) => (_message: unknown, done: () => void) => {
    got.push(name);
    done();
  };
  const one = listener('one');
  const two = listener('two');
  const three = listener('three');

  assert.deepEqual(await emit(mq, 'a/b', got), []);
  mq.on('a/+', one);
  assert.deepEqual(await emit(mq, 'a/b', got), ['one']);
  assert.deepEqual(await emit(mq, 'a/b', got), ['one'], 'the same again');
  mq.on('a/#', two);
  assert.deepEqual(await emit(mq, 'a/b', got), ['one', 'two']);
  await new Promise<void>((resolve) => mq.removeListener('a/+', one, () => resolve()));
  assert.deepEqual(await emit(mq, 'a/b', got), ['two']);
  mq.on('a/b', three);
  assert.deepEqual(await emit(mq, 'a/b', got), ['three', 'two']);
  mq.removeAllListeners('a/#');
  assert.deepEqual(await emit(mq, 'a/b', got), ['three']);
  assert.deepEqual(await emit(mq, 'a/c', got), []);
});
