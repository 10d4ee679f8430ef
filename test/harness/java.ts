import { join } from 'node:path';
import { runTool } from './exec.ts';

const MIN_JAVA = 17;
const INSTALL_HINT = 'install it with `apt-get install -y openjdk-17-jdk-headless` or set JAVA_HOME';

/** The java executable to use: $JAVA_HOME/bin/java when JAVA_HOME is set, else `java` from PATH. */
export function javaExecutable(): string {
  const home = process.env['JAVA_HOME'];
  return home ? join(home, 'bin', 'java') : 'java';
}

export function javaMissingHint(java: string): string {
  return `Java ${MIN_JAVA}+ is required to run the Kafka test broker but \`${java}\` was not found: ${INSTALL_HINT}`;
}

/** Checks that Java >= 17 (Kafka 4's minimum) is runnable and returns its executable. */
export async function requireJava(): Promise<string> {
  const java = javaExecutable();
  const { code, output } = await runTool(java, ['-version'], javaMissingHint(java));
  const match = /version "(\d+)(?:\.(\d+))?/.exec(output);
  if (code !== 0 || !match) {
    throw new Error(`\`${java} -version\` failed (exit ${code}): ${output.trim().split('\n')[0] ?? ''}; ${INSTALL_HINT}`);
  }
  // Java 8 and older report "1.8.0_x".
  const major = match[1] === '1' ? Number(match[2]) : Number(match[1]);
  if (major < MIN_JAVA) {
    throw new Error(`Kafka 4 needs Java ${MIN_JAVA}+ but \`${java}\` is Java ${major}: ${INSTALL_HINT}`);
  }
  return java;
}
