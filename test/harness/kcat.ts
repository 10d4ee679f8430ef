import { runTool } from './exec.ts';

export interface KcatMessage {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string | null;
  readonly payload: string | null;
  readonly headers: Record<string, string>;
}

/** Reads every message of a topic with kcat (librdkafka), an independent Kafka client. */
export async function kcatConsume(brokers: readonly string[], topic: string): Promise<KcatMessage[]> {
  const { code, output } = await runTool(
    'kcat',
    ['-C', '-b', brokers.join(','), '-t', topic, '-o', 'beginning', '-e', '-q', '-J', '-m', '20'],
    'kcat is not on PATH: install it with `apt-get install -y kcat`',
  );
  if (code !== 0) throw new Error(`kcat exited ${code}: ${output.trim()}`);
  return output
    .trim()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => {
      const raw = JSON.parse(line) as Omit<KcatMessage, 'headers'> & { headers?: string[] };
      const headers: Record<string, string> = {};
      const list = raw.headers ?? [];
      for (let i = 0; i + 1 < list.length; i += 2) headers[list[i] as string] = list[i + 1] as string;
      return { ...raw, headers };
    });
}
