import { type KeyObject, X509Certificate, createPrivateKey } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import type { SecureContextOptions, Server as TlsServer } from 'node:tls';
import type { ConfigIssue } from '../config/issues.ts';
import type { GatewayConfig, TlsPem } from '../config/load.ts';
import type { ListenerOptions, TlsSettings } from '../mqtt/listeners.ts';
import { tlsRenewed } from './reload-plan.ts';

/** What a reload does to the TLS listener: refused with problems, or a renewal to apply once the rest of the reload went through. */
export type TlsRenewal = { readonly errors: readonly ConfigIssue[] } | { readonly apply: () => void; readonly warnings: readonly string[] };

const UNCHANGED: TlsRenewal = { apply: () => {}, warnings: [] };

/**
 * The MQTT TLS listener's certificate, key and CA, renewed in place by a reload: a file of
 * `mqtt.tls` replaced (same path, new content, as ACME clients and internal CAs renew them) or
 * pointing elsewhere. New handshakes use the new files; connected devices keep their session.
 * Turning TLS on or off, or its port, still needs a restart (reload-plan.ts says so).
 */
export class ListenerCertificates {
  readonly #servers: TlsServer[] = [];
  /** The listener asks devices for certificates (requireClientCert or identityFromCert): fixed until a restart. */
  #checksClients = false;
  /** The CA the listener checks client certificates against: its own, until a reload gives it another. */
  #ca: Buffer | undefined;

