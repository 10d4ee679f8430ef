import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lastLines, runTool } from './exec.ts';

export const KAFKA_VERSION = '4.4.0';

const POM = fileURLToPath(new URL('./kafka-pom.xml', import.meta.url));

/** ~/.cache/ferry/kafka-<version> (honours XDG_CACHE_HOME). */
export function kafkaCacheDir(): string {
  const cacheRoot = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(cacheRoot, 'ferry', `kafka-${KAFKA_VERSION}`);
}

/**
 * The JVM classpath for the Kafka broker, storage tool and perf tools. Resolved once with Maven
 * and cached in <cache>/classpath.txt (plain `java -cp` syntax, usable by hand); later calls do
 * not run Maven unless kafka-pom.xml changed or a jar has vanished from ~/.m2.
 */
export async function kafkaClasspath(log: (line: string) => void): Promise<string> {
  const dir = kafkaCacheDir();
  const file = join(dir, 'classpath.txt');
  const stampFile = join(dir, 'pom.sha256');
  const pomHash = createHash('sha256').update(readFileSync(POM)).digest('hex');

  const cached = readValidClasspath(file);
  if (cached !== undefined && readOptional(stampFile) === pomHash) return cached;

  log(`resolving Kafka ${KAFKA_VERSION} jars from Maven Central (first run only)...`);
  mkdirSync(dir, { recursive: true });
  // Per-process temp name + rename keeps concurrent first runs from reading a half-written file.
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const { code, output } = await runTool(
      'mvn',
      ['-q', '-B', '-f', POM, 'dependency:build-classpath', `-Dmdep.outputFile=${tmp}`],
      'Maven is needed once to fetch the Kafka jars but `mvn` was not found: install it with `apt-get install -y maven`',
    );
    if (code !== 0) {
      throw new Error(`Maven could not resolve the Kafka classpath (exit ${code}):\n${lastLines(output, 30)}`);
    }
    const classpath = readValidClasspath(tmp);
    if (classpath === undefined) throw new Error(`Maven wrote an empty or broken classpath to ${tmp}`);
    renameSync(tmp, file);
    writeFileSync(stampFile, pomHash);
    return classpath;
  } finally {
    rmSync(tmp, { force: true });
  }
}

function readValidClasspath(file: string): string | undefined {
  const classpath = readOptional(file)?.trim();
  if (!classpath) return undefined;
  return classpath.split(delimiter).every((jar) => existsSync(jar)) ? classpath : undefined;
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
