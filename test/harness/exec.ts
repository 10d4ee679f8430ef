import { spawn } from 'node:child_process';

export interface ToolResult {
  code: number | null;
  /** stdout and stderr interleaved, as the tool printed them. */
  output: string;
}

/**
 * Runs a command to completion and collects its output. A missing executable (ENOENT) becomes
 * an Error carrying `missingHint`, so callers can tell the user how to install it.
 */
export function runTool(command: string, args: readonly string[], missingHint: string): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ENOENT' ? new Error(missingHint) : err);
    });
    child.once('close', (code) => resolve({ code, output: Buffer.concat(chunks).toString('utf8') }));
  });
}

export function lastLines(text: string, count: number): string {
  return text.trimEnd().split('\n').slice(-count).join('\n');
}
