import { type ToolResult, runTool } from './exec.ts';

export interface KcatMessage {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string | null;
  readonly payload: string | null;
  readonly headers: Record<string, string>;
}

/** How long kcat is retried while the broker does not know a topic yet (see kcatConsume). */
const UNKNOWN_TOPIC_RETRY_MS = 5000;

/**
 * Reads every message of a topic with kcat (librdkafka), an independent Kafka client. A topic
 * the producer created automatically can be written and acknowledged a moment before the
 * broker's metadata answers for it ("Unknown topic or partition"); kcat is run again then, for
 * a few seconds, and any other failure is thrown at once.
 */
export async function kcatConsume(brokers: readonly string[], topic: string): Promise<KcatMessage[]> {
  const deadline = Date.now() + UNKNOWN_TOPIC_RETRY_MS;
  let result: ToolResult;
  for (;;) {
    result = await runTool(
      'kcat',
      ['-C', '-b', brokers.join(','), '-t', topic, '-o', 'beginning', '-e', '-q', '-J', '-m', '20'],
      'kcat is not on PATH: install it with `apt-get install -y kcat`',
    );
    if (result.code === 0 || !result.output.includes('Unknown topic or partition') || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const { code, output } = result;
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
