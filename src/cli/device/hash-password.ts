import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { hashPassword } from '../../mqtt/password.ts';

/**
 * Prints the scrypt hash of a password for a device profile's `credentials`. The password is
 * read from standard input: typed twice, unseen, in a terminal; otherwise its first line.
 */
export async function hashPasswordCommand(): Promise<void> {
  const password = process.stdin.isTTY ? await promptTwice() : await firstLine();
  if (password === undefined) return;
  if (password.length === 0) {
    process.stderr.write('ferry: the password is empty\n');
    process.exitCode = 1;
    return;
  }
  process.stdout.write(`${await hashPassword(password)}\n`);
}

async function firstLine(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) text += String(chunk);
  return text.split(/\r?\n/)[0] ?? '';
}

async function promptTwice(): Promise<string | undefined> {
  const first = await prompt('Password: ');
  const second = await prompt('Again: ');
  if (first === second) return first;
  process.stderr.write('ferry: the passwords differ\n');
  process.exitCode = 1;
  return undefined;
}

function prompt(question: string): Promise<string> {
  process.stderr.write(question);
  // What is typed is not echoed: the interface writes to a sink that drops it.
  const muted = new Writable({ write: (_chunk, _encoding, done) => done() });
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  return new Promise((resolve) => {
    rl.question('', (answer) => {
      rl.close();
      process.stderr.write('\n');
      resolve(answer);
    });
  });
}
