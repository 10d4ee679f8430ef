import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import Database from 'better-sqlite3';
import { bufferPath } from '../../src/buffer/open.ts';

/**
 * Overwrites every page of the buffer in `dataDir` but the first (the schema) with garbage, then
 * commits a change from a second connection: a connection that has it open drops its page cache
 * at its next read and meets the damage (SQLITE_CORRUPT), as after a disk that lost its writes.
 */
export function corruptBufferUnder(dataDir: string): void {
  const path = bufferPath(dataDir);
  const other = new Database(path);
  other.pragma('wal_checkpoint(TRUNCATE)');
  const pageSize = other.pragma('page_size', { simple: true }) as number;
  const size = statSync(path).size;
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(size - pageSize, 0xa5), 0, size - pageSize, pageSize);
  closeSync(fd);
  other.pragma('user_version = 7');
  other.close();
}
