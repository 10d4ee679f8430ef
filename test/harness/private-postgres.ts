import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts } from './net.ts';

/**
 * A PostgreSQL server of a test's own, made with initdb in a temporary directory and started
 * and stopped with pg_ctl, for faults the shared server must never see (a server stopped in the
 * middle of a stream). Trust authentication on 127.0.0.1 and a socket in its directory; fsync
 * off (the test is about the gateway, not this server's durability).
 */
export interface PrivatePostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  readonly url: string;
  readonly port: number;
  /** Stops the server (`pg_ctl stop -m fast`: sessions are ended, as in a restart). */
  stop(): void;
  /** Starts it again on the same port and data. */
  start(): void;
  /** Stops it at once and removes its files. */
  destroy(): void;
}

/** Where the server's programs are: pg_config's bindir, else the newest /usr/lib/postgresql/<version>/bin. */
function binDir(): string {
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
    if (existsSync(join(dir, 'pg_ctl'))) return dir;
  } catch {
    // not on PATH
  }
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'pg_ctl'))) : [];
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0];
  if (newest === undefined) throw new Error('PostgreSQL server programs (initdb, pg_ctl) not found: install the postgresql package');
  return join(root, newest, 'bin');
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = binDir();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-private-pg-'));
  const data = join(dir, 'data');
  // initdb and postgres refuse to run as root: as root, they run as the postgres user.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, uid, gid);
  }
  const run = (program: string, args: readonly string[]) => {
    const [command, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, program), ...args]] : [join(bin, program), [...args]];
    const result = spawnSync(command, argv as string[], { encoding: 'utf8', timeout: 60_000 });
    if (result.status !== 0) throw new Error(`${program} ${args.join(' ')} failed (${result.status}): ${result.stderr}${result.stdout}`);
  };
  const [port] = (await freePorts(1)) as [number];
  run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '--no-instructions']);
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
  const start = () => run('pg_ctl', ['-D', data, '-o', options, '-l', join(dir, 'server.log'), '-w', '-t', '60', 'start']);
  const stop = (mode: 'fast' | 'immediate') => run('pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '60', 'stop']);
  // pg_ctl detaches the server: stop it if the test process ends without destroy().
  const onExit = () => {
    spawnSync(
      asRoot ? 'runuser' : join(bin, 'pg_ctl'),
      asRoot ? ['-u', 'postgres', '--', join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop'] : ['-D', data, '-m', 'immediate', 'stop'],
    );
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  start();
  let running = true;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    stop: () => {
      stop('fast');
      running = false;
    },
    start: () => {
      start();
      running = true;
    },
    destroy: () => {
      process.off('exit', onExit);
      if (running) stop('immediate');
      running = false;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
