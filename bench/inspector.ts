import WebSocket from 'ws';

/**
 * A full garbage collection (two, as the inspector asks them) in the process whose inspector
 * listens on `port` (node --inspect=127.0.0.1:<port>); returns its V8 heap in use after them, MiB.
 * The native state of a socket is freed only when its JavaScript handle is collected, so memory
 * figures read after this count what is held, not garbage.
 */
export async function collectGarbage(port: number): Promise<number> {
  const [target] = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
  const ws = new WebSocket(target?.webSocketDebuggerUrl as string);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const call = (id: number, method: string) =>
    new Promise<{ result?: { usedSize?: number } }>((resolve) => {
      ws.on('message', function answer(data) {
        const reply = JSON.parse(String(data)) as { id?: number; result?: { usedSize?: number } };
        if (reply.id !== id) return;
        ws.off('message', answer);
        resolve(reply);
      });
      ws.send(JSON.stringify({ id, method }));
    });
  await call(1, 'HeapProfiler.collectGarbage');
  await call(2, 'HeapProfiler.collectGarbage');
  const usage = await call(3, 'Runtime.getHeapUsage');
  ws.close();
  return (usage.result?.usedSize ?? 0) / 1024 / 1024;
}
