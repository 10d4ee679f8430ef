// Prints the config reference made from the schemas, or with --write puts it into README.md
// between its markers. test/unit/config/reference.test.ts fails when the README is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { configReference } from '../src/config/reference.ts';
import { componentKinds } from '../src/runtime/registry.ts';

export const START = '<!-- config-reference:start (npm run docs:config) -->';
export const END = '<!-- config-reference:end -->';

const reference = configReference(componentKinds);
if (process.argv.includes('--write')) {
  const readme = readFileSync('README.md', 'utf8');
  const from = readme.indexOf(START);
  const to = readme.indexOf(END);
  if (from < 0 || to < from) throw new Error(`README.md lacks the markers ${START} ... ${END}`);
  writeFileSync('README.md', `${readme.slice(0, from + START.length)}\n${reference}${readme.slice(to)}`);
  process.stdout.write('README.md: config reference updated\n');
} else {
  process.stdout.write(reference);
}
