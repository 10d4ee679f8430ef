import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A new key (<name>.key) and a certificate (<name>.crt, CN `cn`) signed by the CA in `dir`, valid for `days` from now (negative: expired). */
function sign(dir: string, name: string, cn: string, ext: string, days: number): void {
  openssl(dir, 'req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
  openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', String(days), '-extfile', ext);
}

/**
 * Writes into `dir` a CA (ca.crt, ca.key), a server certificate for 127.0.0.1 and localhost
 * (server.crt, server.key) and a client certificate per name in `clients` (<name>.crt,
 * <name>.key, the name as CN), all valid for two days.
 */
export function makeCertificates(dir: string, clients: readonly string[]): void {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    throw new Error('the openssl CLI is needed to make test certificates: install it with `apt-get install -y openssl`');
  }
  openssl(dir, 'req', '-x509', ...EC, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=ferry-test-ca');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  sign(dir, 'server', '127.0.0.1', 'server.ext', 2);
  for (const name of clients) sign(dir, name, name, 'client.ext', 2);
}

/**
 * A renewed server certificate, as a CA renews one: a new key (<name>.key) and certificate
 * (<name>.crt) for 127.0.0.1 and localhost, signed by the CA of `makeCertificates(dir)`, with
 * a serial of its own; valid for `days` (negative: already expired).
 */
export function renewServerCertificate(dir: string, name = 'server', days = 2): void {
  sign(dir, name, '127.0.0.1', 'server.ext', days);
}
