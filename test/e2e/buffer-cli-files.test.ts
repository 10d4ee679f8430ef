// Two faults of `ferry buffer` on the file it is given. Against a buffer.db without Ferry's
// tables (an empty database, another program's) the reading commands said `no such table:
// dead_letters`, and `purge --yes` wrote Ferry's tables into the file. And a purge of a large
// backlog showed nothing until it ended. Now such a file is named as not a Ferry buffer and left
// as it was, and a purge (or a redrive) of more than one transaction shows its progress in a
// terminal, as `buffer export` does.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bufferPath } from '../../src/buffer/open.ts';
import { BufferStore } from '../../src/buffer/store.ts';
import { CHUNK_ROWS } from '../../src/cli/buffer/chunks.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { FERRY_BIN, REPO_ROOT, ferry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';
import { FOREIGN_DATABASES } from '../harness/foreign-databases.ts';

const PTY_SESSION = fileURLToPath(new URL('../harness/pty-session.py', import.meta.url));
const tempDir = tempDirs('ferry-buffer-files-');

const COMMANDS = [
  ['stats'],
  ['check'],
  ['peek', '--sink', 'out'],
  ['export', '--format', 'jsonl'],
  ['purge', '--bridge', 'b'],
  ['purge', '--bridge', 'b', '--dead-letters', '--yes'],
  ['redrive', '--bridge', 'b'],
];

for (const [kind, make, what] of FOREIGN_DATABASES) {
  test(`buffer.db that is ${kind}: every command says it is not a Ferry buffer, exits 1, and leaves it as it was`, { timeout: 60_000 }, async () => {
    const dir = tempDir();
    const path = bufferPath(dir);
    make(path);
    const bytes = readFileSync(path);
    const files = readdirSync(dir);
    for (const args of COMMANDS) {
      const result = await ferry(['buffer', ...args, '--data-dir', dir]);
      assert.equal(result.code, 1, args.join(' '));
      assert.equal(result.stdout, '', args.join(' '));
      assert.match(result.stderr, new RegExp(`^ferry: \\S+buffer\\.db is not a Ferry buffer: ${what} \\([^\\n]*\\)\\n$`), args.join(' '));
    }
    assert.deepEqual(readFileSync(path), bytes, 'the file is unchanged');
    assert.deepEqual(readdirSync(dir), files, 'no file was added beside it');
  });
}

/** A buffer whose bridge `b` (sink `out`) holds `messages` messages and `dead` dead letters. */
function bufferWith(messages: number, dead: number): string {
  const dir = tempDir();
  const store = new BufferStore(openSqlite(bufferPath(dir), { synchronous: 'normal' }));
  store.registerBridge('b', ['out']);
  const entries = (n: number) => Array.from({ length: n }, (_, i) => ({ bridge: 'b', envelope: createEnvelope({ topic: `t/${i}`, payload: 'x', origin: { source: 'test' } }) }));
  store.append(entries(dead));
  store.writeTransaction(() => {
    for (const message of store.read('b', 0, dead)) store.deadLetter('out', message, 'refused', 1);
  });
  store.append(entries(messages));
  store.close();
  return dir;
}

/** `ferry buffer <args>` in a terminal: its exit code and everything the terminal showed. */
async function inTerminal(args: readonly string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn('python3', [PTY_SESSION, '30', '[]', process.execPath, FERRY_BIN, 'buffer', ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, `pty-session.py failed (python3 is Debian's python3 package): ${out}`);
  return JSON.parse(out) as { code: number | null; output: string };
}

test('purge and redrive of more than one transaction show their progress on a terminal, and clear it before the outcome', { timeout: 60_000 }, async () => {
  const messages = 3 * CHUNK_ROWS + 1;
  const dead = CHUNK_ROWS + 1;
  const count = (n: number) => n.toLocaleString('en-US');
  const line = (what: string, n: number, of: number) => `${what} of bridge 'b': ${count(n)} of ${count(of)} (${Math.floor((100 * n) / of)}%)...`;
  const shown = (output: string) => output.match(/[a-z ]+ of bridge 'b': [\d,]+ of [\d,]+ \(\d+%\)\.\.\./g);

  const purge = await inTerminal(['purge', '--bridge', 'b', '--dead-letters', '--yes', '--data-dir', bufferWith(messages, dead)]);
  assert.equal(purge.code, 0, purge.output);
  assert.deepEqual(shown(purge.output), [
    line('deleting the messages', 5_000, messages),
    line('deleting the messages', 10_000, messages),
    line('deleting the messages', 15_000, messages),
    line('deleting the dead letters', 5_000, dead),
  ]);
  assert.match(purge.output, /\.\.\.\r\u001b\[Kdeleted 15001 buffered messages \([^)]+\) and 5001 dead letters of bridge 'b'\r?\n$/);

  const redrive = await inTerminal(['redrive', '--bridge', 'b', '--data-dir', bufferWith(0, dead)]);
  assert.equal(redrive.code, 0, redrive.output);
  assert.deepEqual(shown(redrive.output), [line('moving the dead letters', 5_000, dead)]);
  assert.match(redrive.output, /\.\.\.\r\u001b\[Kmoved 5001 dead letters of bridge 'b' back into its log/);
});

test('purge with standard error not a terminal prints its outcome only', { timeout: 60_000 }, async () => {
  const dir = bufferWith(2 * CHUNK_ROWS + 1, 0);
  const purge = await ferry(['buffer', 'purge', '--bridge', 'b', '--yes', '--data-dir', dir]);
  assert.equal(purge.code, 0, purge.stderr);
  assert.equal(purge.stderr, '');
  assert.match(purge.stdout, /^deleted 10001 buffered messages \([^)]+\) of bridge 'b'\n$/);
});