  /** The broker's listener settings, with its TLS listener's server reported here once created. */
  watch<T extends { readonly tls?: ListenerOptions & TlsSettings }>(settings: T): T {
    if (settings.tls === undefined) return settings;
    const { ca, requireClientCert, identityFromCert } = settings.tls;
    this.#checksClients = requireClientCert || identityFromCert;
    this.#ca = ca === undefined ? undefined : Buffer.from(ca);
    return { ...settings, tls: { ...settings.tls, onServer: (server: TlsServer) => this.#servers.push(server) } };
  }

  /**
   * The renewal a reload from `running` to `next` makes: nothing when the files are as they
   * were; problems (naming the file) when the new ones do not load, which refuse the reload
   * and leave the listener as it was; otherwise `apply`, to call once nothing else refused it.
   */
  renewal(running: GatewayConfig, next: GatewayConfig): TlsRenewal {
    if (!tlsRenewed(running, next) || next.tlsPem === undefined || next.mqtt.tls === undefined) return UNCHANGED;
    const base = dirname(next.file);
    const { cert, key, ca } = next.mqtt.tls;
    const files = { cert: resolve(base, cert), key: resolve(base, key), ...(ca === undefined ? {} : { ca: resolve(base, ca) }) };
    // Without a CA, a listener that asks for client certificates (as it does until a restart)
    // would refuse every device at the handshake: it keeps the CA it has until then.
    const keptCa = ca === undefined && this.#checksClients ? this.#ca : undefined;
    const pem: TlsPem = keptCa === undefined ? next.tlsPem : { ...next.tlsPem, ca: keptCa };
    const checked = checkTlsFiles(pem, keptCa === undefined ? files : { ...files, ca: 'the CA the TLS listener has' });
    if (checked.problems.length > 0) {
      return { errors: checked.problems.map(({ field, message }) => ({ file: next.file, line: 0, column: 0, path: `mqtt.tls.${field}`, message })) };
    }
    const options = secureContextOptions(pem);
    const kept =
      keptCa === undefined
        ? []
        : [
            'mqtt.tls.ca removed: not applied while the TLS listener asks devices for certificates (requireClientCert or identityFromCert, which change only at a restart): it checks them against the CA it has; restart needed',
          ];
    return {
      warnings: [...kept, ...checked.warnings],
      apply: () => {
        for (const server of this.#servers) server.setSecureContext(options);
        this.#ca = pem.ca;
      },
    };
  }
}

type TlsField = 'cert' | 'key' | 'ca';

/** What `createTls` (listeners.ts) gives the server: the rest of its options stay as they were. */
function secureContextOptions(pem: TlsPem): SecureContextOptions {
  return { cert: pem.cert, key: pem.key, ...(pem.ca === undefined ? {} : { ca: pem.ca }) };
}

/**
 * Why the new certificate, key or CA would not load (each problem with its field), and
 * warnings for a certificate that loads but is out of its validity dates: it is applied (a
 * renewal that went wrong should not leave the old one, expiring as well, in place unnoticed).
 */
function checkTlsFiles(
  pem: TlsPem,
  files: Readonly<Record<'cert' | 'key', string>> & { readonly ca?: string },
): {
  problems: { field: TlsField; message: string }[];
  warnings: string[];
} {
  const problems: { field: TlsField; message: string }[] = [];
  const keep = 'the TLS listener keeps its current certificate';
  const parse = <T>(field: TlsField, what: string, read: () => T): T | undefined => {
    // A file read while it is written: OpenSSL loads the blocks before the cut and drops the rest (the chain's intermediate, a CA).
    if (unfinishedBlock(pem[field])) {
      problems.push({
        field,
        message: `${files[field]}: ends inside a PEM block, a BEGIN line (or the start of one) without its END line (written only in part? reload once it is complete); ${keep}`,
      });
      return undefined;
    }
    try {
      return read();
    } catch (error) {
      problems.push({ field, message: `${files[field]}: not ${what} that loads (${(error as Error).message}); ${keep}` });
      return undefined;
    }
  };
  const certificate = parse('cert', 'a PEM certificate', () => new X509Certificate(pem.cert));
  const key: KeyObject | undefined = parse('key', 'an unencrypted PEM private key', () => createPrivateKey(pem.key));
  if (pem.ca !== undefined) {
    const ca = pem.ca;
    parse('ca', 'a file of PEM CA certificates', () => pemBlocks(ca).forEach((block) => new X509Certificate(block)));
  }
  if (certificate !== undefined && key !== undefined && !certificate.checkPrivateKey(key)) {
    problems.push({ field: 'key', message: `${files.key}: the key does not belong to the certificate ${files.cert} (put the key of the renewed certificate there); ${keep}` });
  }
  if (problems.length === 0) {
    // What the checks above do not see (an intermediate of the chain, a key type OpenSSL refuses) shows here.
    try {
      process.getBuiltinModule('node:tls').createSecureContext(secureContextOptions(pem));
    } catch (error) {
      problems.push({ field: 'cert', message: `${files.cert} and ${files.key} do not load together (${(error as Error).message}); ${keep}` });
    }
  }
  const warnings: string[] = [];
  if (certificate !== undefined && problems.length === 0) {
    const now = Date.now();
    const [from, to] = [new Date(certificate.validFrom), new Date(certificate.validTo)];
    if (to.getTime() < now) warnings.push(`mqtt.tls.cert ${files.cert} expired on ${to.toISOString()}: applied anyway; clients that check dates refuse it`);
    else if (from.getTime() > now)
      warnings.push(`mqtt.tls.cert ${files.cert} is not valid before ${from.toISOString()}: applied anyway; clients that check dates refuse it until then`);
  }
  return { problems, warnings };
}

/** True when a PEM file has a BEGIN line (or the start of one) that no END line of its label closes. */
function unfinishedBlock(pem: Buffer | undefined): boolean {
  if (pem === undefined) return false;
  const text = pem.toString('latin1');
  const begun = text.match(/-----BEGIN/g)?.length ?? 0;
  let complete = 0;
  let end = 0;
  for (const block of text.matchAll(/-----BEGIN ([^\r\n-]+)-----[\s\S]*?-----END \1-----/g)) {
    complete += 1;
    end = block.index + block[0].length;
  }
  if (begun > complete) return true;
  // Cut before its BEGIN line says BEGIN ("-----BEG"): OpenSSL takes that for text after the
  // last block and drops the block without a word, as it does one cut further on.
  const last = text.slice(end).trimEnd().split('\n').at(-1)?.trim() ?? '';
  return last !== '' && '-----BEGIN'.startsWith(last);
}

/** The certificates of a PEM file, each with its BEGIN and END lines; throws when there is none. */
function pemBlocks(pem: Buffer): string[] {
  const blocks = pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error('no CERTIFICATE block');
  return blocks;
}
