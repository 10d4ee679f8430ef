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
  if (first === undefined) return undefined;
  const second = await prompt('Again: ');
  if (second === undefined) return undefined;
  if (first === second) return first;
  process.stderr.write('ferry: the passwords differ\n');
  process.exitCode = 1;
  return undefined;
}

/**
 * What is typed after `question`, unseen; undefined, with the exit code set, when Ctrl-C (130) or
 * Ctrl-D (1) ends the prompt instead. Both reach readline as keys, the terminal being in raw
 * mode: without this, the prompt's promise was left unsettled and Node exited 13 with a warning.
 */
function prompt(question: string): Promise<string | undefined> {
  process.stderr.write(question);
  // What is typed is not echoed: the interface writes to a sink that drops it.
  const muted = new Writable({ write: (_chunk, _encoding, done) => done() });
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  return new Promise((resolve) => {
    let answer: string | undefined;
    let interrupted = false;
    rl.question('', (line) => {
      answer = line;
      rl.close();
    });
    rl.on('SIGINT', () => {
      interrupted = true;
      rl.close();
    });
    rl.once('close', () => {
      process.stderr.write('\n');
      if (answer === undefined) {
        if (!interrupted) process.stderr.write('ferry: no password given\n');
        process.exitCode = interrupted ? 130 : 1;
      }
      resolve(answer);
    });
  });
}
