import { Command, InvalidArgumentError, Option } from 'commander';
import { VERSION } from './version.ts';

/**
 * The `ferry` command: its subcommands, options and help text. src/cli/main.ts runs it;
 * scripts/docs.ts reads it for docs/reference/cli.md. Each command loads its own modules in
 * its action, so `ferry --help` and `ferry validate` start fast.
 */
export function createProgram(): Command {
  const program = new Command('ferry')
    .description(
      'Edge/IoT messaging gateway: devices publish MQTT to it, every message is kept in a durable local buffer, and bridges carry it to Kafka, PostgreSQL tables, a local history or another MQTT broker (and commands from Kafka back to the devices).',
    )
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      "\n`ferry <command> --help` shows a command's options with their defaults, and for most its exit codes and an example.\nExample:\n  ferry run --mqtt-port 1884      # when another broker holds port 1883\n  ferry validate\n  ferry history --follow",
    );

  const configOption = () => new Option('-c, --config <file>', 'gateway config file').default('config/gateway.yaml');
  const dataDirOption = () => new Option('--data-dir <dir>', 'data directory (overrides gateway.dataDir)');

  program
    .command('run')
    .description('start the gateway: embedded MQTT broker, bridges and admin HTTP server')
    .addOption(configOption())
    .option('--mqtt-port <port>', 'MQTT listener port (overrides mqtt.port)', parsePort)
    .option('--admin-port <port>', 'admin HTTP port (overrides admin.port)', parsePort)
    .addOption(dataDirOption())
    .option('--log-level <level>', 'log level (overrides log.level): fatal, error, warn, info, debug, trace')
    .addHelpText(
      'after',
      '\nSIGINT or SIGTERM drains in-flight messages and exits 0; a second signal exits at once. SIGHUP reloads the config (see `ferry reload`).\nExits 1 when it cannot start (another `ferry run` on the same data directory, a port taken); 75 after draining when only a new start can trust its storage (the buffer found corrupt after the start, by the check, an append, a read or the upkeep, or a failed sync of the WAL of the buffer or of the history, or broker.db found corrupt): run it under a service manager that restarts it (systemd Restart=on-failure).\nExample:\n  ferry run --config config/gateway.yaml --mqtt-port 11883',
    )
    .action(async (options) => (await import('./run.ts')).runCommand(options));

  program
    .command('reload')
    .description('make a running gateway apply its changed bridges, device profiles and MQTT TLS certificate, and start failed bridges again, without dropping connections')
    .option('--admin <url>', 'admin server of the gateway (default http://127.0.0.1:9180, or the address in --config)', parseAdminUrl)
    .option('-c, --config <file>', 'gateway config file to read the admin address from')
    .option('--json', "print the admin server's JSON answer")
    .addHelpText(
      'after',
      '\nExits 0 when the config was applied; 1 when it was refused (its problems are printed as file:line:column: path: reason and the gateway keeps its current config) or the gateway cannot be reached.\nSending SIGHUP to `ferry run` does the same. An admin server with a token gets it from FERRY_ADMIN_TOKEN, else from the config of --config.\nExample:\n  ferry reload --admin http://127.0.0.1:9180',
    )
    .action(async (options) => (await import('./reload.ts')).reloadCommand(options));

  program
    .command('validate')
    .description('check a gateway config and every bridge and device file it references')
    .addOption(configOption())
    .addHelpText('after', '\nExits 0 when valid; 1 with every problem as file:line:column: path: reason.')
    .action(async (options) => (await import('./validate.ts')).validateCommand(options));

  program
    .command('config')
    .description('config file tooling: `ferry config schema` prints the JSON Schema of a file kind, for editor completion')
    .command('schema')
    .description('print the JSON Schema of a config file kind, for editor completion')
    .addOption(new Option('--kind <kind>', 'which file').choices(['gateway', 'bridge', 'device']).default('gateway'))
    .action(async (options) => (await import('./schema.ts')).schemaCommand(options));

  program
    .command('history')
    .description("show the latest messages kept in the gateway's local history")
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--bridge <name>', 'only this bridge')
    .option(
      '--topic <topic>',
      "only topics starting with it (a prefix, case-sensitive as MQTT topics are), or matching it when it is an MQTT filter with a '+' or '#' level (devices/+/telemetry/#)",
    )
    .option('-n, --limit <count>', 'how many messages', parseCount, 20)
    .option('-f, --follow', 'keep printing new messages as they arrive')
    .option('--json', 'one JSON object per line')
    .addHelpText(
      'after',
      "\nSafe while the gateway runs (a reader of its own). Exits 1 when there is no history yet or it cannot be read, or when --bridge names a bridge it has no messages of (listing those it has; --follow says so and waits); a history found corrupt is marked, and the gateway moves it aside at its next start or failed write.\nExample:\n  ferry history --bridge telemetry-history --topic devices/sensor-1/ -n 50 --follow\n  ferry history --topic 'devices/+/telemetry/#' --json",
    )
    .action(async (options) => (await import('./history.ts')).historyCommand(options));

  const migrate = program
    .command('migrate')
    .description('apply, revert and list the schema migrations of a database declared in gateway.yaml (`databases:`)')
    .addHelpText(
      'after',
      '\nMigrations are TypeScript files in --dir exporting `up(db)` and `down(db)` (a Kysely instance), applied in the order of their names, each run in one transaction under a lock so that two gateways never migrate at once.\nOn PostgreSQL, a migration that waits more than 3 s for a lock another session holds (an open transaction on the table it alters) prints to stderr, every 10 s while it waits, which sessions hold it (pid, application, state, how long, their last statement); commit or end them, or press Ctrl-C (the database stays as it was), or bound the wait with --lock-timeout.\nExit codes: 0 done (or up to date); 1 the run was rolled back (a migration failed, Ctrl-C, --lock-timeout), the database cannot be reached, or the command line cannot be parsed (an unknown option, a missing argument, as for every command); 2 `status` found pending migrations; 3 the config cannot be read or lacks what is asked for (no such database, no migrations directory, --lock-timeout on SQLite), or a bad migration name; 130 a second Ctrl-C, or one that could not end the migrating session.\nExample:\n  ferry migrate create create_devices\n  ferry migrate up --database main\n  ferry migrate up --lock-timeout 10000\n  ferry migrate status',
    );
  const migrateOptions = (command: Command) =>
    command
      .addOption(configOption())
      .option('--database <name>', 'the database of gateway.yaml (`databases:`); the only one when there is one')
      .option('--dir <dir>', 'directory of the migration files', 'migrations');
  for (const [action, description] of [
    ['up', 'apply every pending migration, in order'],
    ['down', 'revert the last applied migration'],
    ['status', 'list the migrations, applied (with when) or pending; exits 2 when some are pending'],
  ] as const) {
    const command = migrateOptions(migrate.command(action).description(description));
    if (action !== 'status')
      command.option(
        '--lock-timeout <ms>',
        'PostgreSQL: fail the run (and leave the database as it was) when a statement waits longer than this for a lock another session holds (`lock_timeout`); waits without end when absent, and says on stderr who holds the lock',
        parseCount,
      );
    command.action(async (options) => (await import('./migrate.ts')).migrateCommand(action, options));
  }
  migrate
    .command('create')
    .description('write a new migration file, <UTC time>_<name>.ts, with up() and down() to fill in')
    .argument('<name>', 'what the migration does: letters, digits, "_" and "-" (create_devices)')
    .option('--dir <dir>', 'directory of the migration files', 'migrations')
    .action(async (name: string, options) => (await import('./migrate.ts')).createMigrationCommand(name, options));

  const buffer = program.command('buffer').description("inspect and repair the durable buffer in a gateway's data directory; safe while the gateway runs");

  buffer
    .command('stats')
    .description('pending messages, bytes and oldest age per bridge and sink, dead letters, totals')
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--json', 'one JSON document (ages in ms)')
    .action(async (options) => (await import('./buffer/stats.ts')).statsCommand(options));

  buffer
    .command('check')
    .description("check the buffer's integrity (SQLite quick_check, every page read); a corrupt one exits 1 and is moved aside by the next `ferry run`")
    .addOption(configOption())
    .addOption(dataDirOption())
    .action(async (options) => (await import('./buffer/check.ts')).checkCommand(options));

  buffer
    .command('peek')
    .description('the next messages a sink (or a bridge) would deliver, oldest first')
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--bridge <name>', 'only this bridge')
    .option('--sink <name>', "from this sink's cursor")
    .option('-n, --limit <count>', 'how many messages', parseCount, 10)
    .option('--json', 'one JSON object per line')
    .option('--dead', 'the oldest dead letters instead, with their reasons (--sink: of that sink, or `transform` / `rateLimit` for messages refused at ingress)')
    .action(async (options) => (await import('./buffer/peek.ts')).peekCommand(options));

  buffer
    .command('export')
    .description('every buffered message (or dead letter) as JSON lines, payloads in base64')
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--format <format>', 'output format: jsonl', 'jsonl')
    .option('--bridge <name>', 'only this bridge')
    .option('--dead-letters', 'the dead letters instead of the buffered messages')
    .option('-o, --output <file>', 'write to this file instead of standard output')
    .action(async (options) => (await import('./buffer/export.ts')).exportCommand(options));

  buffer
    .command('purge')
    .description("delete a bridge's buffered messages (and its dead letters with --dead-letters)")
    .addOption(configOption())
    .addOption(dataDirOption())
    .requiredOption('--bridge <name>', 'the bridge')
    .option('--dead-letters', 'also delete its dead letters')
    .option('--yes', 'delete; without it, says what would be deleted and exits 1')
    .action(async (options) => (await import('./buffer/purge.ts')).purgeCommand(options));

  buffer
    .command('redrive')
    .description("move a bridge's dead letters back into its log as new messages")
    .addOption(configOption())
    .addOption(dataDirOption())
    .requiredOption('--bridge <name>', 'the bridge')
    .action(async (options) => (await import('./buffer/redrive.ts')).redriveCommand(options));

  const sessions = program
    .command('sessions')
    .description("inspect and remove the embedded broker's saved sessions (broker.db in the data directory); safe while the gateway runs")
    .addHelpText(
      'after',
      "\nA purge of a session whose client is connected is refused: the running broker holds that client's subscriptions in its memory too. Disconnect the client first (or, with the gateway stopped after a crash, which left the session recorded as connected, pass --force). The running gateway notices a purge within a second and before a client resumes its session.\nExample:\n  ferry sessions list\n  ferry sessions show sensor-1 --json\n  ferry sessions purge sensor-1 --yes",
    );
  sessions
    .command('list')
    .description('every saved session: owner, connected or offline since, expiry, subscriptions, queued messages')
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--json', 'one JSON object per line')
    .action(async (options) => (await import('./state/sessions.ts')).listSessionsCommand(options));
  sessions
    .command('show <clientId>')
    .description('one saved session with its subscriptions')
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--json', 'one JSON object')
    .action(async (clientId: string, options) => (await import('./state/sessions.ts')).showSessionCommand(clientId, options));
  sessions
    .command('purge <clientId>')
    .description('delete a saved session: its subscriptions, queued messages, QoS 2 state and will (refused while its client is connected)')
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--yes', 'delete; without it, says what would be deleted and exits 1')
    .option('--force', 'delete even when the session is recorded as connected (only with the gateway stopped: refused while one runs on the data directory)')
    .option('--json', 'print what was deleted as one JSON object')
    .action(async (clientId: string, options) => (await import('./state/sessions.ts')).purgeSessionCommand(clientId, options));

  const retained = program
    .command('retained')
    .description("inspect and remove the embedded broker's retained messages (broker.db in the data directory); safe while the gateway runs")
    .addHelpText(
      'after',
      "\nThe running broker reads retained messages from the file at each SUBSCRIBE, so a purge takes effect at once.\nExample:\n  ferry retained list --topic 'site/#'\n  ferry retained purge 'site/#' --yes",
    );
  retained
    .command('list')
    .description('retained messages in topic order: topic, publishing client, size, payload')
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--topic <filter>', 'only topics matching this filter (+ and # allowed)')
    .option('-n, --limit <count>', 'how many messages', parseCount, 1000)
    .option('--json', 'one JSON object per line')
    .action(async (options) => (await import('./state/retained.ts')).listRetainedCommand(options));
  retained
    .command('purge <topicOrFilter>')
    .description('delete the retained message of a topic, or every one matching a filter')
    .addOption(configOption())
    .addOption(dataDirOption())
    .option('--yes', 'delete; without it, says how many would be deleted and exits 1')
    .option('--json', 'print the deleted topics as one JSON object')
    .action(async (filter: string, options) => (await import('./state/retained.ts')).purgeRetainedCommand(filter, options));

  program
    .command('device')
    .description('device tooling: `ferry device hash-password` hashes a password for devices/*.yaml')
    .command('hash-password')
    .description('print the scrypt hash of a device password, for `credentials` in devices/*.yaml')
    .addHelpText('after', '\nReads the password from standard input (typed twice, hidden, in a terminal).\nExample:\n  printf %s "$DEVICE_PASSWORD" | ferry device hash-password')
    .action(async () => (await import('./device/hash-password.ts')).hashPasswordCommand());

  program
    .command('simulate')
    .description('connect simulated devices of a profile and publish its telemetry: a load test with a summary')
    .requiredOption('--profile <file>', 'device profile (devices/*.yaml) with a telemetry section')
    .option('--url <url>', 'MQTT broker', 'mqtt://127.0.0.1:1883')
    .option('--devices <n>', 'how many devices; client ids from the profile clientId, * numbered from 1', '10')
    .option('--rate <r>', 'messages per second over all devices; 0: as fast as the window allows', '0')
    .option('--qos <qos>', 'QoS of the publishes: 0, 1 or 2', '1')
    .option('--mqtt <version>', 'MQTT version the devices speak: 3.1.1 or 5', '3.1.1')
    .option('--window <n>', 'most unacknowledged messages per device', '20')
    .option('--duration <time>', 'how long to publish: 30s, 2m, 500ms (default 30s)')
    .option('--count <m>', 'publish this many messages in all instead of for a duration')
    .option('--username <name>', 'every device logs in with this username (else anonymous)')
    .option('--password-env <var>', 'environment variable holding the password for --username')
    .option('--json', 'print the summary as one JSON object on standard output')
    .addHelpText(
      'after',
      '\nExits 0 when every message was acknowledged, 1 otherwise. Ctrl-C stops publishing, waits up to 5 s for acknowledgements, then reports.\nExample:\n  ferry simulate --profile devices/temperature-sensor.yaml --devices 50 --rate 500 --duration 1m',
    )
    .action(async (options) => (await import('./simulate/command.ts')).simulateCommand(options));

  program
    .command('version')
    .description('print the version of Ferry, as `ferry --version` does')
    .action(() => {
      process.stdout.write(`${VERSION}\n`);
    });

  return program;
}

// Commander reports an InvalidArgumentError as a usage error naming the option; any other error
// escaped as a stack trace.
function parsePort(value: string): number {
  const port = Number(value);
  if (value.trim() === '' || !Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError('expected a port number, 0 to 65535 (0: any free port).');
  return port;
}

function parseCount(value: string): number {
  const count = Number(value);
  if (!Number.isInteger(count) || count < 1) throw new InvalidArgumentError('expected a whole number of at least 1.');
  return count;
}

/** An http:// or https:// URL: a bad one ended `ferry reload` in a TypeError's stack trace. */
function parseAdminUrl(value: string): string {
  let protocol: string | undefined;
  try {
    protocol = new URL(value).protocol;
  } catch {
    protocol = undefined;
  }
  if (protocol === 'http:' || protocol === 'https:') return value;
  throw new InvalidArgumentError(`expected the URL of the admin server, like http://127.0.0.1:9180${/^[\w.[\]:-]+:\d+$/.test(value) ? ` (http://${value}?)` : ''}.`);
}
