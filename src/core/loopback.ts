/**
 * Whether a configured host or a peer's address is loopback only (127.0.0.0/8, ::1, their
 * IPv4-mapped form, localhost): reachable from this machine alone.
 */
export function isLoopbackHost(host: string): boolean {
  const plain = host.startsWith('::ffff:') ? host.slice(7) : host;
  return plain === 'localhost' || plain === '::1' || /^127\.\d+\.\d+\.\d+$/.test(plain);
}
