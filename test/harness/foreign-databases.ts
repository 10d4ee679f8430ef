import { writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';

/**
 * SQLite files that are not Ferry's, for the commands that must refuse them and leave them as
 * they were: what each is, how to make it at a path, and the words (a regular expression's
 * source) a command uses for what it found there.
 */
export const FOREIGN_DATABASES: readonly (readonly [kind: string, make: (path: string) => void, what: string])[] = [
  ['an empty file', (path) => writeFileSync(path, ''), 'it has no tables \\(an empty database\\)'],
  [
    "another program's database",
    (path) => {
      const db = new Database(path);
      db.exec('CREATE TABLE readings (at INTEGER, celsius REAL); CREATE TABLE devices (id TEXT); INSERT INTO readings VALUES (1, 20.5);');
      db.close();
    },
    "its tables \\(devices, readings\\) are not Ferry's",
  ],
];
