// A bad value of a numeric option (`ferry run --mqtt-port abc`, `ferry history -n 0`) ended the
// command with a stack trace from inside commander. Now it is a usage error naming the option.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ferry } from '../harness/ferry-process.ts';

for (const [args, option] of [
  // A config that is not there: a value the option took anyway (an empty one was port 0) starts nothing.
  [['run', '-c', 'no-such-gateway.yaml', '--mqtt-port', 'abc'], '--mqtt-port'],
  [['run', '-c', 'no-such-gateway.yaml', '--admin-port', '70000'], '--admin-port'],
  [['run', '-c', 'no-such-gateway.yaml', '--admin-port', ''], '--admin-port'],
  [['history', '-n', '0'], '--limit'],
  [['buffer', 'peek', '-n', 'ten'], '--limit'],
  [['retained', 'list', '--limit', '-1'], '--limit'],
] as const) {
  test(`ferry ${args.join(' ')}: a usage error naming ${option}, no stack trace`, { timeout: 30_000 }, async () => {
    const result = await ferry(args);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, new RegExp(`^error: option '[^']*${option} <[a-z]+>' argument '[^']*' is invalid\\. expected `));
    assert.doesNotMatch(result.stderr, /^\s+at /m);
  });
}

// `ferry version` answered "unknown command 'version' (Did you mean sessions?)".
test('ferry version prints the version, as --version does', { timeout: 30_000 }, async () => {
  const flag = await ferry(['--version']);
  const command = await ferry(['version']);
  assert.equal(command.code, 0, command.stderr);
  assert.match(command.stdout, /^\d+\.\d+\.\d+\S*\n$/);
  assert.equal(command.stdout, flag.stdout);
  assert.equal(command.stderr, '');
});

// `migrate --help` said that usage problems exit 3, but a command line commander cannot parse
// exits 1, as for every command (scripts rely on both codes): the help says which is which.
test('ferry migrate --help tells the exit codes that a bad command line (1) and a config problem (3) give', { timeout: 30_000 }, async () => {
  const help = await ferry(['migrate', '--help']);
  assert.equal(help.code, 0);
  const codes = help.stdout.slice(help.stdout.indexOf('Exit codes:'));
  assert.match(codes, /; 1 [^;]*the command line cannot be parsed \(an unknown option, a missing argument/);
  assert.match(codes, /; 3 [^;]*no such database/);

  const unparsable = await ferry(['migrate', 'up', '--no-such-option']);
  assert.equal(unparsable.code, 1);
  const missingConfig = await ferry(['migrate', 'up', '--config', 'no-such-gateway.yaml']);
  assert.equal(missingConfig.code, 3);
});

// `ferry --help` listed `config` and `device` as "config tooling" and "device tooling", and said
// nothing of where a command's options and examples are: a first reader had to open each one.
test('ferry --help says what config and device do and where a command tells its options', { timeout: 30_000 }, async () => {
  const help = await ferry(['--help']);
  assert.equal(help.code, 0, help.stderr);
  const line = (command: string) => help.stdout.slice(help.stdout.indexOf(`\n  ${command} `) + 1).split(/\n {2}\S/)[0] ?? '';
  assert.match(line('config'), /`ferry config schema`[\s\S]*JSON\s+Schema/);
  assert.match(line('device'), /`ferry device hash-password`/);
  assert.match(help.stdout, /`ferry <command> --help` shows a command's options/);
  assert.match(help.stdout, /^ {2}ferry run --mqtt-port 1884 /m);
});
