#!/usr/bin/env node
// Before anything native loads: an old Node gets a clear error, not a segmentation fault.
import { nodeVersionProblem } from './node-version.js';

const problem = nodeVersionProblem(process.versions.node);
if (problem !== undefined) {
  process.stderr.write(`ferry: ${problem}\n`);
  process.exit(1);
}
// Ferry's CLI is TypeScript run without a build step: through Node's own type stripping
// where it is on (Node >= 22.18, outside node_modules), else through tsx's loader.
if (!process.features.typescript || import.meta.url.includes('/node_modules/')) {
  const { register } = await import('tsx/esm/api');
  register();
}
await import('../src/cli/main.ts');
